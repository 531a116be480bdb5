package k8sctx

import (
	"net/netip"
	"sort"
	"time"
)

// EventNodeNotReady: the node (of the address, or of the pod holding it)
// has not been Ready since Time.
const EventNodeNotReady EventKind = "node-not-ready"

// LifecycleEvent is an event of an address's pods and nodes, with what
// the flat Event cannot say.
type LifecycleEvent struct {
	Event
	// Node: the node of EventNodeNotReady.
	Node string
	// Next: for EventPodDeleted and EventIPPreviousOwner, the pod
	// ("namespace/name") holding the address at the asked time, if another.
	Next string
}

// LifecycleResolver answers what happened to the pods behind an address;
// *Provider and *Index implement it.
type LifecycleResolver interface {
	Lifecycle(ip netip.Addr, since, at time.Time) []LifecycleEvent
}

var (
	_ LifecycleResolver = (*Provider)(nil)
	_ LifecycleResolver = (*Index)(nil)
)

// Lifecycle lists, oldest first, what happened at or before at (and not
// before since; zero: not before the index's window ending at at, even if
// not pruned yet) to every pod that held ip by then:
// container restarts and terminations while it held the address, its
// deletion, or its release of the address (a deletion with the address
// released at that moment is one event), and whether the node of the
// address, or of the pod holding it at at, is NotReady (a state: reported
// whatever since says).
func (x *Index) Lifecycle(ip netip.Addr, since, at time.Time) []LifecycleEvent {
	ip = ip.Unmap()
	if since.IsZero() {
		since = at.Add(-x.window)
	}
	in := func(t time.Time) bool { return !t.After(at) && !t.Before(since) }
	x.mu.RLock()
	defer x.mu.RUnlock()
	owners := x.byIP[ip]
	cur := ownerAt(owners, at)
	next := ""
	if cur != nil && cur.pod.deletedAt.IsZero() {
		next = cur.pod.id.Namespace + "/" + cur.pod.id.Name
	}
	var out []LifecycleEvent
	for _, o := range owners {
		if o.from.After(at) && o != cur {
			continue // a later holder has nothing to do with traffic at at
		}
		r := o.pod
		ns, name := r.id.Namespace, r.id.Name
		nextOf := next
		if o == cur {
			nextOf = ""
		}
		for _, e := range r.events {
			if in(e.Time) && (o.until.IsZero() || !e.Time.After(o.until)) {
				out = append(out, LifecycleEvent{Event: e})
			}
		}
		switch {
		case !r.deletedAt.IsZero() && in(r.deletedAt) && (o.until.IsZero() || o.until.Equal(r.deletedAt)):
			out = append(out, LifecycleEvent{Event: Event{Time: r.deletedAt, Kind: EventPodDeleted, Namespace: ns, Pod: name}, Next: nextOf})
		case !o.until.IsZero() && in(o.until):
			out = append(out, LifecycleEvent{Event: Event{Time: o.until, Kind: EventIPPreviousOwner, Namespace: ns, Pod: name}, Next: nextOf})
		}
		if o == cur {
			if n := x.nodes[r.id.Node]; n != nil && !n.NotReadySince.IsZero() && !n.NotReadySince.After(at) {
				out = append(out, LifecycleEvent{Event: Event{Time: n.NotReadySince, Kind: EventNodeNotReady, Namespace: ns,
					Pod: name, Reason: n.NotReadyReason}, Node: n.Name})
			}
		}
	}
	if n := x.nodeByIP[ip]; cur == nil && n != nil && !n.NotReadySince.IsZero() && !n.NotReadySince.After(at) {
		out = append(out, LifecycleEvent{Event: Event{Time: n.NotReadySince, Kind: EventNodeNotReady, Reason: n.NotReadyReason},
			Node: n.Name})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// Lifecycle is Lifecycle on the provider's index.
func (p *Provider) Lifecycle(ip netip.Addr, since, at time.Time) []LifecycleEvent {
	return p.index.Lifecycle(ip, since, at)
}

// HoldsPod reports whether a pod held ip at at (the pod Lookup would
// name). It takes the read lock and allocates nothing: asked for every
// reset from a peer.
func (x *Index) HoldsPod(ip netip.Addr, at time.Time) bool {
	ip = ip.Unmap()
	x.mu.RLock()
	defer x.mu.RUnlock()
	return ownerAt(x.byIP[ip], at) != nil
}

// HoldsPod is HoldsPod on the provider's index.
func (p *Provider) HoldsPod(ip netip.Addr, at time.Time) bool { return p.index.HoldsPod(ip, at) }
