package k8sctx

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Index maps IPs to pods, services and nodes and remembers, for a window,
// who owned an IP before, which pods were deleted and which containers
// restarted. It is fed with (transformed) API objects and safe for
// concurrent use.
type Index struct {
	window time.Duration
	now    func() time.Time

	mu       sync.RWMutex
	pods     map[string]*podRecord // namespace/name, live and recently deleted
	byIP     map[netip.Addr][]*ownership
	services map[string]*serviceRecord // namespace/name
	svcByIP  map[netip.Addr]*serviceRecord
	slices   map[string]*sliceRecord // namespace/name of the slice
	nodes    map[string]*Identity
	nodeByIP map[netip.Addr]*Identity
	// eps: EndpointSlices by service and address, and recent endpoint
	// changes (service.go).
	eps endpointIndex
}

type podRecord struct {
	key       string
	id        *Identity // replaced, never modified, on update
	ips       []netip.Addr
	deletedAt time.Time
	// containers: last seen restart count and termination, to detect new
	// ones (a slice: a map costs more than its few entries).
	containers []containerSeen
	events     []Event // container events, oldest first
}

type containerSeen struct {
	name       string
	restarts   int32
	terminated time.Time // finishedAt of the last termination recorded
}

// ownership is one pod holding an IP over [from, until); until is zero while
// the pod still holds it.
type ownership struct {
	pod         *podRecord
	from, until time.Time
}

type serviceRecord struct {
	id  *Identity // Service is filled per lookup from the slices
	key string
	ips []netip.Addr
}

type sliceRecord struct {
	service   string // namespace/name of the owning service
	endpoints []sliceEndpoint
}

type sliceEndpoint struct {
	EndpointState
	ready, terminating bool
}

// NewIndex returns an index keeping history for window; now is the clock
// (time.Now when nil).
func NewIndex(window time.Duration, now func() time.Time) *Index {
	if now == nil {
		now = time.Now
	}
	return &Index{
		window:   window,
		now:      now,
		pods:     map[string]*podRecord{},
		byIP:     map[netip.Addr][]*ownership{},
		services: map[string]*serviceRecord{},
		svcByIP:  map[netip.Addr]*serviceRecord{},
		slices:   map[string]*sliceRecord{},
		nodes:    map[string]*Identity{},
		nodeByIP: map[netip.Addr]*Identity{},
	}
}

// Window is how long history is kept.
func (x *Index) Window() time.Duration { return x.window }

func key(ns, name string) string { return ns + "/" + name }

// Lookup says what ip belonged to at time at, and its recent history: earlier
// owners of the IP, and the deletion and container restarts of the pod that
// owned it. A pod IP wins over a service or node IP. When nothing owned the
// IP at that time, Identity is unknown and History names the pods that held
// it before, with their deletion and container events.
func (x *Index) Lookup(ip netip.Addr, at time.Time) (Identity, History) {
	ip = ip.Unmap()
	x.mu.RLock()
	defer x.mu.RUnlock()

	owners := x.byIP[ip]
	cur := ownerAt(owners, at)
	var id Identity
	var hist History
	if cur != nil {
		id = *cur.pod.id
		if !cur.pod.deletedAt.IsZero() {
			id.DeletedAt = cur.pod.deletedAt
		}
		hist = append(hist, cur.pod.events...)
		if !cur.pod.deletedAt.IsZero() {
			hist = append(hist, Event{Time: cur.pod.deletedAt, Kind: EventPodDeleted, Namespace: id.Namespace, Pod: id.Name})
		}
	} else if s := x.svcByIP[ip]; s != nil {
		id = *s.id
		id.Service = x.serviceStateLocked(s)
	} else if n := x.nodeByIP[ip]; n != nil {
		id = *n
	}
	for _, o := range owners {
		if o == cur || o.until.IsZero() {
			continue
		}
		hist = append(hist, Event{Time: o.until, Kind: EventIPPreviousOwner, Namespace: o.pod.id.Namespace, Pod: o.pod.id.Name})
		// Nobody holds the IP: what happened to those who did explains
		// signals still addressed to it.
		if cur == nil && !o.until.After(at) {
			hist = append(hist, o.pod.events...)
			if !o.pod.deletedAt.IsZero() {
				hist = append(hist, Event{Time: o.pod.deletedAt, Kind: EventPodDeleted, Namespace: o.pod.id.Namespace, Pod: o.pod.id.Name})
			}
		}
	}
	sort.SliceStable(hist, func(i, j int) bool { return hist[i].Time.Before(hist[j].Time) })
	return id, hist
}

// ownerAt picks the ownership covering at. When none does and the IP has a
// single holder, the holder is returned: the API learns of an IP after the
// network already uses it, so a signal can predate the ownership's start.
func ownerAt(owners []*ownership, at time.Time) *ownership {
	var best *ownership
	for _, o := range owners {
		if !o.from.After(at) && (o.until.IsZero() || at.Before(o.until)) {
			if best == nil || o.from.After(best.from) {
				best = o
			}
		}
	}
	if best != nil {
		return best
	}
	// Only for an IP with no known earlier owner: after a release the gap is
	// real (a signal then concerns the old owner's connections).
	if len(owners) == 1 && owners[0].until.IsZero() {
		return owners[0]
	}
	return nil
}

// LookupPod returns the pod's identity and history by name (host-network
// pods included).
func (x *Index) LookupPod(namespace, name string) (Identity, History, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	r := x.pods[key(namespace, name)]
	if r == nil {
		return Identity{}, nil, false
	}
	id := *r.id
	id.DeletedAt = r.deletedAt
	hist := append(History(nil), r.events...)
	if !r.deletedAt.IsZero() {
		hist = append(hist, Event{Time: r.deletedAt, Kind: EventPodDeleted, Namespace: namespace, Pod: name})
	}
	return id, hist, true
}

// LookupService returns a service and its endpoint state by name.
func (x *Index) LookupService(namespace, name string) (Identity, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	s := x.services[key(namespace, name)]
	if s == nil {
		return Identity{}, false
	}
	id := *s.id
	id.Service = x.serviceStateLocked(s)
	return id, true
}

func (x *Index) serviceStateLocked(s *serviceRecord) *ServiceState {
	st := *s.id.Service
	st.Ready, st.NotReady, st.Terminating = nil, nil, nil
	st.Slices = 0
	for _, sl := range x.slices {
		if sl.service != s.key {
			continue
		}
		st.Slices++
		for _, e := range sl.endpoints {
			switch {
			case e.ready:
				st.Ready = append(st.Ready, e.EndpointState)
			case e.terminating:
				st.Terminating = append(st.Terminating, e.EndpointState)
			default:
				st.NotReady = append(st.NotReady, e.EndpointState)
			}
		}
	}
	return &st
}

// podIPs returns the pod's status IPs, unmapped and without duplicates.
func podIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	add(p.Status.PodIP)
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	return out
}

// WorkloadOf resolves the pod's controller; see Workload.
func WorkloadOf(p *corev1.Pod) Workload {
	for _, ref := range p.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		if ref.Kind == "ReplicaSet" {
			if h := p.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
				return Workload{Kind: "Deployment", Name: strings.TrimSuffix(ref.Name, "-"+h)}
			}
		}
		return Workload{Kind: ref.Kind, Name: ref.Name}
	}
	return Workload{}
}

func podIdentity(p *corev1.Pod) *Identity {
	id := &Identity{
		Kind:        KindPod,
		Namespace:   p.Namespace,
		Name:        p.Name,
		UID:         string(p.UID),
		Workload:    WorkloadOf(p),
		Node:        p.Spec.NodeName,
		Labels:      p.Labels,
		HostNetwork: p.Spec.HostNetwork,
		Phase:       p.Status.Phase,
	}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			for _, cp := range c.Ports {
				proto := cp.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				id.Ports = append(id.Ports, ContainerPort{Container: c.Name, Name: cp.Name, Port: cp.ContainerPort, Protocol: proto})
			}
		}
	}
	return id
}

// SetPod adds or updates a pod.
func (x *Index) SetPod(p *corev1.Pod) {
	now := x.now()
	k := key(p.Namespace, p.Name)
	x.mu.Lock()
	defer x.mu.Unlock()
	r := x.pods[k]
	if r != nil && (r.id.UID != string(p.UID) || !r.deletedAt.IsZero()) {
		// A new pod with the name of a deleted one: the old one is history.
		x.releaseLocked(r, now)
		if r.deletedAt.IsZero() {
			r.deletedAt = now
		}
		r = nil
	}
	if r == nil {
		r = &podRecord{key: k}
		x.pods[k] = r
	}
	r.id = podIdentity(p)
	x.recordContainersLocked(r, p, now)

	var ips []netip.Addr
	if !p.Spec.HostNetwork && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
		// Finished pods give their IP back to the node's pool.
		ips = podIPs(p)
	}
	for _, ip := range r.ips {
		if !slices.Contains(ips, ip) {
			x.releaseIPLocked(r, ip, now)
		}
	}
	start := p.CreationTimestamp.Time
	for _, ip := range ips {
		if slices.Contains(r.ips, ip) {
			continue
		}
		// The IP cannot be this pod's before it was created, nor before
		// the previous owner gave it up; a previous owner that still holds
		// it (missed delete) gives it up now.
		from := start
		for _, o := range x.byIP[ip] {
			if o.until.IsZero() {
				o.until = now
			}
			if o.until.After(from) {
				from = o.until
			}
		}
		if from.IsZero() || from.After(now) {
			from = now
		}
		x.byIP[ip] = append(x.byIP[ip], &ownership{pod: r, from: from})
	}
	r.ips = ips
}

// recordContainersLocked turns restart counts and termination states into
// events.
func (x *Index) recordContainersLocked(r *podRecord, p *corev1.Pod, now time.Time) {
	for _, statuses := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range statuses {
			i := slices.IndexFunc(r.containers, func(c containerSeen) bool { return c.name == cs.Name })
			known := i >= 0
			seen := containerSeen{name: cs.Name}
			if known {
				seen = r.containers[i]
			}
			if last := cs.LastTerminationState.Terminated; cs.RestartCount > seen.restarts {
				// On first sight only a restart with its termination state
				// has a time worth reporting.
				if known || last != nil {
					ev := Event{Time: now, Kind: EventContainerRestarted, Namespace: p.Namespace, Pod: p.Name,
						Container: cs.Name, RestartCount: cs.RestartCount}
					if last != nil {
						if !last.FinishedAt.IsZero() {
							ev.Time = last.FinishedAt.Time
						}
						ev.Reason, ev.ExitCode = last.Reason, last.ExitCode
					}
					sameInstance := last != nil && !seen.terminated.IsZero() && seen.terminated.Equal(last.FinishedAt.Time)
					// A termination already recorded becomes this restart.
					if !(sameInstance && x.upgradeTerminationLocked(r, cs.Name, ev)) && now.Sub(ev.Time) <= x.window {
						r.events = append(r.events, ev)
					}
				}
				if last != nil {
					seen.terminated = last.FinishedAt.Time
				}
			}
			if t := cs.State.Terminated; t != nil && !t.FinishedAt.Time.Equal(seen.terminated) {
				ev := Event{Time: t.FinishedAt.Time, Kind: EventContainerTerminated, Namespace: p.Namespace, Pod: p.Name,
					Container: cs.Name, Reason: t.Reason, ExitCode: t.ExitCode, RestartCount: cs.RestartCount}
				if ev.Time.IsZero() {
					ev.Time = now
				}
				if now.Sub(ev.Time) <= x.window {
					r.events = append(r.events, ev)
				}
				seen.terminated = t.FinishedAt.Time
			}
			seen.restarts = cs.RestartCount
			if known {
				r.containers[i] = seen
			} else {
				r.containers = append(r.containers, seen)
			}
		}
	}
	sort.SliceStable(r.events, func(i, j int) bool { return r.events[i].Time.Before(r.events[j].Time) })
}

// upgradeTerminationLocked turns the termination event of the same instance
// into a restart event; it reports whether it found one.
func (x *Index) upgradeTerminationLocked(r *podRecord, container string, ev Event) bool {
	for i := len(r.events) - 1; i >= 0; i-- {
		e := &r.events[i]
		if e.Kind == EventContainerTerminated && e.Container == container && e.Time.Equal(ev.Time) {
			e.Kind, e.RestartCount = EventContainerRestarted, ev.RestartCount
			return true
		}
	}
	return false
}

func (x *Index) releaseIPLocked(r *podRecord, ip netip.Addr, now time.Time) {
	for _, o := range x.byIP[ip] {
		if o.pod == r && o.until.IsZero() {
			o.until = now
		}
	}
}

func (x *Index) releaseLocked(r *podRecord, now time.Time) {
	for _, ip := range r.ips {
		x.releaseIPLocked(r, ip, now)
	}
	r.ips = nil
}

// DeletePod records the pod's deletion; its IPs become history.
func (x *Index) DeletePod(namespace, name string) {
	now := x.now()
	x.mu.Lock()
	defer x.mu.Unlock()
	r := x.pods[key(namespace, name)]
	if r == nil || !r.deletedAt.IsZero() {
		return
	}
	r.deletedAt = now
	x.releaseLocked(r, now)
}

// SetService adds or updates a service.
func (x *Index) SetService(s *corev1.Service) {
	k := key(s.Namespace, s.Name)
	st := &ServiceState{Type: s.Spec.Type, Ports: s.Spec.Ports, HasSelector: len(s.Spec.Selector) > 0,
		Selector: s.Spec.Selector, Created: s.CreationTimestamp.Time}
	for _, c := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
		if a, err := netip.ParseAddr(c); err == nil && !slices.Contains(st.ClusterIPs, a.Unmap()) {
			st.ClusterIPs = append(st.ClusterIPs, a.Unmap())
		}
	}
	rec := &serviceRecord{key: k, ips: st.ClusterIPs, id: &Identity{
		Kind: KindService, Namespace: s.Namespace, Name: s.Name, UID: string(s.UID), Labels: s.Labels, Service: st,
	}}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.deleteServiceLocked(k)
	x.services[k] = rec
	for _, ip := range rec.ips {
		x.svcByIP[ip] = rec
	}
}

// DeleteService forgets a service.
func (x *Index) DeleteService(namespace, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.deleteServiceLocked(key(namespace, name))
}

func (x *Index) deleteServiceLocked(k string) {
	old := x.services[k]
	if old == nil {
		return
	}
	for _, ip := range old.ips {
		if x.svcByIP[ip] == old {
			delete(x.svcByIP, ip)
		}
	}
	delete(x.services, k)
}

// SetEndpointSlice adds or updates an EndpointSlice.
func (x *Index) SetEndpointSlice(s *discoveryv1.EndpointSlice) {
	now := x.now()
	svc := s.Labels[discoveryv1.LabelServiceName]
	rec := &sliceRecord{service: key(s.Namespace, svc)}
	for _, e := range s.Endpoints {
		ready := e.Conditions.Ready == nil || *e.Conditions.Ready
		terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
		serving := e.Conditions.Serving == nil && ready || e.Conditions.Serving != nil && *e.Conditions.Serving
		var pod, node string
		if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
			pod = e.TargetRef.Name
		}
		if e.NodeName != nil {
			node = *e.NodeName
		}
		for _, a := range e.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil {
				rec.endpoints = append(rec.endpoints, sliceEndpoint{
					EndpointState: EndpointState{IP: ip.Unmap(), Pod: pod, Node: node, Serving: serving, Slice: s.Name},
					ready:         ready, terminating: terminating,
				})
			}
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.eps.update(x, key(s.Namespace, s.Name), rec, now)
	x.slices[key(s.Namespace, s.Name)] = rec
}

// DeleteEndpointSlice forgets an EndpointSlice.
func (x *Index) DeleteEndpointSlice(namespace, name string) {
	now := x.now()
	x.mu.Lock()
	defer x.mu.Unlock()
	x.eps.update(x, key(namespace, name), nil, now)
	delete(x.slices, key(namespace, name))
}

// SetNode adds or updates a node; its internal and external addresses map to
// it.
func (x *Index) SetNode(n *corev1.Node) {
	id := &Identity{Kind: KindNode, Name: n.Name, Node: n.Name, UID: string(n.UID), Labels: n.Labels}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
			id.NotReadySince, id.NotReadyReason = c.LastTransitionTime.Time, c.Reason
			if id.NotReadySince.IsZero() {
				id.NotReadySince = x.now()
			}
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.deleteNodeLocked(n.Name)
	x.nodes[n.Name] = id
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			x.nodeByIP[ip.Unmap()] = id
		}
	}
}

// DeleteNode forgets a node.
func (x *Index) DeleteNode(name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.deleteNodeLocked(name)
}

func (x *Index) deleteNodeLocked(name string) {
	old := x.nodes[name]
	if old == nil {
		return
	}
	for ip, id := range x.nodeByIP {
		if id == old {
			delete(x.nodeByIP, ip)
		}
	}
	delete(x.nodes, name)
}

// Prune drops history older than the window: released IP ownerships,
// deleted pods and container events.
func (x *Index) Prune() {
	cutoff := x.now().Add(-x.window)
	x.mu.Lock()
	defer x.mu.Unlock()
	for ip, owners := range x.byIP {
		owners = slices.DeleteFunc(owners, func(o *ownership) bool { return !o.until.IsZero() && o.until.Before(cutoff) })
		if len(owners) == 0 {
			delete(x.byIP, ip)
		} else {
			x.byIP[ip] = owners
		}
	}
	for k, r := range x.pods {
		if !r.deletedAt.IsZero() && r.deletedAt.Before(cutoff) {
			delete(x.pods, k)
			continue
		}
		r.events = slices.DeleteFunc(r.events, func(e Event) bool { return e.Time.Before(cutoff) })
	}
	x.eps.prune(x, cutoff)
}

// Stats counts what the index holds.
type Stats struct {
	Pods, DeletedPods, IPs, Services, EndpointSlices, Nodes int
}

// Stats reports the index's size.
func (x *Index) Stats() Stats {
	x.mu.RLock()
	defer x.mu.RUnlock()
	s := Stats{IPs: len(x.byIP), Services: len(x.services), EndpointSlices: len(x.slices), Nodes: len(x.nodes)}
	for _, r := range x.pods {
		if r.deletedAt.IsZero() {
			s.Pods++
		} else {
			s.DeletedPods++
		}
	}
	return s
}
