package k8sctx

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// restarted returns p with container app restarted n times, the last
// instance having stopped at finished for reason/exit.
func restarted(p *corev1.Pod, n int32, finished time.Time, reason string, exit int32) *corev1.Pod {
	p = p.DeepCopy()
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true, RestartCount: n,
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			Reason: reason, ExitCode: exit, FinishedAt: metav1.NewTime(finished)}}}}
	return p
}

func node(name, ip string, ready corev1.ConditionStatus, since time.Time, reason string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, Reason: reason, LastTransitionTime: metav1.NewTime(since)}},
	}}
}

// render is the events as "kind ns/pod container reason exit next node@offset".
func render(evs []LifecycleEvent) string {
	var parts []string
	for _, e := range evs {
		parts = append(parts, strings.Join(strings.Fields(fmt.Sprintf("%s %s/%s %s %s %d %s %s@%s", e.Kind, e.Namespace, e.Pod,
			e.Container, e.Reason, e.ExitCode, e.Next, e.Node, e.Time.Sub(t0))), " "))
	}
	return strings.Join(parts, "; ")
}

func TestLifecycle(t *testing.T) {
	ip := addr("10.0.0.5")
	tests := []struct {
		name  string
		setup func(c *clock, x *Index)
		since time.Duration // from t0; 0: all
		at    time.Duration // from t0
		ip    string        // default ip
		want  string
	}{
		{name: "a container restart of the pod holding the address",
			setup: func(c *clock, x *Index) {
				p := testPod("prod", "backend-0", "10.0.0.5", t0.Add(-time.Minute))
				x.SetPod(p)
				c.advance(20 * time.Second)
				x.SetPod(restarted(p, 1, t0.Add(15*time.Second), "OOMKilled", 137))
			},
			at: 30 * time.Second, want: "container-restarted prod/backend-0 app OOMKilled 137 @15s"},
		{name: "a restart after the asked time is not said",
			setup: func(c *clock, x *Index) {
				p := testPod("prod", "backend-0", "10.0.0.5", t0.Add(-time.Minute))
				x.SetPod(p)
				c.advance(20 * time.Second)
				x.SetPod(restarted(p, 1, t0.Add(15*time.Second), "Error", 1))
			},
			at: 10 * time.Second, want: ""},
		{name: "since bounds the events",
			setup: func(c *clock, x *Index) {
				p := testPod("prod", "backend-0", "10.0.0.5", t0.Add(-time.Minute))
				x.SetPod(p)
				c.advance(20 * time.Second)
				x.SetPod(restarted(p, 1, t0.Add(15*time.Second), "Error", 1))
			},
			since: 16 * time.Second, at: 30 * time.Second, want: ""},
		{name: "a restart older than the window, not pruned yet, is not said",
			setup: func(c *clock, x *Index) {
				p := testPod("prod", "backend-0", "10.0.0.5", t0.Add(-time.Hour))
				x.SetPod(p)
				c.advance(20 * time.Second)
				x.SetPod(restarted(p, 1, t0.Add(15*time.Second), "Error", 1))
			},
			at: 11 * time.Minute, want: ""},
		{name: "deleted, nobody holds the address",
			setup: func(c *clock, x *Index) {
				x.SetPod(testPod("prod", "cache-0", "10.0.0.5", t0.Add(-time.Minute)))
				c.advance(10 * time.Second)
				x.DeletePod("prod", "cache-0")
			},
			at: 20 * time.Second, want: "pod-deleted prod/cache-0 0 @10s"},
		{name: "deleted, the address reused: one event naming the new holder",
			setup: func(c *clock, x *Index) {
				x.SetPod(testPod("prod", "cache-0", "10.0.0.5", t0.Add(-time.Minute)))
				c.advance(10 * time.Second)
				x.DeletePod("prod", "cache-0")
				c.advance(5 * time.Second)
				x.SetPod(testPod("prod", "cache-1", "10.0.0.5", c.t))
			},
			at: 20 * time.Second, want: "pod-deleted prod/cache-0 0 prod/cache-1 @10s"},
		{name: "asked before the reuse: the deletion, no new holder yet",
			setup: func(c *clock, x *Index) {
				x.SetPod(testPod("prod", "cache-0", "10.0.0.5", t0.Add(-time.Minute)))
				c.advance(10 * time.Second)
				x.DeletePod("prod", "cache-0")
				c.advance(5 * time.Second)
				x.SetPod(testPod("prod", "cache-1", "10.0.0.5", c.t))
			},
			at: 12 * time.Second, want: "pod-deleted prod/cache-0 0 @10s"},
		{name: "a finished pod released the address without being deleted",
			setup: func(c *clock, x *Index) {
				p := testPod("prod", "job-0", "10.0.0.5", t0.Add(-time.Minute))
				x.SetPod(p)
				c.advance(10 * time.Second)
				p = p.DeepCopy()
				p.Status.Phase = corev1.PodSucceeded
				x.SetPod(p)
			},
			at: 20 * time.Second, want: "ip-previous-owner prod/job-0 0 @10s"},
		{name: "the pod's node is NotReady",
			setup: func(c *clock, x *Index) {
				x.SetNode(node("node-a", "192.168.1.10", corev1.ConditionUnknown, t0.Add(-3*time.Minute), "NodeStatusUnknown"))
				x.SetPod(testPod("prod", "backend-0", "10.0.0.5", t0.Add(-time.Minute)))
			},
			since: 10 * time.Second, at: 20 * time.Second, want: "node-not-ready prod/backend-0 NodeStatusUnknown 0 node-a@-3m0s"},
		{name: "a node's own address, NotReady",
			setup: func(_ *clock, x *Index) {
				x.SetNode(node("node-b", "192.168.1.11", corev1.ConditionFalse, t0.Add(-time.Minute), "KubeletNotReady"))
			},
			ip: "192.168.1.11", at: 20 * time.Second, want: "node-not-ready / KubeletNotReady 0 node-b@-1m0s"},
		{name: "a Ready node says nothing",
			setup: func(_ *clock, x *Index) {
				x.SetNode(node("node-b", "192.168.1.11", corev1.ConditionTrue, t0.Add(-time.Minute), "KubeletReady"))
			},
			ip: "192.168.1.11", at: 20 * time.Second, want: ""},
		{name: "a node that became Ready again says nothing",
			setup: func(c *clock, x *Index) {
				x.SetNode(node("node-b", "192.168.1.11", corev1.ConditionFalse, t0.Add(-time.Minute), "KubeletNotReady"))
				c.advance(5 * time.Second)
				x.SetNode(node("node-b", "192.168.1.11", corev1.ConditionTrue, c.t, "KubeletReady"))
			},
			ip: "192.168.1.11", at: 20 * time.Second, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t0}
			x := NewIndex(10*time.Minute, c.now)
			tc.setup(c, x)
			a := ip
			if tc.ip != "" {
				a = addr(tc.ip)
			}
			var since time.Time
			if tc.since != 0 {
				since = t0.Add(tc.since)
			}
			if got := render(x.Lifecycle(a, since, t0.Add(tc.at))); got != tc.want {
				t.Errorf("Lifecycle\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// The node's Ready condition survives the informer's transform.
func TestTransformNodeKeepsReady(t *testing.T) {
	n := node("node-b", "192.168.1.11", corev1.ConditionFalse, t0, "KubeletNotReady")
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse})
	out, err := TransformNode(n)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Node).Status.Conditions
	if len(got) != 1 || got[0].Type != corev1.NodeReady || got[0].Reason != "KubeletNotReady" || !got[0].LastTransitionTime.Time.Equal(t0) {
		t.Errorf("conditions = %+v, want only Ready", got)
	}
}
