package k8sctx

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
)

func TestAnnotate(t *testing.T) {
	c := &clock{t0}
	x := NewIndex(time.Minute, c.now)
	p := testPod("shop", "web-1", "10.0.0.5", t0.Add(-time.Minute))
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", RestartCount: 1,
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 137, Reason: "OOMKilled", FinishedAt: metav1.NewTime(t0.Add(-5 * time.Second))}}}}
	x.SetPod(p)
	x.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.1.10"}}}})
	x.SetService(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10"}})
	no := false
	x.SetEndpointSlice(&discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &no}}},
	})

	tests := []struct {
		addr     string
		want     diagnosis.Endpoint
		known    bool
		evidence []string
	}{
		{"10.0.0.5", diagnosis.Endpoint{K8sNamespace: "shop", K8sPod: "web-1", K8sNode: "node-a", K8sWorkload: "Deployment/web"}, true,
			[]string{"container app of pod shop/web-1 restarted (restart 1) after it stopped at 2026-01-02T03:03:55Z: OOMKilled, exit code 137"}},
		{"192.168.1.10", diagnosis.Endpoint{K8sNode: "node-a"}, true, nil},
		{"10.96.0.10", diagnosis.Endpoint{K8sNamespace: "shop"}, true,
			[]string{"service shop/web has no ready endpoints (1 not ready, 0 terminating, 1 EndpointSlices)"}},
		{"10.9.9.9", diagnosis.Endpoint{}, false, nil},
		{"not-an-ip", diagnosis.Endpoint{}, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			e := diagnosis.Endpoint{Addr: tc.addr, Port: 80}
			ev, known := Annotate(x, &e, t0)
			tc.want.Addr, tc.want.Port = tc.addr, 80
			if e != tc.want || known != tc.known {
				t.Errorf("Annotate = %+v %v, want %+v %v", e, known, tc.want, tc.known)
			}
			var facts []string
			for _, v := range ev {
				if v.Source != EvidenceSource {
					t.Errorf("evidence source %q", v.Source)
				}
				facts = append(facts, v.Fact)
			}
			if strings.Join(facts, "\n") != strings.Join(tc.evidence, "\n") {
				t.Errorf("evidence = %q, want %q", facts, tc.evidence)
			}
		})
	}

	// The provider answers from the same index.
	prov := NewWithClient(testConfig(), nil, nil)
	prov.index = x
	pe := diagnosis.Endpoint{Addr: "10.0.0.5"}
	if _, ok := prov.Annotate(&pe, t0); !ok || pe.K8sPod != "web-1" {
		t.Errorf("Provider.Annotate = %+v %v", pe, ok)
	}

	// After a deletion the address names nobody, the evidence says who had it.
	c.advance(time.Second)
	x.DeletePod("shop", "web-1")
	e := diagnosis.Endpoint{Addr: "10.0.0.5"}
	ev, known := Annotate(x, &e, c.t)
	if known || e.K8sPod != "" || len(ev) != 3 {
		t.Fatalf("after delete: %+v %v %+v", e, known, ev)
	}
	if !strings.Contains(ev[1].Fact, "address belonged to pod shop/web-1 until") || !strings.Contains(ev[2].Fact, "pod shop/web-1 deleted at") {
		t.Errorf("evidence after delete = %+v", ev)
	}
}
