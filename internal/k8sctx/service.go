package k8sctx

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// EndpointCondition is an endpoint's state in its service's EndpointSlices.
type EndpointCondition string

const (
	EndpointReady       EndpointCondition = "ready"
	EndpointNotReady    EndpointCondition = "not ready"
	EndpointTerminating EndpointCondition = "terminating"
	// EndpointRemoved: no slice of the service lists the address any more.
	EndpointRemoved EndpointCondition = "removed"
	// EndpointAdded is the From of an endpoint that was not listed before.
	EndpointAdded EndpointCondition = "added"
)

func (e *sliceEndpoint) condition() EndpointCondition {
	switch {
	case e.ready:
		return EndpointReady
	case e.terminating:
		return EndpointTerminating
	}
	return EndpointNotReady
}

// EndpointChange is one change of an address's endpoint state seen by the
// index.
type EndpointChange struct {
	Time     time.Time
	IP       netip.Addr
	Service  string // namespace/name
	Slice    string
	Pod      string
	From, To EndpointCondition
}

func (c EndpointChange) String() string {
	who := c.IP.String()
	if c.Pod != "" {
		who += " (pod " + c.Pod + ")"
	}
	if c.From == EndpointAdded {
		return fmt.Sprintf("%s added as %s to EndpointSlice %s at %s", who, c.To, c.Slice, c.Time.UTC().Format(time.RFC3339Nano))
	}
	return fmt.Sprintf("%s went %s -> %s in EndpointSlice %s at %s", who, c.From, c.To, c.Slice, c.Time.UTC().Format(time.RFC3339Nano))
}

// maxChanges bounds the changes kept per address: a flapping readiness
// probe must not grow the index.
const maxChanges = 8

// endpointIndex finds the EndpointSlices of a service and those listing an
// address without scanning every slice, and keeps each address's recent
// endpoint changes for the history window. Guarded by Index.mu.
type endpointIndex struct {
	bySvc   map[string][]string     // service key -> slice keys
	byIP    map[netip.Addr][]string // address -> keys of the slices listing it
	changes map[netip.Addr][]EndpointChange
	// lostReady: when a service's last ready endpoint went away (deleted
	// once it has one again).
	lostReady map[string]time.Time
}

func (e *endpointIndex) init() {
	if e.bySvc == nil {
		e.bySvc = map[string][]string{}
		e.byIP = map[netip.Addr][]string{}
		e.changes = map[netip.Addr][]EndpointChange{}
		e.lostReady = map[string]time.Time{}
	}
}

// update replaces slice k by rec (nil: deleted) before x.slices is: it dates
// each endpoint's condition, records changes and keeps the memberships.
func (e *endpointIndex) update(x *Index, k string, rec *sliceRecord, now time.Time) {
	e.init()
	old := x.slices[k]
	var svcs []string
	if old != nil {
		svcs = append(svcs, old.service)
	}
	if rec != nil && (old == nil || rec.service != old.service) {
		svcs = append(svcs, rec.service)
	}
	before := make([]int, len(svcs))
	for i, s := range svcs {
		before[i] = e.ready(x, s, "", nil) // x.slices still holds old
	}
	if rec != nil {
		for i := range rec.endpoints {
			ne := &rec.endpoints[i]
			if old == nil {
				continue // first sight: how long it has been so is unknown
			}
			ne.Since = now
			if j := slices.IndexFunc(old.endpoints, func(o sliceEndpoint) bool { return o.IP == ne.IP }); j >= 0 {
				if o := &old.endpoints[j]; o.condition() == ne.condition() {
					ne.Since = o.Since
				} else {
					e.record(EndpointChange{Time: now, IP: ne.IP, Service: rec.service, Slice: ne.Slice, Pod: ne.Pod,
						From: o.condition(), To: ne.condition()})
				}
			} else {
				e.record(EndpointChange{Time: now, IP: ne.IP, Service: rec.service, Slice: ne.Slice, Pod: ne.Pod,
					From: EndpointAdded, To: ne.condition()})
			}
		}
	}
	if old != nil {
		for _, o := range old.endpoints {
			if rec == nil || !slices.ContainsFunc(rec.endpoints, func(n sliceEndpoint) bool { return n.IP == o.IP }) {
				e.record(EndpointChange{Time: now, IP: o.IP, Service: old.service, Slice: o.Slice, Pod: o.Pod,
					From: o.condition(), To: EndpointRemoved})
			}
			e.byIP[o.IP] = deleteKey(e.byIP[o.IP], k)
			if len(e.byIP[o.IP]) == 0 {
				delete(e.byIP, o.IP)
			}
		}
		if rec == nil || rec.service != old.service {
			e.bySvc[old.service] = deleteKey(e.bySvc[old.service], k)
			if len(e.bySvc[old.service]) == 0 {
				delete(e.bySvc, old.service)
			}
		}
	}
	if rec != nil {
		for _, n := range rec.endpoints {
			if !slices.Contains(e.byIP[n.IP], k) {
				e.byIP[n.IP] = append(e.byIP[n.IP], k)
			}
		}
		if !slices.Contains(e.bySvc[rec.service], k) {
			e.bySvc[rec.service] = append(e.bySvc[rec.service], k)
		}
	}
	for i, s := range svcs {
		after := e.ready(x, s, k, rec)
		switch {
		case after > 0:
			delete(e.lostReady, s)
		case before[i] > 0:
			e.lostReady[s] = now
		}
	}
}

// ready counts the ready endpoints of service svc, with slice k taken as
// rec instead of what x.slices holds.
func (e *endpointIndex) ready(x *Index, svc, k string, rec *sliceRecord) int {
	n := 0
	count := func(sl *sliceRecord) {
		if sl == nil || sl.service != svc {
			return
		}
		for i := range sl.endpoints {
			if sl.endpoints[i].ready {
				n++
			}
		}
	}
	for _, sk := range e.bySvc[svc] {
		if sk != k {
			count(x.slices[sk])
		}
	}
	count(rec)
	return n
}

func (e *endpointIndex) record(c EndpointChange) {
	cs := append(e.changes[c.IP], c)
	if len(cs) > maxChanges {
		cs = slices.Delete(cs, 0, len(cs)-maxChanges)
	}
	e.changes[c.IP] = cs
}

func deleteKey(keys []string, k string) []string {
	return slices.DeleteFunc(keys, func(s string) bool { return s == k })
}

// prune drops changes older than cutoff, and the loss time of services
// that no longer exist.
func (e *endpointIndex) prune(x *Index, cutoff time.Time) {
	for ip, cs := range e.changes {
		cs = slices.DeleteFunc(cs, func(c EndpointChange) bool { return c.Time.Before(cutoff) })
		if len(cs) == 0 {
			delete(e.changes, ip)
		} else {
			e.changes[ip] = cs
		}
	}
	for s := range e.lostReady {
		if x.services[s] == nil {
			delete(e.lostReady, s)
		}
	}
}

// ServiceView is what an address means for a Service: its ClusterIP, or an
// endpoint address (listed now or removed within the history window).
type ServiceView struct {
	Namespace, Name string
	// Backend: the address is an endpoint of the service, not its ClusterIP.
	Backend bool
	// Endpoint (Backend): the address's endpoint entry; for a removed one,
	// the entry it had, Since the removal.
	Endpoint  EndpointState
	Condition EndpointCondition
	// Counts of the service's endpoints; TerminatingServing is how many
	// terminating ones still serve.
	Ready, NotReady, Terminating, TerminatingServing int
	// LostReadyAt: when the last ready endpoint went away (zero: unknown,
	// or never had one while watched).
	LostReadyAt time.Time

	// Full lookups only.
	State   *ServiceState // nil for an endpoint whose service object is not known
	Slices  []string      // EndpointSlice names, sorted
	Changes []EndpointChange
	// Port is the service port the flow's port reaches: the port itself
	// for a ClusterIP, by targetPort for a backend.
	Port  *corev1.ServicePort
	Ports []string // every port, "name port/proto -> targetPort"
	// SelectorPods counts the namespace's live pods the selector matches,
	// SelectorRunning those in phase Running (-1 without a selector).
	SelectorPods, SelectorRunning int
	// SelectorSample names up to three matching pods.
	SelectorSample []string
}

// SelectorString renders a selector as `k=v,k2=v2` (sorted).
func SelectorString(sel map[string]string) string {
	parts := make([]string, 0, len(sel))
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// Service says which Service ip belongs to: its ClusterIP, or an address its
// EndpointSlices list or listed within the history window (an address
// ready in some service is reported as such). port is the flow's
// destination port. Without full it does not allocate: counts and the
// address's own entry only.
func (x *Index) Service(ip netip.Addr, port uint16, at time.Time, full bool) (ServiceView, bool) {
	ip = ip.Unmap()
	x.mu.RLock()
	defer x.mu.RUnlock()
	if s := x.svcByIP[ip]; s != nil {
		v := ServiceView{Namespace: s.id.Namespace, Name: s.id.Name}
		x.countLocked(&v, s.key)
		if full {
			x.fillLocked(&v, s.key, s.id.Service, port)
		}
		return v, true
	}
	var v ServiceView
	found := false
	for _, sk := range x.eps.byIP[ip] {
		sl := x.slices[sk]
		if sl == nil {
			continue
		}
		for i := range sl.endpoints {
			e := &sl.endpoints[i]
			if e.IP != ip {
				continue
			}
			if found && v.Condition == EndpointReady || found && e.condition() != EndpointReady {
				continue // ready anywhere wins; else the first
			}
			ns, name, _ := strings.Cut(sl.service, "/")
			v, found = ServiceView{Namespace: ns, Name: name, Backend: true, Endpoint: e.EndpointState, Condition: e.condition()}, true
		}
	}
	if !found {
		// Removed: the latest change of the address, if it was a removal
		// no later than the window allows.
		cs := x.eps.changes[ip]
		if len(cs) == 0 {
			return ServiceView{}, false
		}
		c := cs[len(cs)-1]
		if c.To != EndpointRemoved || at.Sub(c.Time) > x.window {
			return ServiceView{}, false
		}
		ns, name, _ := strings.Cut(c.Service, "/")
		v = ServiceView{Namespace: ns, Name: name, Backend: true, Condition: EndpointRemoved,
			Endpoint: EndpointState{IP: ip, Pod: c.Pod, Slice: c.Slice, Since: c.Time}}
	}
	svc := key(v.Namespace, v.Name)
	x.countLocked(&v, svc)
	if full {
		var st *ServiceState
		if s := x.services[svc]; s != nil {
			st = s.id.Service
		}
		x.fillLocked(&v, svc, st, port)
	}
	return v, true
}

// Service is Index.Service on the provider's index.
func (p *Provider) Service(ip netip.Addr, port uint16, at time.Time, full bool) (ServiceView, bool) {
	return p.index.Service(ip, port, at, full)
}

func (x *Index) countLocked(v *ServiceView, svc string) {
	v.LostReadyAt = x.eps.lostReady[svc]
	for _, sk := range x.eps.bySvc[svc] {
		sl := x.slices[sk]
		if sl == nil {
			continue
		}
		for i := range sl.endpoints {
			switch e := &sl.endpoints[i]; e.condition() {
			case EndpointReady:
				v.Ready++
			case EndpointTerminating:
				v.Terminating++
				if e.Serving {
					v.TerminatingServing++
				}
			default:
				v.NotReady++
			}
		}
	}
}

// fillLocked adds what a diagnosis quotes: slices, ports, recent changes
// and the pods the selector matches.
func (x *Index) fillLocked(v *ServiceView, svc string, st *ServiceState, port uint16) {
	v.State = st
	for _, sk := range x.eps.bySvc[svc] {
		_, name, _ := strings.Cut(sk, "/")
		v.Slices = append(v.Slices, name)
	}
	sort.Strings(v.Slices)
	for _, cs := range x.eps.changes {
		for _, c := range cs {
			if c.Service == svc {
				v.Changes = append(v.Changes, c)
			}
		}
	}
	sort.Slice(v.Changes, func(i, j int) bool { return v.Changes[i].Time.Before(v.Changes[j].Time) })
	v.SelectorPods, v.SelectorRunning = -1, -1
	if st == nil {
		return
	}
	for i := range st.Ports {
		p := &st.Ports[i]
		v.Ports = append(v.Ports, portString(p))
		if v.Port == nil && (!v.Backend && p.Port == int32(port) || v.Backend && targets(p, port, v.Endpoint.Pod, v.Namespace, x)) {
			v.Port = p
		}
	}
	if len(st.Selector) == 0 {
		return
	}
	v.SelectorPods, v.SelectorRunning = 0, 0
	for _, r := range x.pods {
		if !r.deletedAt.IsZero() || r.id.Namespace != v.Namespace || !matches(st.Selector, r.id.Labels) {
			continue
		}
		v.SelectorPods++
		if r.id.Phase == corev1.PodRunning {
			v.SelectorRunning++
		}
		v.SelectorSample = append(v.SelectorSample, r.id.Name)
	}
	sort.Strings(v.SelectorSample)
	if len(v.SelectorSample) > 3 {
		v.SelectorSample = v.SelectorSample[:3]
	}
}

func matches(sel, labels map[string]string) bool {
	for k, want := range sel {
		if got, ok := labels[k]; !ok || got != want {
			return false
		}
	}
	return true
}

// targets reports whether service port p forwards to port on the backend:
// a numeric targetPort (or the port itself when unset), or a named one the
// pod declares with that number.
func targets(p *corev1.ServicePort, port uint16, pod, ns string, x *Index) bool {
	switch {
	case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "":
		r := x.pods[key(ns, pod)]
		if r == nil {
			return false
		}
		for _, cp := range r.id.Ports {
			if cp.Name == p.TargetPort.StrVal && cp.Port == int32(port) {
				return true
			}
		}
		return false
	case p.TargetPort.IntVal != 0:
		return p.TargetPort.IntVal == int32(port)
	}
	return p.Port == int32(port)
}

func portString(p *corev1.ServicePort) string {
	proto := p.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	s := fmt.Sprintf("%d/%s", p.Port, proto)
	if p.Name != "" {
		s = p.Name + " " + s
	}
	if t := p.TargetPort.String(); t != "0" && t != "" && t != fmt.Sprint(p.Port) {
		s += " -> " + t
	}
	return s
}
