package pattern

import (
	"fmt"
	"net/netip"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Causes of a half-open connection.
const (
	// CauseFINUnanswered: the local end closed and its FIN is never
	// acknowledged, with no drop seen on this node.
	CauseFINUnanswered = "fin_unanswered"
	// CauseFINDropped: as above, and a drop of the flow's segments (the
	// FIN or the peer's ACKs) was seen on this node.
	CauseFINDropped = "fin_dropped"
	// CauseDataUnanswered: the local end still writes and nothing answers
	// (also a blackhole; see HalfOpen).
	CauseDataUnanswered = "data_unanswered"
)

// HalfOpen: the peer vanished or a middlebox lost the flow, so one end's
// segments are never acknowledged until the kernel gives up.
//
// FIN case: the local end closed (FIN_WAIT1, CLOSING or LAST_ACK) and
// retransmits its FIN. Diagnosed at the MinRetransmits-th consecutive
// retransmission timeout (default 3, ~1.4 s at the minimum RTO) or at the
// kernel's final FIN_WAIT1 -> CLOSE with ETIMEDOUT, whichever comes first;
// the close folds into an earlier diagnosis. The application never hears of
// it (the socket is orphaned: no error report), so this is the only trace.
//
// Data case: the local end still writes (ESTABLISHED, CLOSE_WAIT) and its
// data retransmits until ESTABLISHED -> CLOSE with ETIMEDOUT (tcp_retries2).
// The same symptoms are Blackhole's; HalfOpen matches them only when no
// drop of the flow was seen on this node and no retransmit failed locally
// (EPERM, EBUSY), with a confidence just below
// Blackhole's, so Blackhole ranks first and the ranking note names this
// reading (the peer vanished) as the alternative.
type HalfOpen struct {
	// MinRetransmits: see Blackhole.MinRetransmits.
	MinRetransmits int
}

func (HalfOpen) ID() diagnosis.Pattern { return diagnosis.PatternHalfOpen }

func (p HalfOpen) min() uint32 { return minRetransmits(p.MinRetransmits) }

func (HalfOpen) Wants(s *signal.Signal) bool {
	switch s.Kind {
	case signal.KindRetransmit:
		return wantRetransmit(s)
	case signal.KindStateChange:
		return s.State == signal.StateClose && (finState(s.OldState) || dataState(s.OldState)) && s.SkErr == ETIMEDOUT
	}
	return false
}

func anyState(s signal.TCPState) bool { return finState(s) || dataState(s) }

func (p HalfOpen) Match(ev *Evidence) (Verdict, Outcome) {
	flow, ok := senderFlow(ev)
	if !ok {
		return Verdict{}, NoMatch
	}
	t := ev.Trigger
	switch {
	case t == nil:
		if e := retransEpisode(ev, flow, anyState); e.count() < p.min() {
			return Verdict{}, NoMatch
		}
	case t.Kind == signal.KindRetransmit && anyState(t.State):
		if t.Retransmits == 0 || t.Retransmits < p.min() && !ev.Diagnosed {
			return Verdict{}, NoMatch
		}
		if !ev.Diagnosed && flowDrops(ev, flow, Netns{}).first == nil {
			// The drop of this retransmit may follow it: wait the grace period.
			return Verdict{}, Defer
		}
	case t.Kind == signal.KindStateChange && t.State == signal.StateClose && anyState(t.OldState) && t.SkErr == ETIMEDOUT:
	default:
		return Verdict{}, NoMatch
	}
	return p.verdict(ev, flow)
}

// closing reports whether the evidence shows the local end had closed.
func closing(ev *Evidence, flow signal.Flow) bool {
	for i := range ev.Socket {
		s := &ev.Socket[i]
		if s.Flow != flow {
			continue
		}
		if s.Kind == signal.KindRetransmit && finState(s.State) || s.Kind == signal.KindStateChange && finState(s.OldState) {
			return true
		}
	}
	return false
}

func (p HalfOpen) verdict(ev *Evidence, flow signal.Flow) (Verdict, Outcome) {
	v, out := p.verdictOf(ev, flow)
	v.Subject = netip.AddrPortFrom(flow.Dst, flow.DstPort)
	return v, out
}

func (p HalfOpen) verdictOf(ev *Evidence, flow signal.Flow) (Verdict, Outcome) {
	if icmpAbout(ev, flow) && !ev.Diagnosed {
		return Verdict{}, NoMatch // answered by ICMP: icmp_error's
	}
	e := retransEpisode(ev, flow, anyState)
	sender := senderNetns(ev, flow)
	drops := flowDrops(ev, flow, sender)
	cl := closeOf(ev, flow, anyState, ETIMEDOUT)
	n := int(e.count())
	c := 0.4 + 0.05*float64(min(max(n-int(p.min()), 0), 4))
	if cl != nil {
		c += 0.2
	}
	if !closing(ev, flow) {
		if drops.first != nil || e.eperm > 0 || e.ebusy > 0 {
			return Verdict{}, NoMatch // a local cause explains it: Blackhole's
		}
		// Just below Blackhole's no_local_drop for the same evidence.
		cd := 0.4 + 0.05*float64(min(max(n-int(p.min()), 0), 4))
		if cl != nil {
			cd += 0.15
		}
		return Verdict{Cause: CauseDataUnanswered, Confidence: clamp(cd - 0.05), Specificity: 1,
			Why: "the peer never acknowledges the data: it vanished or a middlebox lost the flow"}, Match
	}
	if e.eperm > 0 || drops.first != nil {
		c += 0.25
		where := sender
		if drops.first != nil {
			where = NetnsOf(drops.first)
		}
		return Verdict{Cause: CauseFINDropped, Where: where, Confidence: clamp(c), Specificity: 3,
			Why: "the closing end's FIN or the peer's ACKs were dropped on this node"}, Match
	}
	if e.first != nil {
		c += 0.1
	}
	return Verdict{Cause: CauseFINUnanswered, Confidence: clamp(c), Specificity: 2,
		Why: "the closing end's FIN was never acknowledged"}, Match
}

func (p HalfOpen) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	flow, _ := senderFlow(ev)
	e := retransEpisode(ev, flow, anyState)
	sender := senderNetns(ev, flow)
	drops := flowDrops(ev, flow, sender)
	cl := closeOf(ev, flow, anyState, ETIMEDOUT)
	peer := addrPort(flow.Dst, flow.DstPort)
	at := ev.Now
	if ev.Trigger != nil {
		at = ev.Trigger.Time
	} else if e.last != nil {
		at = e.last.Time
	}
	d := diagnosis.Diagnosis{
		Pattern:    diagnosis.PatternHalfOpen,
		Severity:   diagnosis.SeverityWarn,
		ErrorType:  "ETIMEDOUT",
		Flow:       flow,
		Confidence: v.Confidence,
		Layer:      diagnosis.LayerL4,
	}
	switch v.Cause {
	case CauseDataUnanswered:
		d.Severity = diagnosis.SeverityError
		d.Summary = fmt.Sprintf("connection to %s half-open: data never acknowledged, the peer vanished or a middlebox lost the flow", peer)
		d.Details = "The local end keeps retransmitting data and nothing answers, not even a RST; no drop was seen on this node."
		d.Impact = fmt.Sprintf("writes to %s stall, then fail with ETIMEDOUT after tcp_retries2 (about 15 minutes at default sysctls)", peer)
	default:
		d.Summary = fmt.Sprintf("connection to %s half-open: FIN never acknowledged, the peer vanished or a middlebox lost the flow", peer)
		d.Details = "The local end closed the connection and retransmits its FIN; nothing acknowledges it and no RST comes back."
		if v.Cause == CauseFINDropped {
			what := "The FIN was"
			if drops.reverse {
				what = "The peer's ACKs were"
			}
			if drops.first != nil {
				d.Details += fmt.Sprintf(" %s dropped in %s: reason %s at %s.", what,
					NetnsPhrase(ev.Namer, NetnsOf(drops.first)), drops.first.DropReason, orUnknown(drops.first.DropLocation))
				d.Layer = diagnosis.LayerPolicy
				if drops.first.DropReason != "NETFILTER_DROP" {
					d.Layer = diagnosis.LayerL3
				}
			}
			if e.eperm > 0 {
				d.Details += fmt.Sprintf(" %d retransmit(s) failed with EPERM (the local firewall).", e.eperm)
				d.Layer = diagnosis.LayerPolicy
			}
		}
		d.Impact = "the application already closed the socket and is not told: the orphaned socket holds memory and a " +
			"port until tcp_orphan_retries gives up; the peer, if still there, keeps a connection it thinks is open"
	}
	d.Resolution = fmt.Sprintf("Check whether %s is still up and reachable (`ip route get %s`, `ss -tn dst %s` on both ends); "+
		"a stateful firewall, NAT or load balancer that dropped its entry for the flow (idle timeout, restart) "+
		"causes this: enable TCP keepalives shorter than its idle timeout. A lower net.ipv4.tcp_orphan_retries "+
		"frees stuck closing sockets sooner.", peer, addrText(flow.Dst), addrText(flow.Dst))
	if cl != nil {
		d.Details += fmt.Sprintf(" The kernel gave up: %s -> CLOSE with ETIMEDOUT; %s.", cl.OldState, outageText(&e, cl.Time))
		if finState(cl.OldState) {
			d.Details += " No error reached the application (orphaned socket)."
		}
	} else {
		d.Details += fmt.Sprintf(" Diagnosed at %s, before the kernel gives up.", outageText(&e, at))
	}
	var last *signal.Signal
	if e.last != e.first {
		last = e.last
	}
	d.Evidence = evidenceFrom(ev, drops.first, e.first, last, cl)
	d.Source, d.Destination = streamEndpoints(ev, flow, sender, Netns{})
	return d
}
