//go:build linux

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/probe"
)

// victoriaLogsBinary finds the VictoriaLogs server that `make victoria-logs`
// installs into $(go env GOPATH)/bin; NC_VICTORIA_LOGS names another one.
func victoriaLogsBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("NC_VICTORIA_LOGS"); p != "" {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "victoria-logs")
			if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
				return p
			}
		}
	}
	if p, err := exec.LookPath("victoria-logs"); err == nil {
		return p
	}
	t.Skip("skipping: victoria-logs is not installed in $(go env GOPATH)/bin: run `make victoria-logs`")
	return ""
}

// startVictoriaLogs runs a VictoriaLogs server on a free loopback port with
// its storage in a temporary directory, waits until it answers /health and
// stops it when the test ends. It returns the base URL.
func startVictoriaLogs(t *testing.T) string {
	t.Helper()
	bin := victoriaLogsBinary(t)
	dir := t.TempDir()
	// The free port is picked, released and then bound by the server, so
	// another process may take it in between: that start fails, try again.
	for attempt := 1; ; attempt++ {
		base, err := tryStartVictoriaLogs(t, bin, filepath.Join(dir, strconv.Itoa(attempt)))
		if err == nil {
			return base
		}
		if attempt == 3 {
			t.Fatalf("victoria-logs: %v", err)
		}
		t.Logf("victoria-logs did not start, retrying: %v", err)
	}
}

func tryStartVictoriaLogs(t *testing.T, bin, storage string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()

	var out syncBuffer
	proc, exited, err := startOwnedProcess(bin, []string{
		"-httpListenAddr=" + addr,
		"-storageDataPath=" + storage,
		"-loggerLevel=WARN",
	}, nil, &out)
	if err != nil {
		return "", err
	}
	stop := func() {
		_ = proc.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = proc.Kill()
			<-exited
		}
	}

	base := "http://" + addr
	client := &http.Client{Timeout: time.Second}
	deadline := time.After(30 * time.Second)
	for {
		resp, err := client.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			return "", fmt.Errorf("exited at start (%v):\n%s", err, out.String())
		case <-deadline:
			stop()
			return "", fmt.Errorf("no answer on %s/health after 30s:\n%s", base, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("victoria-logs output:\n%s", out.String())
		}
	})
	return base, nil
}

// startOwnedProcess starts bin (with env added to this process's
// environment) and returns its exit status on a channel.
// The child gets SIGKILL if the test binary dies without cleaning up (a
// panic, a -timeout): Linux sends the parent-death signal when the thread
// that forked the child ends, so that thread stays locked to the goroutine
// waiting for the child and lives exactly as long as it.
func startOwnedProcess(bin string, args, env []string, out *syncBuffer) (*os.Process, <-chan error, error) {
	type started struct {
		proc *os.Process
		err  error
	}
	startc := make(chan started, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			startc <- started{err: err}
			return
		}
		startc <- started{proc: cmd.Process}
		exited <- cmd.Wait()
	}()
	s := <-startc
	return s.proc, exited, s.err
}

// logsQL runs a LogsQL query over VictoriaLogs' HTTP API; every field of a
// result row comes back as a string.
func logsQL(t *testing.T, base, query string) []map[string]string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.PostForm(base+"/select/logsql/query", url.Values{"query": {query}})
	if err != nil {
		t.Fatalf("LogsQL %q: %v", query, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("LogsQL %q: %s: %s", query, resp.Status, body)
	}
	var rows []map[string]string
	dec := json.NewDecoder(resp.Body)
	for {
		var row map[string]string
		if err := dec.Decode(&row); errors.Is(err, io.EOF) {
			return rows
		} else if err != nil {
			t.Fatalf("LogsQL %q: decoding the answer: %v", query, err)
		}
		rows = append(rows, row)
	}
}

// The product end to end as users read it: the ocb-built collector exports
// diagnoses of real failures in the lab over OTLP/HTTP to a real VictoriaLogs,
// and LogsQL finds them by stream (the host) and attributes, with body,
// severity, evidence and resolution intact.
func TestCollectorExportsToVictoriaLogs(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	if err := probe.Check(); err != nil {
		t.Skipf("skipping: kernel probes unavailable: %v", err)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Fatalf("the host needs a name for the log stream: %q %v", host, err)
	}
	vl := startVictoriaLogs(t)
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	metricsFile := filepath.Join(t.TempDir(), "metrics.json")
	started := time.Now()
	runCollector(t, "testdata/collector/victorialogs.yaml", "NC_VICTORIALOGS_URL="+vl, "NC_METRICS_FILE="+metricsFile)

	refuseAndDrop(t, client, server)

	for _, tc := range []struct {
		pattern, port string
		body          string // in the summary
		resolution    string // in the fix
		errorType     string // "" when the connect has not failed yet
	}{
		{"connection_refused", "8081", "refused", "port 8081", "ECONNREFUSED"},
		{"syn_dropped", "8443", "dropped by rule `tcp dport 8443 drop`", "nft delete rule inet guard input handle", ""},
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			// The stream filter only matches if host.name became the stream.
			q := fmt.Sprintf(`{host.name=%q} networkcorrelator.pattern:=%q destination.address:=%q destination.port:=%q`,
				host, tc.pattern, server.IP.String(), tc.port)
			var rows []map[string]string
			for deadline := time.Now().Add(20 * time.Second); len(rows) == 0; time.Sleep(250 * time.Millisecond) {
				if time.Now().After(deadline) {
					all := logsQL(t, vl, `networkcorrelator.pattern:* | fields _stream, networkcorrelator.pattern, destination.address, destination.port, _msg`)
					t.Fatalf("LogsQL %s found nothing within 20s; diagnoses in the store: %v", q, all)
				}
				rows = logsQL(t, vl, q)
			}
			r := rows[0]
			t.Logf("%s: %s [%s] stream %s", tc.pattern, r["_msg"], r["severity_text"], r["_stream"])

			if want := fmt.Sprintf(`{host.name=%q}`, host); r["_stream"] != want {
				t.Errorf("_stream = %s, want %s", r["_stream"], want)
			}
			if !strings.Contains(r["_msg"], tc.body) || !strings.Contains(r["_msg"], server.IP.String()) {
				t.Errorf("_msg (the summary) = %q, want it to name %s and %q", r["_msg"], server.IP, tc.body)
			}
			checkFields(t, r, map[string]string{
				"event_name":               "networkcorrelator.diagnosis",
				"severity_text":            "ERROR",
				"severity_number":          "17",
				"network.transport":        "tcp",
				"source.address":           client.IP.String(),
				"server.port":              tc.port,
				"networkcorrelator.layer":  "", // present, any value
				"networkcorrelator.impact": "",
			})
			if tc.errorType != "" && r["error.type"] != tc.errorType {
				t.Errorf("error.type = %q, want %q", r["error.type"], tc.errorType)
			}
			if !strings.Contains(r["networkcorrelator.resolution"], tc.resolution) {
				t.Errorf("networkcorrelator.resolution = %q, want it to contain %q", r["networkcorrelator.resolution"], tc.resolution)
			}
			if !strings.HasSuffix(r["scope.name"], "/receiver/networkcorrelatorreceiver") {
				t.Errorf("scope.name = %q", r["scope.name"])
			}
			if c, err := strconv.ParseFloat(r["networkcorrelator.confidence"], 64); err != nil || c <= 0 || c > 1 {
				t.Errorf("networkcorrelator.confidence = %q, want a number in (0, 1]", r["networkcorrelator.confidence"])
			}
			// The record's time is the diagnosis's last signal, not the
			// ingestion time and not zero.
			ts, err := time.Parse(time.RFC3339Nano, r["_time"])
			if err != nil || ts.Before(started.Add(-time.Second)) || ts.After(time.Now()) {
				t.Errorf("_time = %q, want between %s and now", r["_time"], started.Format(time.RFC3339Nano))
			}
			if last, err := time.Parse(time.RFC3339Nano, r["networkcorrelator.last_seen"]); err != nil || !last.Equal(ts) {
				t.Errorf("_time %s != networkcorrelator.last_seen %s", r["_time"], r["networkcorrelator.last_seen"])
			}
			if n, err := strconv.Atoi(r["networkcorrelator.count"]); err != nil || n < 1 {
				t.Errorf("networkcorrelator.count = %q, want a positive count", r["networkcorrelator.count"])
			}
			checkEvidence(t, r["networkcorrelator.evidence"], server.IP.String())
		})
	}

	// The metrics pipeline of the same collector still gets the counter.
	for deadline := time.Now().Add(30 * time.Second); !metricSeen(t, metricsFile, "networkcorrelator.diagnoses"); time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no networkcorrelator.diagnoses metric in %s", metricsFile)
		}
	}
}

// checkFields compares fields of a LogsQL row; an empty want only requires
// the field to be present and non-empty.
func checkFields(t *testing.T, row map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := row[k]
		switch {
		case !ok || got == "":
			t.Errorf("field %s missing from the stored record", k)
		case v != "" && got != v:
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

// checkEvidence decodes the evidence attribute (an OTLP array of maps, which
// VictoriaLogs stores as JSON): ordered facts, each with a time, a source and
// a fact, one of them about the server's address.
func checkEvidence(t *testing.T, raw, addr string) {
	t.Helper()
	var ev []struct{ Time, Source, Fact string }
	if err := json.Unmarshal([]byte(raw), &ev); err != nil || len(ev) == 0 {
		t.Errorf("networkcorrelator.evidence = %q, want a JSON array of facts (%v)", raw, err)
		return
	}
	var prev time.Time
	mentions := false
	for i, e := range ev {
		ts, err := time.Parse(time.RFC3339Nano, e.Time)
		if err != nil || e.Source == "" || e.Fact == "" {
			t.Errorf("evidence[%d] = %+v: want time, source and fact", i, e)
		}
		if ts.Before(prev) {
			t.Errorf("evidence[%d] at %s is before the one before it (%s)", i, ts, prev)
		}
		prev = ts
		mentions = mentions || strings.Contains(e.Fact, addr)
	}
	if !mentions {
		t.Errorf("no evidence fact names %s: %+v", addr, ev)
	}
}
