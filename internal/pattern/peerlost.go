package pattern

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Causes of a connection its peer no longer knows.
const (
	// CauseNoSocket: a segment of an established flow reached a netns on
	// this node that has no socket for it (kfree_skb NO_SOCKET, RST sent
	// with reason NO_SOCKET): the process or the pod restarted, crashed or
	// was replaced by another with the same IP.
	CauseNoSocket = "no_socket"
	// CauseNewListener: the segment reached a listening socket on the same
	// port (kfree_skb TCP_FLAGS): the peer restarted and listens again.
	CauseNewListener = "new_listener"
	// CauseResetAfterOutage: the peer is not on this node; the flow's data
	// went unanswered and then a RST came back: the peer came back without
	// the connection.
	CauseResetAfterOutage = "reset_after_outage"
	// CauseContainerTerminated: the peer's kernel reset the connection
	// (a close with unread data, or an orphan answering data after its
	// FIN) as the cluster reports the peer pod's container stopped: it was
	// killed (OOM, crash) in a pod whose network namespace stays.
	CauseContainerTerminated = "container_terminated"
)

// Defaults of PeerLostState's wait for a container termination.
const (
	// DefaultLifecycleWait: the kubelet reports a termination 1-2 s after
	// the container died; the API and the informers add a little.
	DefaultLifecycleWait = 5 * time.Second
	// DefaultLifecycleTolerance: finishedAt has a resolution of one second
	// (RFC 3339 in the API) and the node's and the API's clocks differ a
	// little.
	DefaultLifecycleTolerance = 2 * time.Second
	// orphanLinger: how long before a RST an orphan may have sent its FIN
	// (tcp_fin_timeout, 60 s by default, keeps it in FIN_WAIT2): a RST
	// ending a connection the peer had closed may follow its
	// termination by that much.
	orphanLinger = 60 * time.Second
)

// abortReasons are the sk_rst_reason names of resets an application or the
// local stack sends on purpose on a socket it has (close with unread data,
// SO_LINGER 0, data after close, memory pressure, keepalive timeout): the
// peer's ECONNRESET is then the application's doing, not lost state.
var abortReasons = []string{
	"TCP_ABORT_ON_CLOSE", "TCP_ABORT_ON_LINGER", "TCP_ABORT_ON_MEMORY", "TCP_ABORT_ON_DATA",
	"TCP_STATE", "TCP_KEEPALIVE_TIMEOUT", "TCP_DISCONNECT_WITH_DATA",
}

func abortReset(s *signal.Signal) bool {
	if s.Kind != signal.KindResetSent {
		return false
	}
	// An active reset has no triggering segment: the probe reports flags 0.
	if s.TCPFlags == 0 {
		return true
	}
	for _, r := range abortReasons {
		if s.ResetReason == r {
			return true
		}
	}
	return false
}

// midFlow: a segment of an established flow (ACK set, neither SYN nor RST)
// that is not a FIN: a FIN meeting no socket is the end of a connection
// whose other end already finished (its TIME_WAIT gone: expired,
// recycled, or never kept when the TIME_WAIT table overflowed), measured
// in the lab's normal-close soak.
func midFlow(flags uint8) bool {
	return flags&signal.TCPFlagACK != 0 && flags&(signal.TCPFlagSYN|signal.TCPFlagRST|signal.TCPFlagFIN) == 0
}

// lostDrop: a mid-flow segment dropped because nobody has its connection.
func lostDrop(s *signal.Signal) bool {
	return s.Kind == signal.KindDrop && midFlow(s.TCPFlags) && (s.DropReason == "NO_SOCKET" || s.DropReason == "TCP_FLAGS")
}

// lostReset: a RST the stack sent in answer to a mid-flow segment it had no
// connection for (pre-6.10 kernels give no reason: accepted).
func lostReset(s *signal.Signal) bool {
	// A listener's RST carries its own unbound addresses (0.0.0.0): not
	// this flow's tuple, so it is left to the TCP_FLAGS drop.
	return s.Kind == signal.KindResetSent && midFlow(s.TCPFlags) && !s.Flow.Src.IsUnspecified() && s.Flow.Src.IsValid() &&
		(s.ResetReason == "NO_SOCKET" || s.ResetReason == "TCP_FLAGS" || s.ResetReason == "")
}

// peerReset: a RST received by a connection in use (ESTABLISHED).
func peerReset(s *signal.Signal) bool {
	return s.Kind == signal.KindResetReceived && s.State == signal.StateEstablished
}

// resetClose: an established socket closed because of a RST.
func resetClose(s *signal.Signal) bool {
	return s.Kind == signal.KindStateChange && s.State == signal.StateClose && s.OldState == signal.StateEstablished &&
		s.SkErr == ECONNRESET
}

// endingReset: a RST that ends a connection one side had already closed
// (received in CLOSE_WAIT, LAST_ACK, FIN_WAIT*, CLOSING; the close that
// follows with EPIPE or ECONNRESET): ordinary teardown, whatever the other
// side lost.
func endingReset(s *signal.Signal) bool {
	switch s.Kind {
	case signal.KindResetReceived:
		return s.State == signal.StateCloseWait || s.State == signal.StateLastAck || s.State == signal.StateClosing ||
			s.State == signal.StateFinWait1 || s.State == signal.StateFinWait2
	case signal.KindStateChange:
		return s.State == signal.StateClose && s.OldState != signal.StateEstablished && s.OldState != signal.StateSynSent &&
			(s.SkErr == ECONNRESET || s.SkErr == EPIPE)
	}
	return false
}

// PeerLostState: an established connection answered with a RST because the
// other end no longer has it (the seed's "pod restart connection loss"), and
// orphan segments: ACKs or data for a flow the receiver has no socket for.
//
// Decision rule. The side that lost the state is seen on this node by a
// mid-flow segment (ACK set, no SYN/RST) dropped with NO_SOCKET (no socket
// at all) or TCP_FLAGS (a new listener on the port answers an old flow),
// and/or by the RST its stack sent in answer with reason NO_SOCKET or
// TCP_FLAGS. The side that still had the connection shows a RST received
// in ESTABLISHED and ESTABLISHED -> CLOSE with ECONNRESET.
// Server-side evidence defers (the client's RST and close follow within
// the grace period) and matches then, with the client's evidence, or alone
// for orphan segments from a remote peer: then both the NO_SOCKET/TCP_FLAGS
// drop and the RST sent for it are required, and a late FIN is not enough
// (a half-closed peer's FIN after tcp_fin_timeout removed the FIN_WAIT2
// socket). When the lost side is remote, a
// RST received is lost state only after the flow's data had gone
// unanswered (timer-driven retransmits): the peer went away and came back
// without the connection.
//
// Not lost state (NoMatch), and why: any RST this node sent on purpose on
// the flow (an active reset: no triggering segment, or reasons
// TCP_ABORT_ON_CLOSE for a close with unread data, TCP_STATE for SO_LINGER
// 0, TCP_ABORT_ON_DATA, ...): the peer's ECONNRESET and the NO_SOCKET
// answers to its late segments are the application's own abort, an
// application-level choice or bug, not a failure of the network or of the
// peer's lifecycle (the kernel may trace that RST after the ones it causes,
// so a decision at the keeper's close waits the grace period for it); a
// RST ending a connection one side had already closed (received in
// CLOSE_WAIT, LAST_ACK, FIN_WAIT*; FIN segments meeting no socket), which
// is ordinary teardown; and a bare RST received in ESTABLISHED with nothing else (a remote application's abort looks exactly like it:
// ordinary teardown noise, dozens per second on a busy server).
//
// Container killed (cause container_terminated), only with Restarts: a
// reset the rules above leave alone (an abort by the peer's kernel, a RST
// in ESTABLISHED or CLOSE_WAIT, the close with ECONNRESET or EPIPE it
// causes) from a peer that is a pod is what a container killed inside a
// pod that keeps its network namespace looks like: its kernel closes the
// sockets, with a RST when data was unread, else with a FIN after which
// the client's next request meets the orphan and gets a RST. It is
// diagnosed when, and only when, the cluster reports that a container of
// that pod stopped (finishedAt) within Tolerance of the reset, or, for a
// reset ending a connection the peer had closed, up to tcp_fin_timeout
// before it. The kubelet reports it a second or two late, so the pattern
// waits for it up to Wait after the reset (Defer with Until); without the
// event by then, it is an application's abort as above: no diagnosis.
//
// The flow's age is unknown: the probes send nothing for a connection that
// is established successfully; the diagnosis says so, or gives the earliest
// signal seen of the flow as a lower bound.
type PeerLostState struct {
	// Restarts: the cluster's pods and their lifecycle; nil (no cluster
	// context, or one without lifecycle) leaves resets alone, without wait.
	Restarts PodLifecycle
	// Wait: how long after a reset the cluster's report is awaited;
	// <= 0 means DefaultLifecycleWait.
	Wait time.Duration
	// Tolerance: how far a termination may be from the reset;
	// <= 0 means DefaultLifecycleTolerance.
	Tolerance time.Duration
}

func (PeerLostState) ID() diagnosis.Pattern { return diagnosis.PatternPeerLostState }

func (p PeerLostState) Wants(s *signal.Signal) bool {
	switch s.Kind {
	case signal.KindResetReceived:
		// From a pod, a reset may be its container's end (see killFacts).
		return p.Restarts != nil && keeperReset(s) && p.Restarts.HoldsPod(s.Flow.Dst, s.Time)
	case signal.KindResetSent:
		// Active resets are wanted too: they rule out the segments they
		// cause; an orphan's, from a pod, may be its container's end.
		return lostReset(s) || abortReset(s) ||
			p.Restarts != nil && orphanReset(s) && p.Restarts.HoldsPod(s.Flow.Src, s.Time)
	case signal.KindDrop:
		return lostDrop(s)
	case signal.KindRetransmit:
		// Kept so that a later RST from a remote peer is seen to follow an outage.
		return dataState(s.State) && wantRetransmit(s)
	}
	return false
}

type lostFacts struct {
	drop, rstSent, rstRecv, close, abort *signal.Signal
	ending                               bool // a RST ended a connection already closing
	episode                              episode
	listener                             bool
	flow                                 signal.Flow // the side that kept the connection -> the side that lost it
}

func (PeerLostState) facts(ev *Evidence) lostFacts {
	var f lostFacts
	for i := range ev.Packet {
		s := &ev.Packet[i]
		switch {
		case abortReset(s):
			if f.abort == nil {
				f.abort = s
			}
		case lostDrop(s):
			if f.drop == nil || s.DropReason == "TCP_FLAGS" && f.drop.DropReason != "TCP_FLAGS" {
				f.drop = s
			}
		case lostReset(s):
			if f.rstSent == nil {
				f.rstSent = s
			}
		}
	}
	for i := range ev.Socket {
		s := &ev.Socket[i]
		switch {
		case endingReset(s):
			f.ending = true
		case peerReset(s) && f.rstRecv == nil:
			f.rstRecv = s
		case resetClose(s):
			f.close = s
		}
	}
	if t := ev.Trigger; t != nil && resetClose(t) {
		f.close = t
	} else if t != nil && endingReset(t) {
		f.ending = true
	}
	f.listener = f.drop != nil && f.drop.DropReason == "TCP_FLAGS" ||
		f.rstSent != nil && f.rstSent.ResetReason == "TCP_FLAGS"
	switch {
	case f.drop != nil:
		f.flow = f.drop.Flow // the segment: keeper -> lost side
	case f.rstSent != nil:
		f.flow = f.rstSent.Flow.Reverse() // the RST's own direction: lost side -> keeper
	case f.rstRecv != nil:
		f.flow = f.rstRecv.Flow
	case f.close != nil:
		f.flow = f.close.Flow
	default:
		f.flow = ev.Flow
	}
	// The RST may have rotated out of the kept socket signals; the close
	// with ECONNRESET says it came.
	if f.rstRecv != nil {
		f.episode = retransEpisode(ev, f.rstRecv.Flow, anyState)
	} else if f.close != nil {
		f.episode = retransEpisode(ev, f.close.Flow, anyState)
	}
	return f
}

func (f *lostFacts) resetTime() time.Time {
	if f.rstRecv != nil {
		return f.rstRecv.Time
	}
	return f.close.Time
}

// orphan: with the keeper not on this node, the lost side alone must show
// the kernel answering a data segment with a RST, and dropping it: one
// without the other is not enough. Not a late FIN (a half-closed peer sends
// one after tcp_fin_timeout removed our FIN_WAIT2), and not a pure ACK:
// after an ordinary close a peer's duplicate ACK (its TIME_WAIT answering a
// retransmitted FIN) meets no socket and draws the same RST and drop,
// dozens of times a minute on a busy node (seen in the success soak), while
// a peer that lost its state is found by the data still sent to it.
func (f *lostFacts) orphan() bool {
	return f.drop != nil && f.rstSent != nil && f.drop.TCPFlags&signal.TCPFlagFIN == 0 &&
		f.drop.TCPFlags&signal.TCPFlagPSH != 0
}

// local: the lost side was seen on this node.
func (f *lostFacts) local() bool { return f.drop != nil || f.rstSent != nil }

func (p PeerLostState) Match(ev *Evidence) (Verdict, Outcome) {
	v, out := p.match(ev)
	if out == NoMatch && p.Restarts != nil {
		return p.killed(ev)
	}
	return v, out
}

func (p PeerLostState) match(ev *Evidence) (Verdict, Outcome) {
	t := ev.Trigger
	switch {
	case t == nil:
	case lostDrop(t), lostReset(t), peerReset(t):
		if ev.Diagnosed {
			break
		}
		// The keeper's RST and close follow: decide on them or after the grace.
		if f := p.facts(ev); f.abort == nil && (f.local() || f.episode.first != nil) {
			return Verdict{}, Defer
		}
		return Verdict{}, NoMatch
	case resetClose(t):
		// The kernel may trace this node's own abort RST after the RST and
		// the close it caused (tcp_disconnect unhashes the socket before
		// sending its RST; a segment in between meets the listener: measured
		// 10-40 us later in the lab). Wait the grace period for it, unless
		// this close is the connection's last signal the correlator keeps
		// (on its own orientation, Evidence.Flow).
		if f := p.facts(ev); !ev.Diagnosed && f.local() && t.Flow != ev.Flow && f.abort == nil && !f.ending {
			return Verdict{}, Defer
		}
	case endingReset(t):
		return Verdict{}, NoMatch
	default:
		return Verdict{}, NoMatch
	}
	f := p.facts(ev)
	if f.abort != nil || f.ending {
		return Verdict{}, NoMatch
	}
	keeper := f.rstRecv != nil || f.close != nil
	switch {
	case !f.local() && (!keeper || f.episode.first == nil):
		return Verdict{}, NoMatch
	case f.local() && !keeper && !f.orphan():
		return Verdict{}, NoMatch
	}
	return p.verdict(ev, &f), Match
}

func (p PeerLostState) verdict(_ *Evidence, f *lostFacts) Verdict {
	v := p.verdictOf(f)
	v.Subject = netip.AddrPortFrom(f.flow.Dst, f.flow.DstPort)
	return v
}

func (PeerLostState) verdictOf(f *lostFacts) Verdict {
	// The reset (received, or implied by the close's ECONNRESET), then the close.
	c := 0.0
	if f.rstRecv != nil || f.close != nil {
		c += 0.25
	}
	if f.rstRecv != nil && f.close != nil {
		c += 0.1
	}
	if !f.local() {
		c += 0.15 + 0.05*float64(min(f.episode.count(), 4))
		return Verdict{Cause: CauseResetAfterOutage, Confidence: clamp(c), Specificity: 1,
			Why: "the peer answered with a RST after a period without answer: it came back without the connection"}
	}
	where := Netns{}
	if f.drop != nil {
		c += 0.35
		where = NetnsOf(f.drop)
	}
	if f.rstSent != nil {
		c += 0.2
		if !where.Known() {
			where = NetnsOf(f.rstSent)
		}
	}
	if f.listener {
		return Verdict{Cause: CauseNewListener, Where: where, Confidence: clamp(c), Specificity: 3,
			Why: "a new listening socket on the peer's port answered a segment of the old connection"}
	}
	return Verdict{Cause: CauseNoSocket, Where: where, Confidence: clamp(c), Specificity: 3,
		Why: "the peer's stack has no socket for a segment of an established connection"}
}

func (p PeerLostState) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	if v.Cause == CauseContainerTerminated {
		return p.diagnoseKilled(ev, v)
	}
	f := p.facts(ev)
	flow := f.flow
	lost := addrPort(flow.Dst, flow.DstPort)
	where := NetnsPhrase(ev.Namer, v.Where)
	d := diagnosis.Diagnosis{
		Pattern:    diagnosis.PatternPeerLostState,
		Severity:   diagnosis.SeverityError,
		ErrorType:  "ECONNRESET",
		Flow:       flow,
		Confidence: v.Confidence,
		Layer:      diagnosis.LayerL4,
		Impact:     lostImpact(lost),
	}
	switch v.Cause {
	case CauseNewListener:
		d.Summary = fmt.Sprintf("connection to %s reset: the peer restarted and listens again in %s, the old connection is gone", lost, where)
		d.Details = fmt.Sprintf("A segment of the established connection reached a listening socket on port %d in %s "+
			"(drop reason TCP_FLAGS): the process restarted and listens again but has no socket for this connection.",
			flow.DstPort, where)
	case CauseResetAfterOutage:
		d.Summary = fmt.Sprintf("connection to %s reset after its data went unanswered: the peer came back without the connection", lost)
		d.Details = fmt.Sprintf("The local end retransmitted (%s) and then received a RST: the peer was unreachable "+
			"(restarting, moving, failing over) and came back without the connection. It is not on this node, so its "+
			"side is not seen.", outageText(&f.episode, f.resetTime()))
	default:
		d.Summary = fmt.Sprintf("connection to %s reset: the peer in %s has no socket for it (restarted, crashed or replaced)", lost, where)
		d.Details = fmt.Sprintf("A segment of the established connection reached %s, which has no socket for it "+
			"(NO_SOCKET), and its kernel answered with a RST: the peer process or pod restarted, crashed, or another "+
			"one now has the IP.", where)
	}
	if f.rstRecv != nil {
		d.Details += fmt.Sprintf(" The keeping end received the RST in %s.", f.rstRecv.State)
	}
	d.Details += " " + p.ageText(ev, &f)
	d.Details += " Confidence from: " + f.basis() + "."
	d.Resolution = fmt.Sprintf("Find why the endpoint %s lost its connections (a restart: `kubectl get pod -o wide` "+
		"restart counts and events, `journalctl`, OOM kills; an IP reused by a new pod). Make clients retry on "+
		"ECONNRESET and servers drain connections before they exit (preStop hook, graceful shutdown).", lost)
	var last *signal.Signal
	if f.episode.last != nil && f.episode.last != f.episode.first {
		last = f.episode.last
	}
	d.Evidence = evidenceFrom(ev, f.drop, f.rstSent, f.episode.first, last, f.rstRecv, f.close)
	keeper := Netns{}
	if f.rstRecv != nil {
		keeper = NetnsOf(f.rstRecv)
	} else if f.close != nil {
		keeper = NetnsOf(f.close)
	}
	d.Source, d.Destination = streamEndpoints(ev, flow, keeper, v.Where)
	return d
}

// ageText: the flow's age is not in any signal; the earliest one seen bounds it.
func (PeerLostState) ageText(ev *Evidence, f *lostFacts) string {
	var first *signal.Signal
	for _, set := range [][]signal.Signal{ev.Socket, ev.Packet} {
		for i := range set {
			if first == nil || set[i].Time.Before(first.Time) {
				first = &set[i]
			}
		}
	}
	end := ev.Now
	if f.close != nil {
		end = f.close.Time
	}
	if first != nil && f.episode.first != nil && end.Sub(first.Time) > 0 {
		return fmt.Sprintf("The connection had been up at least %s (its earliest signal); its start is unknown.",
			roundAge(end.Sub(first.Time)))
	}
	return "How long the connection had been up is unknown (no signal marks a successful connection's start)."
}

func (f *lostFacts) basis() string {
	var parts []string
	if f.drop != nil {
		parts = append(parts, f.drop.DropReason+" drop of a "+flagsOrNone(f.drop.TCPFlags)+" segment")
	}
	if f.rstSent != nil {
		r := "RST sent by the peer's stack"
		if f.rstSent.ResetReason != "" {
			r += " (reason " + f.rstSent.ResetReason + ")"
		}
		parts = append(parts, r)
	}
	if f.episode.first != nil {
		parts = append(parts, fmt.Sprintf("%d unanswered retransmit(s) before the RST", f.episode.count()))
	}
	if f.rstRecv != nil {
		parts = append(parts, "RST received in "+f.rstRecv.State.String())
	}
	if f.close != nil {
		parts = append(parts, "close with "+ErrnoName(f.close.SkErr))
	}
	return strings.Join(parts, ", ")
}

func lostImpact(lost string) string {
	return fmt.Sprintf("the connection to %s is gone: the next read or write fails with ECONNRESET (EPIPE after "+
		"a close); requests in flight on it are lost and must be retried on a new connection", lost)
}
