package pattern

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
)

// LifecycleKind names what happened to the pod (or node) behind an address.
type LifecycleKind uint8

const (
	// LifecycleRestarted: a container of the pod restarted.
	LifecycleRestarted LifecycleKind = iota + 1
	// LifecycleTerminated: a container stopped and was not restarted (yet).
	LifecycleTerminated
	// LifecycleDeleted: the pod was deleted.
	LifecycleDeleted
	// LifecycleIPReleased: the pod gave the address up (deleted, finished,
	// or the address went to another pod: Next names it).
	LifecycleIPReleased
	// LifecycleNodeNotReady: the node owning the address, or running the
	// pod that owns it, is not Ready.
	LifecycleNodeNotReady
)

// LifecycleEvent is one thing that happened to the pod or node behind an
// address.
type LifecycleEvent struct {
	// Time: when the container stopped, the pod was deleted, the address
	// was released, the node stopped being Ready.
	Time      time.Time
	Kind      LifecycleKind
	Namespace string
	Pod       string
	Container string
	Reason    string // OOMKilled, Error, Completed; the node condition's reason
	ExitCode  int32
	Restarts  int32  // the container's restart count after a restart
	Next      string // IPReleased: "namespace/name" of the pod holding the address now
	Node      string // NodeNotReady
}

// Lifecycle is the optional part of a Cluster that answers what happened
// to the pods behind an address (container restarts, deletion, the address
// passing to another pod, a NotReady node).
type Lifecycle interface {
	// Lifecycle lists, oldest first, the events at or before at and not
	// before since (zero: the cluster's history window, at least the
	// correlation window) of the pods that held addr and of their nodes.
	Lifecycle(addr netip.Addr, since, at time.Time) []LifecycleEvent
}

// lifecycleRole is how a pattern's cause relates to the peer's lifecycle.
type lifecycleRole uint8

const (
	roleNone lifecycleRole = iota
	// roleLostState: the peer no longer has the connection (a RST or an
	// orphan segment): a restart or replacement IS the explanation.
	roleLostState
	// roleSilent: the peer stopped answering without a local cause: a pod
	// gone (deleted, restarting, on a NotReady node) explains the silence.
	roleSilent
)

func lifecycleRoleOf(p diagnosis.Pattern, cause string) lifecycleRole {
	switch p {
	case diagnosis.PatternPeerLostState:
		if cause == CauseContainerTerminated {
			return roleNone // the diagnosis is the lifecycle event already
		}
		return roleLostState
	case diagnosis.PatternHalfOpen:
		if cause == CauseFINUnanswered || cause == CauseDataUnanswered {
			return roleSilent
		}
	case diagnosis.PatternBlackhole:
		if cause == CauseNoLocalDrop || cause == CauseNeighbourUnresolved {
			return roleSilent
		}
	case diagnosis.PatternSYNDropped:
		if cause == CauseNoLocalDrop || cause == CauseNeighbourUnresolved {
			return roleSilent
		}
	case diagnosis.PatternARPFailure:
		return roleSilent
	}
	return roleNone
}

// AnnotateLifecycle ties a diagnosis to the lifecycle of the peer it
// concerns: when the peer's pod restarted, was deleted, gave its address to
// another pod, or its node is NotReady within the cluster's history, the
// summary and details say so, the event is evidence with its time, the
// confidence rises and the resolution starts with what fits that event
// (said once: not when the address's history already has it).
// Only causes the peer's lifecycle can explain are annotated
// (peer_lost_state; half_open, blackhole, syn_dropped and arp_failure
// without a local cause). The peer is the diagnosis' destination, or for arp_failure the
// neighbour that failed (Verdict.Subject: a next hop may be a node).
// It must run before AnnotateCluster, whose degraded-mode reduction then
// applies to the raised confidence.
func AnnotateLifecycle(c Cluster, v Verdict, d *diagnosis.Diagnosis, at time.Time) {
	lc, ok := c.(Lifecycle)
	if !ok {
		return
	}
	role := lifecycleRoleOf(d.Pattern, v.Cause)
	if role == roleNone {
		return
	}
	peer, err := netip.ParseAddr(d.Destination.Addr)
	if d.Pattern == diagnosis.PatternARPFailure && v.Subject.IsValid() {
		peer, err = v.Subject.Addr(), nil
	}
	if err != nil || !peer.IsValid() {
		return
	}
	// The cluster's whole history window, not only the correlation
	// window: an idle connection learns of a restart minutes later.
	evs := lc.Lifecycle(peer, time.Time{}, at)
	e, ok := explaining(evs, role)
	if !ok {
		return
	}
	ago := agoText(at.Sub(e.Time))
	what := e.phrase(peer, ago)
	switch role {
	case roleLostState:
		d.Summary = fmt.Sprintf("connection to %s reset: %s%s", addrPort(d.Flow.Dst, d.Flow.DstPort), what, e.lostTail())
		d.Details = fmt.Sprintf("The peer's cluster lifecycle explains it: %s (%s), before this connection was reset. ",
			what, e.Time.UTC().Format(time.RFC3339)) + d.Details
		d.Confidence = clamp(d.Confidence + 0.15)
	default:
		d.Summary += "; " + what
		d.Details += fmt.Sprintf(" The peer's cluster lifecycle explains why nothing answers: %s (%s).", what,
			e.Time.UTC().Format(time.RFC3339))
		d.Confidence = clamp(d.Confidence + 0.1)
	}
	d.Resolution = e.resolution() + " " + d.Resolution
	if !inHistory(c, d.Destination, peer, e.Time, at) {
		d.Evidence = append(d.Evidence, diagnosis.Evidence{Time: e.Time, Source: lifecycleSource, Fact: e.fact(peer)})
	}
}

// inHistory reports whether the destination's history, which
// AnnotateCluster adds as evidence, already has a fact at the event's time:
// the event is then said once.
func inHistory(c Cluster, dst diagnosis.Endpoint, peer netip.Addr, t, at time.Time) bool {
	if a, err := netip.ParseAddr(dst.Addr); err != nil || a != peer {
		return false
	}
	hist, _ := c.Annotate(&dst, at)
	for _, h := range hist {
		if h.Time.Equal(t) {
			return true
		}
	}
	return false
}

const lifecycleSource = "k8s:lifecycle"

// explaining picks the latest event that can explain the failure. A node
// NotReady explains silence, not a peer that answers with a RST.
func explaining(evs []LifecycleEvent, role lifecycleRole) (LifecycleEvent, bool) {
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		if e.Kind != LifecycleNodeNotReady || role == roleSilent {
			return e, true
		}
	}
	return LifecycleEvent{}, false
}

func (e LifecycleEvent) pod() string { return e.Namespace + "/" + e.Pod }

// exit renders "container app, OOMKilled, exit 137".
func (e LifecycleEvent) exit() string {
	parts := []string{"container " + e.Container}
	if e.Reason != "" {
		parts = append(parts, e.Reason)
	}
	return strings.Join(append(parts, fmt.Sprintf("exit %d", e.ExitCode)), ", ")
}

// phrase is the event for a summary: "pod prod/backend-x restarted 2m ago
// (container app, OOMKilled, exit 137)".
func (e LifecycleEvent) phrase(addr netip.Addr, ago string) string {
	switch e.Kind {
	case LifecycleRestarted:
		return fmt.Sprintf("pod %s restarted %s ago (%s)", e.pod(), ago, e.exit())
	case LifecycleTerminated:
		return fmt.Sprintf("pod %s stopped %s ago (%s)", e.pod(), ago, e.exit())
	case LifecycleDeleted:
		if e.Next != "" {
			return fmt.Sprintf("%s belonged to pod %s, deleted %s ago; pod %s holds it now", addrText(addr), e.pod(), ago, e.Next)
		}
		return fmt.Sprintf("%s belonged to pod %s, deleted %s ago", addrText(addr), e.pod(), ago)
	case LifecycleIPReleased:
		if e.Next != "" {
			return fmt.Sprintf("%s belonged to pod %s until %s ago; pod %s holds it now", addrText(addr), e.pod(), ago, e.Next)
		}
		return fmt.Sprintf("%s belonged to pod %s until %s ago", addrText(addr), e.pod(), ago)
	case LifecycleNodeNotReady:
		if e.Pod != "" {
			return fmt.Sprintf("pod %s runs on node %s, NotReady for %s (%s)", e.pod(), e.Node, ago, orUnknown(e.Reason))
		}
		return fmt.Sprintf("%s is node %s, NotReady for %s (%s)", addrText(addr), e.Node, ago, orUnknown(e.Reason))
	}
	return ""
}

// lostTail ends a summary that blames the event for the lost connection.
func (e LifecycleEvent) lostTail() string {
	switch {
	case e.Kind != LifecycleDeleted && e.Kind != LifecycleIPReleased:
		return " and lost this connection"
	case e.Next != "":
		return ", without this connection"
	}
	return ", and the connection went with it"
}

// fact is the event as evidence, with its absolute time.
func (e LifecycleEvent) fact(addr netip.Addr) string {
	at := e.Time.UTC().Format(time.RFC3339Nano)
	switch e.Kind {
	case LifecycleRestarted:
		return fmt.Sprintf("pod %s (%s) restarted (restart %d): %s stopped at %s", e.pod(), addrText(addr), e.Restarts, e.exit(), at)
	case LifecycleTerminated:
		return fmt.Sprintf("pod %s (%s): %s stopped at %s", e.pod(), addrText(addr), e.exit(), at)
	case LifecycleDeleted:
		s := fmt.Sprintf("pod %s, which held %s, deleted at %s", e.pod(), addrText(addr), at)
		if e.Next != "" {
			s += ", now held by pod " + e.Next
		}
		return s
	case LifecycleIPReleased:
		s := fmt.Sprintf("%s released by pod %s at %s", addrText(addr), e.pod(), at)
		if e.Next != "" {
			s += ", now held by pod " + e.Next
		}
		return s
	case LifecycleNodeNotReady:
		return fmt.Sprintf("node %s NotReady since %s (%s)", e.Node, at, orUnknown(e.Reason))
	}
	return ""
}

// resolution is what to do about the event, said first.
func (e LifecycleEvent) resolution() string {
	switch e.Kind {
	case LifecycleRestarted, LifecycleTerminated:
		logs := fmt.Sprintf("`kubectl logs -n %s %s -c %s --previous`, `kubectl describe pod -n %s %s`",
			e.Namespace, e.Pod, e.Container, e.Namespace, e.Pod)
		var why string
		switch {
		case e.Reason == "OOMKilled" || e.ExitCode == 137 && e.Reason == "":
			why = fmt.Sprintf("Container %s was killed for memory (OOM): raise its memory limit or fix its growth (%s).", e.Container, logs)
		case e.ExitCode == 0:
			why = fmt.Sprintf("Container %s exited normally: if that was planned, drain connections before exiting (preStop hook, graceful shutdown on SIGTERM).", e.Container)
		default:
			why = fmt.Sprintf("Find why container %s exited (%s).", e.Container, logs)
		}
		return why + " Clients must retry on a new connection after ECONNRESET."
	case LifecycleDeleted, LifecycleIPReleased:
		return fmt.Sprintf("The pod %s is gone: clients must stop using its IP (reach it through a Service or re-resolve), "+
			"and pods should drain connections before exiting (preStop hook, terminationGracePeriodSeconds).", e.pod())
	case LifecycleNodeNotReady:
		return fmt.Sprintf("Node %s is NotReady: check its kubelet, network and power (`kubectl describe node %s`); "+
			"its pods are unreachable until it recovers or they are rescheduled.", e.Node, e.Node)
	}
	return ""
}

// agoText renders an age for people: "45s", "2m", "2m30s", "1h5m".
func agoText(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
	case d >= 10*time.Minute:
		d = d.Round(time.Minute)
	case d >= time.Minute:
		d = d.Round(10 * time.Second)
	case d >= time.Second:
		d = d.Round(time.Second)
	default:
		d = d.Round(time.Millisecond)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// PodLifecycle is the optional part of a Cluster that lets peer_lost_state
// wait for the termination of the container behind a reset (see
// PeerLostState.Restarts).
type PodLifecycle interface {
	Lifecycle
	// HoldsPod reports whether a pod held addr at at. It is asked for
	// every reset from a peer, so it must not allocate.
	HoldsPod(addr netip.Addr, at time.Time) bool
}

// stopped reports a container that stopped (restarted or not).
func (e LifecycleEvent) stopped() bool {
	return e.Kind == LifecycleRestarted || e.Kind == LifecycleTerminated
}

// killedPhrase is a container termination for a summary: "container app
// of pod prod/backend-x was OOMKilled (exit 137) at 04:55:01 UTC".
func (e LifecycleEvent) killedPhrase() string {
	var how string
	switch {
	case e.Reason == "OOMKilled":
		how = fmt.Sprintf("was OOMKilled (exit %d)", e.ExitCode)
	case e.Reason != "":
		how = fmt.Sprintf("stopped (%s, exit %d)", e.Reason, e.ExitCode)
	default:
		how = fmt.Sprintf("stopped (exit %d)", e.ExitCode)
	}
	return fmt.Sprintf("container %s of pod %s %s at %s", e.Container, e.pod(), how, e.Time.UTC().Format("15:04:05 MST"))
}

// killedResolution is what to do about a container whose connections were
// reset when it stopped: why it stopped first, then how to stop without
// resetting clients, and how clients survive it.
func (e LifecycleEvent) killedResolution() string {
	return e.resolution() + " A stopping container's connections are reset by its kernel: handle SIGTERM by " +
		"draining connections before exiting (preStop hook, graceful shutdown within terminationGracePeriodSeconds), " +
		"and let clients retry idempotent requests on a new connection."
}
