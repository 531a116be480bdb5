package k8sctx

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

type ep struct {
	ip, pod                      string
	ready, terminating, notServe bool
}

func slice(ns, name, svc string, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}}}
	for _, e := range eps {
		ready, term, serving := e.ready, e.terminating, !e.notServe
		ne := discoveryv1.Endpoint{Addresses: []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Terminating: &term, Serving: &serving}}
		if e.pod != "" {
			ne.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: e.pod}
		}
		s.Endpoints = append(s.Endpoints, ne)
	}
	return s
}

func backendService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour))},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
				{Name: "admin", Port: 9090, TargetPort: intstr.FromInt32(9091)}}},
	}
}

// The index dates endpoint conditions it saw change, records removals and
// when the service lost its last ready endpoint, and answers for both the
// ClusterIP and a backend address.
func TestServiceView(t *testing.T) {
	c := &clock{t0}
	x := NewIndex(time.Minute, c.now)
	x.SetService(backendService())
	x.SetPod(testPod("shop", "web-1", "10.0.0.5", t0.Add(-time.Hour)))
	x.SetPod(testPod("shop", "web-2", "10.0.0.6", t0.Add(-time.Hour)))
	other := testPod("shop", "db-0", "10.0.0.9", t0.Add(-time.Hour))
	other.Labels = map[string]string{"app": "db"}
	x.SetPod(other)

	x.SetEndpointSlice(slice("shop", "web-abc", "web", ep{ip: "10.0.0.5", pod: "web-1", ready: true}, ep{ip: "10.0.0.6", pod: "web-2", ready: true}))
	v, ok := x.Service(addr("10.96.0.10"), 80, c.t, true)
	if !ok || v.Backend || v.Ready != 2 || v.NotReady != 0 || !v.LostReadyAt.IsZero() || v.Port == nil || v.Port.Name != "http" {
		t.Fatalf("two ready endpoints: %+v", v)
	}
	if v.SelectorPods != 2 || v.SelectorRunning != 2 || strings.Join(v.SelectorSample, ",") != "web-1,web-2" {
		t.Errorf("selector app=web matches %d pods (%d running) %v, want web-1 and web-2", v.SelectorPods, v.SelectorRunning, v.SelectorSample)
	}
	if v, _ := x.Service(addr("10.0.0.5"), 8080, c.t, true); !v.Backend || v.Condition != EndpointReady || !v.Endpoint.Since.IsZero() ||
		v.Port == nil || v.Port.Name != "http" {
		t.Errorf("ready backend at first sight: %+v", v)
	}

	// web-1 fails its readiness probe, web-2 terminates.
	c.advance(10 * time.Second)
	lost := c.t
	x.SetEndpointSlice(slice("shop", "web-abc", "web", ep{ip: "10.0.0.5", pod: "web-1"}, ep{ip: "10.0.0.6", pod: "web-2", terminating: true}))
	c.advance(5 * time.Second)
	v, _ = x.Service(addr("10.96.0.10"), 80, c.t, true)
	if v.Ready != 0 || v.NotReady != 1 || v.Terminating != 1 || v.TerminatingServing != 1 || !v.LostReadyAt.Equal(lost) {
		t.Errorf("after the loss: %+v", v)
	}
	if len(v.Changes) != 2 || v.Changes[0].To == EndpointReady || !strings.Contains(v.Changes[0].String(), "went ready -> ") {
		t.Errorf("changes = %v", v.Changes)
	}
	if strings.Join(v.Slices, ",") != "web-abc" || len(v.Ports) != 2 || v.Ports[1] != "admin 9090/TCP -> 9091" {
		t.Errorf("slices %v ports %v", v.Slices, v.Ports)
	}
	b, ok := x.Service(addr("10.0.0.5"), 8080, c.t, false)
	if !ok || !b.Backend || b.Name != "web" || b.Condition != EndpointNotReady || !b.Endpoint.Since.Equal(lost) || b.Endpoint.Pod != "web-1" ||
		b.Endpoint.Slice != "web-abc" || b.Changes != nil {
		t.Errorf("not-ready backend: %+v", b)
	}

	// web-1 leaves the slice: removed since then; the slice is deleted later.
	c.advance(time.Second)
	removed := c.t
	x.SetEndpointSlice(slice("shop", "web-abc", "web", ep{ip: "10.0.0.6", pod: "web-2", terminating: true, notServe: true}))
	b, ok = x.Service(addr("10.0.0.5"), 8080, c.t, true)
	if !ok || b.Condition != EndpointRemoved || !b.Endpoint.Since.Equal(removed) || b.Endpoint.Pod != "web-1" || b.Terminating != 1 || b.TerminatingServing != 0 {
		t.Errorf("removed backend: %+v", b)
	}
	x.DeleteEndpointSlice("shop", "web-abc")
	if v, _ := x.Service(addr("10.96.0.10"), 80, c.t, true); len(v.Slices) != 0 || v.Terminating != 0 || !v.LostReadyAt.Equal(lost) {
		t.Errorf("after the slice's deletion: %+v", v)
	}
	if b, ok := x.Service(addr("10.0.0.6"), 8080, c.t, false); !ok || b.Condition != EndpointRemoved {
		t.Errorf("web-2 after the slice's deletion: %+v %v", b, ok)
	}

	// Near misses: an unrelated pod, an address back to ready, and history
	// beyond the window.
	if _, ok := x.Service(addr("10.0.0.9"), 5432, c.t, false); ok {
		t.Error("a pod that is no endpoint was attributed to a service")
	}
	x.SetEndpointSlice(slice("shop", "web-def", "web", ep{ip: "10.0.0.5", pod: "web-1", ready: true}))
	if v, _ := x.Service(addr("10.96.0.10"), 80, c.t, false); v.Ready != 1 || !v.LostReadyAt.IsZero() {
		t.Errorf("ready again: %+v", v)
	}
	c.advance(2 * time.Minute)
	x.Prune()
	if b, ok := x.Service(addr("10.0.0.6"), 8080, c.t, false); ok {
		t.Errorf("a removal older than the window is still reported: %+v", b)
	}
}

// A slice moving to another service, services without selector, and the
// per-address bound on changes.
func TestServiceViewEdges(t *testing.T) {
	c := &clock{t0}
	x := NewIndex(time.Hour, c.now)
	x.SetService(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "manual"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", Ports: []corev1.ServicePort{{Port: 5432}}}})
	v, ok := x.Service(addr("10.96.0.20"), 5432, c.t, true)
	if !ok || v.SelectorPods != -1 || v.Port == nil || v.Ready != 0 || len(v.Slices) != 0 {
		t.Errorf("service without selector or slices: %+v", v)
	}
	if v, _ := x.Service(addr("10.96.0.20"), 5433, c.t, true); v.Port != nil {
		t.Errorf("port 5433 matched %+v", v.Port)
	}
	x.SetEndpointSlice(slice("shop", "s1", "manual", ep{ip: "10.0.0.7", ready: true}))
	for i := 0; i < 3*maxChanges; i++ {
		c.advance(time.Second)
		x.SetEndpointSlice(slice("shop", "s1", "manual", ep{ip: "10.0.0.7", ready: i%2 == 1}))
	}
	if n := len(x.eps.changes[addr("10.0.0.7")]); n != maxChanges {
		t.Errorf("%d changes kept for a flapping endpoint, want %d", n, maxChanges)
	}
	x.SetEndpointSlice(slice("shop", "s1", "other", ep{ip: "10.0.0.7", ready: true}))
	if b, _ := x.Service(addr("10.0.0.7"), 5432, c.t, false); b.Name != "other" || b.Condition != EndpointReady {
		t.Errorf("slice relabelled to service other: %+v", b)
	}
	if v, _ := x.Service(addr("10.96.0.20"), 5432, c.t, false); v.Ready != 0 || v.LostReadyAt.IsZero() {
		t.Errorf("manual after its slice moved away: %+v", v)
	}
	if len(x.eps.bySvc["shop/manual"]) != 0 {
		t.Errorf("bySvc still lists %v", x.eps.bySvc["shop/manual"])
	}
}

func TestServiceLookupDoesNotAllocate(t *testing.T) {
	x := NewIndex(time.Minute, nil)
	x.SetService(backendService())
	x.SetEndpointSlice(slice("shop", "web-abc", "web", ep{ip: "10.0.0.5", pod: "web-1"}))
	for _, ip := range []string{"10.96.0.10", "10.0.0.5", "10.0.0.99"} {
		a := addr(ip)
		if n := testing.AllocsPerRun(100, func() { x.Service(a, 80, t0, false) }); n != 0 {
			t.Errorf("Service(%s, brief) allocates %.0f times", ip, n)
		}
	}
}
