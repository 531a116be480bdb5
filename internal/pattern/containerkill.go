package pattern

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// peer_lost_state's container_terminated cause (see PeerLostState): a reset
// from a pod whose container the cluster reports stopped at that time.

// keeperReset: a RST received by a connection the application still uses
// (ESTABLISHED, or CLOSE_WAIT: the peer had sent its FIN, the application
// wrote again and met the orphan).
func keeperReset(s *signal.Signal) bool {
	return s.Kind == signal.KindResetReceived && (s.State == signal.StateEstablished || s.State == signal.StateCloseWait)
}

// keeperClose: the close such a RST causes, with the error the application
// gets.
func keeperClose(s *signal.Signal) bool {
	return s.Kind == signal.KindStateChange && s.State == signal.StateClose &&
		(s.OldState == signal.StateEstablished || s.OldState == signal.StateCloseWait) &&
		(s.SkErr == ECONNRESET || s.SkErr == EPIPE)
}

// orphanReset: the RST a closed socket's remains send for data after
// their FIN (an orphan in FIN_WAIT2 turned timewait socket, or still a
// full socket aborting on data): a peer that had closed the connection.
func orphanReset(s *signal.Signal) bool {
	return s.Kind == signal.KindResetSent && midFlow(s.TCPFlags) &&
		(s.ResetReason == "TCP_TIMEWAIT_SOCKET" || s.ResetReason == "TCP_ABORT_ON_DATA")
}

// peerKernelReset: a RST the peer's kernel sent on its own socket: an
// abort, or an orphan's answer to data.
func peerKernelReset(s *signal.Signal) bool { return abortReset(s) || orphanReset(s) }

type killFacts struct {
	rst, close *signal.Signal
	abort      *signal.Signal // the peer kernel's own RST (peerKernelReset)
	flow       signal.Flow    // keeper -> the peer that reset
	at         time.Time      // the earliest of the reset's signals
	// ending: the RST ended a connection the peer had closed (the orphan
	// answering data after its FIN): the container may have stopped up to
	// tcp_fin_timeout before.
	ending bool
}

func (p PeerLostState) killFacts(ev *Evidence) (killFacts, bool) {
	var k killFacts
	for i := range ev.Socket {
		switch s := &ev.Socket[i]; {
		case keeperReset(s) && k.rst == nil:
			k.rst = s
		case keeperClose(s):
			k.close = s
		}
	}
	for i := range ev.Packet {
		if s := &ev.Packet[i]; peerKernelReset(s) && k.abort == nil {
			k.abort = s
		}
	}
	if t := ev.Trigger; t != nil { // it may have rotated out of the kept signals
		switch {
		case keeperReset(t) && k.rst == nil:
			k.rst = t
		case keeperClose(t) && k.close == nil:
			k.close = t
		case peerKernelReset(t) && k.abort == nil:
			k.abort = t
		}
	}
	switch {
	case k.rst != nil:
		k.flow = k.rst.Flow
	case k.close != nil:
		k.flow = k.close.Flow
	case k.abort != nil:
		k.flow = k.abort.Flow.Reverse() // the RST's own direction: peer -> keeper
	default:
		return k, false
	}
	// Only the peer's abort explains the keeper's reset: one the keeper's
	// own side sent is another story.
	if k.abort != nil && k.abort.Flow.Src != k.flow.Dst {
		if k.rst == nil && k.close == nil {
			return k, false
		}
		k.abort = nil
	}
	for _, s := range []*signal.Signal{k.rst, k.close, k.abort} {
		if s != nil && (k.at.IsZero() || s.Time.Before(k.at)) {
			k.at = s.Time
		}
	}
	k.ending = k.rst != nil && k.rst.State == signal.StateCloseWait ||
		k.close != nil && k.close.OldState == signal.StateCloseWait ||
		k.abort != nil && orphanReset(k.abort)
	return k, true
}

// sidesLag: how long after a reset's first signal the other side's are
// awaited when the cluster's report is already there.
const sidesLag = 100 * time.Millisecond

func (p PeerLostState) wait() time.Duration {
	if p.Wait <= 0 {
		return DefaultLifecycleWait
	}
	return p.Wait
}

func (p PeerLostState) tolerance() time.Duration {
	if p.Tolerance <= 0 {
		return DefaultLifecycleTolerance
	}
	return p.Tolerance
}

// termination finds the stop of a container of the peer's pod that
// explains the reset: within the tolerance of it (or before it by up to
// tcp_fin_timeout when the peer had closed), the nearest.
func (p PeerLostState) termination(k *killFacts) (LifecycleEvent, bool) {
	tol := p.tolerance()
	since := k.at.Add(-tol)
	if k.ending {
		since = k.at.Add(-orphanLinger - tol)
	}
	var best LifecycleEvent
	found := false
	for _, e := range p.Restarts.Lifecycle(k.flow.Dst, since, k.at.Add(tol)) {
		if !e.stopped() || e.Time.Before(since) || e.Time.After(k.at.Add(tol)) {
			continue
		}
		if !found || absDur(e.Time.Sub(k.at)) < absDur(best.Time.Sub(k.at)) {
			best, found = e, true
		}
	}
	return best, found
}

// killed decides a reset the other rules leave alone: a Match when the
// cluster reports the peer pod's container stopped at that time, a Defer
// until Wait after the reset while it may still report it, else NoMatch.
// The cluster is asked only for resets from pods.
func (p PeerLostState) killed(ev *Evidence) (Verdict, Outcome) {
	k, ok := p.killFacts(ev)
	if !ok {
		return Verdict{}, NoMatch
	}
	deadline := k.at.Add(p.wait())
	// On a Tick past the deadline the cluster is asked a last time.
	if ev.Trigger != nil && !ev.Now.Before(deadline) && !ev.Diagnosed || !p.Restarts.HoldsPod(k.flow.Dst, k.at) {
		return Verdict{}, NoMatch
	}
	e, ok := p.termination(&k)
	switch {
	case ok && ev.Trigger != nil && !ev.Diagnosed && (k.abort == nil || k.close == nil) &&
		ev.Now.Before(k.at.Add(sidesLag)):
		// Not yet both the peer's RST and the keeper's close (the error its
		// application got): if on this node, they follow within
		// microseconds (the peer's own RST is even traced after the RST
		// and the close it causes). Decide on both, or on a Tick.
		return Verdict{Cause: CauseContainerTerminated, Until: k.at.Add(sidesLag)}, Defer
	case ok:
		return p.killedVerdict(&k, e), Match
	case ev.Now.Before(deadline):
		return Verdict{Cause: CauseContainerTerminated, Until: deadline}, Defer
	}
	return Verdict{}, NoMatch
}

func (p PeerLostState) killedVerdict(k *killFacts, e LifecycleEvent) Verdict {
	c := 0.5 // a reset, and the cluster's termination of the peer's container
	if k.abort != nil {
		c += 0.15 // the peer's own kernel reset it
	}
	if k.rst != nil {
		c += 0.05
	}
	if k.close != nil {
		c += 0.1 // the application got the error
	}
	if absDur(e.Time.Sub(k.at)) <= p.tolerance() {
		c += 0.1
	}
	// No Where: the peer's own RST may be traced after the keeper's
	// (or not at all, the peer elsewhere); the pod names the cause.
	return Verdict{Cause: CauseContainerTerminated, Confidence: clamp(c), Specificity: 3,
		Subject: netip.AddrPortFrom(k.flow.Dst, k.flow.DstPort),
		Why:     "the cluster reports the peer pod's container stopped when its kernel reset the connection"}
}

func (p PeerLostState) diagnoseKilled(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	k, _ := p.killFacts(ev)
	e, _ := p.termination(&k)
	peer := k.flow.Dst
	lost := addrPort(peer, k.flow.DstPort)
	errType := "ECONNRESET"
	if k.close != nil && k.close.SkErr == EPIPE {
		errType = "EPIPE"
	}
	d := diagnosis.Diagnosis{
		Pattern:    diagnosis.PatternPeerLostState,
		Severity:   diagnosis.SeverityError,
		ErrorType:  errType,
		Flow:       k.flow,
		Confidence: v.Confidence,
		Layer:      diagnosis.LayerL4,
		Summary:    fmt.Sprintf("connection to %s reset: %s and its connections were reset", lost, e.killedPhrase()),
		Impact:     lostImpact(lost),
		Resolution: e.killedResolution(),
	}
	var rel string
	if dt := e.Time.Sub(k.at); dt > 0 {
		rel = agoText(dt) + " after"
	} else if dt < 0 {
		rel = agoText(-dt) + " before"
	} else {
		rel = "at the time of"
	}
	how := "closed its sockets with unread data: a RST"
	if k.ending {
		how = "closed its sockets with a FIN, and the orphan socket answered the next data with a RST"
	}
	d.Details = fmt.Sprintf("The connection was reset at %s and the cluster reports %s, %s the reset: "+
		"a container killed in a pod that keeps its network namespace (the pause container holds it) loses its "+
		"sockets, and its kernel %s. Without such a report this reset would be an application's own abort. "+
		"Confidence from: %s.", k.at.UTC().Format(time.RFC3339Nano), e.fact(peer), rel, how, k.basis(e))
	d.Evidence = evidenceFrom(ev, k.abort, k.rst, k.close)
	d.Destination = diagnosis.Endpoint{Addr: addrText(peer), Port: k.flow.DstPort}
	if ev.Cluster == nil || !inHistory(ev.Cluster, d.Destination, peer, e.Time, ev.Now) {
		d.Evidence = append(d.Evidence, diagnosis.Evidence{Time: e.Time, Source: lifecycleSource, Fact: e.fact(peer)})
	}
	keeper := Netns{}
	if k.rst != nil {
		keeper = NetnsOf(k.rst)
	} else if k.close != nil {
		keeper = NetnsOf(k.close)
	}
	where := Netns{}
	if k.abort != nil {
		where = NetnsOf(k.abort)
	}
	d.Source, d.Destination = streamEndpoints(ev, k.flow, keeper, where)
	return d
}

func (k *killFacts) basis(e LifecycleEvent) string {
	var parts []string
	if k.abort != nil {
		r := "RST sent by the peer's kernel"
		if k.abort.ResetReason != "" {
			r += " (reason " + k.abort.ResetReason + ")"
		}
		parts = append(parts, r)
	}
	if k.rst != nil {
		parts = append(parts, "RST received in "+k.rst.State.String())
	}
	if k.close != nil {
		parts = append(parts, "close with "+ErrnoName(k.close.SkErr))
	}
	return strings.Join(append(parts, fmt.Sprintf("the cluster's termination of container %s at %s", e.Container,
		e.Time.UTC().Format(time.RFC3339))), ", ")
}
