//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Lifecycle diagnoses against the real API server: the pod behind a peer
// that lost a connection, or whose address no longer resolves, is named
// with the event (restart, deletion, NotReady node) and its age.

// takeOver moves old's address to repl: old's namespace drops off the
// link with its sockets (nothing reaches the client: no FIN, no RST), repl
// answers for the address with a new MAC, and the client re-resolves it.
// It is a pod sandbox coming back with the same IP, or a new pod getting
// the released IP.
func takeOver(t *testing.T, l *lab.Lab, client, old, repl *lab.Host) {
	t.Helper()
	if _, err := old.Run("ip", "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	prefix := netip.PrefixFrom(old.IP, l.Subnet().Bits()).String()
	for _, args := range [][]string{{"addr", "flush", "dev", "eth0"}, {"addr", "add", prefix, "dev", "eth0"}} {
		if _, err := repl.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.Run("ip", "neigh", "flush", "to", old.IP.String()); err != nil {
		t.Fatal(err)
	}
	repl.IP = old.IP
}

// setContainer writes the pod's status as the kubelet does: container app
// running, restarted restarts times, the last instance terminated as last
// says (nil: never).
func (c *cluster) setContainer(t *testing.T, ns, name string, restarts int32, last *corev1.ContainerStateTerminated) {
	t.Helper()
	ctx := context.Background()
	p, err := c.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	started := true
	cs := corev1.ContainerStatus{Name: "app", Image: "app:1", Ready: true, Started: &started, RestartCount: restarts,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}
	if last != nil {
		cs.LastTerminationState.Terminated = last
	}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
	if _, err := c.client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitLifecycle waits until the informers delivered an event of kind for
// addr.
func (c *cluster) waitLifecycle(t *testing.T, addr netip.Addr, kind pattern.LifecycleKind) pattern.LifecycleEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs := c.ctx.Lifecycle(addr, time.Time{}, time.Now())
		for _, e := range evs {
			if e.Kind == kind {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("lifecycle event %d of %s not seen: %+v", kind, addr, evs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lifecycleEvidence finds the evidence of a lifecycle event: from the
// address's history ("k8s"), or said by the lifecycle annotation when the
// history lacks it ("k8s:lifecycle").
func lifecycleEvidence(d diagnosis.Diagnosis, fact string) (diagnosis.Evidence, bool) {
	for _, e := range d.Evidence {
		if (e.Source == "k8s" || e.Source == "k8s:lifecycle") && strings.Contains(e.Fact, fact) {
			return e, true
		}
	}
	return diagnosis.Evidence{}, false
}

// saidOnce fails when the lifecycle annotation repeats an event the
// address's history already gives.
func saidOnce(t *testing.T, d diagnosis.Diagnosis) {
	t.Helper()
	for _, e := range d.Evidence {
		if e.Source != "k8s:lifecycle" {
			continue
		}
		for _, h := range d.Evidence {
			if h.Source == "k8s" && h.Time.Equal(e.Time) {
				t.Errorf("event said twice: %q and %q", e.Fact, h.Fact)
			}
		}
	}
}

// useAfterLoss writes on c and wants ECONNRESET.
func useAfterLoss(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, werr := c.Write([]byte("after restart"))
	var rerr error
	if werr == nil {
		_, rerr = c.Read(make([]byte, 16))
	}
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(rerr, syscall.ECONNRESET) {
		t.Errorf("client got write %v, read %v; want ECONNRESET", werr, rerr)
	}
}

// An established connection to a pod; the pod's server goes away without
// a word to the client and comes back on the same address, the kubelet
// reports the container restart (or the pod is deleted and a new pod gets
// its IP); the client's next write meets a stack without the connection.
// peer_lost_state names the pod, the event and its age.
func TestLifecyclePeerRestarted(t *testing.T) {
	const port = 8080
	c := startCluster(t) // one API server for the subtests, a namespace each
	for i, tc := range []struct {
		name string
		// lose changes the cluster once the old server is gone and returns
		// the event kind to wait for.
		lose       func(t *testing.T, c *cluster, ns, pod string, repl *lab.Host) pattern.LifecycleKind
		summary    []string
		fact       string
		resolution string
		destPod    string
	}{
		{
			name: "container OOM-killed and restarted",
			lose: func(t *testing.T, c *cluster, ns, pod string, _ *lab.Host) pattern.LifecycleKind {
				c.setContainer(t, ns, pod, 1, &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137,
					StartedAt: metav1.NewTime(time.Now().Add(-time.Minute)), FinishedAt: metav1.Now()})
				return pattern.LifecycleRestarted
			},
			summary:    []string{"restarted ", " ago (container app, OOMKilled, exit 137) and lost this connection"},
			fact:       "/backend-7d4b9c-x8k2p restarted (restart 1) after it stopped at ",
			resolution: "Container app was killed for memory (OOM)",
			destPod:    "backend-7d4b9c-x8k2p",
		},
		{
			name: "pod deleted, its IP given to a new pod",
			lose: func(t *testing.T, c *cluster, ns, pod string, repl *lab.Host) pattern.LifecycleKind {
				if err := c.client.CoreV1().Pods(ns).Delete(context.Background(), pod,
					metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
					t.Fatal(err)
				}
				c.waitLifecycle(t, repl.IP, pattern.LifecycleDeleted)
				c.pod(t, ns, "backend-7d4b9c-q9w3e", repl.IP, map[string]string{"app": "backend", "pod-template-hash": "7d4b9c"}, port)
				return pattern.LifecycleDeleted
			},
			summary:    []string{"belonged to pod ", "/backend-7d4b9c-x8k2p, deleted ", "/backend-7d4b9c-q9w3e holds it now, without this connection"},
			fact:       "address belonged to pod ",
			resolution: "The pod ",
			destPod:    "backend-7d4b9c-q9w3e",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			old := l.MustAddHost(t, "server")
			repl := l.MustAddHost(t, "server2")
			front, prod := c.namespace(t, fmt.Sprint("front", i)), c.namespace(t, fmt.Sprint("prod", i))
			c.pod(t, front, "web-5d8f7c9b4-x2x7k", client.IP, webLabels, 9000)
			const backend = "backend-7d4b9c-x8k2p"
			c.pod(t, prod, backend, old.IP, map[string]string{"app": "backend", "pod-template-hash": "7d4b9c"}, port)
			c.setContainer(t, prod, backend, 0, nil)

			p := startPipeline(t, l, func(cfg *correlate.Config) { cfg.Cluster = c.ctx })
			conn, s := connected(t, client, old, port)
			// Closed only after the diagnosis: old's namespace is off the link by then.
			t.Cleanup(func() { abortClose(conn); abortClose(s) })

			start := time.Now()
			takeOver(t, l, client, old, repl)
			ln, err := repl.Listen(port)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			kind := tc.lose(t, c, prod, backend, repl)
			ev := c.waitLifecycle(t, repl.IP, kind)

			useAfterLoss(t, conn)
			d := p.waitFor(t, 5*time.Second, "peer_lost_state", func(d diagnosis.Diagnosis) bool {
				return d.Pattern == diagnosis.PatternPeerLostState && d.Flow.Dst == old.IP && d.Flow.DstPort == port
			})
			logDiagnosis(t, d, start)
			for _, s := range tc.summary {
				if !strings.Contains(d.Summary, s) {
					t.Errorf("summary lacks %q: %s", s, d.Summary)
				}
			}
			if !strings.Contains(d.Summary, "pod "+prod+"/") {
				t.Errorf("summary does not name a pod of %s: %s", prod, d.Summary)
			}
			if !strings.Contains(d.Details, "The peer's cluster lifecycle explains it") {
				t.Errorf("details: %s", d.Details)
			}
			if !strings.HasPrefix(d.Resolution, tc.resolution) {
				t.Errorf("resolution does not start with %q: %s", tc.resolution, d.Resolution)
			}
			if e, ok := lifecycleEvidence(d, tc.fact); !ok || !e.Time.Equal(ev.Time) {
				t.Errorf("evidence lacks the event %q at its time %s: %+v", tc.fact, ev.Time, d.Evidence)
			}
			if !hasEvidence(d, "tcp:tcp_receive_reset", "ESTABLISHED") {
				t.Errorf("evidence lacks the client's RST: %+v", d.Evidence)
			}
			saidOnce(t, d)
			if d.Confidence < 0.85 {
				t.Errorf("confidence %.2f, want >= 0.85 with the cluster's event", d.Confidence)
			}
			if d.Destination.K8sNamespace != prod || d.Destination.K8sPod != tc.destPod {
				t.Errorf("destination = %+v, want pod %s/%s", d.Destination, prod, tc.destPod)
			}
			if d.Source.K8sPod != "web-5d8f7c9b4-x2x7k" {
				t.Errorf("source = %+v, want the client pod", d.Source)
			}
		})
	}
}

// podOn creates a running pod on node with the given address.
func (c *cluster) podOn(t *testing.T, ns, name, node string, ip netip.Addr) {
	t.Helper()
	ctx := context.Background()
	p, err := c.client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "cache"}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	if _, err := c.client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// lifecycleWant is a diagnosis a lifecycle scenario must produce.
type lifecycleWant struct {
	pattern diagnosis.Pattern
	dst     netip.Addr // the diagnosis' flow destination
	summary string
	fact    string // of the event's evidence (lifecycleEvidence)
}

// ARP to an address whose pod was deleted, or to the node a pod on a
// NotReady node is routed through: arp_failure says whose address it was,
// or which node is NotReady and for how long; the connection's own
// diagnosis names its pod's node.
func TestLifecycleARP(t *testing.T) {
	podIP := netip.MustParseAddr("10.250.2.7") // off the lab subnet: routed through its node
	c := startCluster(t)                       // one API server for the subtests, a namespace each
	for i, tc := range []struct {
		name string
		// setup prepares the cluster and the client and returns the address
		// to dial; next is the neighbour that fails.
		setup func(t *testing.T, c *cluster, client *lab.Host, prod string, next netip.Addr) netip.Addr
		kind  pattern.LifecycleKind
		want  func(prod string, next netip.Addr) []lifecycleWant
	}{
		{
			name: "a deleted pod's address",
			setup: func(t *testing.T, c *cluster, _ *lab.Host, prod string, next netip.Addr) netip.Addr {
				c.pod(t, prod, "cache-0", next, map[string]string{"app": "cache"}, 6379)
				if err := c.client.CoreV1().Pods(prod).Delete(context.Background(), "cache-0",
					metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
					t.Fatal(err)
				}
				return next
			},
			kind: pattern.LifecycleDeleted,
			want: func(prod string, next netip.Addr) []lifecycleWant {
				return []lifecycleWant{{diagnosis.PatternARPFailure, next,
					fmt.Sprintf("; %s belonged to pod %s/cache-0, deleted ", next, prod), "/cache-0 deleted at "}}
			},
		},
		{
			name: "a pod on a NotReady node, routed through the node",
			setup: func(t *testing.T, c *cluster, client *lab.Host, prod string, next netip.Addr) netip.Addr {
				ctx := context.Background()
				n, err := c.client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"}},
					metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				n.Status = corev1.NodeStatus{
					Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: next.String()}},
					Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown,
						Reason: "NodeStatusUnknown", LastTransitionTime: metav1.NewTime(time.Now().Add(-2 * time.Minute))}},
				}
				if _, err := c.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
				c.podOn(t, prod, "cache-1", "node-2", podIP)
				c.waitLifecycle(t, podIP, pattern.LifecycleNodeNotReady)
				if _, err := client.Run("ip", "route", "add", podIP.String()+"/32", "via", next.String()); err != nil {
					t.Fatal(err)
				}
				return podIP
			},
			kind: pattern.LifecycleNodeNotReady,
			want: func(prod string, next netip.Addr) []lifecycleWant {
				return []lifecycleWant{
					{diagnosis.PatternARPFailure, next, fmt.Sprintf("; %s is node node-2, NotReady for 2m", next), "node node-2 NotReady since "},
					{diagnosis.PatternSYNDropped, podIP, fmt.Sprintf("; pod %s/cache-1 runs on node node-2, NotReady for 2m", prod),
						"node node-2 NotReady since "},
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			front, prod := c.namespace(t, fmt.Sprint("front", i)), c.namespace(t, fmt.Sprint("prod", i))
			c.pod(t, front, "web-5d8f7c9b4-x2x7k", client.IP, webLabels, 9000)
			// .200 of the lab subnet: on link, held by no lab host.
			a := client.IP.As4()
			a[3] = 200
			next := netip.AddrFrom4(a)
			dst := tc.setup(t, c, client, prod, next)
			c.waitLifecycle(t, next, tc.kind)

			p := startPipeline(t, l, func(cfg *correlate.Config) { cfg.Cluster = c.ctx })
			start := time.Now()
			if conn, err := client.Dial(context.Background(), netip.AddrPortFrom(dst, 6379), 8*time.Second); err == nil {
				conn.Close()
				t.Fatal("connect through an unresolvable neighbour succeeded")
			}
			for _, w := range tc.want(prod, next) {
				d := p.waitFor(t, 8*time.Second, string(w.pattern), func(d diagnosis.Diagnosis) bool {
					return d.Pattern == w.pattern && d.Flow.Dst == w.dst
				})
				logDiagnosis(t, d, start)
				if !strings.Contains(d.Summary, w.summary) {
					t.Errorf("%s summary lacks %q: %s", w.pattern, w.summary, d.Summary)
				}
				if _, ok := lifecycleEvidence(d, w.fact); !ok {
					t.Errorf("%s evidence lacks %q: %+v", w.pattern, w.fact, d.Evidence)
				}
				saidOnce(t, d)
				if !strings.Contains(d.Details, "The peer's cluster lifecycle explains why nothing answers") {
					t.Errorf("%s details: %s", w.pattern, d.Details)
				}
			}
		})
	}
}

// A remote peer restarts: this node sees only the client's kernel (the
// engine is fed the client namespace's signals alone, as on a node whose
// peer is elsewhere). The client's data goes unanswered while the peer is
// away, then the peer, back without the connection, answers with a RST:
// peer_lost_state, reset_after_outage.
func TestRemotePeerRestarted(t *testing.T) {
	const port = 8083
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	old := l.MustAddHost(t, "server")
	repl := l.MustAddHost(t, "server2")
	p := startPipelineKeeping(t, l, func(s *signal.Signal) bool { return s.NetnsInode == client.Inode })
	conn, s := connected(t, client, old, port)
	t.Cleanup(func() { abortClose(conn); abortClose(s) })

	// The peer goes away: its link drops, the client's data goes unanswered.
	start := time.Now()
	if _, err := old.Run("ip", "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("while the peer is away")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // a few retransmission timeouts
	// It comes back on the same address, listening again, without the connection.
	takeOver(t, l, client, old, repl)
	ln, err := repl.Listen(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	_ = conn.SetReadDeadline(time.Now().Add(8 * time.Second))
	if _, err := conn.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read %v, want ECONNRESET", err)
	}
	d := p.waitFor(t, 5*time.Second, "peer_lost_state", func(d diagnosis.Diagnosis) bool {
		return d.Pattern == diagnosis.PatternPeerLostState && d.Flow.Dst == old.IP && d.Flow.DstPort == port
	})
	logDiagnosis(t, d, start)
	if !strings.Contains(d.Key, "/"+pattern.CauseResetAfterOutage+"/") {
		t.Errorf("key %s, want cause %s", d.Key, pattern.CauseResetAfterOutage)
	}
	if want := "reset after its data went unanswered: the peer came back without the connection"; !strings.Contains(d.Summary, want) {
		t.Errorf("summary lacks %q: %s", want, d.Summary)
	}
	if !strings.Contains(d.Details, "It is not on this node, so its side is not seen") {
		t.Errorf("details do not say the peer's side is unseen: %s", d.Details)
	}
	// The RST itself may have rotated out of the few socket signals the
	// correlator keeps per connection; the close with ECONNRESET says it came.
	if !hasEvidence(d, "tcp:tcp_retransmit_skb", "ESTABLISHED") ||
		!hasEvidence(d, "tcp:tcp_receive_reset", "ESTABLISHED") && !hasEvidence(d, "sock:inet_sock_set_state", "ECONNRESET") {
		sigs, _ := p.snapshot()
		t.Errorf("evidence lacks the unanswered retransmits or the RST: %+v\nsignals:%s", d.Evidence, signalsOf(sigs, d))
	}
	if hasEvidence(d, "skb:kfree_skb", "") || hasEvidence(d, "tcp:tcp_send_reset", "") {
		t.Errorf("the peer's kernel was to be unseen: %+v", d.Evidence)
	}
	if d.Destination.NetnsInode != 0 {
		t.Errorf("destination netns %d: the remote peer's namespace is unknown here", d.Destination.NetnsInode)
	}
	time.Sleep(300 * time.Millisecond)
	recordSignals(t, p, "peer_lost_remote", "Recorded by e2e TestRemotePeerRestarted -record: only the client namespace's signals (the peer\n"+
		"is remote); the peer's link goes down while the client writes, a new namespace takes its IP and\n"+
		"listens on the port. Expect peer_lost_state, reset_after_outage, at the client's close.")
}
