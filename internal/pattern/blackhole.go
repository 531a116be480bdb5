package pattern

import (
	"fmt"
	"net/netip"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Causes of an established flow whose data goes unanswered (beyond the
// syn_dropped causes it shares: local_output_firewall, netfilter_drop,
// neighbour_unresolved, kernel_drop, no_local_drop).
const (
	// CauseACKDropped: the data arrives but the peer's ACKs are dropped on
	// this node.
	CauseACKDropped = "ack_dropped"
)

// Blackhole: an established connection keeps retransmitting data and
// nothing acknowledges it (tcp_retransmit_skb in ESTABLISHED or CLOSE_WAIT).
// It is diagnosed at the MinRetransmits-th consecutive retransmission
// timeout (default 3, see DefaultMinRetransmits), long before the kernel
// gives up (tcp_retries2=15: ~15 min), and the final ESTABLISHED -> CLOSE
// with ETIMEDOUT folds into it (it alone, with no retransmit seen, also
// matches). Where the segments die comes from a drop of the flow's segments
// on this node, in either direction (netns, hook, reason), or from the
// retransmits' own errors (EPERM: the local firewall; EBUSY: queued behind
// ARP); otherwise the path or the remote host drops them.
//
// Not a blackhole: a single loss recovered (the count restarts at each ACK),
// fast retransmits and tail loss probes (count 0), and flows answered by ICMP
// errors (an ICMP signal about the flow, or a close with EHOSTUNREACH /
// ENETUNREACH from sk_err_soft): those were answered, if only by a router,
// and belong to icmp_error; a close with such an error still folds into a
// blackhole already diagnosed.
type Blackhole struct {
	// MinRetransmits: consecutive retransmission timeouts before diagnosing;
	// <= 0 means DefaultMinRetransmits.
	MinRetransmits int
}

func (Blackhole) ID() diagnosis.Pattern { return diagnosis.PatternBlackhole }

func (p Blackhole) min() uint32 { return minRetransmits(p.MinRetransmits) }

func (Blackhole) Wants(s *signal.Signal) bool {
	switch s.Kind {
	case signal.KindRetransmit:
		return dataState(s.State) && wantRetransmit(s)
	case signal.KindStateChange:
		return s.State == signal.StateClose && dataState(s.OldState) && s.SkErr == ETIMEDOUT
	case signal.KindDrop:
		// A drop of a data segment or an ACK can precede the retransmits.
		return s.DropReason != "NO_SOCKET" && s.DropReason != "TCP_FLAGS" && s.TCPFlags&signal.TCPFlagACK != 0 &&
			s.TCPFlags&(signal.TCPFlagSYN|signal.TCPFlagRST) == 0
	}
	return false
}

func (p Blackhole) Match(ev *Evidence) (Verdict, Outcome) {
	flow, ok := senderFlow(ev)
	if !ok {
		return Verdict{}, NoMatch
	}
	t := ev.Trigger
	switch {
	case t == nil:
		e := retransEpisode(ev, flow, dataState)
		if e.count() < p.min() || icmpAbout(ev, flow) {
			return Verdict{}, NoMatch
		}
	case t.Kind == signal.KindRetransmit && dataState(t.State):
		if t.Retransmits < p.min() && !ev.Diagnosed {
			return Verdict{}, NoMatch
		}
		if t.Retransmits == 0 || icmpAbout(ev, flow) && !ev.Diagnosed {
			return Verdict{}, NoMatch
		}
		v := p.verdict(ev, flow)
		// The drop of this very retransmit reaches the ring buffer just
		// after it: with nothing seen yet, wait the grace period for it.
		if v.Cause == CauseNoLocalDrop && !ev.Diagnosed {
			return Verdict{}, Defer
		}
		return v, Match
	case t.Kind == signal.KindStateChange && t.State == signal.StateClose && dataState(t.OldState):
		switch t.SkErr {
		case ETIMEDOUT:
			if icmpAbout(ev, flow) && !ev.Diagnosed {
				return Verdict{}, NoMatch
			}
		case EHOSTUNREACH, 101: // ENETUNREACH
			if !ev.Diagnosed {
				return Verdict{}, NoMatch
			}
		default:
			return Verdict{}, NoMatch
		}
	default:
		return Verdict{}, NoMatch
	}
	return p.verdict(ev, flow), Match
}

func senderNetns(ev *Evidence, flow signal.Flow) Netns {
	for i := len(ev.Socket) - 1; i >= 0; i-- {
		if s := &ev.Socket[i]; s.Flow == flow {
			return NetnsOf(s)
		}
	}
	return Netns{}
}

func (p Blackhole) verdict(ev *Evidence, flow signal.Flow) Verdict {
	v := p.verdictOf(ev, flow)
	v.Subject = netip.AddrPortFrom(flow.Dst, flow.DstPort)
	return v
}

func (p Blackhole) verdictOf(ev *Evidence, flow signal.Flow) Verdict {
	e := retransEpisode(ev, flow, dataState)
	sender := senderNetns(ev, flow)
	d := flowDrops(ev, flow, sender)
	n := int(e.count())
	c := 0.4 + 0.05*float64(min(max(n-int(p.min()), 0), 4))
	if closeOf(ev, flow, dataState, ETIMEDOUT, EHOSTUNREACH, 101) != nil {
		c += 0.15
	}
	switch {
	case e.eperm > 0 || d.localNF:
		c += 0.3
		where := sender
		if d.localNF {
			where = NetnsOf(d.first)
		}
		return Verdict{Cause: CauseLocalOutputFirewall, Where: where, Confidence: clamp(c), Specificity: 3,
			Why: "the sender's own firewall refuses to send the segments"}
	case d.first != nil && d.first.DropReason == "NETFILTER_DROP":
		c += 0.3
		cause := CauseNetfilterDrop
		why := "a netfilter rule on this node was seen dropping the flow's data"
		if d.reverse {
			cause, why = CauseACKDropped, "a netfilter rule on this node was seen dropping the peer's ACKs"
		}
		return Verdict{Cause: cause, Where: NetnsOf(d.first), Confidence: clamp(c), Specificity: 3, Why: why}
	case e.ebusy > 0 || d.neigh:
		c += 0.25
		return Verdict{Cause: CauseNeighbourUnresolved, Where: sender, Confidence: clamp(c), Specificity: 2,
			Why: "the segments never left: the next hop's address no longer resolves"}
	case d.first != nil:
		c += 0.25
		return Verdict{Cause: CauseKernelDrop, Where: NetnsOf(d.first), Confidence: clamp(c), Specificity: 2,
			Why: "the kernel on this node was seen dropping the flow's segments"}
	}
	return Verdict{Cause: CauseNoLocalDrop, Confidence: clamp(c), Specificity: 1,
		Why: "the data went unanswered and no drop was seen on this node"}
}

func (p Blackhole) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	flow, _ := senderFlow(ev)
	e := retransEpisode(ev, flow, dataState)
	sender := senderNetns(ev, flow)
	drops := flowDrops(ev, flow, sender)
	cl := closeOf(ev, flow, dataState, ETIMEDOUT, EHOSTUNREACH, 101)
	peer := addrPort(flow.Dst, flow.DstPort)
	where := NetnsPhrase(ev.Namer, v.Where)
	at := ev.Now
	if ev.Trigger != nil {
		at = ev.Trigger.Time
	} else if e.last != nil {
		at = e.last.Time
	}
	d := diagnosis.Diagnosis{
		Pattern:    diagnosis.PatternBlackhole,
		Severity:   diagnosis.SeverityError,
		ErrorType:  "ETIMEDOUT",
		Flow:       flow,
		Confidence: v.Confidence,
		Impact: fmt.Sprintf("the connection to %s is stalled: writes block, then fail with ETIMEDOUT after "+
			"tcp_retries2 (about 15 minutes at default sysctls) unless the application times out first", peer),
	}
	drop := drops.first
	switch v.Cause {
	case CauseLocalOutputFirewall:
		d.Layer = diagnosis.LayerPolicy
		d.Summary = fmt.Sprintf("data to %s dropped by the sender's own firewall in %s", peer, where)
		d.Details = fmt.Sprintf("The sender's %s does not let the flow's segments out", where)
		if e.eperm > 0 {
			d.Details += fmt.Sprintf(": %d retransmit(s) failed with EPERM", e.eperm)
		}
		d.Details += "."
		d.Resolution = fmt.Sprintf("Find the DROP/REJECT rule matching this flow in the output path of %s "+
			"(`nft list ruleset` or `iptables-save` there); a rule added while connections were open also "+
			"stalls established flows, not only new ones.", where)
	case CauseNetfilterDrop, CauseACKDropped:
		d.Layer = diagnosis.LayerPolicy
		what := "data"
		if v.Cause == CauseACKDropped {
			what = "the peer's ACKs"
		}
		d.Summary = fmt.Sprintf("established flow to %s stalled: %s dropped by a netfilter rule in %s (%s)",
			peer, what, where, orUnknown(drop.DropLocation))
		d.Details = fmt.Sprintf("netfilter in %s dropped %s of this established connection at %s", where, what,
			orUnknown(drop.DropLocation))
		if drop.Dev != "" {
			d.Details += " on dev " + drop.Dev
		}
		d.Details += fmt.Sprintf(" (%d drop(s) seen), so the sender retransmits without an answer.", drops.n)
		match := flowText(flow)
		if v.Cause == CauseACKDropped {
			match = flowText(flow.Reverse())
		}
		d.Resolution = fmt.Sprintf("Find the DROP rule in %s matching %s (`nft list ruleset` / `iptables-save` "+
			"there, with counters) and remove or narrow it; stateful rules that drop ESTABLISHED traffic after a "+
			"conntrack entry expired or was flushed fail this way.", where, match)
	case CauseNeighbourUnresolved:
		d.Layer = diagnosis.LayerL2
		d.Summary = fmt.Sprintf("established flow to %s stalled: the next hop no longer resolves (ARP/NDP) in %s", peer, where)
		d.Details = "The retransmits wait for the next hop's link-layer address"
		if e.ebusy > 0 {
			d.Details += fmt.Sprintf(" (%d returned EBUSY)", e.ebusy)
		}
		if drop != nil {
			d.Details += fmt.Sprintf("; a segment was dropped with %s", drop.DropReason)
		}
		d.Details += ": the peer or the gateway towards it went away."
		d.Resolution = fmt.Sprintf("Check that %s (or the gateway towards it) is still up on that link "+
			"(`ip neigh show`, `ip route get %s`); a peer host or pod that was removed fails this way.",
			addrText(flow.Dst), addrText(flow.Dst))
	case CauseKernelDrop:
		d.Layer = diagnosis.LayerL3
		d.Summary = fmt.Sprintf("established flow to %s stalled: segments dropped by the kernel in %s (%s)", peer, where, drop.DropReason)
		d.Details = fmt.Sprintf("The kernel in %s freed the flow's segments with drop reason %s at %s.", where,
			drop.DropReason, orUnknown(drop.DropLocation))
		d.Resolution = fmt.Sprintf("Look up drop reason %s (include/net/dropreason-core.h) and fix its cause in %s.",
			drop.DropReason, where)
		if h, ok := dropHint(drop); ok {
			d.Summary = fmt.Sprintf("established flow to %s stalled: %s (in %s)", peer, h.what, where)
			d.Details += " " + h.why
			d.Resolution = fmt.Sprintf(h.fix, where, addrText(flow.Dst), addrText(flow.Src), flow.DstPort)
		}
	default:
		d.Layer = diagnosis.LayerL3
		d.Summary = fmt.Sprintf("established flow to %s black-holed: data retransmitted without answer, no local drop seen", peer)
		if e.first == nil && cl != nil {
			// No retransmit: a keepalive or TCP_USER_TIMEOUT expiry, or
			// retransmits lost before the correlator saw them.
			d.Summary = fmt.Sprintf("established flow to %s timed out: the peer stopped answering, no local drop seen", peer)
		}
		d.Details = "No drop of this flow's segments was seen on this node: the path or the remote host drops them " +
			"(a firewall or conntrack entry that expired on a middlebox, a route change, or the peer host vanished)."
		d.Resolution = fmt.Sprintf("Check the path to %s (`ip route get %s`, `traceroute -T -p %d %s`), any stateful "+
			"middlebox or NAT between the ends (idle timeouts: enable TCP keepalives shorter than them) and whether "+
			"the remote host is still up.", addrText(flow.Dst), addrText(flow.Dst), flow.DstPort, addrText(flow.Dst))
	}
	if cl != nil {
		d.ErrorType = ErrnoName(cl.SkErr)
		d.Details += fmt.Sprintf(" Diagnosed when the kernel gave up (%s -> CLOSE with %s); %s.", cl.OldState,
			ErrnoName(cl.SkErr), outageText(&e, cl.Time))
	} else {
		d.Details += fmt.Sprintf(" Diagnosed at %s.", outageText(&e, at))
	}
	var last *signal.Signal
	if e.last != e.first {
		last = e.last
	}
	d.Evidence = evidenceFrom(ev, drop, e.first, last, cl)
	server := Netns{}
	if v.Cause == CauseNetfilterDrop || v.Cause == CauseACKDropped || v.Cause == CauseKernelDrop {
		server = v.Where
		if v.Where.SameAs(sender) {
			server = Netns{}
		}
	}
	d.Source, d.Destination = streamEndpoints(ev, flow, sender, server)
	return d
}
