//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/probe"
)

// repoRoot is where builder-config.yaml and the Makefile live.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// collectorBinary builds the collector with ocb (`make collector`; quick
// when nothing changed) so the test never runs a binary older than the code.
// NC_COLLECTOR names a prebuilt binary instead.
func collectorBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("NC_COLLECTOR"); p != "" {
		return p
	}
	root := repoRoot(t)
	start := time.Now()
	if out, err := exec.Command("make", "-C", root, "collector").CombinedOutput(); err != nil {
		t.Fatalf("make collector: %v\n%s", err, out)
	}
	t.Logf("collector built with ocb in %s", time.Since(start).Round(time.Second))
	return filepath.Join(root, "_build", "collector", "otelcol-netcorr")
}

// runCollector starts the collector with a config from testdata and stops it
// (SIGTERM, then SIGKILL) when the test ends.
func runCollector(t *testing.T, config string, env ...string) *syncBuffer {
	t.Helper()
	// Owned: the collector dies with the test binary even on a panic or a
	// -timeout, so no probe stays attached after a failed run.
	var out syncBuffer
	proc, exited, err := startOwnedProcess(collectorBinary(t),
		[]string{"--config", filepath.Join(repoRoot(t), config)}, env, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = proc.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = proc.Kill()
			<-exited
			t.Errorf("collector did not stop on SIGTERM within 15s")
		}
		if t.Failed() {
			t.Logf("collector output:\n%s", out.String())
		}
	})
	deadline := time.After(30 * time.Second)
	for !strings.Contains(out.String(), "Everything is ready") {
		select {
		case err := <-exited:
			t.Fatalf("collector exited at start: %v\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("collector not ready after 30s:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return &out
}

// refuseAndDrop makes the two failures the collector tests look for: a
// connect to a closed port (8081, connection_refused) and a SYN dropped by
// an nft rule (8443, syn_dropped naming the rule).
func refuseAndDrop(t *testing.T, client, server *lab.Host) {
	t.Helper()
	if err := server.Nft("table inet guard {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 8443 drop\n }\n}\n"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := client.Dial(ctx, addrPort(server, 8081), 2*time.Second); err == nil {
		t.Fatal("connect to a closed port succeeded")
	}
	if _, err := client.Dial(ctx, addrPort(server, 8443), 2500*time.Millisecond); err == nil {
		t.Fatal("connect through a DROP rule succeeded")
	}
}

// readLogs parses every OTLP/JSON line the file exporter wrote so far.
func readLogs(t *testing.T, path string) []plog.LogRecord {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []plog.LogRecord
	var um plog.JSONUnmarshaler
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		ld, err := um.UnmarshalLogs(sc.Bytes())
		if err != nil {
			continue // a line still being written
		}
		for i := 0; i < ld.ResourceLogs().Len(); i++ {
			sls := ld.ResourceLogs().At(i).ScopeLogs()
			for j := 0; j < sls.Len(); j++ {
				lrs := sls.At(j).LogRecords()
				for k := 0; k < lrs.Len(); k++ {
					recs = append(recs, lrs.At(k))
				}
			}
		}
	}
	return recs
}

func attr(lr plog.LogRecord, key string) string {
	v, ok := lr.Attributes().Get(key)
	if !ok {
		return ""
	}
	return v.AsString()
}

// The product end to end: an ocb-built collector, configured in YAML, turns
// real refused and silently dropped connections in the lab into log records
// that the file exporter writes.
func TestCollectorWritesDiagnoses(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	if err := probe.Check(); err != nil {
		t.Skipf("skipping: kernel probes unavailable: %v", err)
	}
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	dir := t.TempDir()
	logsFile, metricsFile := filepath.Join(dir, "logs.json"), filepath.Join(dir, "metrics.json")
	runCollector(t, "testdata/collector/e2e-file.yaml", "NC_LOGS_FILE="+logsFile, "NC_METRICS_FILE="+metricsFile)

	refuseAndDrop(t, client, server)

	want := map[string]string{ // pattern -> destination port
		"connection_refused": "8081",
		"syn_dropped":        "8443",
	}
	got := map[string]plog.LogRecord{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		for _, lr := range readLogs(t, logsFile) {
			if attr(lr, "destination.address") != server.IP.String() {
				continue
			}
			p := attr(lr, "networkcorrelator.pattern")
			if port, ok := want[p]; ok && attr(lr, "destination.port") == port {
				got[p] = lr
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for p := range want {
		lr, ok := got[p]
		if !ok {
			t.Errorf("no %s log record in the file exporter's output", p)
			continue
		}
		t.Logf("%s: %s [%s] confidence=%s", p, lr.Body().AsString(), lr.SeverityText(), attr(lr, "networkcorrelator.confidence"))
		if lr.EventName() == "" || lr.Body().AsString() == "" || lr.SeverityNumber() == plog.SeverityNumberUnspecified {
			t.Errorf("%s record lacks event name, body or severity: %q %q %v", p, lr.EventName(), lr.Body().AsString(), lr.SeverityNumber())
		}
		if attr(lr, "source.address") != client.IP.String() || attr(lr, "network.transport") != "tcp" {
			t.Errorf("%s record has wrong flow attributes: %v", p, lr.Attributes().AsRaw())
		}
	}
	// The collector's host context names the rule that dropped the SYN.
	if lr, ok := got["syn_dropped"]; ok && !strings.Contains(lr.Body().AsString(), "tcp dport 8443 drop") {
		t.Errorf("syn_dropped does not name the nft rule: %s", lr.Body().AsString())
	}

	// The diagnoses counter reaches the metrics pipeline too.
	deadline = time.Now().Add(45 * time.Second)
	for !metricSeen(t, metricsFile, "networkcorrelator.diagnoses") {
		if time.Now().After(deadline) {
			t.Fatalf("no networkcorrelator.diagnoses metric in %s", metricsFile)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func metricSeen(t *testing.T, path, name string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var um pmetric.JSONUnmarshaler
	for _, line := range bytes.Split(data, []byte("\n")) {
		md, err := um.UnmarshalMetrics(line)
		if err != nil {
			continue
		}
		rms := md.ResourceMetrics()
		for i := 0; i < rms.Len(); i++ {
			sms := rms.At(i).ScopeMetrics()
			for j := 0; j < sms.Len(); j++ {
				ms := sms.At(j).Metrics()
				for k := 0; k < ms.Len(); k++ {
					if ms.At(k).Name() == name {
						return true
					}
				}
			}
		}
	}
	return false
}

func addrPort(h *lab.Host, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(h.IP, port)
}

// syncBuffer collects a child's output while the test reads it. The buffer
// is a named field, not embedded, so io.Copy cannot reach its ReadFrom
// around the lock.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
