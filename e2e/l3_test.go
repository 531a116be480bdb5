//go:build linux

package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/lab"
)

// Failures below TCP: a neighbour that never answers, ICMP errors from a
// firewall. Each is induced for real in the lab and must be diagnosed by the
// pattern that names the cause.
func TestL2L3Scenarios(t *testing.T) {
	tests := []struct {
		name    string
		needs   string
		setup   func(t *testing.T, l *lab.Lab, client, server *lab.Host) netip.AddrPort
		dialErr error
		after   func(t *testing.T, c net.Conn) // traffic on the established connection
		pattern diagnosis.Pattern
		layer   diagnosis.Layer
		summary []string // lower-case fragments of summary+details
		within  time.Duration
	}{
		{
			name: "ARP: an address nobody has",
			setup: func(t *testing.T, _ *lab.Lab, _, server *lab.Host) netip.AddrPort {
				// .200 of the lab subnet: on link, never assigned.
				a := server.IP.As4()
				a[3] = 200
				return netip.AddrPortFrom(netip.AddrFrom4(a), 80)
			},
			dialErr: syscall.EHOSTUNREACH,
			pattern: diagnosis.PatternARPFailure,
			layer:   diagnosis.LayerL2,
			summary: []string{"never resolved", "eth0"},
			within:  8 * time.Second,
		},
		{
			name:  "ICMP host-prohibited from a firewall REJECT",
			needs: "iptables",
			setup: func(t *testing.T, _ *lab.Lab, _, server *lab.Host) netip.AddrPort {
				if err := server.Iptables("-A", "INPUT", "-p", "tcp", "--dport", "8085", "-j", "REJECT", "--reject-with", "icmp-host-prohibited"); err != nil {
					t.Fatal(err)
				}
				return netip.AddrPortFrom(server.IP, 8085)
			},
			dialErr: syscall.EHOSTUNREACH,
			pattern: diagnosis.PatternICMPError,
			summary: []string{"rejected by a firewall", "prohibited"},
			within:  5 * time.Second,
		},
		{
			name: "NDP: an IPv6 address nobody has",
			setup: func(t *testing.T, l *lab.Lab, client, server *lab.Host) netip.AddrPort {
				base := l.Subnet6().Addr().As16()
				for i, h := range []*lab.Host{l.Node(), client, server} {
					dev := "eth0"
					if h == l.Node() {
						dev = "br0"
					}
					a := base
					a[15] = byte(i + 1)
					if _, err := h.Run("ip", "-6", "addr", "add", netip.PrefixFrom(netip.AddrFrom16(a), 64).String(), "dev", dev, "nodad"); err != nil {
						t.Fatal(err)
					}
				}
				base[15] = 0xc8 // on link, never assigned
				return netip.AddrPortFrom(netip.AddrFrom16(base), 80)
			},
			dialErr: syscall.EHOSTUNREACH,
			pattern: diagnosis.PatternARPFailure,
			layer:   diagnosis.LayerL2,
			summary: []string{"ndp", "never resolved", "eth0"},
			within:  8 * time.Second,
		},
		{
			name:  "MTU black hole: frag-needed filtered on its way back",
			needs: "nft",
			setup: func(t *testing.T, l *lab.Lab, client, server *lab.Host) netip.AddrPort {
				to := routedHop(t, l.Node(), server, 1280)
				// The node answers the too-big segments with frag-needed;
				// the client's firewall drops it, so PMTU discovery never
				// learns the MTU and the segments are retransmitted as is.
				if err := client.Nft(`table inet e2e_mtu {
	chain input {
		type filter hook input priority 0; policy accept;
		icmp type destination-unreachable icmp code frag-needed drop
	}
}`); err != nil {
					t.Fatal(err)
				}
				// server.Listen binds the lab address; this one binds the routed one.
				var ln net.Listener
				if err := server.Do(func() (err error) {
					ln, err = net.Listen("tcp", netip.AddrPortFrom(to, 8086).String())
					return err
				}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
					}
				}()
				return netip.AddrPortFrom(to, 8086)
			},
			after: func(t *testing.T, c net.Conn) {
				// Full-size segments with DF, as every Linux TCP sends them;
				// the write returns once the data is queued.
				if err := c.SetWriteDeadline(time.Now().Add(2 * time.Second)); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write(make([]byte, 64<<10)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("write: %v", err)
				}
			},
			pattern: diagnosis.PatternICMPError,
			layer:   diagnosis.LayerL3,
			summary: []string{"mtu black hole", "mtu 1280", "never reached the sender"},
			within:  10 * time.Second,
		},
		{
			name: "TTL exceeded in a routing loop",
			setup: func(t *testing.T, l *lab.Lab, client, server *lab.Host) netip.AddrPort {
				// The node routes the prefix to the server, the server back
				// to the node: the SYN circles until its TTL runs out.
				loop := "198.18.0.0/24"
				node := l.Node()
				enableForwarding(t, node, "br0")
				enableForwarding(t, server, "eth0")
				if _, err := node.Run("ip", "route", "add", loop, "via", server.IP.String()); err != nil {
					t.Fatal(err)
				}
				if _, err := server.Run("ip", "route", "add", loop, "via", node.IP.String()); err != nil {
					t.Fatal(err)
				}
				return netip.MustParseAddrPort("198.18.0.5:80")
			},
			dialErr: syscall.EHOSTUNREACH,
			pattern: diagnosis.PatternICMPError,
			layer:   diagnosis.LayerL3,
			summary: []string{"ttl exceeded", "routing loop"},
			within:  5 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			needTool(t, tc.needs)
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			server := l.MustAddHost(t, "server")
			p := startPipeline(t, l)
			to := tc.setup(t, l, client, server)

			start := time.Now()
			c, err := client.Dial(context.Background(), to, tc.within)
			switch {
			case tc.dialErr != nil && !errors.Is(err, tc.dialErr):
				t.Errorf("connect error = %v, want %v", err, tc.dialErr)
			case tc.dialErr == nil && err != nil:
				t.Fatalf("connect: %v", err)
			}
			if c != nil {
				t.Cleanup(func() { c.Close() })
				if tc.after != nil {
					tc.after(t, c)
				}
			}
			d := p.waitFor(t, tc.within, string(tc.pattern), func(d diagnosis.Diagnosis) bool {
				return d.Pattern == tc.pattern && d.Flow.Dst == to.Addr()
			})
			t.Logf("after %s: %s\n  details: %s\n  resolution: %s\n  confidence %.2f",
				time.Since(start).Round(time.Millisecond), d.Summary, d.Details, d.Resolution, d.Confidence)
			text := strings.ToLower(d.Summary + " " + d.Details)
			for _, want := range tc.summary {
				if !strings.Contains(text, want) {
					t.Errorf("summary/details lack %q", want)
				}
			}
			if testing.Verbose() {
				t.Logf("signals:\n%s", p.dump())
			}
			if tc.layer != "" && d.Layer != tc.layer {
				t.Errorf("layer = %s, want %s", d.Layer, tc.layer)
			}
			if !strings.Contains(d.Summary, to.Addr().String()) {
				t.Errorf("summary does not name %s: %s", to.Addr(), d.Summary)
			}
			// The cause outranks the symptom: no syn_dropped or blackhole
			// for this flow.
			_, diags := p.snapshot()
			for _, o := range diags {
				if (o.Pattern == diagnosis.PatternSYNDropped || o.Pattern == diagnosis.PatternBlackhole) && o.Flow.Dst == to.Addr() {
					t.Errorf("also diagnosed as %s: %s", o.Pattern, o.Summary)
				}
			}
		})
	}
}

// routedHop gives server an address outside the lab subnet, reached from
// the node over a second veth pair of the given MTU, so the client's traffic
// to it is routed (not bridged) by the node and must fit that MTU. The
// server answers over its lab port, which keeps the replies at full size.
func routedHop(t *testing.T, node, server *lab.Host, mtu int) netip.Addr {
	t.Helper()
	enableForwarding(t, node, "br0")
	m := strconv.Itoa(mtu)
	for _, args := range [][]string{
		{"link", "add", "mtu0", "mtu", m, "type", "veth", "peer", "name", "eth1", "mtu", m, "netns", server.Netns},
		{"link", "set", "mtu0", "up"},
		{"addr", "add", "192.0.2.1/24", "dev", "mtu0"},
	} {
		if _, err := node.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"addr", "add", "192.0.2.10/24", "dev", "eth1"},
		{"link", "set", "eth1", "up"},
	} {
		if _, err := server.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	// Requests arrive on eth1, replies leave by eth0: no reverse-path check.
	for _, k := range []string{"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth1.rp_filter=0"} {
		if _, err := server.Run("sysctl", "-qw", k); err != nil {
			t.Fatal(err)
		}
	}
	return netip.MustParseAddr("192.0.2.10")
}

// enableForwarding makes h a router on dev without ICMP redirects, which
// would otherwise be the first ICMP a loop or a hairpin route produces.
// The sysctls belong to the lab namespace and go with it.
func enableForwarding(t *testing.T, h *lab.Host, dev string) {
	t.Helper()
	for _, k := range []string{
		"net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.send_redirects=0",
		"net.ipv4.conf." + dev + ".send_redirects=0",
	} {
		if _, err := h.Run("sysctl", "-qw", k); err != nil {
			t.Fatal(err)
		}
	}
}
