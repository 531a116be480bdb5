package networkcorrelatorreceiver

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/network-correlator/network-correlator/internal/clusterctx"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/k8sctx"
	"github.com/network-correlator/network-correlator/internal/netpol"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/metadata"
)

// closedPort is an address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// An unreachable API server neither blocks Start beyond sync_timeout nor
// fails it; the correlator gets a cluster context that says why it is
// unavailable, and Shutdown stops the informers (goleak in TestMain).
func TestClusterContextAPIDown(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.Kubernetes.EnableK8sMetadata = true
	cfg.Kubernetes.EnablePolicyCheck = true
	cfg.Kubernetes.AuthType = k8sctx.AuthNone
	cfg.Kubernetes.APIServerURL = "http://" + closedPort(t)
	cfg.Kubernetes.SyncTimeout = 500 * time.Millisecond

	d := fakeDeps(&fakeSource{}, nil)
	var got pattern.Cluster
	next := d.newCorrelator
	d.newCorrelator = func(c *Config, cl pattern.Cluster, emit func(diagnosis.Diagnosis)) (correlator, error) {
		got = cl
		return next(c, cl, emit)
	}
	r, err := newFactory(d).CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, consumertest.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := r.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	took := time.Since(start)
	t.Logf("Start returned after %s", took)
	if took < cfg.Kubernetes.SyncTimeout || took > cfg.Kubernetes.SyncTimeout+3*time.Second {
		t.Errorf("Start took %s, want about sync_timeout (%s)", took, cfg.Kubernetes.SyncTimeout)
	}
	if got == nil {
		t.Fatal("the correlator got no cluster context")
	}
	ok, reason := got.Available()
	t.Logf("Available() = %v, %q", ok, reason)
	if ok || !strings.Contains(reason, "initial sync not complete") && !strings.Contains(reason, "unreachable") {
		t.Errorf("Available() = %v, %q; want unavailable with the reason", ok, reason)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// Without enable_k8s_metadata nothing is started and the correlator gets
// no cluster context.
func TestClusterContextOff(t *testing.T) {
	d := fakeDeps(&fakeSource{}, nil)
	d.startCluster = func(context.Context, *Config, *zap.Logger) (pattern.Cluster, func(), error) {
		t.Error("cluster context started although enable_k8s_metadata is off")
		return nil, func() {}, nil
	}
	next := d.newCorrelator
	d.newCorrelator = func(c *Config, cl pattern.Cluster, emit func(diagnosis.Diagnosis)) (correlator, error) {
		if cl != nil {
			t.Error("the correlator got a cluster context")
		}
		return next(c, cl, emit)
	}
	r, err := newFactory(d).CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), createDefaultConfig(), consumertest.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		t.Fatal(err)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The DaemonSet's collector configuration decodes and validates.
func TestDeployConfigMap(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	var col map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &col); err != nil {
		t.Fatal(err)
	}
	recv, _ := col["receivers"].(map[string]any)
	block, ok := recv["networkcorrelator"].(map[string]any)
	if !ok {
		t.Fatal("no receivers.networkcorrelator in the ConfigMap")
	}
	cfg := createDefaultConfig()
	if err := confmap.NewFromStringMap(block).Unmarshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := confmap.Validate(cfg); err != nil {
		t.Fatal(err)
	}
	if k := cfg.Kubernetes; !k.EnableK8sMetadata || !k.EnablePolicyCheck || k.AuthType != k8sctx.AuthServiceAccount {
		t.Errorf("kubernetes = %+v, want metadata and policy check with the service account", k)
	}
}

// A recording replayed with a cluster context (an in-memory one, as the
// informers would fill it): the log record carries the policy, the rule and
// both pods, the resource is the client pod, and Shutdown stops the context.
func TestClusterContextInLogRecords(t *testing.T) {
	cfg := replayConfig(filepath.Join("..", "..", "testdata", "replay", "syn_nft_drop_timeout.jsonl"))
	cfg.Kubernetes.EnableK8sMetadata, cfg.Kubernetes.EnablePolicyCheck = true, true

	setAt := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC) // before the recording
	ki := k8sctx.NewIndex(time.Hour, func() time.Time { return setAt })
	x := netpol.NewIndex(netpol.DefaultOptions())
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "front", Name: "web-0", UID: "u1", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: "node-1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "backend-0", UID: "u2", Labels: map[string]string{"app": "backend"}},
			Spec: corev1.PodSpec{NodeName: "node-2"}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.2"}},
	} {
		ki.SetPod(p)
		x.SetPod(netpol.PodFromAPI(p))
	}
	x.SetPolicy(&networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "default-deny"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	})
	stopped := 0
	d := defaultDeps()
	d.startCluster = func(context.Context, *Config, *zap.Logger) (pattern.Cluster, func(), error) {
		return clusterctx.New(ki, func() (bool, string) { return true, "" }, x), func() { stopped++ }, nil
	}
	logs := new(consumertest.LogsSink)
	r, err := newFactory(d).CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, logs)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a log record", func() bool { return logs.LogRecordCount() > 0 })
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if stopped != 1 {
		t.Errorf("cluster context stopped %d times, want 1", stopped)
	}
	rec := records(logs)[0]
	attrs := rec.lr.Attributes().AsRaw()
	t.Logf("%s\n  attributes %v\n  resource %v", rec.lr.Body().Str(), attrs, rec.res)
	for k, want := range map[string]any{
		"networkcorrelator.pattern":                        "network_policy_block",
		"networkcorrelator.layer":                          "policy",
		"networkcorrelator.policy.namespace":               "prod",
		"networkcorrelator.policy.name":                    "default-deny",
		"networkcorrelator.policy.direction":               "Ingress",
		"networkcorrelator.source.k8s.pod.name":            "web-0",
		"networkcorrelator.destination.k8s.pod.name":       "backend-0",
		"networkcorrelator.destination.k8s.node.name":      "node-2",
		"networkcorrelator.destination.k8s.namespace.name": "prod",
		"networkcorrelator.source.k8s.namespace.name":      "front",
	} {
		if attrs[k] != want {
			t.Errorf("%s = %v, want %v", k, attrs[k], want)
		}
	}
	if _, ok := attrs["networkcorrelator.policy.rule"]; ok {
		t.Errorf("a default deny has no rule, got %v", attrs["networkcorrelator.policy.rule"])
	}
	if rec.res["k8s.pod.name"] != "web-0" || rec.res["k8s.namespace.name"] != "front" {
		t.Errorf("resource = %v, want the client pod front/web-0", rec.res)
	}
}
