package k8sctx

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestStartUnreachableAndShutdown: with nothing listening, Start returns
// after sync_timeout, Available says why, lookups answer at once, and
// Shutdown leaves no goroutine behind.
func TestStartUnreachableAndShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostport := l.Addr().String()
	l.Close() // a port nobody listens on

	cfg := testConfig()
	cfg.SyncTimeout = 300 * time.Millisecond
	client := kubernetes.NewForConfigOrDie(&rest.Config{Host: "http://" + hostport})
	p := NewWithClient(cfg, client, nil)
	start := time.Now()
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Start took %s", d)
	}
	eventually(t, 5*time.Second, "unreachable reported", func() (bool, string) {
		ok, reason := p.Available()
		return !ok && strings.Contains(reason, "unreachable") && strings.Contains(reason, hostport), reason
	})
	if id, _ := p.Lookup(addr("10.0.0.1"), time.Now()); id.Known() {
		t.Errorf("Lookup = %+v", id)
	}
	p.Shutdown()
}

func TestAvailableBeforeStart(t *testing.T) {
	p := NewWithClient(testConfig(), kubernetes.NewForConfigOrDie(&rest.Config{Host: "http://127.0.0.1:1"}), nil)
	if ok, reason := p.Available(); ok || reason == "" {
		t.Errorf("Available before Start = %v %q", ok, reason)
	}
	p.Shutdown() // no-op before Start
}
