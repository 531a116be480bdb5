package clusterctx_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/network-correlator/network-correlator/internal/clusterctx"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/k8sctx"
)

// The replay fixtures' times are 2026-11-26T02:00:0x.
var fixtureAt = time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)

// lifecycleWorld: the fixtures' client and server pods; change then alters
// the server pod's life, with the index's clock at each step's time.
func lifecycleWorld(t *testing.T, change func(x *k8sctx.Index, clock *time.Time)) *clusterctx.Context {
	t.Helper()
	clock := fixtureAt.Add(-10 * time.Minute)
	x := k8sctx.NewIndex(time.Hour, func() time.Time { return clock })
	x.SetPod(pod("front", "web-7c9d-abcde", "10.0.0.1", map[string]string{"app": "web"}))
	x.SetPod(pod("prod", "backend-6b7f-xyz12", "10.0.0.2", map[string]string{"app": "backend"}))
	change(x, &clock)
	return clusterctx.New(x, func() (bool, string) { return true, "" }, nil)
}

func TestLifecycleReplay(t *testing.T) {
	restart := func(reason string, exit int32) func(*k8sctx.Index, *time.Time) {
		return func(x *k8sctx.Index, clock *time.Time) {
			*clock = fixtureAt.Add(-110 * time.Second)
			p := pod("prod", "backend-6b7f-xyz12", "10.0.0.2", map[string]string{"app": "backend"})
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "c", RestartCount: 1,
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					Reason: reason, ExitCode: exit, FinishedAt: metav1.NewTime(fixtureAt.Add(-2 * time.Minute))}}}}
			x.SetPod(p)
		}
	}
	tests := []struct {
		name, fixture string
		change        func(*k8sctx.Index, *time.Time)
		pattern       diagnosis.Pattern
		summary       string
		resolution    string
		fact          string
		minConf       float64
	}{
		{name: "the server pod was OOM-killed", fixture: "peer_lost_no_socket.jsonl", change: restart("OOMKilled", 137),
			pattern:    diagnosis.PatternPeerLostState,
			summary:    "connection to 10.0.0.2:8080 reset: pod prod/backend-6b7f-xyz12 restarted 2m ago (container c, OOMKilled, exit 137) and lost this connection",
			resolution: "Container c was killed for memory (OOM)",
			fact:       "pod prod/backend-6b7f-xyz12 (10.0.0.2) restarted (restart 1): container c, OOMKilled, exit 137 stopped at 2026-11-26T01:58:00Z",
			minConf:    0.9},
		{name: "the server restarted and listens again", fixture: "peer_lost_new_listener.jsonl", change: restart("Error", 1),
			pattern:    diagnosis.PatternPeerLostState,
			summary:    "pod prod/backend-6b7f-xyz12 restarted 2m ago (container c, Error, exit 1) and lost this connection",
			resolution: "Find why container c exited (`kubectl logs -n prod backend-6b7f-xyz12 -c c --previous`",
			fact:       "restarted (restart 1)", minConf: 0.85},
		{name: "the server pod was replaced, its IP reused", fixture: "peer_lost_no_socket.jsonl",
			change: func(x *k8sctx.Index, clock *time.Time) {
				*clock = fixtureAt.Add(-3 * time.Minute)
				x.DeletePod("prod", "backend-6b7f-xyz12")
				*clock = fixtureAt.Add(-time.Minute)
				p := pod("prod", "backend-6b7f-new01", "10.0.0.2", map[string]string{"app": "backend"})
				p.UID = types.UID("new01")
				p.CreationTimestamp = metav1.NewTime(*clock)
				x.SetPod(p)
			},
			pattern:    diagnosis.PatternPeerLostState,
			summary:    "connection to 10.0.0.2:8080 reset: 10.0.0.2 belonged to pod prod/backend-6b7f-xyz12, deleted 3m ago; pod prod/backend-6b7f-new01 holds it now, without this connection",
			resolution: "The pod prod/backend-6b7f-xyz12 is gone",
			fact:       "pod prod/backend-6b7f-xyz12, which held 10.0.0.2, deleted at 2026-11-26T01:57:00Z", minConf: 0.9},
		{name: "no lifecycle event: the kernel's summary", fixture: "peer_lost_no_socket.jsonl",
			change:  func(*k8sctx.Index, *time.Time) {},
			pattern: diagnosis.PatternPeerLostState, summary: "connection to 10.0.0.2:8080 reset: the peer in netns:4026532302 has no socket for it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds, _ := replay(t, tc.fixture, lifecycleWorld(t, tc.change))
			if len(ds) == 0 || ds[0].Pattern != tc.pattern {
				t.Fatalf("diagnoses %+v, want %s first", ds, tc.pattern)
			}
			d := ds[0]
			t.Logf("%s (%.2f)\n  details: %s\n  resolution: %s", d.Summary, d.Confidence, d.Details, d.Resolution)
			if !strings.Contains(d.Summary, tc.summary) {
				t.Errorf("summary lacks %q: %s", tc.summary, d.Summary)
			}
			if !strings.HasPrefix(d.Resolution, tc.resolution) {
				t.Errorf("resolution does not start with %q: %s", tc.resolution, d.Resolution)
			}
			found := false
			for _, e := range d.Evidence {
				if e.Source == "k8s:lifecycle" {
					found = tc.fact != "" && strings.Contains(e.Fact, tc.fact)
					if !found {
						t.Errorf("lifecycle evidence %q, want %q", e.Fact, tc.fact)
					}
				}
			}
			if !found && tc.fact != "" {
				t.Errorf("no lifecycle evidence: %+v", d.Evidence)
			}
			if d.Confidence < tc.minConf {
				t.Errorf("confidence %.2f, want >= %.2f", d.Confidence, tc.minConf)
			}
		})
	}
}
