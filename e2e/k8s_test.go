//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
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
	srv      *apitest.Server
	provider *k8sctx.Provider
	client   kubernetes.Interface
	ctx      *clusterctx.Context
	suffix   string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	srv := apitest.Start(t, apitest.Options{})
	cfg := k8sctx.DefaultConfig()
	cfg.EnableK8sMetadata, cfg.EnablePolicyCheck = true, true
	cfg.AuthType, cfg.KubeConfigPath = k8sctx.AuthKubeConfig, srv.WriteKubeconfig(apitest.AdminToken)
	cfg.NodeName = "node-1"
	cfg.SyncTimeout = 10 * time.Second
	cfg.HealthCheckInterval = 500 * time.Millisecond // outages noticed fast
	p, err := k8sctx.New(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{srv: srv, provider: p, client: srv.AdminClient(), ctx: clusterctx.ForProvider(p, true, zaptest.NewLogger(t)),
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
// A pod labelled pod-template-hash=H is owned by ReplicaSet <app>-H, as the
// Deployment controller names them.
func (c *cluster) pod(t *testing.T, ns, name string, ip netip.Addr, labels map[string]string, port int32) {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "app:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}}}}},
	}
	if h := labels["pod-template-hash"]; h != "" {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet",
			Name: labels["app"] + "-" + h, UID: "rs-uid", Controller: &[]bool{true}[0]}}
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

// policyLab is the NetworkPolicy scenario: a client pod (Deployment
// web) and a backend pod whose policy admits only role=api, enforced as
// iptables-based CNIs do by a DROP in the server's namespace of traffic
// from the client to the port.
type policyLab struct {
	l              *lab.Lab
	client, server *lab.Host
	c              *cluster
	front, prod    string
}

const policyPort = 8080

func newPolicyLab(t *testing.T, clientLabels map[string]string) *policyLab {
	t.Helper()
	needTool(t, "iptables")
	pl := &policyLab{l: lab.New(t)}
	pl.client = pl.l.MustAddHost(t, "client")
	pl.server = pl.l.MustAddHost(t, "server")
	c := startCluster(t)
	pl.c = c
	pl.front, pl.prod = c.namespace(t, "front"), c.namespace(t, "prod")
	c.pod(t, pl.front, "web-5d8f7c9b4-x2x7k", pl.client.IP, clientLabels, 9000)
	c.pod(t, pl.prod, "backend-0", pl.server.IP, map[string]string{"app": "backend"}, policyPort)
	_, err := c.client.NetworkingV1().NetworkPolicies(pl.prod).Create(context.Background(), &networkingv1.NetworkPolicy{
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
	c.waitPolicy(t, signal.Flow{Proto: 6, Src: pl.client.IP, Dst: pl.server.IP, SrcPort: 40000, DstPort: policyPort},
		clientLabels["role"] != "api")
	if err := pl.server.Iptables("-A", "INPUT", "-p", "tcp", "-s", pl.client.IP.String(), "--dport", fmt.Sprint(policyPort), "-j", "DROP"); err != nil {
		t.Fatal(err)
	}
	ln, err := pl.server.Listen(policyPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return pl
}

// connect dials the backend through the pipeline and returns its first
// diagnosis of the connection.
func (pl *policyLab) connect(t *testing.T) diagnosis.Diagnosis {
	t.Helper()
	p := startPipeline(t, pl.l, func(cfg *correlate.Config) { cfg.Cluster = pl.c.ctx })
	const connectTimeout = 6 * time.Second
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		conn, err := pl.client.Dial(context.Background(), netip.AddrPortFrom(pl.server.IP, policyPort), connectTimeout)
		if conn != nil {
			conn.Close()
		}
		done <- err
	}()
	d := p.waitFor(t, connectTimeout+2*time.Second, "a diagnosis", func(d diagnosis.Diagnosis) bool {
		return d.Flow.Dst == pl.server.IP && d.Flow.DstPort == policyPort
	})
	took := time.Since(start)
	if err := <-done; err == nil {
		t.Error("connect succeeded through the DROP")
	}
	t.Logf("after %s: %s: %s (%.2f)\n  details: %s\n  resolution: %s\n  source %+v\n  destination %+v\n  evidence %+v",
		took.Round(time.Millisecond), d.Pattern, d.Summary, d.Confidence, d.Details, d.Resolution, d.Source, d.Destination, d.Evidence)
	return d
}

func (pl *policyLab) checkPods(t *testing.T, d diagnosis.Diagnosis) {
	t.Helper()
	if d.Source.K8sNamespace != pl.front || d.Source.K8sPod != "web-5d8f7c9b4-x2x7k" || d.Source.K8sNode != "node-1" ||
		d.Source.K8sWorkload != "Deployment/web" {
		t.Errorf("source = %+v, want pod %s/web-5d8f7c9b4-x2x7k of Deployment/web on node-1", d.Source, pl.front)
	}
	if d.Destination.K8sNamespace != pl.prod || d.Destination.K8sPod != "backend-0" || d.Destination.K8sNode != "node-1" {
		t.Errorf("destination = %+v, want pod %s/backend-0 on node-1", d.Destination, pl.prod)
	}
}

var webLabels = map[string]string{"app": "web", "pod-template-hash": "5d8f7c9b4"}

// The policy denies and the kernel shows the drop: the diagnosis names the
// policy and rule, the fix and both pods, and outranks syn_dropped.
func TestNetworkPolicyBlock(t *testing.T) {
	pl := newPolicyLab(t, webLabels)
	d := pl.connect(t)
	prod, front := pl.prod, pl.front
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
	for _, s := range []string{"wants `role=api`", "The kernel confirms it", "dropped by a netfilter rule", "also matched: syn_dropped/netfilter_drop"} {
		if !strings.Contains(d.Details, s) {
			t.Errorf("details lack %q: %s", s, d.Details)
		}
	}
	if !strings.Contains(d.Resolution, "role=api") || !strings.Contains(d.Resolution, front+"/web-5d8f7c9b4-x2x7k") {
		t.Errorf("resolution does not say to label the client pod role=api: %s", d.Resolution)
	}
	pl.checkPods(t, d)
	if !hasEvidence(d, "skb:kfree_skb", "NETFILTER_DROP") || !hasEvidence(d, "k8s:networkpolicy", "backend-allow-api") {
		t.Errorf("evidence lacks the kernel drop or the policy verdict: %+v", d.Evidence)
	}
	if d.Confidence < 0.75 {
		t.Errorf("confidence %.2f: the kernel confirms the policy, want >= 0.75", d.Confidence)
	}
}

// The policy admits the client (role=api) but the SYN is still dropped:
// syn_dropped, saying the cause is not NetworkPolicy.
func TestNetworkPolicyAdmitsButDropped(t *testing.T) {
	pl := newPolicyLab(t, map[string]string{"app": "web", "role": "api", "pod-template-hash": "5d8f7c9b4"})
	d := pl.connect(t)
	if d.Pattern != diagnosis.PatternSYNDropped {
		t.Fatalf("pattern = %s, want syn_dropped: %s", d.Pattern, d.Summary)
	}
	if d.Policy != nil {
		t.Errorf("policy = %+v, want none", *d.Policy)
	}
	for _, s := range []string{"The cause is not NetworkPolicy", "allowed by NetworkPolicy `" + pl.prod + "/backend-allow-api` rule `spec.ingress[0]`"} {
		if !strings.Contains(d.Details, s) {
			t.Errorf("details lack %q: %s", s, d.Details)
		}
	}
	pl.checkPods(t, d)
}

// The API server goes down: the diagnosis still names the policy from the
// last known state, says the context is unavailable and lowers the
// confidence.
func TestNetworkPolicyBlockAPIDown(t *testing.T) {
	pl := newPolicyLab(t, webLabels)
	pl.c.srv.StopAPIServer()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, reason := pl.c.provider.Available()
		if !ok {
			t.Logf("unavailable: %s", reason)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the outage was not noticed in 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	d := pl.connect(t)
	if d.Pattern != diagnosis.PatternNetworkPolicyBlock || d.Policy == nil || d.Policy.Name != "backend-allow-api" {
		t.Fatalf("pattern %s policy %+v: %s", d.Pattern, d.Policy, d.Summary)
	}
	if !hasEvidence(d, "k8s", "cluster context unavailable: API server unreachable") {
		t.Errorf("no evidence saying the API server is unreachable: %+v", d.Evidence)
	}
	if !strings.Contains(d.Details, "Kubernetes context is unavailable") || !strings.Contains(d.Details, "confidence is lowered") {
		t.Errorf("details do not say the context is missing: %s", d.Details)
	}
	if d.Confidence >= 0.8 {
		t.Errorf("confidence %.2f, want it lowered below the 0.80 of an available context", d.Confidence)
	}
	pl.checkPods(t, d)
}

// A pod is deleted and its address stays unused: a client still dialling
// it fails ARP, and the arp_failure diagnosis names the pod the address
// belonged to and when it was deleted.
func TestDeletedPodHistory(t *testing.T) {
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	c := startCluster(t)
	front, prod := c.namespace(t, "front"), c.namespace(t, "prod")
	c.pod(t, front, "web-5d8f7c9b4-x2x7k", client.IP, webLabels, 9000)
	// .200 of the lab subnet: on link, held by no lab host.
	a := server.IP.As4()
	a[3] = 200
	gone := netip.AddrFrom4(a)
	c.pod(t, prod, "cache-0", gone, map[string]string{"app": "cache"}, 6379)
	if err := c.client.CoreV1().Pods(prod).Delete(context.Background(), "cache-0",
		metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	// Wait until the informers delivered the deletion.
	deadline := time.Now().Add(10 * time.Second)
	for {
		e := diagnosis.Endpoint{Addr: gone.String()}
		hist, known := c.ctx.Annotate(&e, time.Now())
		if !known && len(hist) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deletion of %s/cache-0 not seen: known=%v history=%+v", prod, known, hist)
		}
		time.Sleep(50 * time.Millisecond)
	}

	p := startPipeline(t, l, func(cfg *correlate.Config) { cfg.Cluster = c.ctx })
	to := netip.AddrPortFrom(gone, 6379)
	start := time.Now()
	if _, err := client.Dial(context.Background(), to, 8*time.Second); err == nil {
		t.Fatal("connect to an unused address succeeded")
	}
	d := p.waitFor(t, 8*time.Second, "arp_failure", func(d diagnosis.Diagnosis) bool {
		return d.Pattern == diagnosis.PatternARPFailure && d.Flow.Dst == gone
	})
	t.Logf("after %s: %s (%.2f)\n  details: %s\n  evidence %+v", time.Since(start).Round(time.Millisecond),
		d.Summary, d.Confidence, d.Details, d.Evidence)
	if !hasEvidence(d, "k8s", "address belonged to pod "+prod+"/cache-0 until") ||
		!hasEvidence(d, "k8s", "pod "+prod+"/cache-0 deleted at") {
		t.Errorf("the history of %s (pod %s/cache-0, deleted) is not in the evidence: %+v", gone, prod, d.Evidence)
	}
	if !strings.Contains(d.Details, gone.String()+" belongs to no pod now: ") || !strings.Contains(d.Details, prod+"/cache-0 deleted at") {
		t.Errorf("details do not name the deleted pod behind %s: %s", gone, d.Details)
	}
	if d.Destination.K8sPod != "" {
		t.Errorf("destination named as pod %q, but the pod is gone", d.Destination.K8sPod)
	}
	if d.Source.K8sPod != "web-5d8f7c9b4-x2x7k" || d.Source.K8sWorkload != "Deployment/web" {
		t.Errorf("source = %+v, want the client pod of Deployment/web", d.Source)
	}
}
