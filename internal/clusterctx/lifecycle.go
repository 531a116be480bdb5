package clusterctx

import (
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/k8sctx"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

var _ pattern.PodLifecycle = (*Context)(nil)

// podHolder is what *k8sctx.Provider and *k8sctx.Index add to a Resolver
// to say cheaply whether an address is a pod's.
type podHolder interface {
	HoldsPod(ip netip.Addr, at time.Time) bool
}

// HoldsPod answers pattern.PodLifecycle: whether a pod held addr at at;
// false with a resolver that cannot say.
func (c *Context) HoldsPod(addr netip.Addr, at time.Time) bool {
	h, ok := c.resolver.(podHolder)
	return ok && h.HoldsPod(addr, at)
}

// Lifecycle answers pattern.Lifecycle from the resolver's history; a
// resolver without it (k8sctx.LifecycleResolver) has nothing to say.
func (c *Context) Lifecycle(addr netip.Addr, since, at time.Time) []pattern.LifecycleEvent {
	lr, ok := c.resolver.(k8sctx.LifecycleResolver)
	if !ok {
		return nil
	}
	evs := lr.Lifecycle(addr, since, at)
	out := make([]pattern.LifecycleEvent, 0, len(evs))
	for _, e := range evs {
		k, ok := lifecycleKinds[e.Kind]
		if !ok {
			continue
		}
		out = append(out, pattern.LifecycleEvent{Time: e.Time, Kind: k, Namespace: e.Namespace, Pod: e.Pod,
			Container: e.Container, Reason: e.Reason, ExitCode: e.ExitCode, Restarts: e.RestartCount, Next: e.Next, Node: e.Node})
	}
	return out
}

var lifecycleKinds = map[k8sctx.EventKind]pattern.LifecycleKind{
	k8sctx.EventContainerRestarted:  pattern.LifecycleRestarted,
	k8sctx.EventContainerTerminated: pattern.LifecycleTerminated,
	k8sctx.EventPodDeleted:          pattern.LifecycleDeleted,
	k8sctx.EventIPPreviousOwner:     pattern.LifecycleIPReleased,
	k8sctx.EventNodeNotReady:        pattern.LifecycleNodeNotReady,
}
