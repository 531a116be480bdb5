//go:build linux

package correlate_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/livetest"
	"github.com/network-correlator/network-correlator/internal/probe"
	"github.com/network-correlator/network-correlator/internal/replay"
	"github.com/network-correlator/network-correlator/internal/signal"
)

var record = flag.Bool("record", false, "write each kernel scenario's signals to testdata/replay/kernel_*.jsonl")

// startLive runs the real probes into an engine with the default
// configuration, keeping only this lab's flows: other tests may run probes
// and namespaces at the same time.
func startLive(t *testing.T, l *lab.Lab) *livetest.Run {
	t.Helper()
	return startLiveKeeping(t, l, probe.Config{}, func(s *signal.Signal) bool {
		return l.Subnet().Contains(s.Flow.Src) || l.Subnet().Contains(s.Flow.Dst)
	})
}

// startLiveKeeping runs the real probes (cfg) into an engine, feeding it
// and recording the signals that keep accepts; it stops both when the test
// ends.
func startLiveKeeping(t *testing.T, l *lab.Lab, cfg probe.Config, keep func(*signal.Signal) bool) *livetest.Run {
	t.Helper()
	ecfg := correlate.DefaultConfig()
	ecfg.NetnsNamer = livetest.Names{Lab: l}
	return livetest.Start(t, livetest.Options{Probe: cfg, Engine: ecfg, Feed: keep})
}

// waitKey waits for a diagnosis whose key starts with keyPrefix.
func waitKey(t *testing.T, le *livetest.Run, keyPrefix string, within time.Duration) diagnosis.Diagnosis {
	t.Helper()
	return le.WaitFor(t, within, keyPrefix, func(d diagnosis.Diagnosis) bool { return strings.HasPrefix(d.Key, keyPrefix) })
}

func saveRecording(t *testing.T, name string, sigs []signal.Signal, comment string) {
	t.Helper()
	if !*record {
		return
	}
	var buf bytes.Buffer
	for line := range strings.SplitSeq(comment, "\n") {
		buf.WriteString("# " + line + "\n")
	}
	enc := replay.NewEncoder(&buf)
	for _, s := range sigs {
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join("..", "..", "testdata", "replay", name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("recorded %d signals to %s", len(sigs), path)
}

// TestKernelScenarios induces each failure in a lab and checks the
// correlator's diagnosis from the real probes, end to end below the receiver.
func TestKernelScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping kernel scenarios in -short mode")
	}
	tests := []struct {
		name     string
		port     uint16
		setup    func(t *testing.T, client, server *lab.Host)
		dial     time.Duration
		wantErr  error
		key      func(client, server *lab.Host) string
		summary  string
		within   time.Duration
		fixture  string
		describe string
	}{
		{
			name: "closed port", port: 8080, dial: 2 * time.Second, wantErr: syscall.ECONNREFUSED,
			key:     func(_, s *lab.Host) string { return "connection_refused/no_listener/" + s.IP.String() + ":8080/" },
			summary: "no process listens on port 8080 in netns server",
			within:  2 * time.Second, fixture: "kernel_refused_closed_port.jsonl",
			describe: "Recorded by TestKernelScenarios -record: connect to a closed port between two lab namespaces.",
		},
		{
			name: "REJECT with tcp reset", port: 8081, dial: 2 * time.Second, wantErr: syscall.ECONNREFUSED,
			setup: func(t *testing.T, _, s *lab.Host) {
				nftRule(t, s, "input", "tcp dport 8081 reject with tcp reset")
			},
			key:     func(_, s *lab.Host) string { return "connection_refused/firewall_reject/" + s.IP.String() + ":8081/" },
			summary: "a firewall REJECT (tcp-reset) in netns server refused it",
			within:  2 * time.Second, fixture: "kernel_refused_reject.jsonl",
			describe: "Recorded by TestKernelScenarios -record: nft reject with tcp reset in the server's input chain.",
		},
		{
			name: "DROP in the server's input", port: 8082, dial: 2500 * time.Millisecond, wantErr: nil,
			setup: func(t *testing.T, _, s *lab.Host) {
				nftRule(t, s, "input", "tcp dport 8082 drop")
			},
			key:     func(_, s *lab.Host) string { return "syn_dropped/netfilter_drop/" + s.IP.String() + ":8082/" },
			summary: "dropped by a netfilter rule in netns server (nft_do_chain)",
			// Diagnosed at the first SYN retransmit (~1 s), before connect() gives up.
			within: 2 * time.Second, fixture: "kernel_syn_dropped_input.jsonl",
			describe: "Recorded by TestKernelScenarios -record: nft drop in the server's input chain; the client gives up after 2.5 s.",
		},
		{
			name: "DROP in the client's own output", port: 8083, dial: 2500 * time.Millisecond, wantErr: nil,
			setup: func(t *testing.T, c, _ *lab.Host) {
				nftRule(t, c, "output", "tcp dport 8083 drop")
			},
			key:     func(c, s *lab.Host) string { return "syn_dropped/local_output_firewall/" + s.IP.String() + ":8083/" },
			summary: "refused by the client's own OUTPUT firewall in netns client",
			within:  2 * time.Second, fixture: "kernel_syn_dropped_own_output.jsonl",
			describe: "Recorded by TestKernelScenarios -record: nft drop in the client's own output chain.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			server := l.MustAddHost(t, "server")
			if tc.setup != nil {
				tc.setup(t, client, server)
			}
			le := startLive(t, l)
			start := time.Now()
			_, err := client.Dial(context.Background(), netip.AddrPortFrom(server.IP, tc.port), tc.dial)
			if err == nil {
				t.Fatal("connect succeeded")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("connect error %v, want %v", err, tc.wantErr)
			}
			d := waitKey(t, le, tc.key(client, server), tc.within)
			if !strings.Contains(d.Summary, tc.summary) {
				t.Errorf("summary %q, want it to contain %q", d.Summary, tc.summary)
			}
			if d.Source.NetnsInode != client.Inode {
				t.Errorf("source netns inode %d, want the client's %d", d.Source.NetnsInode, client.Inode)
			}
			took := d.LastSeen.Sub(start)
			if tc.wantErr == nil && took >= tc.dial {
				t.Errorf("diagnosed %v after the connect, not before the application gave up (%v)", took, tc.dial)
			}
			t.Logf("%s after %v: %s (confidence %.2f)", d.Pattern, took.Round(time.Millisecond), d.Summary, d.Confidence)
			// Let the tail of the sequence (e.g. the close) arrive, then keep it.
			time.Sleep(300 * time.Millisecond)
			sigs, _ := le.Snapshot()
			saveRecording(t, tc.fixture, sigs, tc.describe)
		})
	}
}

// nftRule adds one rule to a fresh filter chain on hook in h's namespace;
// it goes away with the namespace.
func nftRule(t *testing.T, h *lab.Host, hook, rule string) {
	t.Helper()
	script := fmt.Sprintf("table inet nctest {\n chain %[1]s {\n  type filter hook %[1]s priority 0\n  %[2]s\n }\n}\n", hook, rule)
	if err := h.Nft(script); err != nil {
		if strings.Contains(err.Error(), "executable file not found") {
			t.Skipf("skipping: the nft command (package nftables) is not installed: %v", err)
		}
		t.Fatal(err)
	}
}
