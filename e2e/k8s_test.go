//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/network-correlator/network-correlator/internal/clusterctx"
	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/k8sctx"
	"github.com/network-correlator/network-correlator/internal/k8sctx/apitest"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// cluster is a real API server whose pods carry the lab hosts' addresses,
// and the cluster context the correlator gets, fed by real informers.
type cluster struct {
	client kubernetes.Interface
	ctx    *clusterctx.Context
	suffix string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	srv := apitest.Start(t, apitest.Options{})
	cfg := k8sctx.DefaultConfig()
	cfg.EnableK8sMetadata, cfg.EnablePolicyCheck = true, true
	cfg.AuthType, cfg.KubeConfigPath = k8sctx.AuthKubeConfig, srv.WriteKubeconfig(apitest.AdminToken)
	cfg.NodeName = "node-1"
	cfg.SyncTimeout = 10 * time.Second
	p, err := k8sctx.New(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{client: srv.AdminClient(), ctx: clusterctx.ForProvider(p, true, zaptest.NewLogger(t)),
		suffix: fmt.Sprint(time.Now().UnixNano() % 1e6)}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Shutdown)
	if ok, reason := p.Available(); !ok {
		t.Fatalf("cluster context not available after start: %s", reason)
	}
	return c
}

// namespace creates a fresh namespace (they never finish terminating
// without controllers, so each test gets its own name).
func (c *cluster) namespace(t *testing.T, base string) string {
	t.Helper()
	name := base + "-" + c.suffix
	_, err := c.client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"team": base}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// pod creates a running pod with the given address, as the kubelet and the
// CNI would report it.
func (c *cluster) pod(t *testing.T, ns, name string, ip netip.Addr, labels map[string]string, port int32) {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "app:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}}}}},
	}
	p, err := c.client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	if _, err := c.client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitPolicy waits until the informers have delivered what makes the
// evaluator's verdict on f equal denied.
func (c *cluster) waitPolicy(t *testing.T, f signal.Flow, denied bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pf, ok := c.ctx.PolicyCheck(f, false)
		if ok && pf.Denied == denied {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy verdict on %v not reached: ok=%v fact=%+v", f, ok, pf)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A NetworkPolicy admits only role=api to the backend; the client pod is
// app=web. The policy is enforced as iptables-based CNIs do, by a DROP in
// the server's namespace; the diagnosis must name the policy and rule,
// the fix and both pods, and outrank syn_dropped.
func TestNetworkPolicyBlock(t *testing.T) {
	const port = 8080
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("skipping: iptables is not installed")
	}
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	c := startCluster(t)

	front, prod := c.namespace(t, "front"), c.namespace(t, "prod")
	c.pod(t, front, "web-0", client.IP, map[string]string{"app": "web"}, 9000)
	c.pod(t, prod, "backend-0", server.IP, map[string]string{"app": "backend"}, port)
	_, err := c.client.NetworkingV1().NetworkPolicies(prod).Create(context.Background(), &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "backend-allow-api"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "backend"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"role": "api"}},
				}},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.waitPolicy(t, signal.Flow{Proto: 6, Src: client.IP, Dst: server.IP, SrcPort: 40000, DstPort: port}, true)

	// What an iptables-based CNI installs for the policy: traffic to the
	// selected pod's port from peers the policy does not admit is dropped.
	if err := server.Iptables("-A", "INPUT", "-p", "tcp", "-s", client.IP.String(), "--dport", fmt.Sprint(port), "-j", "DROP"); err != nil {
		t.Fatal(err)
	}
	ln, err := server.Listen(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	p := startPipeline(t, l, func(cfg *correlate.Config) { cfg.Cluster = c.ctx })
	const connectTimeout = 6 * time.Second
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		conn, err := client.Dial(context.Background(), netip.AddrPortFrom(server.IP, port), connectTimeout)
		if conn != nil {
			conn.Close()
		}
		done <- err
	}()
	d := p.waitFor(t, connectTimeout+2*time.Second, "network_policy_block", func(d diagnosis.Diagnosis) bool {
		return d.Flow.Dst == server.IP && d.Flow.DstPort == port
	})
	took := time.Since(start)
	if err := <-done; err == nil {
		t.Error("connect succeeded through the DROP")
	}
	t.Logf("after %s: %s (%.2f)\n  details: %s\n  resolution: %s\n  source %+v\n  destination %+v",
		took.Round(time.Millisecond), d.Summary, d.Confidence, d.Details, d.Resolution, d.Source, d.Destination)

	if d.Pattern != diagnosis.PatternNetworkPolicyBlock {
		t.Fatalf("pattern = %s, want %s: %s", d.Pattern, diagnosis.PatternNetworkPolicyBlock, d.Summary)
	}
	want := diagnosis.PolicyRef{Namespace: prod, Name: "backend-allow-api", Direction: "Ingress", Rule: "spec.ingress[0]"}
	if d.Policy == nil || *d.Policy != want {
		t.Errorf("policy = %+v, want %+v", d.Policy, want)
	}
	if d.Layer != diagnosis.LayerPolicy {
		t.Errorf("layer = %s, want policy", d.Layer)
	}
	for _, s := range []string{prod + "/backend-allow-api", "spec.ingress[0]"} {
		if !strings.Contains(d.Summary, s) {
			t.Errorf("summary lacks %q: %s", s, d.Summary)
		}
	}
	for _, s := range []string{"wants `role=api`", "The kernel confirms it", "NETFILTER", "also matched: syn_dropped/netfilter_drop"} {
		if !strings.Contains(d.Details, s) && !(s == "NETFILTER" && strings.Contains(d.Details, "netfilter")) {
			t.Errorf("details lack %q: %s", s, d.Details)
		}
	}
	if !strings.Contains(d.Resolution, "role=api") || !strings.Contains(d.Resolution, front+"/web-0") {
		t.Errorf("resolution does not say to label %s/web-0 role=api: %s", front, d.Resolution)
	}
	if d.Source.K8sNamespace != front || d.Source.K8sPod != "web-0" || d.Source.K8sNode != "node-1" {
		t.Errorf("source = %+v, want pod %s/web-0 on node-1", d.Source, front)
	}
	if d.Destination.K8sNamespace != prod || d.Destination.K8sPod != "backend-0" || d.Destination.K8sNode != "node-1" {
		t.Errorf("destination = %+v, want pod %s/backend-0 on node-1", d.Destination, prod)
	}
	if !hasEvidence(d, "skb:kfree_skb", "NETFILTER_DROP") || !hasEvidence(d, "k8s:networkpolicy", "backend-allow-api") {
		t.Errorf("evidence lacks the kernel drop or the policy verdict: %+v", d.Evidence)
	}
	if d.Confidence < 0.75 {
		t.Errorf("confidence %.2f: the kernel confirms the policy, want >= 0.75", d.Confidence)
	}
}
