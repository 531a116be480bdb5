//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Each scenario induces one real failure between two lab hosts and asserts
// the diagnosis that comes out of the real probes and correlator.
func TestKernelScenarios(t *testing.T) {
	const port = 8080
	tests := []struct {
		name string
		// block installs the failure on the server host.
		block   func(server *lab.Host) error
		needs   string // binary the scenario needs
		dialErr error  // what connect() returns (nil: it must still be pending)
		pattern diagnosis.Pattern
		// summary and evidence the diagnosis must carry
		summary  []string
		evidence [][2]string
		// the failure must be diagnosed while connect() is still waiting
		beforeConnectGivesUp bool
	}{
		{
			name:     "closed port",
			block:    func(*lab.Host) error { return nil },
			dialErr:  syscall.ECONNREFUSED,
			pattern:  diagnosis.PatternConnectionRefused,
			summary:  []string{"refused", "no process listens"},
			evidence: [][2]string{{"tcp:tcp_receive_reset", ""}, {"skb:kfree_skb", "NO_SOCKET"}},
		},
		{
			name: "firewall REJECT with tcp-reset",
			block: func(s *lab.Host) error {
				return s.Iptables("-A", "INPUT", "-p", "tcp", "--dport", fmt.Sprint(port), "-j", "REJECT", "--reject-with", "tcp-reset")
			},
			needs:    "iptables",
			dialErr:  syscall.ECONNREFUSED,
			pattern:  diagnosis.PatternConnectionRefused,
			summary:  []string{"refused", "firewall"},
			evidence: [][2]string{{"tcp:tcp_receive_reset", ""}, {"skb:kfree_skb", "NETFILTER_DROP"}},
		},
		{
			name: "iptables DROP",
			block: func(s *lab.Host) error {
				return s.Iptables("-A", "INPUT", "-p", "tcp", "--dport", fmt.Sprint(port), "-j", "DROP")
			},
			needs:                "iptables",
			pattern:              diagnosis.PatternSYNDropped,
			summary:              []string{"dropped", "netfilter"},
			evidence:             [][2]string{{"skb:kfree_skb", "NETFILTER_DROP"}, {"tcp:tcp_retransmit_skb", ""}},
			beforeConnectGivesUp: true,
		},
		{
			name: "nftables DROP",
			block: func(s *lab.Host) error {
				return s.Nft(fmt.Sprintf("table inet guard {\n chain input {\n  type filter hook input priority 0;\n  tcp dport %d drop\n }\n}\n", port))
			},
			needs:                "nft",
			pattern:              diagnosis.PatternSYNDropped,
			summary:              []string{"dropped", "netfilter"},
			evidence:             [][2]string{{"skb:kfree_skb", "nft_do_chain"}, {"tcp:tcp_retransmit_skb", ""}},
			beforeConnectGivesUp: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			needTool(t, tc.needs)
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			server := l.MustAddHost(t, "server")
			p := startPipeline(t, l)
			if err := tc.block(server); err != nil {
				t.Fatal(err)
			}
			if tc.name != "closed port" {
				ln, err := server.Listen(port)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
			}

			// connect() runs in the background with a timeout well past
			// the first SYN retransmit, as an application's would.
			const connectTimeout = 6 * time.Second
			start := time.Now()
			type result struct {
				err error
				at  time.Time
			}
			done := make(chan result, 1)
			go func() {
				c, err := client.Dial(context.Background(), netip.AddrPortFrom(server.IP, port), connectTimeout)
				if c != nil {
					c.Close()
				}
				done <- result{err, time.Now()}
			}()

			d := p.waitFor(t, connectTimeout+2*time.Second, string(tc.pattern), func(d diagnosis.Diagnosis) bool {
				return d.Pattern == tc.pattern && d.Flow.Dst == server.IP && d.Flow.DstPort == port
			})
			diagnosedAt := time.Now()
			res := <-done
			t.Logf("diagnosis after %s (connect returned %v after %s):\n  %s\n  details: %s\n  resolution: %s\n  confidence %.2f",
				diagnosedAt.Sub(start).Round(time.Millisecond), res.err, res.at.Sub(start).Round(time.Millisecond),
				d.Summary, d.Details, d.Resolution, d.Confidence)

			if tc.dialErr != nil && !errors.Is(res.err, tc.dialErr) {
				t.Errorf("connect error = %v, want %v", res.err, tc.dialErr)
			}
			if tc.beforeConnectGivesUp && !diagnosedAt.Before(res.at) {
				t.Errorf("diagnosed at +%s, after connect() gave up at +%s", diagnosedAt.Sub(start), res.at.Sub(start))
			}
			for _, want := range tc.summary {
				if !strings.Contains(strings.ToLower(d.Summary+" "+d.Details), want) {
					t.Errorf("summary/details lack %q: %s | %s", want, d.Summary, d.Details)
				}
			}
			for _, ev := range tc.evidence {
				if !hasEvidence(d, ev[0], ev[1]) {
					t.Errorf("no evidence from %s mentioning %q in %+v", ev[0], ev[1], d.Evidence)
				}
			}
			if d.Flow.Src != client.IP {
				t.Errorf("flow source = %s, want the client %s", d.Flow.Src, client.IP)
			}
			if d.Destination.NetnsInode != 0 && d.Destination.NetnsInode != server.Inode {
				t.Errorf("destination netns inode = %d, want the server's %d", d.Destination.NetnsInode, server.Inode)
			}
			// Where it failed is named in the user's terms: the `ip netns` name.
			if !strings.Contains(d.Summary, server.Netns) {
				t.Errorf("the server's namespace %s is not named in the summary: %s", server.Netns, d.Summary)
			}
		})
	}
}

// A success-only run: hundreds of connections that open, exchange a byte and
// close normally must produce no diagnosis, and no signal at all must reach
// user space for them (the kernel filters the success path).
func TestSuccessOnlyRunIsSilent(t *testing.T) {
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	p := startPipeline(t, l)

	ln, err := server.Listen(9090)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				buf := make([]byte, 1)
				if _, err := c.Read(buf); err == nil {
					_, _ = c.Write(buf)
				}
			}(c)
		}
	}()

	const n = 500
	to := netip.AddrPortFrom(server.IP, 9090)
	for i := 0; i < n; i++ {
		c, err := client.Dial(context.Background(), to, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		buf := []byte{'x'}
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// Let every close, FIN and TIME_WAIT transition reach the probes.
	time.Sleep(1500 * time.Millisecond)
	sigs, diags := p.snapshot()
	// What successful traffic produces under load (signal.SuccessNoise: a
	// listener's late ACK, a tail-loss probe) is tolerated and logged; it
	// must not become a diagnosis, and any other signal fails the test.
	var other int
	for _, s := range sigs {
		if !signal.SuccessNoise(s) {
			other++
		}
	}
	if other != len(sigs) {
		t.Logf("%d signals of successful traffic under load, tolerated", len(sigs)-other)
	}
	if len(diags) != 0 || other != 0 {
		t.Fatalf("%d successful connections produced %d signals and %d diagnoses:\n%s", n, other, len(diags), p.dump())
	}
}
