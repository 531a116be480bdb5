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
	"sigs.k8s.io/yaml"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/k8sctx"
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
