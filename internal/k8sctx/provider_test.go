package k8sctx

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/network-correlator/network-correlator/internal/k8sctx/apitest"
)

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %s", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cluster wraps an admin client with helpers that play the missing kubelet.
type cluster struct {
	t  *testing.T
	c  kubernetes.Interface
	ns string
}

func newCluster(t *testing.T, c kubernetes.Interface, ns string, labels map[string]string) *cluster {
	t.Helper()
	_, err := c.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, c: c, ns: ns}
}

// runPod creates a pod of Deployment "web" on node-a and sets the status a
// kubelet would: Running with ip.
func (k *cluster) runPod(name, ip string) *corev1.Pod {
	k.t.Helper()
	ctx := context.Background()
	ctrl := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.ns,
			Labels:          map[string]string{"app": "web", "pod-template-hash": "7c9d8f6b5"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7c9d8f6b5", UID: "11111111-2222-3333-4444-555555555555", Controller: &ctrl}},
		},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{
			Name: "app", Image: "registry.example.com/web:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
	p, err := k.c.CoreV1().Pods(k.ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: "192.168.50.1",
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, Image: "registry.example.com/web:1",
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}}
	p, err = k.c.CoreV1().Pods(k.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	return p
}

// deletePod deletes at once: without a kubelet a graceful delete never ends.
func (k *cluster) deletePod(name string) {
	k.t.Helper()
	zero := int64(0)
	if err := k.c.CoreV1().Pods(k.ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		k.t.Fatal(err)
	}
}

func startProvider(t *testing.T, cfg Config, c kubernetes.Interface) *Provider {
	t.Helper()
	p := NewWithClient(cfg, c, nil)
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Shutdown)
	return p
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.EnableK8sMetadata = true
	cfg.EnablePolicyCheck = true
	cfg.AuthType = AuthKubeConfig
	cfg.HealthCheckInterval = 200 * time.Millisecond
	return cfg
}

// recorder is a PolicyObserver that keeps what it was told.
type recorder struct {
	mu       sync.Mutex
	ns       map[string]map[string]string
	pods     map[string]PodInfo
	policies map[string]*networkingv1.NetworkPolicy
}

func newRecorder() *recorder {
	return &recorder{ns: map[string]map[string]string{}, pods: map[string]PodInfo{}, policies: map[string]*networkingv1.NetworkPolicy{}}
}
func (r *recorder) SetNamespace(n NamespaceInfo) { r.mu.Lock(); r.ns[n.Name] = n.Labels; r.mu.Unlock() }
func (r *recorder) DeleteNamespace(name string)  { r.mu.Lock(); delete(r.ns, name); r.mu.Unlock() }
func (r *recorder) SetPod(p PodInfo)             { r.mu.Lock(); r.pods[p.Namespace+"/"+p.Name] = p; r.mu.Unlock() }
func (r *recorder) DeletePod(ns, name string) {
	r.mu.Lock()
	delete(r.pods, ns+"/"+name)
	r.mu.Unlock()
}
func (r *recorder) SetPolicy(p *networkingv1.NetworkPolicy) {
	r.mu.Lock()
	r.policies[p.Namespace+"/"+p.Name] = p
	r.mu.Unlock()
}
func (r *recorder) DeletePolicy(ns, name string) {
	r.mu.Lock()
	delete(r.policies, ns+"/"+name)
	r.mu.Unlock()
}

func TestProviderWithAPIServer(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	admin := srv.AdminClient()
	ctx := context.Background()
	k := newCluster(t, admin, "shop", map[string]string{"team": "shop"})

	// Objects that exist before the provider starts arrive with the list.
	web1 := k.runPod("web-1", "10.244.1.5")
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	node, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.50.1"}}
	if _, err := admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig()
	cfg.KubeConfigPath = srv.WriteKubeconfig(apitest.AdminToken)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rc, err := cfg.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(rc)
	rec := newRecorder()
	p := NewWithClient(cfg, client, nil)
	p.SetPolicyObserver(rec)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Shutdown)
	if ok, reason := p.Available(); !ok {
		t.Fatalf("Available after Start = false: %s", reason)
	}

	ip1 := netip.MustParseAddr("10.244.1.5")
	t.Run("pod by IP", func(t *testing.T) {
		id, hist := p.Lookup(ip1, time.Now())
		if id.Kind != KindPod || id.Namespace != "shop" || id.Name != "web-1" || id.Node != "node-a" ||
			id.Workload != (Workload{Kind: "Deployment", Name: "web"}) || id.UID != string(web1.UID) || id.Labels["app"] != "web" {
			t.Errorf("Lookup = %+v", id)
		}
		if len(id.Ports) != 1 || id.Ports[0].Name != "http" || id.Ports[0].Port != 8080 {
			t.Errorf("Ports = %+v", id.Ports)
		}
		if len(hist) != 0 {
			t.Errorf("History = %+v", hist)
		}
		if id, _ := p.Lookup(netip.MustParseAddr("192.168.50.1"), time.Now()); id.Kind != KindNode || id.Name != "node-a" {
			t.Errorf("node IP = %+v", id)
		}
	})

	t.Run("container restart", func(t *testing.T) {
		pod, err := admin.CoreV1().Pods("shop").Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		finished := metav1.NewTime(time.Now().Add(-2 * time.Second).Truncate(time.Second))
		pod.Status.ContainerStatuses[0].RestartCount = 1
		pod.Status.ContainerStatuses[0].LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: 137, Reason: "OOMKilled", FinishedAt: finished}
		if _, err := admin.CoreV1().Pods("shop").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "restart recorded", func() (bool, string) {
			_, hist := p.Lookup(ip1, time.Now())
			for _, e := range hist {
				if e.Kind == EventContainerRestarted && e.Container == "app" && e.Reason == "OOMKilled" &&
					e.ExitCode == 137 && e.RestartCount == 1 && e.Time.Equal(finished.Time) {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%+v", hist)
		})
	})

	t.Run("delete then IP reuse", func(t *testing.T) {
		beforeDelete := time.Now()
		k.deletePod("web-1")
		eventually(t, 10*time.Second, "deletion recorded", func() (bool, string) {
			id, hist := p.Lookup(ip1, time.Now())
			return !id.Known() && hasKind(hist, EventPodDeleted, "web-1") && hasKind(hist, EventIPPreviousOwner, "web-1"),
				fmt.Sprintf("%+v %+v", id, hist)
		})
		// A signal from before the deletion is still attributed to web-1.
		if id, _ := p.Lookup(ip1, beforeDelete); id.Name != "web-1" || id.DeletedAt.IsZero() {
			t.Errorf("lookup before the deletion = %+v", id)
		}
		k.runPod("web-2", "10.244.1.5")
		eventually(t, 10*time.Second, "IP reused", func() (bool, string) {
			id, hist := p.Lookup(ip1, time.Now())
			return id.Name == "web-2" && hasKind(hist, EventIPPreviousOwner, "web-1"), fmt.Sprintf("%+v %+v", id, hist)
		})
	})

	t.Run("service without ready endpoints", func(t *testing.T) {
		svc, err := admin.CoreV1().Services("shop").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		no := false
		_, err = admin.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "web-x1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &no},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web-2"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cip := netip.MustParseAddr(svc.Spec.ClusterIP)
		eventually(t, 10*time.Second, "service indexed", func() (bool, string) {
			id, _ := p.Lookup(cip, time.Now())
			return id.Kind == KindService && id.Service != nil && id.Service.Slices == 1 &&
					len(id.Service.Ready) == 0 && len(id.Service.NotReady) == 1 && id.Service.NotReady[0].Pod == "web-2",
				fmt.Sprintf("%+v %+v", id, id.Service)
		})
	})

	t.Run("policy snapshots", func(t *testing.T) {
		_, err := admin.NetworkingV1().NetworkPolicies("shop").Create(ctx, &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "deny-all", Annotations: map[string]string{"note": "dropped by the transform"}},
			Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "policy observed", func() (bool, string) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			np := rec.policies["shop/deny-all"]
			pod, podOK := rec.pods["shop/web-2"]
			return np != nil && len(np.Annotations) == 0 && rec.ns["shop"]["team"] == "shop" && podOK &&
					len(pod.IPs) == 1 && pod.IPs[0] == ip1 && pod.Ports[0].Name == "http",
				fmt.Sprintf("policies %v namespaces %v pods %v", rec.policies, rec.ns, rec.pods)
		})
		if _, ok := rec.pods["shop/web-1"]; ok {
			t.Error("observer still has the deleted pod")
		}
		var found bool
		for _, n := range p.Namespaces() {
			found = found || n.Name == "shop" && n.Labels["team"] == "shop"
		}
		if !found {
			t.Errorf("Namespaces() = %+v", p.Namespaces())
		}
		if pols := p.NetworkPolicies(); len(pols) != 1 || pols[0].Name != "deny-all" {
			t.Errorf("NetworkPolicies() = %+v", pols)
		}
		if pods := p.Pods(); len(pods) != 1 || pods[0].Name != "web-2" || pods[0].Node != "node-a" {
			t.Errorf("Pods() = %+v", pods)
		}
	})
}

func hasKind(h History, k EventKind, pod string) bool {
	for _, e := range h {
		if e.Kind == k && e.Pod == pod {
			return true
		}
	}
	return false
}

func TestOutageAndRecovery(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	admin := srv.AdminClient()
	k := newCluster(t, admin, "outage", nil)
	k.runPod("before", "10.244.2.1")

	cfg := testConfig()
	p := startProvider(t, cfg, kubernetes.NewForConfigOrDie(srv.Config(apitest.AdminToken)))
	ipBefore := netip.MustParseAddr("10.244.2.1")
	if id, _ := p.Lookup(ipBefore, time.Now()); id.Name != "before" {
		t.Fatalf("Lookup = %+v", id)
	}

	stopped := time.Now()
	srv.StopAPIServer()
	eventually(t, 15*time.Second, "outage reported", func() (bool, string) {
		ok, reason := p.Available()
		return !ok && strings.Contains(reason, "unreachable"), reason
	})
	_, reason := p.Available()
	t.Logf("outage reported after %s: %s", time.Since(stopped).Round(time.Millisecond), reason)
	// Lookups answer at once, from the last known state.
	start := time.Now()
	if id, _ := p.Lookup(ipBefore, time.Now()); id.Name != "before" {
		t.Errorf("Lookup during the outage = %+v", id)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Lookup during the outage took %s", d)
	}

	if err := srv.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	eventually(t, 15*time.Second, "recovery reported", func() (bool, string) {
		ok, reason := p.Available()
		return ok, reason
	})
	t.Logf("recovery reported %s after the API server was ready", time.Since(restarted).Round(time.Millisecond))
	// The informers resumed: a pod created after the outage is indexed
	// (the reflector's back-off after failures is at most 30s).
	k.runPod("after", "10.244.2.2")
	eventually(t, 45*time.Second, "informers resumed", func() (bool, string) {
		id, _ := p.Lookup(netip.MustParseAddr("10.244.2.2"), time.Now())
		return id.Name == "after", fmt.Sprintf("%+v", id)
	})
	t.Logf("a pod created after the outage indexed %s after the API server was ready", time.Since(restarted).Round(time.Millisecond))
}

func TestStartWhileAPIServerDown(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	admin := srv.AdminClient()
	k := newCluster(t, admin, "late", nil)
	k.runPod("early", "10.244.3.1")
	srv.StopAPIServer()

	cfg := testConfig()
	cfg.SyncTimeout = 500 * time.Millisecond
	start := time.Now()
	p := startProvider(t, cfg, kubernetes.NewForConfigOrDie(srv.Config(apitest.AdminToken)))
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Start blocked %s with the API server down", d)
	}
	ok, reason := p.Available()
	if ok || reason == "" {
		t.Fatalf("Available with the API server down = %v %q", ok, reason)
	}
	t.Logf("reason while down: %s", reason)
	if id, _ := p.Lookup(netip.MustParseAddr("10.244.3.1"), time.Now()); id.Known() {
		t.Errorf("Lookup before any sync = %+v", id)
	}

	if err := srv.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 45*time.Second, "synced after the API server came up", func() (bool, string) {
		ok, reason := p.Available()
		return ok, reason
	})
	if id, _ := p.Lookup(netip.MustParseAddr("10.244.3.1"), time.Now()); id.Name != "early" {
		t.Errorf("Lookup after sync = %+v", id)
	}
}
