//go:build linux

package probe

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// sendFrom sends one datagram of size bytes from h (DF set when df) and
// returns the flow as the client sent it.
func sendFrom(t *testing.T, h *lab.Host, src netip.Addr, to netip.AddrPort, size int, df bool) signal.Flow {
	t.Helper()
	var lport uint16
	err := h.Do(func() error {
		af := unix.AF_INET
		if to.Addr().Is6() {
			af = unix.AF_INET6
		}
		fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if df {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE); err != nil {
				return err
			}
		}
		if err := unix.Connect(fd, sockaddr(to.Addr(), int(to.Port()))); err != nil {
			return err
		}
		if _, err := unix.Write(fd, make([]byte, size)); err != nil {
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			lport = uint16(sa.Port)
		case *unix.SockaddrInet6:
			lport = uint16(sa.Port)
		}
		// Keep the socket until the error has arrived, so the kernel
		// finds it (and does not answer with a port unreachable).
		time.Sleep(200 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatalf("sending from %s: %v", h.Name, err)
	}
	return signal.Flow{Proto: signal.ProtoUDP, Src: src, Dst: to.Addr(), SrcPort: lport, DstPort: to.Port()}
}

// ICMP errors: the receiving client's TC probe reports the error's sender
// and the original flow it quotes, and the sender's icmp_send reports the
// error it generated (IPv4). Cases: a firewall REJECT with port
// unreachable and with host prohibited (a TCP SYN), an unreachable route
// on the gateway, a DF datagram larger than the gateway's route MTU
// (fragmentation needed, with the MTU), an IPv6 datagram to a closed
// UDP port (ICMPv6 port unreachable) and an IPv6 datagram over the
// gateway's route MTU (packet too big, 32-bit MTU); IPv6 has no icmp_send
// tracepoint.
func TestICMPErrors(t *testing.T) {
	requireProbe(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("skipping: the iptables command is needed for REJECT rules")
	}
	p, col := startProbe(t, Config{})
	if before := withStats(t, p); before != nil {
		defer logStats(t, p, before)
	}
	tests := []struct {
		name   string
		setup  func(t *testing.T, l *lab.Lab, client, server *lab.Host) (send func() signal.Flow, sender *lab.Host)
		v6     bool
		typ    uint8
		code   uint8
		mtu    uint32
		noSent bool
		from6  string // the IPv6 sender, for IPv6 cases
	}{
		{"REJECT icmp-port-unreachable", func(t *testing.T, l *lab.Lab, client, server *lab.Host) (func() signal.Flow, *lab.Host) {
			if err := server.Iptables("-A", "INPUT", "-p", "tcp", "--dport", "5001", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"); err != nil {
				t.Fatal(err)
			}
			return func() signal.Flow {
				_, f := dialNonblocking(t, client, netip.AddrPortFrom(server.IP, 5001))
				return f
			}, server
		}, false, 3, 3, 0, false, ""},
		{"REJECT icmp-host-prohibited", func(t *testing.T, l *lab.Lab, client, server *lab.Host) (func() signal.Flow, *lab.Host) {
			if err := server.Iptables("-A", "INPUT", "-p", "tcp", "--dport", "5002", "-j", "REJECT", "--reject-with", "icmp-host-prohibited"); err != nil {
				t.Fatal(err)
			}
			return func() signal.Flow {
				_, f := dialNonblocking(t, client, netip.AddrPortFrom(server.IP, 5002))
				return f
			}, server
		}, false, 3, 10, 0, false, ""},
		{"unreachable route on the gateway", func(t *testing.T, l *lab.Lab, client, server *lab.Host) (func() signal.Flow, *lab.Host) {
			mustRun(t, l.Node(), "sysctl", "-qw", "net.ipv4.ip_forward=1")
			mustRun(t, l.Node(), "ip", "route", "add", "unreachable", "198.51.100.0/24")
			return func() signal.Flow {
				_, f := dialNonblocking(t, client, netip.MustParseAddrPort("198.51.100.7:443"))
				return f
			}, l.Node()
		}, false, 3, 1, 0, false, ""},
		{"fragmentation needed at the gateway", func(t *testing.T, l *lab.Lab, client, server *lab.Host) (func() signal.Flow, *lab.Host) {
			mustRun(t, l.Node(), "sysctl", "-qw", "net.ipv4.ip_forward=1")
			mustRun(t, l.Node(), "ip", "route", "add", "192.0.2.0/24", "via", server.IP.String(), "mtu", "lock", "1000")
			return func() signal.Flow {
				return sendFrom(t, client, client.IP, netip.MustParseAddrPort("192.0.2.10:9"), 1200, true)
			}, l.Node()
		}, false, 3, 4, 1000, false, ""},
		{"ICMPv6 port unreachable", func(t *testing.T, l *lab.Lab, client, server *lab.Host) (func() signal.Flow, *lab.Host) {
			mustRun(t, client, "ip", "-6", "addr", "add", "fd00:6e63::2/64", "dev", "eth0", "nodad")
			mustRun(t, server, "ip", "-6", "addr", "add", "fd00:6e63::3/64", "dev", "eth0", "nodad")
			return func() signal.Flow {
				return sendFrom(t, client, netip.MustParseAddr("fd00:6e63::2"), netip.MustParseAddrPort("[fd00:6e63::3]:9"), 10, false)
			}, server
		}, true, 1, 4, 0, true, "fd00:6e63::3"},
		{"ICMPv6 packet too big at the gateway", func(t *testing.T, l *lab.Lab, client, server *lab.Host) (func() signal.Flow, *lab.Host) {
			node := l.Node()
			mustRun(t, node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
			mustRun(t, node, "ip", "-6", "addr", "add", "fd00:6e63::1/64", "dev", "br0", "nodad")
			mustRun(t, client, "ip", "-6", "addr", "add", "fd00:6e63::2/64", "dev", "eth0", "nodad")
			mustRun(t, client, "ip", "-6", "route", "add", "2001:db8::/64", "via", "fd00:6e63::1")
			mustRun(t, node, "ip", "-6", "route", "add", "2001:db8::/64", "via", "fd00:6e63::3", "mtu", "lock", "1280")
			return func() signal.Flow {
				return sendFrom(t, client, netip.MustParseAddr("fd00:6e63::2"), netip.MustParseAddrPort("[2001:db8::10]:9"), 1400, false)
			}, node
		}, true, 2, 0, 1280, true, "fd00:6e63::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			server := l.MustAddHost(t, "server")
			send, sender := tt.setup(t, l, client, server)
			if err := client.Do(func() error { return p.AttachICMP("eth0") }); err != nil {
				t.Fatal(err)
			}
			flow := send()
			from := sender.IP
			if tt.v6 {
				from = netip.MustParseAddr(tt.from6)
			}
			got, ok := col.waitFor(func(s signal.Signal) bool {
				return s.Kind == signal.KindICMPError && s.NetnsInode == client.Inode && s.Flow == flow
			}, 3*time.Second)
			if !ok {
				t.Fatalf("no icmp_error for %s at the client; its signals:\n%s", flow,
					dump(col.matching(func(s signal.Signal) bool { return s.NetnsInode == client.Inode })))
			}
			if got.ICMPType != tt.typ || got.ICMPCode != tt.code || got.MTU != tt.mtu || got.ICMPFrom != from ||
				got.Dev != "eth0" || got.NetnsCookie == 0 {
				t.Errorf("icmp_error = %s, want type %d code %d mtu %d from %s on eth0", dump([]signal.Signal{got}), tt.typ, tt.code, tt.mtu, from)
			}
			if tt.noSent {
				return
			}
			sent, ok := col.waitFor(func(s signal.Signal) bool {
				return s.Kind == signal.KindICMPSent && s.NetnsInode == sender.Inode && s.Flow == flow
			}, time.Second)
			if !ok {
				t.Fatalf("no icmp_sent for %s in %s; its signals:\n%s", flow, sender.Name,
					dump(col.matching(func(s signal.Signal) bool { return s.NetnsInode == sender.Inode })))
			}
			if sent.ICMPType != tt.typ || sent.ICMPCode != tt.code {
				t.Errorf("icmp_sent = %s, want type %d code %d", dump([]signal.Signal{sent}), tt.typ, tt.code)
			}
		})
	}
}

// AttachICMP names a missing interface, and Open fails on an unknown
// configured one; Close detaches the ingress programs.
func TestAttachICMPErrors(t *testing.T) {
	requireProbe(t)
	if _, err := Open(Config{Interfaces: []string{"nc-no-such0"}}); err == nil || !strings.Contains(fmt.Sprint(err), "Interfaces") || !strings.Contains(fmt.Sprint(err), "nc-no-such0") {
		t.Errorf("Open with an unknown interface: %v, want an Interfaces error naming it", err)
	}
	p, err := Open(Config{Interfaces: []string{"lo"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AttachICMP("nc-no-such0"); err == nil {
		t.Error("AttachICMP of a missing interface succeeded")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.AttachICMP("lo"); err == nil {
		t.Error("AttachICMP after Close succeeded")
	}
}

// With no Interfaces configured, interfaces created after Open in Open's
// namespace get the ICMP probe too (link watch); a deleted one detaches by
// itself, and Close detaches the rest.
func TestICMPLinkWatch(t *testing.T) {
	requireProbe(t)
	ns := newTestNetns(t)
	var p *Probe
	var err error
	ns.run(func() { p, err = Open(Config{}) }) // Open's namespace is the test's
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	info, err := p.icmpProg.Info()
	if err != nil {
		t.Fatal(err)
	}
	progID, _ := info.ID()
	attachedTo := func(ifname string) bool {
		var ok bool
		ns.run(func() {
			ifc, err := net.InterfaceByName(ifname)
			if err != nil {
				return
			}
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				return
			}
			for _, pr := range res.Programs {
				ok = ok || pr.ID == progID
			}
		})
		return ok
	}
	if !attachedTo("lo") {
		t.Fatal("the ICMP probe is not on lo, present at Open")
	}
	ip := func(args ...string) {
		t.Helper()
		cmd := exec.Command("nsenter", append([]string{fmt.Sprintf("--net=/proc/%d/task/%d/ns/net", os.Getpid(), ns.tid), "ip"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("link", "add", "ncw0", "type", "veth", "peer", "name", "ncw1")
	deadline := time.Now().Add(3 * time.Second)
	for !attachedTo("ncw0") || !attachedTo("ncw1") {
		if time.Now().After(deadline) {
			t.Fatal("the ICMP probe was not attached to interfaces created after Open")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ip("link", "del", "ncw0")
	// Interfaces created after a deletion are attached as well (the
	// watch follows RTM_DELLINK; ifindexes may be reused).
	ip("link", "add", "ncw2", "type", "veth", "peer", "name", "ncw3")
	deadline = time.Now().Add(3 * time.Second)
	for !attachedTo("ncw2") {
		if time.Now().After(deadline) {
			t.Fatal("not attached to an interface created after a deletion")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if attachedTo("lo") || attachedTo("ncw2") {
		t.Error("the ICMP probe is still attached after Close")
	}
}
