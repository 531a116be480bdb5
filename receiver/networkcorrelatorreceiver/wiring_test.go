package networkcorrelatorreceiver

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/network-correlator/network-correlator/internal/probe"
	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/metadata"
)

// closedLoopbackPort returns a port nothing listens on (bound, then released).
func closedLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// The kernel source end to end: real probes, a real refused connect() on
// loopback, the diagnosis at the logs consumer.
func TestKernelSourceRefusedConnect(t *testing.T) {
	if err := probe.Check(); err != nil {
		t.Skipf("kernel source unavailable: %v", err)
	}
	logs, metrics := new(consumertest.LogsSink), new(consumertest.MetricsSink)
	cfg := createDefaultConfig()
	cfg.CollectionInterval = 100 * time.Millisecond
	started(t, NewFactory(), cfg, logs, metrics, componenttest.NewNopHost())

	port := closedLoopbackPort(t)
	connectAt := time.Now()
	if c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
		c.Close()
		t.Fatalf("port %d unexpectedly open", port)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial: %v, want ECONNREFUSED", err)
	}
	var found record
	waitFor(t, "a connection_refused diagnosis for the port", func() bool {
		for _, r := range records(logs) {
			a := r.lr.Attributes().AsRaw()
			if a["networkcorrelator.pattern"] == "connection_refused" && a["server.port"] == int64(port) {
				found = r
				return true
			}
		}
		return false
	})
	a := found.lr.Attributes().AsRaw()
	if a["server.address"] != "127.0.0.1" || a["error.type"] != "ECONNREFUSED" || a["network.transport"] != "tcp" {
		t.Errorf("attributes %v", a)
	}
	t.Logf("body: %s", found.lr.Body().Str())
	t.Logf("connect() to diagnosis handed to the pipeline: %v (observed %v after the signal)",
		found.lr.ObservedTimestamp().AsTime().Sub(connectAt),
		found.lr.ObservedTimestamp().AsTime().Sub(found.lr.Timestamp().AsTime()))
	waitFor(t, "signals counted in the metrics", func() bool {
		pts := lastPoints(metrics)
		return pts["networkcorrelator.diagnoses"]["connection_refused"] >= 1 &&
			pts["networkcorrelator.failures"]["connection_refused"] >= 1
	})
}

// A bad drop reason is a Start error naming it (resolved against the kernel).
func TestKernelSourceUnknownDropReason(t *testing.T) {
	if err := probe.Check(); err != nil {
		t.Skipf("kernel source unavailable: %v", err)
	}
	cfg := createDefaultConfig()
	cfg.DropReasons = []string{"NO_SUCH_REASON"}
	r, err := NewFactory().CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, consumertest.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	err = r.Start(context.Background(), componenttest.NewNopHost())
	if err == nil {
		r.Shutdown(context.Background())
		t.Fatal("Start accepted an unknown drop reason")
	}
	if !strings.Contains(err.Error(), "NO_SUCH_REASON") || !strings.HasPrefix(err.Error(), "networkcorrelator: kernel source: ") {
		t.Errorf("Start() = %v, want an error naming NO_SUCH_REASON", err)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Without the capabilities the collector must not start, and the error
// says what is missing and how to grant it. As root the test re-runs itself
// under setpriv with every capability dropped.
func TestKernelSourceWithoutCapabilities(t *testing.T) {
	const childEnv = "NETWORKCORRELATOR_NOCAP_CHILD"
	checkErr := probe.Check()
	if os.Getenv(childEnv) == "" && checkErr == nil {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("needs setpriv (util-linux) to drop capabilities")
		}
		cmd := exec.Command(setpriv, "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all",
			os.Args[0], "-test.run=^TestKernelSourceWithoutCapabilities$", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestKernelSourceWithoutCapabilities") {
			t.Fatalf("without capabilities: %v\n%s", err, out)
		}
		return
	}
	if checkErr == nil || !strings.Contains(checkErr.Error(), "missing capability") {
		t.Skipf("kernel source fails for another reason than capabilities: %v", checkErr)
	}
	r, err := NewFactory().CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), createDefaultConfig(), consumertest.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	err = r.Start(context.Background(), componenttest.NewNopHost())
	const want = "networkcorrelator: kernel source: probe: missing capability: the probes need CAP_BPF and CAP_PERFMON"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Start() = %v, want prefix %q", err, want)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
