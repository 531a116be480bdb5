package pattern

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Causes of a refused connection.
const (
	CauseNoListener     = "no_listener"
	CauseFirewallReject = "firewall_reject"
	CauseRemote         = "remote"
)

// ConnectionRefused: the client's SYN was answered with a RST
// (tcp_receive_reset in SYN_SENT and/or SYN_SENT -> CLOSE with sk_err=111).
// Who refused is told from server-side evidence on this node: a SYN dropped
// with NO_SOCKET and a RST sent by the stack mean no listener; a SYN dropped
// by netfilter with no RST from the stack means a REJECT rule (nft/iptables
// send their RST without tcp_send_reset). It decides at the client's close,
// which comes after the server's signals; a RST without a close is decided on
// a Tick after the correlator's grace period.
type ConnectionRefused struct{}

func (ConnectionRefused) ID() diagnosis.Pattern { return diagnosis.PatternConnectionRefused }

func (ConnectionRefused) Wants(s *signal.Signal) bool {
	switch s.Kind {
	case signal.KindStateChange:
		return ClientClose(s) && s.SkErr == ECONNREFUSED
	case signal.KindResetReceived:
		return s.State == signal.StateSynSent
	case signal.KindDrop:
		return IsSYN(s.TCPFlags)
	case signal.KindResetSent:
		return ResetForSYN(s)
	}
	return false
}

func resetInSynSent(s *signal.Signal) bool {
	return s.Kind == signal.KindResetReceived && s.State == signal.StateSynSent
}

func (p ConnectionRefused) Match(ev *Evidence) (Verdict, Outcome) {
	t := ev.Trigger
	switch {
	case t == nil:
		// Tick after a deferred RST: decide now if the close never came.
		rst := ev.SocketSignal(resetInSynSent)
		if rst == nil || ev.SocketSignal(ClientClose) != nil {
			return Verdict{}, NoMatch
		}
	case resetInSynSent(t):
		if ev.SocketSignal(ClientClose) == nil {
			return Verdict{}, Defer
		}
		return Verdict{}, NoMatch
	case ClientClose(t) && t.SkErr == ECONNREFUSED:
	default:
		return Verdict{}, NoMatch
	}
	return p.verdict(ev), Match
}

type refusedFacts struct {
	rstRecv, close, noSock, nfDrop, rstSent *signal.Signal
}

func (ConnectionRefused) facts(ev *Evidence) refusedFacts {
	f := refusedFacts{
		rstRecv: ev.SocketSignal(resetInSynSent),
		close:   ev.SocketSignal(func(s *signal.Signal) bool { return ClientClose(s) && s.SkErr == ECONNREFUSED }),
		noSock:  ev.FirstSynDrop("NO_SOCKET"),
		nfDrop:  ev.FirstSynDrop("NETFILTER_DROP"),
		rstSent: ev.ResetSent(),
	}
	if f.close == nil && ev.Trigger != nil && ClientClose(ev.Trigger) && ev.Trigger.SkErr == ECONNREFUSED {
		f.close = ev.Trigger
	}
	return f
}

func (p ConnectionRefused) verdict(ev *Evidence) Verdict {
	f := p.facts(ev)
	// Client side: the refusal itself.
	c := 0.0
	if f.rstRecv != nil {
		c += 0.3
	}
	if f.close != nil {
		c += 0.25
	}
	switch {
	case f.noSock != nil || (f.rstSent != nil && f.nfDrop == nil):
		where := Netns{}
		if f.noSock != nil {
			c += 0.25
			where = NetnsOf(f.noSock)
		}
		if f.rstSent != nil {
			c += 0.15
			if !where.Known() {
				where = NetnsOf(f.rstSent)
			}
		}
		return Verdict{Cause: CauseNoListener, Where: where, Confidence: clamp(c), Specificity: 3,
			Why: "the server's stack itself answered the SYN with a RST (no socket)"}
	case f.nfDrop != nil:
		// The rule's own RST bypasses tcp_send_reset, so its absence supports a REJECT.
		c += 0.3
		if f.rstSent == nil {
			c += 0.05
		}
		return Verdict{Cause: CauseFirewallReject, Where: NetnsOf(f.nfDrop), Confidence: clamp(c), Specificity: 3,
			Why: "a netfilter rule consumed the SYN and the refusal came from it", Need: NeedRule}
	}
	return Verdict{Cause: CauseRemote, Confidence: clamp(c), Specificity: 1,
		Why: "the client received a RST for its SYN"}
}

func (p ConnectionRefused) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	f := p.facts(ev)
	dst := flowDst(ev)
	where := NetnsPhrase(ev.Namer, v.Where)
	d := diagnosis.Diagnosis{
		Pattern:    diagnosis.PatternConnectionRefused,
		Severity:   diagnosis.SeverityError,
		ErrorType:  "ECONNREFUSED",
		Flow:       ev.Flow,
		Evidence:   evidenceFrom(ev, f.noSock, f.nfDrop, f.rstSent, f.rstRecv, f.close),
		Confidence: v.Confidence,
		Impact: fmt.Sprintf("connect() to %s fails at once with ECONNREFUSED; the client cannot use this service",
			dst),
	}
	local := v.Where.Known() && ev.Client.Known() && v.Where.SameAs(ev.Client)
	switch v.Cause {
	case CauseNoListener:
		d.Layer = diagnosis.LayerL4
		d.Summary = fmt.Sprintf("connection to %s refused: no process listens on port %d in %s", dst, ev.Flow.DstPort, where)
		d.Details = fmt.Sprintf("The SYN reached %s, found no listening socket for port %d and the kernel answered with a RST.", where, ev.Flow.DstPort)
		d.Resolution = fmt.Sprintf("Start the service that should listen on port %d in %s, or fix the port the client uses; "+
			"check with `ss -ltnp 'sport = :%d'` inside that netns (a listener bound to another address than %s also refuses).",
			ev.Flow.DstPort, where, ev.Flow.DstPort, addrText(ev.Flow.Dst))
	case CauseFirewallReject:
		d.Layer = diagnosis.LayerPolicy
		chain := "input"
		if local {
			chain = "output"
		}
		d.Summary = fmt.Sprintf("connection to %s refused: a firewall REJECT (tcp-reset) in %s refused it", dst, where)
		d.Details = fmt.Sprintf("A netfilter rule in %s (%s) consumed the SYN and no RST came from the TCP stack, "+
			"so the RST the client got was the rule's REJECT with tcp-reset.", where, orUnknown(f.nfDrop.DropLocation))
		if local {
			d.Details += " The rule sits in the client's own netns (output path)."
		}
		d.Resolution = fmt.Sprintf("Find the REJECT rule matching tcp dport %d in the %s path of %s (`nft list ruleset` or "+
			"`iptables-save` in that netns) and remove or narrow it, or allow %s.",
			ev.Flow.DstPort, chain, where, addrText(ev.Flow.Src))
	default:
		d.Layer = diagnosis.LayerL4
		d.Summary = fmt.Sprintf("connection to %s refused by the remote host: no listener or a firewall REJECT", dst)
		d.Details = "Only the client side was seen: the other end is not on this node, so a closed port cannot be " +
			"told apart from a REJECT rule."
		d.Resolution = fmt.Sprintf("On %s check that a process listens on port %d (`ss -ltnp`) and that no firewall rule "+
			"REJECTs it (`nft list ruleset` / `iptables-save`); check any NAT or load balancer on the path.",
			addrText(ev.Flow.Dst), ev.Flow.DstPort)
	}
	if r := ruleOf(ev); r != nil && v.Cause == CauseFirewallReject {
		d.Summary = fmt.Sprintf("connection to %s refused by %s in %s", dst, r.Phrase(), where)
		d.Resolution = fmt.Sprintf("In %s %s, or allow %s.", where, r.Fix(), addrText(ev.Flow.Src))
		d.Evidence = appendRule(ev, d.Evidence)
	}
	d.Details += " Confidence from: " + f.basis() + "." + ev.Facts.missingText()
	server := v.Where
	if local && v.Cause == CauseFirewallReject {
		server = Netns{} // the rule is on the client's side; the server is unknown
	}
	d.Source, d.Destination = endpoints(ev, server)
	return d
}

func (f refusedFacts) basis() string {
	var parts []string
	add := func(s *signal.Signal, what string) {
		if s != nil {
			parts = append(parts, what)
		}
	}
	add(f.rstRecv, "RST received in SYN_SENT")
	add(f.close, "close with ECONNREFUSED")
	add(f.noSock, "SYN dropped with NO_SOCKET")
	add(f.nfDrop, "SYN dropped by netfilter")
	if f.rstSent != nil && f.rstSent.ResetReason != "" {
		parts = append(parts, "RST sent by the server's stack (reason "+f.rstSent.ResetReason+")")
	} else {
		add(f.rstSent, "RST sent by the server's stack")
	}
	return strings.Join(parts, ", ")
}

func flowDst(ev *Evidence) string {
	if !ev.Flow.Dst.IsValid() {
		return fmt.Sprintf("port %d", ev.Flow.DstPort)
	}
	return netip.AddrPortFrom(ev.Flow.Dst, ev.Flow.DstPort).String()
}
