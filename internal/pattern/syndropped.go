package pattern

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Causes of unanswered SYNs.
const (
	CauseNetfilterDrop       = "netfilter_drop"
	CauseLocalOutputFirewall = "local_output_firewall"
	CauseNeighbourUnresolved = "neighbour_unresolved"
	CauseKernelDrop          = "kernel_drop"
	CauseNoLocalDrop         = "no_local_drop"
)

// SYNDropped: the client keeps retransmitting its SYN and nothing answers.
// It is diagnosed at the first SYN retransmit at least Timeout after the
// connect started (the kernel's first one comes at ~1 s), long before the
// application's connect() gives up (~135 s at default sysctls); later
// retransmits and the final SYN_SENT -> CLOSE with ETIMEDOUT are the same
// failure and fold into it. Where the SYN died comes from a drop of that SYN
// seen on this node (netns, hook, reason), from the retransmit's own error
// (EPERM: the local firewall refused the send; EBUSY: queued behind ARP), or
// is said to be beyond this node.
type SYNDropped struct {
	// Timeout is the connect age from which to diagnose; <= 0 means 1 s.
	Timeout time.Duration
}

func (SYNDropped) ID() diagnosis.Pattern { return diagnosis.PatternSYNDropped }

func (SYNDropped) Wants(s *signal.Signal) bool {
	switch s.Kind {
	case signal.KindRetransmit:
		return s.State == signal.StateSynSent
	case signal.KindStateChange:
		return ClientClose(s) && (s.SkErr == ETIMEDOUT || s.SkErr == EHOSTUNREACH)
	case signal.KindDrop:
		return IsSYN(s.TCPFlags)
	}
	return false
}

func (p SYNDropped) timeout() time.Duration {
	if p.Timeout <= 0 {
		return time.Second
	}
	return p.Timeout
}

func (p SYNDropped) Match(ev *Evidence) (Verdict, Outcome) {
	if !ev.Oriented {
		return Verdict{}, NoMatch
	}
	t := ev.Trigger
	switch {
	case t == nil:
		// Re-asked after a Defer: decide on the latest retransmit.
		if r := ev.Retrans(); r.Count == 0 || !p.overdue(ev, &r.Last) {
			return Verdict{}, NoMatch
		}
	case t.Flow != ev.Flow:
		return Verdict{}, NoMatch
	case t.Kind == signal.KindRetransmit && t.State == signal.StateSynSent:
		if !p.overdue(ev, t) {
			return Verdict{}, NoMatch
		}
		v := p.verdict(ev)
		// The drop of this very retransmit reaches the ring buffer just
		// after it; with nothing seen yet, wait the grace period for it.
		if v.Cause == CauseNoLocalDrop && !ev.Diagnosed {
			return Verdict{}, Defer
		}
		return v, Match
	case ClientClose(t) && t.SkErr == ETIMEDOUT:
	case ClientClose(t) && t.SkErr == EHOSTUNREACH && ev.Retrans().EBUSY > 0:
		// ARP never resolved: the SYN never left; other EHOSTUNREACH closes
		// (ICMP host unreachable) belong to other patterns.
	default:
		return Verdict{}, NoMatch
	}
	return p.verdict(ev), Match
}

// overdue: the connect has waited at least Timeout at retransmit s.
func (p SYNDropped) overdue(ev *Evidence, s *signal.Signal) bool {
	start := ev.ConnectStart()
	return !start.IsZero() && s.Time.Sub(start) >= p.timeout()
}

type synFacts struct {
	nfDrop, otherDrop, neighDrop *signal.Signal
	localNF                      bool
	drops                        int
	close                        *signal.Signal
}

func (SYNDropped) facts(ev *Evidence) synFacts {
	var f synFacts
	ev.SynDrops(func(s *signal.Signal) bool {
		f.drops++
		switch s.DropReason {
		case "NETFILTER_DROP":
			local := ev.Client.Known() && NetnsOf(s).SameAs(ev.Client)
			if f.nfDrop == nil || (local && !f.localNF) {
				f.nfDrop, f.localNF = s, local
			}
		case "NEIGH_FAILED", "NEIGH_QUEUEFULL", "NEIGH_DEAD":
			if f.neighDrop == nil {
				f.neighDrop = s
			}
		default:
			if f.otherDrop == nil {
				f.otherDrop = s
			}
		}
		return true
	})
	if t := ev.Trigger; t != nil && ClientClose(t) {
		f.close = t
	}
	return f
}

func (p SYNDropped) verdict(ev *Evidence) Verdict {
	f := p.facts(ev)
	r := ev.Retrans()
	// The longer the SYN goes unanswered, the less likely a transient loss.
	c := 0.35 + 0.05*float64(min(max(r.Count-1, 0), 4))
	if f.close != nil {
		c += 0.15
	}
	switch {
	case r.EPERM > 0 || f.localNF:
		c += 0.3
		if r.EPERM > 0 && f.localNF {
			c += 0.1
		}
		where := ev.Client
		if f.localNF {
			where = NetnsOf(f.nfDrop)
		}
		return Verdict{Cause: CauseLocalOutputFirewall, Where: where, Confidence: clamp(c), Specificity: 3,
			Why: "the client's own firewall refused to send the SYN", Need: NeedRule}
	case f.nfDrop != nil:
		c += 0.35
		if f.drops > 1 {
			c += 0.05
		}
		return Verdict{Cause: CauseNetfilterDrop, Where: NetnsOf(f.nfDrop), Confidence: clamp(c), Specificity: 3,
			Why: "a netfilter rule on this node was seen dropping the SYN", Need: NeedRule}
	case r.EBUSY > 0 || f.neighDrop != nil:
		c += 0.25
		if r.EBUSY > 0 && f.neighDrop != nil {
			c += 0.1
		}
		return Verdict{Cause: CauseNeighbourUnresolved, Where: ev.Client, Confidence: clamp(c), Specificity: 2,
			Why: "the SYN never left: the next hop's address did not resolve"}
	case f.otherDrop != nil:
		c += 0.3
		return Verdict{Cause: CauseKernelDrop, Where: NetnsOf(f.otherDrop), Confidence: clamp(c), Specificity: 2,
			Why: "the kernel on this node was seen dropping the SYN"}
	}
	return Verdict{Cause: CauseNoLocalDrop, Confidence: clamp(c), Specificity: 1,
		Why: "the SYN went unanswered"}
}

func (p SYNDropped) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	f := p.facts(ev)
	r := ev.Retrans()
	dst := netip.AddrPortFrom(ev.Flow.Dst, ev.Flow.DstPort).String()
	where := NetnsPhrase(ev.Namer, v.Where)
	start := ev.ConnectStart()
	age := time.Duration(0)
	at := ev.Now
	if ev.Trigger != nil {
		at = ev.Trigger.Time
	} else if r.Count > 0 {
		at = r.Last.Time // decided on a Tick: as of the retransmit that qualified
	}
	if !start.IsZero() {
		age = roundAge(at.Sub(start))
	}
	d := diagnosis.Diagnosis{
		Pattern:    diagnosis.PatternSYNDropped,
		Severity:   diagnosis.SeverityError,
		ErrorType:  "ETIMEDOUT",
		Flow:       ev.Flow,
		Confidence: v.Confidence,
		Impact: fmt.Sprintf("connect() to %s hangs and fails with ETIMEDOUT after about 2 minutes at default sysctls "+
			"(tcp_syn_retries); callers block or time out first", dst),
	}
	var drop *signal.Signal
	switch v.Cause {
	case CauseLocalOutputFirewall:
		drop = f.nfDrop
		d.Layer = diagnosis.LayerPolicy
		d.Summary = fmt.Sprintf("SYN to %s refused by the client's own OUTPUT firewall in %s", dst, where)
		d.Details = fmt.Sprintf("The client's %s does not let the SYN out", where)
		if r.EPERM > 0 {
			d.Details += fmt.Sprintf(": %d SYN retransmit(s) failed with EPERM", r.EPERM)
		}
		if f.localNF {
			d.Details += fmt.Sprintf("; netfilter dropped it at %s there", orUnknown(f.nfDrop.DropLocation))
		}
		d.Details += "."
		d.Resolution = fmt.Sprintf("Remove or narrow the DROP/REJECT rule matching tcp dport %d in the output path of %s "+
			"(`nft list ruleset` or `iptables-save` in that netns), or allow %s.", ev.Flow.DstPort, where, dst)
	case CauseNetfilterDrop:
		drop = f.nfDrop
		d.Layer = diagnosis.LayerPolicy
		d.Summary = fmt.Sprintf("SYN to %s dropped by a netfilter rule in %s (%s)", dst, where, orUnknown(drop.DropLocation))
		d.Details = fmt.Sprintf("netfilter in %s dropped the SYN at %s", where, orUnknown(drop.DropLocation))
		if drop.Dev != "" {
			d.Details += fmt.Sprintf(" on dev %s", drop.Dev)
		}
		d.Details += fmt.Sprintf(" (%d drop(s) of this SYN seen); nothing answers, so the client retransmits until it gives up.", f.drops)
		// The drop alone does not say which hook: a host bridging or routing
		// the flow drops in forward, the server itself in input.
		chain := "input or forward"
		d.Resolution = fmt.Sprintf("Remove or narrow the DROP rule matching tcp dport %d in the %s path of %s: "+
			"list it with `nft list ruleset` (or `iptables-save`) in that netns, or allow %s.",
			ev.Flow.DstPort, chain, where, addrText(ev.Flow.Src))
	case CauseNeighbourUnresolved:
		drop = f.neighDrop
		d.Layer = diagnosis.LayerL2
		d.ErrorType = "EHOSTUNREACH"
		d.Impact = fmt.Sprintf("connect() to %s fails with EHOSTUNREACH after ARP/NDP gives up (about 3 s)", dst)
		d.Summary = fmt.Sprintf("SYN to %s never sent: queued behind ARP/NDP, the neighbour does not resolve (in %s)", dst, where)
		d.Details = fmt.Sprintf("%d SYN retransmit(s) returned EBUSY: the packet waits for the next hop's link-layer address", r.EBUSY)
		if drop != nil {
			d.Details += fmt.Sprintf("; the queued SYN was dropped with %s at %s", drop.DropReason, orUnknown(drop.DropLocation))
		}
		d.Details += "."
		d.Resolution = fmt.Sprintf("Check that %s (or the gateway towards it) is up and answers ARP/NDP on that link "+
			"(`ip neigh show`, `ip route get %s`); a stale address for a removed host or pod fails this way.",
			addrText(ev.Flow.Dst), addrText(ev.Flow.Dst))
	case CauseKernelDrop:
		drop = f.otherDrop
		d.Layer = diagnosis.LayerL3
		d.Summary = fmt.Sprintf("SYN to %s dropped by the kernel in %s: %s at %s", dst, where, drop.DropReason, orUnknown(drop.DropLocation))
		d.Details = fmt.Sprintf("The kernel in %s freed the SYN with drop reason %s at %s.", where, drop.DropReason, orUnknown(drop.DropLocation))
		d.Resolution = fmt.Sprintf("Look up drop reason %s (include/net/dropreason-core.h) and fix its cause in %s "+
			"(routes `ip route`, rp_filter, conntrack `conntrack -S`, listen backlog `ss -ltn`).", drop.DropReason, where)
		if h, ok := dropHint(drop); ok {
			d.Summary = fmt.Sprintf("SYN to %s dropped in %s: %s", dst, where, h.what)
			d.Details += " " + h.why
			d.Resolution = fmt.Sprintf(h.fix, where, addrText(ev.Flow.Dst), addrText(ev.Flow.Src), ev.Flow.DstPort)
		}
	default:
		d.Layer = diagnosis.LayerL3
		d.Summary = fmt.Sprintf("SYN to %s unanswered: no local drop seen, the path or the remote host drops it", dst)
		d.Details = "No drop of this SYN was seen on this node, so it left the node and was lost on the path or " +
			"dropped by the remote host (firewall DROP, blackhole route, host down)."
		d.Resolution = fmt.Sprintf("Check the route to %s and that the host is up (`ip route get %s`, "+
			"`traceroute -T -p %d %s`), then its firewall for a DROP on port %d.",
			addrText(ev.Flow.Dst), addrText(ev.Flow.Dst), ev.Flow.DstPort, addrText(ev.Flow.Dst), ev.Flow.DstPort)
	}
	if r := ruleOf(ev); r != nil && (v.Cause == CauseNetfilterDrop || v.Cause == CauseLocalOutputFirewall) {
		d.Summary = fmt.Sprintf("SYN to %s dropped by %s in %s", dst, r.Phrase(), where)
		d.Resolution = fmt.Sprintf("In %s %s, or allow %s.", where, r.Fix(), dst)
	}
	d.Details += ev.Facts.missingText()
	// Said as of the diagnosis: later retries are added to an aggregate as evidence.
	if f.close != nil {
		d.Details += fmt.Sprintf(" Diagnosed when connect() failed with %s, after %d SYN retransmit(s) seen", ErrnoName(f.close.SkErr), r.Count)
	} else {
		d.Details += fmt.Sprintf(" Diagnosed at SYN retransmit %d", r.Count)
	}
	if age > 0 {
		d.Details += fmt.Sprintf(", about %s after the connect started", age)
	}
	d.Details += "."
	var first, last *signal.Signal
	if r.Count > 0 {
		first = &r.First
		if r.Count > 1 {
			last = &r.Last
		}
	}
	d.Evidence = appendRule(ev, evidenceFrom(ev, drop, first, last, f.close))
	server := v.Where
	if v.Cause == CauseLocalOutputFirewall || v.Cause == CauseNeighbourUnresolved {
		server = Netns{}
	}
	d.Source, d.Destination = endpoints(ev, server)
	return d
}

// hint explains a drop reason the kernel reports for SYNs. fix is a format
// with, in order: the netns phrase, the destination, the source, the port.
type hint struct{ what, why, fix string }

// dropHint knows the drop reasons KERNEL.md saw for dropped SYNs beyond
// netfilter and the neighbour layer.
func dropHint(s *signal.Signal) (hint, bool) {
	switch {
	case s.DropLocation == "ip_error" || s.DropReason == "IP_INNOROUTES" || s.DropReason == "IP_OUTNOROUTES":
		return hint{
			what: "no route (a blackhole or unreachable route)",
			why:  "Routing found no usable route: a blackhole/unreachable/prohibit route or no route at all.",
			fix:  "Check `ip route get %[2]s` in %[1]s and remove the blackhole/unreachable route or add the missing one.",
		}, true
	case s.DropReason == "IP_RPFILTER":
		return hint{
			what: "reverse-path filter (rp_filter)",
			why:  "Strict reverse-path filtering found no route back to the source through the receiving interface.",
			fix:  "In %[1]s make the route back to %[3]s use the receiving interface, or set net.ipv4.conf.<dev>.rp_filter=2 (loose).",
		}, true
	case s.DropReason == "TCP_LISTEN_OVERFLOW":
		return hint{
			what: "the listener's accept queue is full",
			why:  "The listening socket's backlog overflowed: the server does not accept connections fast enough.",
			fix:  "In %[1]s check `ss -ltn 'sport = :%[4]d'` (Recv-Q vs Send-Q): make the server accept faster or raise its listen backlog and net.core.somaxconn.",
		}, true
	case s.DropReason == "OTHERHOST":
		return hint{
			what: "the packet reached a host it was not addressed to",
			why:  "The frame's MAC address pointed at a host that does not own the IP: a stale ARP/neighbour entry, e.g. after an IP moved.",
			fix:  "In %[1]s check `ip neigh show %[2]s` on the sender's side and flush the stale entry (`ip neigh flush to %[2]s`).",
		}, true
	}
	return hint{}, false
}
