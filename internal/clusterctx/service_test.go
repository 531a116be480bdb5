package clusterctx_test

import (
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/network-correlator/network-correlator/internal/clusterctx"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/k8sctx"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

func backendSlice(ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "backend-x7k2p", Labels: map[string]string{discoveryv1.LabelServiceName: "backend"}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "backend-0"}}},
	}
}

// The refused connection to a backend that went not ready a minute before:
// service_no_endpoints names the Service, the pod, the slice and the change,
// from the real index.
func TestServiceBackendNotReadyReplay(t *testing.T) {
	clock := time.Date(2026, 11, 26, 0, 59, 0, 0, time.UTC) // a minute before refused_closed_port
	ki := k8sctx.NewIndex(time.Hour, func() time.Time { return clock })
	ki.SetPod(pod("front", "web-7c9d-abcde", "10.0.0.1", map[string]string{"app": "web"}))
	ki.SetPod(pod("prod", "backend-0", "10.0.0.2", map[string]string{"app": "backend"}))
	ki.SetService(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "backend"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "backend"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
	ki.SetEndpointSlice(backendSlice(true))
	ki.SetEndpointSlice(backendSlice(false))
	c := clusterctx.New(ki, func() (bool, string) { return true, "" }, nil)

	ds, _ := replay(t, "refused_closed_port.jsonl", c)
	if len(ds) == 0 || ds[0].Pattern != diagnosis.PatternServiceNoEndpoints {
		t.Fatalf("diagnoses %+v, want service_no_endpoints", ds)
	}
	d := ds[0]
	t.Logf("%s\n  details: %s\n  resolution: %s", d.Summary, d.Details, d.Resolution)
	contains(t, "summary", d.Summary, "10.0.0.2 (pod prod/backend-0) is a not-ready endpoint of Service prod/backend since 2026-11-26T00:59:00Z")
	contains(t, "details", d.Details, "list 0 ready, 1 not ready and 0 terminating endpoints")
	contains(t, "details", d.Details, "selector app=backend matches 1 pod(s) in namespace prod (backend-0), 1 Running")
	contains(t, "resolution", d.Resolution, "pod prod/backend-0 fails its readiness probe")
	found := false
	for _, e := range d.Evidence {
		found = found || e.Source == "k8s:endpointslice" && e.Fact == "10.0.0.2 (pod backend-0) went ready -> not ready in EndpointSlice backend-x7k2p at 2026-11-26T00:59:00Z"
	}
	if !found {
		t.Errorf("evidence lacks the endpoint's change: %+v", d.Evidence)
	}
	if d.Source.K8sPod != "web-7c9d-abcde" || d.Destination.K8sPod != "backend-0" {
		t.Errorf("source %+v destination %+v", d.Source, d.Destination)
	}

	// The ClusterIP: brief lookups answer without allocating.
	vip := netip.MustParseAddr("10.96.0.10")
	if f, ok := c.ServiceInfo(vip, 80, clock, false); !ok || f.Backend || f.Ready != 0 || f.NotReady != 1 || f.LostReadyAt != clock {
		t.Errorf("ClusterIP = %+v %v", f, ok)
	}
	if f, _ := c.ServiceInfo(vip, 80, clock, true); f.Port != "http 80/TCP" || !f.Known || f.Selector != "app=backend" {
		t.Errorf("full ClusterIP = %+v", f)
	}
	if n := testing.AllocsPerRun(100, func() { c.ServiceInfo(vip, 80, clock, false) }); n != 0 {
		t.Errorf("brief ServiceInfo allocates %.0f times", n)
	}
	var _ pattern.ServiceCluster = c
}
