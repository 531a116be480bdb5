package clusterctx_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/network-correlator/network-correlator/internal/clusterctx"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/k8sctx"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

// The replay fixtures' times are 2026-11-26T02:00:0x.
var fixtureAt = time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)

// lifecycleWorld: the fixtures' client and server pods; change then alters
// the server pod's life, with the index's clock at each step's time.
func lifecycleWorld(t *testing.T, client, server string, change func(x *k8sctx.Index, clock *time.Time)) *clusterctx.Context {
	t.Helper()
	clock := fixtureAt.Add(-10 * time.Minute)
	x := k8sctx.NewIndex(time.Hour, func() time.Time { return clock })
	x.SetPod(pod("front", "web-7c9d-abcde", client, map[string]string{"app": "web"}))
	x.SetPod(pod("prod", "backend-6b7f-xyz12", server, map[string]string{"app": "backend"}))
	change(x, &clock)
	return clusterctx.New(x, func() (bool, string) { return true, "" }, nil)
}

func TestLifecycleReplay(t *testing.T) {
	restartAt := func(base time.Time, ip, reason string, exit int32) func(*k8sctx.Index, *time.Time) {
		return func(x *k8sctx.Index, clock *time.Time) {
			*clock = base.Add(-110 * time.Second)
			p := pod("prod", "backend-6b7f-xyz12", ip, map[string]string{"app": "backend"})
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "c", RestartCount: 1,
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					Reason: reason, ExitCode: exit, FinishedAt: metav1.NewTime(base.Add(-2 * time.Minute))}}}}
			x.SetPod(p)
		}
	}
	restart := func(reason string, exit int32) func(*k8sctx.Index, *time.Time) {
		return restartAt(fixtureAt, "10.0.0.2", reason, exit)
	}
	// The remote fixture, recorded from the real probes, starts at 03:43:05.
	remoteAt := time.Date(2026, 11, 26, 3, 43, 5, 0, time.UTC)
	tests := []struct {
		name, fixture string
		ips           [2]string // client, server; default the fixtures' 10.0.0.1 and 10.0.0.2
		change        func(*k8sctx.Index, *time.Time)
		pattern       diagnosis.Pattern
		cause         string
		summary       string
		resolution    string
		fact          string
		minConf       float64
	}{
		{name: "the server pod was OOM-killed", fixture: "peer_lost_no_socket.jsonl", change: restart("OOMKilled", 137),
			pattern: diagnosis.PatternPeerLostState, cause: pattern.CauseNoSocket,
			summary:    "connection to 10.0.0.2:8080 reset: pod prod/backend-6b7f-xyz12 restarted 2m ago (container c, OOMKilled, exit 137) and lost this connection",
			resolution: "Container c was killed for memory (OOM)",
			fact:       "container c of pod prod/backend-6b7f-xyz12 restarted (restart 1) after it stopped at 2026-11-26T01:58:00Z: OOMKilled, exit code 137",
			minConf:    0.9},
		{name: "the server restarted and listens again", fixture: "peer_lost_new_listener.jsonl", change: restart("Error", 1),
			pattern: diagnosis.PatternPeerLostState, cause: pattern.CauseNewListener,
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
			pattern: diagnosis.PatternPeerLostState, cause: pattern.CauseNoSocket,
			summary:    "connection to 10.0.0.2:8080 reset: 10.0.0.2 belonged to pod prod/backend-6b7f-xyz12, deleted 3m ago; pod prod/backend-6b7f-new01 holds it now, without this connection",
			resolution: "The pod prod/backend-6b7f-xyz12 is gone",
			fact:       "address belonged to pod prod/backend-6b7f-xyz12 until 2026-11-26T01:57:00Z", minConf: 0.9},
		{name: "a remote server pod restarted (only the client's kernel seen)", fixture: "kernel_peer_lost_remote.jsonl",
			ips: [2]string{"10.233.1.2", "10.233.1.3"}, change: restartAt(remoteAt, "10.233.1.3", "Error", 2),
			pattern: diagnosis.PatternPeerLostState, cause: pattern.CauseResetAfterOutage,
			summary: "connection to 10.233.1.3:8083 reset: pod prod/backend-6b7f-xyz12 restarted 2m ago (container c, Error, exit 2) and lost this connection",
			fact:    "restarted (restart 1)", resolution: "Find why container c exited", minConf: 0.7},
		{name: "no lifecycle event: the kernel's summary", fixture: "peer_lost_no_socket.jsonl",
			change:  func(*k8sctx.Index, *time.Time) {},
			pattern: diagnosis.PatternPeerLostState, cause: pattern.CauseNoSocket, summary: "connection to 10.0.0.2:8080 reset: the peer in netns:4026532302 has no socket for it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ips[0] == "" {
				tc.ips = [2]string{"10.0.0.1", "10.0.0.2"}
			}
			ds, _ := replay(t, tc.fixture, lifecycleWorld(t, tc.ips[0], tc.ips[1], tc.change))
			if len(ds) == 0 || ds[0].Pattern != tc.pattern {
				t.Fatalf("diagnoses %+v, want %s first", ds, tc.pattern)
			}
			d := ds[0]
			t.Logf("%s (%.2f)\n  details: %s\n  resolution: %s", d.Summary, d.Confidence, d.Details, d.Resolution)
			if !strings.Contains(d.Key, "/"+tc.cause+"/") {
				t.Errorf("key %s, want cause %s", d.Key, tc.cause)
			}
			if !strings.Contains(d.Summary, tc.summary) {
				t.Errorf("summary lacks %q: %s", tc.summary, d.Summary)
			}
			if !strings.HasPrefix(d.Resolution, tc.resolution) {
				t.Errorf("resolution does not start with %q: %s", tc.resolution, d.Resolution)
			}
			// The event is evidence once: from the address's history, or
			// from the lifecycle when the history lacks it.
			found, times := false, map[time.Time]int{}
			for _, e := range d.Evidence {
				if e.Source == "k8s" || e.Source == "k8s:lifecycle" {
					found = found || tc.fact != "" && strings.Contains(e.Fact, tc.fact)
					if e.Source == "k8s:lifecycle" || strings.Contains(e.Fact, "restarted") {
						times[e.Time]++
					}
				}
			}
			if !found && tc.fact != "" {
				t.Errorf("no evidence %q: %+v", tc.fact, d.Evidence)
			}
			for at, n := range times {
				if n > 1 {
					t.Errorf("the event at %s is evidence %d times: %+v", at, n, d.Evidence)
				}
			}
			if d.Confidence < tc.minConf {
				t.Errorf("confidence %.2f, want >= %.2f", d.Confidence, tc.minConf)
			}
		})
	}
}

// HoldsPod is asked for every reset from a peer: it must not allocate.
func TestHoldsPodAllocatesNothing(t *testing.T) {
	c := lifecycleWorld(t, "10.0.0.1", "10.0.0.2", func(*k8sctx.Index, *time.Time) {})
	pod, other := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.9")
	if !c.HoldsPod(pod, fixtureAt) || c.HoldsPod(other, fixtureAt) {
		t.Fatalf("HoldsPod(%s) = %v, HoldsPod(%s) = %v; want true, false", pod, c.HoldsPod(pod, fixtureAt), other, c.HoldsPod(other, fixtureAt))
	}
	if n := testing.AllocsPerRun(100, func() { c.HoldsPod(pod, fixtureAt); c.HoldsPod(other, fixtureAt) }); n != 0 {
		t.Errorf("HoldsPod allocates %.0f times", n)
	}
}
