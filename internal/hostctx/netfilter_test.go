//go:build linux

package hostctx

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/signal"
)

func needTool(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("skipping: %s is not installed", tool)
	}
}

// knock sends one real connection attempt so the rule's counter moves and
// the scenario is known to drop or reject as the test says.
func knock(t *testing.T, from *lab.Host, to netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	c, err := from.Dial(ctx, to, 400*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatalf("connection to %v succeeded; the firewall rule should have stopped it", to)
	}
}

func TestNetfilterLab(t *testing.T) {
	needTool(t, "nft")
	needTool(t, "iptables")
	type want struct {
		table, chain, text, ipt, verdict string
		exact                            bool
		unknown                          string
		via                              string
	}
	tests := []struct {
		name  string
		setup func(srv *lab.Host) error
		port  uint16
		want  want
	}{
		{
			name: "nft drop by tcp dport, behind an accept for another port",
			setup: func(s *lab.Host) error {
				return s.Nft(`table inet fw { chain in { type filter hook input priority 0; tcp dport 22 accept; tcp dport 8080 counter drop;
}
}`)
			},
			port: 8080,
			want: want{table: "fw", chain: "in", text: "tcp dport 8080 counter packets 1 bytes 60 drop", verdict: "drop", exact: true, via: "in"},
		},
		{
			name: "nft reject with tcp reset",
			setup: func(s *lab.Host) error {
				return s.Nft(`table inet fw { chain in { type filter hook input priority 0; tcp dport 8080 reject with tcp reset;
}
}`)
			},
			port: 8080,
			want: want{table: "fw", chain: "in", text: "tcp dport 8080 reject with tcp reset", verdict: "reject with tcp reset", exact: true, via: "in"},
		},
		{
			name: "nft rule in a regular chain reached by jump",
			setup: func(s *lab.Host) error {
				return s.Nft(`table inet fw {
					chain blocked { tcp dport 9999 drop; tcp dport 8080 drop; }
					chain in { type filter hook input priority 0; ct state established accept; meta l4proto tcp jump blocked; }
				}`)
			},
			port: 8080,
			want: want{table: "fw", chain: "blocked", text: "tcp dport 8080 drop", verdict: "drop", exact: true, via: "in > jump blocked"},
		},
		{
			name: "nft set lookup",
			setup: func(s *lab.Host) error {
				return s.Nft(`table inet fw { chain in { type filter hook input priority 0; tcp dport { 22, 8080 } drop;
}
}`)
			},
			port: 8080,
			want: want{table: "fw", chain: "in", text: "tcp dport { 22, 8080 } drop", verdict: "drop", exact: true, via: "in"},
		},
		{
			name: "nft prefix",
			setup: func(s *lab.Host) error {
				return s.Nft(`table ip fw { chain in { type filter hook input priority 0; ip saddr 192.168.0.0/16 drop; ip saddr 10.0.0.0/8 tcp dport 8080 drop;
}
}`)
			},
			port: 8080,
			want: want{table: "fw", chain: "in", text: "ip saddr 10.0.0.0/8 tcp dport 8080 drop", verdict: "drop", exact: true, via: "in"},
		},
		{
			name: "nft named interval set and policy drop",
			setup: func(s *lab.Host) error {
				return s.Nft(`table inet fw {
					set trusted { type ipv4_addr; flags interval; elements = { 192.168.0.0/16, 172.16.0.0/12 } }
					chain in { type filter hook input priority 0; policy drop; ip saddr @trusted accept; iif lo accept; }
				}`)
			},
			port: 8080,
			want: want{table: "fw", chain: "in", text: "policy drop", verdict: "policy drop", exact: true, via: "in"},
		},
		{
			name: "nft concatenation of ranges",
			setup: func(s *lab.Host) error {
				return s.Nft(`table inet fw { chain in { type filter hook input priority 0; ip saddr . tcp dport { 10.0.0.0/8 . 9000-9100, 192.168.0.1 . 22 } accept; ip saddr . tcp dport { 10.0.0.0/8 . 8000-8100, 192.168.0.1 . 22 } drop;
}
}`)
			},
			port: 8080,
			want: want{table: "fw", chain: "in", text: "ip saddr . tcp dport { 10.0.0.0/8 . 8000-8100, 192.168.0.1 . 22 } drop", verdict: "drop", exact: true, via: "in"},
		},
		{
			name: "nft fib daddr type",
			setup: func(s *lab.Host) error {
				return s.Nft(`table inet fw { chain in { type filter hook input priority 0; fib daddr type broadcast drop; fib daddr type local tcp dport 8080 drop;
}
}`)
			},
			port: 8080,
			want: want{table: "fw", chain: "in", text: "fib daddr type local tcp dport 8080 drop", verdict: "drop", exact: true, via: "in"},
		},
		{
			name: "iptables addrtype",
			setup: func(s *lab.Host) error {
				return s.Iptables("-A", "INPUT", "-p", "tcp", "--dport", "8080", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DROP")
			},
			port: 8080,
			want: want{table: "filter", chain: "INPUT", text: "tcp dport 8080 xt match addrtype counter packets 1 bytes 60 drop", ipt: "-A INPUT -p tcp --dport 8080 -m addrtype --dst-type LOCAL -j DROP", verdict: "drop", exact: true, via: "INPUT"},
		},
		{
			name: "iptables -j DROP",
			setup: func(s *lab.Host) error {
				return s.Iptables("-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP")
			},
			port: 8080,
			want: want{table: "filter", chain: "INPUT", text: "tcp dport 8080 counter packets 1 bytes 60 drop", ipt: "-A INPUT -p tcp --dport 8080 -j DROP", verdict: "drop", exact: true, via: "INPUT"},
		},
		{
			name: "iptables -j REJECT --reject-with tcp-reset",
			setup: func(s *lab.Host) error {
				if err := s.Iptables("-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"); err != nil {
					return err
				}
				return s.Iptables("-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "REJECT", "--reject-with", "tcp-reset")
			},
			port: 8080,
			want: want{table: "filter", chain: "INPUT", text: "tcp dport 8080 counter packets 1 bytes 60 xt target REJECT with tcp-reset", ipt: "-A INPUT -p tcp --dport 8080 -j REJECT --reject-with tcp-reset", verdict: "reject with tcp-reset", exact: true, via: "INPUT"},
		},
		{
			name: "iptables comment, conntrack and multiport decoded",
			setup: func(s *lab.Host) error {
				return s.Iptables("-A", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", "8000:8100,9000", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "no web", "-j", "DROP")
			},
			port: 8080,
			want: want{table: "filter", chain: "INPUT", text: `meta l4proto tcp xt match multiport xt match conntrack comment "no web" counter packets 1 bytes 60 drop`, ipt: `-A INPUT -p tcp -m multiport --dports 8000:8100,9000 -m conntrack --ctstate NEW -m comment --comment "no web" -j DROP`, verdict: "drop", exact: true, via: "INPUT"},
		},
		{
			name: "iptables unknown match: probable",
			setup: func(s *lab.Host) error {
				return s.Iptables("-A", "INPUT", "-p", "tcp", "--dport", "8080", "-m", "length", "--length", "0:1500", "-j", "DROP")
			},
			port: 8080,
			want: want{table: "filter", chain: "INPUT", text: "tcp dport 8080 xt match length counter packets 1 bytes 60 drop", ipt: "-A INPUT -p tcp --dport 8080 -m length -j DROP", verdict: "drop", exact: false, unknown: "-m length", via: "INPUT"},
		},
		{
			name: "iptables user chain",
			setup: func(s *lab.Host) error {
				for _, args := range [][]string{{"-N", "WEB"}, {"-A", "WEB", "-s", "10.0.0.0/8", "-j", "DROP"}, {"-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "WEB"}} {
					if err := s.Iptables(args...); err != nil {
						return err
					}
				}
				return nil
			},
			port: 8080,
			want: want{table: "filter", chain: "WEB", text: "ip saddr 10.0.0.0/8 counter packets 1 bytes 60 drop", ipt: "-A WEB -s 10.0.0.0/8 -j DROP", verdict: "drop", exact: true, via: "INPUT > jump WEB"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t)
			srv := l.MustAddHost(t, "server")
			cli := l.MustAddHost(t, "client")
			if err := tc.setup(srv); err != nil {
				t.Fatal(err)
			}
			knock(t, cli, netip.AddrPortFrom(srv.IP, tc.port))
			nf := NewNetfilter(NewNetnsNames())
			// As the probe reports the drop: the server's eth0, path unknown.
			m, err := nf.Attribute(PacketFromSignal(signal.Signal{Kind: signal.KindDrop, NetnsInode: srv.Inode, Dev: "eth0", TCPFlags: signal.TCPFlagSYN,
				Flow: signal.Flow{Proto: signal.ProtoTCP, Src: cli.IP, Dst: srv.IP, SrcPort: 40000, DstPort: tc.port}, DropReason: "NETFILTER_DROP", DropLocation: "nft_do_chain"}))
			if err != nil {
				t.Fatal(err)
			}
			if m.Netns != srv.Netns {
				t.Errorf("Netns = %q, want %q", m.Netns, srv.Netns)
			}
			if m.Handle == 0 && m.Text != "policy drop" {
				t.Errorf("no rule handle in %+v", m)
			}
			got := want{table: m.Table, chain: m.Chain, text: m.Text, ipt: m.Iptables, verdict: m.Verdict, exact: m.Exact, unknown: strings.Join(m.Unknown, ", "), via: strings.Join(m.Via, " > ")}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if m.Handle != 0 {
				// The handle must name the rule nft lists.
				out, err := srv.Run("nft", "-a", "list", "chain", m.Family, m.Table, m.Chain)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(out), fmt.Sprintf("# handle %d\n", m.Handle)) {
					t.Errorf("handle %d not in\n%s", m.Handle, out)
				}
			}
		})
	}
}

// A rule for another address must not be blamed, and no rule means an error.
func TestNetfilterLabNoMatch(t *testing.T) {
	needTool(t, "nft")
	l := lab.New(t)
	srv := l.MustAddHost(t, "server")
	if err := srv.Nft(`table inet fw { chain in { type filter hook input priority 0; ip saddr 192.0.2.1 drop;
}
}`); err != nil {
		t.Fatal(err)
	}
	nf := NewNetfilter(nil)
	_, err := nf.Attribute(Packet{NetnsInode: srv.Inode, Proto: 6, Src: netip.MustParseAddr("10.1.1.1"), Dst: srv.IP, DstPort: 80, TCPFlags: 0x02})
	if err == nil || !strings.Contains(err.Error(), "no rule") {
		t.Fatalf("err = %v, want no rule", err)
	}
	if _, err := nf.Attribute(Packet{NetnsInode: 1, Proto: 6, Src: srv.IP, Dst: srv.IP}); err == nil {
		t.Fatal("a namespace that does not exist gave no error")
	}
}

// The forward chain of a router namespace: the client reaches a host on
// another subnet through the lab's node, which forwards and drops.
func TestNetfilterLabForward(t *testing.T) {
	needTool(t, "nft")
	l := lab.New(t)
	cli := l.MustAddHost(t, "client")
	node := l.Node()
	far := fmt.Sprintf("%s-far", l.Name())
	sub := l.Subnet().Addr().As4()
	farNet := netip.AddrFrom4([4]byte{10, 99, sub[2], 0})
	farGW, farIP := farNet.Next(), farNet.Next().Next()
	if out, err := exec.Command("ip", "netns", "add", far).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", far).Run() })
	for _, args := range [][]string{
		{"-n", node.Netns, "link", "add", "r0", "type", "veth", "peer", "name", "eth0", "netns", far},
		{"-n", node.Netns, "addr", "add", farGW.String() + "/24", "dev", "r0"},
		{"-n", node.Netns, "link", "set", "r0", "up"},
		{"-n", far, "addr", "add", farIP.String() + "/24", "dev", "eth0"},
		{"-n", far, "link", "set", "eth0", "up"},
		{"-n", far, "link", "set", "lo", "up"},
		{"-n", far, "route", "add", "default", "via", farGW.String()},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	if _, err := node.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatal(err)
	}
	if err := node.Nft(`table inet fw { chain forward_filter { type filter hook forward priority 0; oifname "r0" tcp dport 5432 counter drop;
}
}`); err != nil {
		t.Fatal(err)
	}
	knock(t, cli, netip.AddrPortFrom(farIP, 5432))
	nf := NewNetfilter(NewNetnsNames())
	// Path left unknown: the node owns neither address, so it forwarded.
	m, err := nf.Attribute(Packet{NetnsInode: node.Inode, Proto: 6, Src: cli.IP, Dst: farIP, SrcPort: 40000, DstPort: 5432, TCPFlags: 0x02, InIface: "br0", OutIface: "r0"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Chain != "forward_filter" || m.Text != `oifname "r0" tcp dport 5432 counter packets 1 bytes 60 drop` || !m.Exact {
		t.Errorf("got %+v", m)
	}
}

// The forward chain of the node namespace, for traffic bridged between two
// lab hosts (br_netfilter passes it through the IP hooks).
func TestNetfilterLabBridgeForward(t *testing.T) {
	needTool(t, "nft")
	l := lab.New(t)
	cli := l.MustAddHost(t, "client")
	srv := l.MustAddHost(t, "server")
	node := l.Node()
	out, err := node.Run("sysctl", "-n", "net.bridge.bridge-nf-call-iptables")
	if err != nil {
		t.Skipf("skipping: br_netfilter is not loaded (modprobe br_netfilter): %v", err)
	}
	if strings.TrimSpace(string(out)) != "1" {
		if _, err := node.Run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := node.Nft(fmt.Sprintf(`table inet fw {
		chain forward_filter { type filter hook forward priority 0; ip daddr %s tcp dport 8080 counter drop;
		}
	}`, srv.IP)); err != nil {
		t.Fatal(err)
	}
	knock(t, cli, netip.AddrPortFrom(srv.IP, 8080))
	nf := NewNetfilter(NewNetnsNames())
	// The probe reports the drop in the node with the bridge port as device.
	m, err := nf.Attribute(PacketFromSignal(signal.Signal{Kind: signal.KindDrop, NetnsInode: node.Inode, Dev: "v2", TCPFlags: signal.TCPFlagSYN,
		Flow: signal.Flow{Proto: signal.ProtoTCP, Src: cli.IP, Dst: srv.IP, SrcPort: 40000, DstPort: 8080}}))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("ip daddr %s tcp dport 8080 counter packets 1 bytes 60 drop", srv.IP)
	if m.Chain != "forward_filter" || m.Text != want || !m.Exact || m.Netns != node.Netns {
		t.Errorf("got %+v, want %q", m, want)
	}
}

// A drop in the sender's own output chain: the probe reports no device.
func TestNetfilterLabOutput(t *testing.T) {
	needTool(t, "nft")
	l := lab.New(t)
	cli := l.MustAddHost(t, "client")
	srv := l.MustAddHost(t, "server")
	if err := cli.Nft(`table inet fw { chain out { type filter hook output priority 0; oifname "eth0" ip daddr 10.0.0.0/8 tcp dport 8080 drop;
		}
	}`); err != nil {
		t.Fatal(err)
	}
	knock(t, cli, netip.AddrPortFrom(srv.IP, 8080))
	nf := NewNetfilter(nil)
	p := PacketFromSignal(signal.Signal{Kind: signal.KindDrop, NetnsInode: cli.Inode, TCPFlags: signal.TCPFlagSYN,
		Flow: signal.Flow{Proto: signal.ProtoTCP, Src: cli.IP, Dst: srv.IP, SrcPort: 40000, DstPort: 8080}})
	m, err := nf.Attribute(p)
	if err != nil {
		t.Fatal(err)
	}
	// The output device is not in the signal; the route to the destination names it.
	if m.Chain != "out" || !m.Exact || m.Text != `oifname "eth0" ip daddr 10.0.0.0/8 tcp dport 8080 drop` {
		t.Errorf("got %+v", m)
	}
	// Another output device than the rule's: no match.
	p.OutIface = "lo"
	if m, err := nf.Attribute(p); err == nil {
		t.Errorf("with output device lo: %+v", m)
	}
}

// Rulesets are cached for TTL, then read again.
func TestNetfilterLabCache(t *testing.T) {
	needTool(t, "nft")
	l := lab.New(t)
	srv := l.MustAddHost(t, "server")
	if err := srv.Nft("table inet fw { chain in { type filter hook input priority 0; tcp dport 8080 drop;\n}\n}"); err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1000, 0)
	nf := NewNetfilter(nil)
	nf.now = func() time.Time { return clock }
	p := Packet{NetnsInode: srv.Inode, Proto: 6, Src: netip.MustParseAddr("10.1.1.1"), Dst: srv.IP, DstPort: 8080, TCPFlags: 0x02}
	first, err := nf.Attribute(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Nft("flush ruleset\ntable inet fw2 { chain in { type filter hook input priority 0; tcp dport 8080 reject;\n}\n}"); err != nil {
		t.Fatal(err)
	}
	if m, err := nf.Attribute(p); err != nil || m.Table != first.Table {
		t.Errorf("within TTL: %+v, %v; want the cached table %s", m, err, first.Table)
	}
	// A drop after the listing reloads it, but not within MinReload.
	p.Time = clock.Add(time.Millisecond)
	if m, err := nf.Attribute(p); err != nil || m.Table != first.Table {
		t.Errorf("drop newer than the listing, within MinReload: %+v, %v; want the cached table", m, err)
	}
	// Never sooner than ten times the listing's cost.
	clock = clock.Add(max(nf.MinReload, 10*nf.cache[srv.Inode].cost))
	if m, err := nf.Attribute(p); err != nil || m.Table != "fw2" || m.Verdict != "reject" {
		t.Errorf("drop newer than the listing: %+v, %v; want fw2's reject", m, err)
	}
	p.Time = time.Time{}
	if err := srv.Nft("flush ruleset\ntable inet fw3 { chain in { type filter hook input priority 0; tcp dport 8080 drop;\n}\n}"); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(max(nf.TTL, 10*nf.cache[srv.Inode].cost))
	if m, err := nf.Attribute(p); err != nil || m.Table != "fw3" {
		t.Errorf("after TTL: %+v, %v; want fw3", m, err)
	}
}

// Concurrent attributions across namespaces, with a cache smaller than
// the number of namespaces.
func TestNetfilterLabConcurrent(t *testing.T) {
	needTool(t, "nft")
	l := lab.New(t)
	var hosts []*lab.Host
	for i := 0; i < 3; i++ {
		h := l.MustAddHost(t, fmt.Sprintf("h%d", i))
		if err := h.Nft(fmt.Sprintf("table inet fw%d { chain in { type filter hook input priority 0; tcp dport 8080 drop;\n}\n}", i)); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	nf := NewNetfilter(nil)
	nf.MaxNamespaces = 2
	errc := make(chan error, 30)
	for i := 0; i < 30; i++ {
		h := hosts[i%3]
		go func(i int) {
			m, err := nf.Attribute(Packet{NetnsInode: h.Inode, Proto: 6, Src: netip.MustParseAddr("10.1.1.1"), Dst: h.IP, DstPort: 8080, TCPFlags: 0x02})
			if err == nil && m.Table != fmt.Sprintf("fw%d", i%3) {
				err = fmt.Errorf("namespace %s: table %s", h.Netns, m.Table)
			}
			errc <- err
		}(i)
	}
	for i := 0; i < 30; i++ {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

func TestNetfilterEvict(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		name  string
		max   int
		slots map[uint32]*nfSlot
		left  []uint32
	}{
		{"expiry, with the cost floor", 10, map[uint32]*nfSlot{
			1: {at: now.Add(-3 * time.Second)},                               // past TTL
			2: {at: now.Add(-3 * time.Second), cost: 500 * time.Millisecond}, // kept: listing again would cost too much
			4: {},                                                            // being listed
		}, []uint32{2, 4}},
		{"room for one more at the limit, oldest first", 3, map[uint32]*nfSlot{
			1: {at: now.Add(-1500 * time.Millisecond)},
			2: {at: now.Add(-time.Second)},
			3: {at: now.Add(-500 * time.Millisecond)},
			4: {},
		}, []uint32{3, 4}},
	}
	for _, tc := range tests {
		nf := NewNetfilter(nil)
		nf.MaxNamespaces = tc.max
		nf.cache = tc.slots
		nf.evict(now)
		var left []uint32
		for k := range nf.cache {
			left = append(left, k)
		}
		slices.Sort(left)
		if !slices.Equal(left, tc.left) {
			t.Errorf("%s: left %v, want %v", tc.name, left, tc.left)
		}
	}
}
