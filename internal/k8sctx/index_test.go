package k8sctx

import (
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func testPod(ns, name, ip string, created time.Time) *corev1.Pod {
	ctrl := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, UID: types.UID(ns + "-" + name + "-" + created.Format("150405")),
			CreationTimestamp: metav1.NewTime(created),
			Labels:            map[string]string{"app": "web", "pod-template-hash": "5d8f7c9b4"},
			OwnerReferences:   []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-5d8f7c9b4", Controller: &ctrl}},
		},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{
			Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	return p
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestLookupPod(t *testing.T) {
	c := &clock{t0}
	x := NewIndex(time.Minute, c.now)
	x.SetPod(testPod("shop", "web-1", "10.0.0.5", t0.Add(-time.Second)))

	id, hist := x.Lookup(addr("10.0.0.5"), t0)
	want := Identity{Kind: KindPod, Namespace: "shop", Name: "web-1", Node: "node-a",
		Workload: Workload{Kind: "Deployment", Name: "web"}, Phase: corev1.PodRunning}
	if id.Kind != want.Kind || id.Namespace != want.Namespace || id.Name != want.Name || id.Node != want.Node ||
		id.Workload != want.Workload || id.Phase != want.Phase {
		t.Errorf("Lookup = %+v, want %+v", id, want)
	}
	if len(id.Ports) != 1 || id.Ports[0] != (ContainerPort{Container: "app", Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}) {
		t.Errorf("Ports = %+v", id.Ports)
	}
	if id.Labels["app"] != "web" {
		t.Errorf("Labels = %v", id.Labels)
	}
	if len(hist) != 0 {
		t.Errorf("History = %+v, want none", hist)
	}
	// An IPv4-mapped IPv6 address is the same IPv4 address.
	if id, _ := x.Lookup(addr("::ffff:10.0.0.5"), t0); id.Name != "web-1" {
		t.Errorf("mapped lookup = %+v", id)
	}
	if id, _ := x.Lookup(addr("10.0.0.6"), t0); id.Known() {
		t.Errorf("unknown IP = %+v", id)
	}
}

func TestWorkloadOf(t *testing.T) {
	ctrl := true
	tests := []struct {
		name   string
		labels map[string]string
		refs   []metav1.OwnerReference
		want   Workload
	}{
		{"deployment", map[string]string{"pod-template-hash": "abc12"},
			[]metav1.OwnerReference{{Kind: "ReplicaSet", Name: "api-abc12", Controller: &ctrl}}, Workload{"Deployment", "api"}},
		{"bare replicaset", nil,
			[]metav1.OwnerReference{{Kind: "ReplicaSet", Name: "api-abc12", Controller: &ctrl}}, Workload{"ReplicaSet", "api-abc12"}},
		{"hash mismatch", map[string]string{"pod-template-hash": "zzz"},
			[]metav1.OwnerReference{{Kind: "ReplicaSet", Name: "api-abc12", Controller: &ctrl}}, Workload{"ReplicaSet", "api-abc12"}},
		{"statefulset", nil,
			[]metav1.OwnerReference{{Kind: "StatefulSet", Name: "db", Controller: &ctrl}}, Workload{"StatefulSet", "db"}},
		{"not a controller", nil, []metav1.OwnerReference{{Kind: "StatefulSet", Name: "db"}}, Workload{}},
		{"bare pod", nil, nil, Workload{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: tc.labels, OwnerReferences: tc.refs}}
			if got := WorkloadOf(p); got != tc.want {
				t.Errorf("WorkloadOf = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDeleteAndIPReuse(t *testing.T) {
	c := &clock{t0}
	x := NewIndex(time.Minute, c.now)
	x.SetPod(testPod("shop", "web-1", "10.0.0.5", t0.Add(-10*time.Second)))
	c.advance(5 * time.Second)
	tDel := c.t
	x.DeletePod("shop", "web-1")

	// Just before the deletion the IP was web-1's; the history says it went.
	id, hist := x.Lookup(addr("10.0.0.5"), tDel.Add(-time.Second))
	if id.Name != "web-1" || !id.DeletedAt.Equal(tDel) {
		t.Errorf("before delete: %+v", id)
	}
	if len(hist) != 1 || hist[0].Kind != EventPodDeleted || !hist[0].Time.Equal(tDel) {
		t.Errorf("before delete history = %+v", hist)
	}
	// After the deletion nobody holds it, the history names the last owner.
	c.advance(2 * time.Second)
	id, hist = x.Lookup(addr("10.0.0.5"), c.t)
	if id.Known() {
		t.Errorf("after delete: %+v", id)
	}
	if !hasEvent(hist, EventIPPreviousOwner, "web-1", tDel) || !hasEvent(hist, EventPodDeleted, "web-1", tDel) {
		t.Errorf("after delete history = %+v", hist)
	}

	// The IP is reused by another pod.
	c.advance(3 * time.Second)
	tReuse := c.t
	x.SetPod(testPod("shop", "web-2", "10.0.0.5", tReuse))
	id, hist = x.Lookup(addr("10.0.0.5"), tReuse.Add(time.Second))
	if id.Name != "web-2" {
		t.Errorf("after reuse: %+v", id)
	}
	if !hasEvent(hist, EventIPPreviousOwner, "web-1", tDel) {
		t.Errorf("after reuse history = %+v", hist)
	}
	// A signal from before the reuse still names the old owner.
	if id, _ := x.Lookup(addr("10.0.0.5"), tDel.Add(-time.Second)); id.Name != "web-1" {
		t.Errorf("old signal: %+v", id)
	}

	// Outside the window the old owner is forgotten.
	c.advance(2 * time.Minute)
	x.Prune()
	_, hist = x.Lookup(addr("10.0.0.5"), c.t)
	if len(hist) != 0 {
		t.Errorf("after prune history = %+v", hist)
	}
	if st := x.Stats(); st.Pods != 1 || st.DeletedPods != 0 || st.IPs != 1 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestIPTakenOverWithoutDelete(t *testing.T) {
	// A finished pod keeps its object but gives its IP back; a missed delete
	// is resolved by the new owner taking the IP.
	c := &clock{t0}
	x := NewIndex(time.Minute, c.now)
	x.SetPod(testPod("a", "job-1", "10.0.0.9", t0.Add(-time.Minute)))
	c.advance(time.Second)
	x.SetPod(testPod("b", "other", "10.0.0.9", c.t))
	id, hist := x.Lookup(addr("10.0.0.9"), c.t.Add(time.Millisecond))
	if id.Name != "other" || !hasEvent(hist, EventIPPreviousOwner, "job-1", c.t) {
		t.Errorf("takeover: %+v %+v", id, hist)
	}

	done := testPod("a", "job-1", "10.0.0.9", t0.Add(-time.Minute))
	done.Status.Phase = corev1.PodSucceeded
	x.SetPod(done)
	if id, _ := x.Lookup(addr("10.0.0.9"), c.t.Add(time.Second)); id.Name != "other" {
		t.Errorf("after the finished pod's update: %+v", id)
	}
}

func TestContainerRestarts(t *testing.T) {
	c := &clock{t0}
	x := NewIndex(time.Minute, c.now)
	p := testPod("shop", "web-1", "10.0.0.5", t0.Add(-time.Minute))
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true}}
	x.SetPod(p)

	// The container is OOM-killed: first terminated, then restarted.
	finished := c.t.Add(time.Second)
	c.advance(2 * time.Second)
	p = p.DeepCopy()
	p.Status.ContainerStatuses[0].State.Terminated = &corev1.ContainerStateTerminated{
		ExitCode: 137, Reason: "OOMKilled", FinishedAt: metav1.NewTime(finished)}
	x.SetPod(p)
	c.advance(time.Second)
	p = p.DeepCopy()
	p.Status.ContainerStatuses[0].State.Terminated = nil
	p.Status.ContainerStatuses[0].RestartCount = 1
	p.Status.ContainerStatuses[0].LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
		ExitCode: 137, Reason: "OOMKilled", FinishedAt: metav1.NewTime(finished)}
	x.SetPod(p)
	// Then it exits with an error and restarts again, seen in one update.
	finished2 := c.t.Add(time.Second)
	c.advance(5 * time.Second)
	p = p.DeepCopy()
	p.Status.ContainerStatuses[0].RestartCount = 2
	p.Status.ContainerStatuses[0].LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
		ExitCode: 1, Reason: "Error", FinishedAt: metav1.NewTime(finished2)}
	x.SetPod(p)
	x.SetPod(p) // a repeated update adds nothing

	_, hist := x.Lookup(addr("10.0.0.5"), c.t)
	want := History{
		{Time: finished, Kind: EventContainerRestarted, Namespace: "shop", Pod: "web-1", Container: "app", Reason: "OOMKilled", ExitCode: 137, RestartCount: 1},
		{Time: finished2, Kind: EventContainerRestarted, Namespace: "shop", Pod: "web-1", Container: "app", Reason: "Error", ExitCode: 1, RestartCount: 2},
	}
	if len(hist) != len(want) {
		t.Fatalf("History = %+v, want %+v", hist, want)
	}
	for i := range want {
		if hist[i] != want[i] {
			t.Errorf("History[%d] = %+v, want %+v", i, hist[i], want[i])
		}
	}
}

func TestRestartSeenOnFirstSight(t *testing.T) {
	tests := []struct {
		name     string
		finished time.Duration // before now
		want     int
	}{
		{"recent", 10 * time.Second, 1},
		{"older than the window", 2 * time.Minute, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t0}
			x := NewIndex(time.Minute, c.now)
			p := testPod("shop", "web-1", "10.0.0.5", t0.Add(-time.Hour))
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", RestartCount: 3,
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 2, Reason: "Error", FinishedAt: metav1.NewTime(t0.Add(-tc.finished))}}}}
			x.SetPod(p)
			if _, hist, _ := x.LookupPod("shop", "web-1"); len(hist) != tc.want {
				t.Errorf("History = %+v, want %d events", hist, tc.want)
			}
		})
	}
}

func TestServiceEndpoints(t *testing.T) {
	x := NewIndex(time.Minute, nil)
	x.SetService(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}},
	})
	id, _ := x.Lookup(addr("10.96.0.10"), t0)
	if id.Kind != KindService || id.Name != "web" || id.Service == nil || len(id.Service.Ready) != 0 || id.Service.Slices != 0 || !id.Service.HasSelector {
		t.Fatalf("service without slices: %+v %+v", id, id.Service)
	}
	no, yes := false, true
	x.SetEndpointSlice(&discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &no},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-1"}},
			{Addresses: []string{"10.0.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: &no, Terminating: &yes}},
			{Addresses: []string{"10.0.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}},
		},
	})
	id, _ = x.Lookup(addr("10.96.0.10"), t0)
	st := id.Service
	if st.Slices != 1 || len(st.Ready) != 1 || st.Ready[0].IP != addr("10.0.0.7") ||
		len(st.NotReady) != 1 || st.NotReady[0].Pod != "web-1" || len(st.Terminating) != 1 {
		t.Errorf("ServiceState = %+v", st)
	}
	x.DeleteEndpointSlice("shop", "web-abc")
	if id, _ := x.LookupService("shop", "web"); id.Service.Slices != 0 || len(id.Service.Ready) != 0 {
		t.Errorf("after slice delete: %+v", id.Service)
	}
	x.DeleteService("shop", "web")
	if id, _ := x.Lookup(addr("10.96.0.10"), t0); id.Known() {
		t.Errorf("after service delete: %+v", id)
	}
}

func TestNodeAndHostNetwork(t *testing.T) {
	x := NewIndex(time.Minute, nil)
	x.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "192.168.1.10"}, {Type: corev1.NodeHostName, Address: "node-a"}}}})
	hn := testPod("kube-system", "proxy", "192.168.1.10", t0)
	hn.Spec.HostNetwork = true
	x.SetPod(hn)
	id, _ := x.Lookup(addr("192.168.1.10"), t0)
	if id.Kind != KindNode || id.Name != "node-a" {
		t.Errorf("node IP = %+v", id)
	}
	if id, _, ok := x.LookupPod("kube-system", "proxy"); !ok || !id.HostNetwork {
		t.Errorf("host-network pod by name = %+v %v", id, ok)
	}
	x.DeleteNode("node-a")
	if id, _ := x.Lookup(addr("192.168.1.10"), t0); id.Known() {
		t.Errorf("after node delete = %+v", id)
	}
}

func TestSignalBeforeInformer(t *testing.T) {
	// The network uses an IP before the API reports it: a signal that
	// predates the ownership still names the only owner the IP ever had.
	c := &clock{t0}
	x := NewIndex(time.Minute, c.now)
	x.SetPod(testPod("shop", "web-1", "10.0.0.5", t0))
	if id, _ := x.Lookup(addr("10.0.0.5"), t0.Add(-time.Second)); id.Name != "web-1" {
		t.Errorf("early signal = %+v", id)
	}
}

func TestRecreatedSameName(t *testing.T) {
	// A StatefulSet pod comes back with the same name, a new UID and a new IP.
	c := &clock{t0}
	x := NewIndex(time.Minute, c.now)
	x.SetPod(testPod("db", "db-0", "10.0.1.1", t0.Add(-time.Minute)))
	c.advance(time.Second)
	x.SetPod(testPod("db", "db-0", "10.0.1.2", c.t))
	_, hist := x.Lookup(addr("10.0.1.1"), c.t)
	if !hasEvent(hist, EventIPPreviousOwner, "db-0", c.t) {
		t.Errorf("old IP history = %+v", hist)
	}
	if id, _ := x.Lookup(addr("10.0.1.2"), c.t); id.Name != "db-0" || !id.DeletedAt.IsZero() {
		t.Errorf("new IP = %+v", id)
	}
}

func hasEvent(h History, k EventKind, pod string, at time.Time) bool {
	for _, e := range h {
		if e.Kind == k && e.Pod == pod && e.Time.Equal(at) {
			return true
		}
	}
	return false
}
