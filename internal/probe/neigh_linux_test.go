//go:build linux

package probe

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// sendUDP sends one datagram from h's namespace, which makes the kernel
// resolve the next hop.
func sendUDP(t *testing.T, h *lab.Host, to netip.AddrPort) {
	t.Helper()
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
		return unix.Sendto(fd, []byte("x"), 0, sockaddr(to.Addr(), int(to.Port())))
	})
	if err != nil {
		t.Fatalf("sending UDP from %s to %s: %v", h.Name, to, err)
	}
}

func mustRun(t *testing.T, h *lab.Host, name string, args ...string) string {
	t.Helper()
	out, err := h.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// Address resolution that gives up: a new entry for an address nobody
// has (IPv4 ARP and IPv6 NDP) fails from INCOMPLETE without ever having a
// link-layer address; an entry of a host that answered once and then went
// away (its veth deleted) fails from PROBE and had one. Each failure is
// reported once, at the move to FAILED, from the client's namespace.
func TestNeighFailed(t *testing.T) {
	requireProbe(t)
	p, col := startProbe(t, Config{})
	if before := withStats(t, p); before != nil {
		defer logStats(t, p, before)
	}
	tests := []struct {
		name     string
		setup    func(t *testing.T, l *lab.Lab, client *lab.Host) netip.Addr
		state    signal.NUDState
		resolved bool
		minTried time.Duration
	}{
		{"ipv4 unused address", func(t *testing.T, l *lab.Lab, client *lab.Host) netip.Addr {
			a := l.Subnet().Addr()
			for range 200 {
				a = a.Next()
			}
			return a
		}, signal.NUDIncomplete, false, 2 * time.Second},
		{"ipv6 unused address", func(t *testing.T, l *lab.Lab, client *lab.Host) netip.Addr {
			mustRun(t, client, "ip", "-6", "addr", "add", "fd00:6e63::2/64", "dev", "eth0", "nodad")
			return netip.MustParseAddr("fd00:6e63::99")
		}, signal.NUDIncomplete, false, 2 * time.Second},
		{"ipv4 host went away", func(t *testing.T, l *lab.Lab, client *lab.Host) netip.Addr {
			server := l.MustAddHost(t, "server")
			sendUDP(t, client, netip.AddrPortFrom(server.IP, 9))
			deadline := time.Now().Add(3 * time.Second)
			for !strings.Contains(mustRun(t, client, "ip", "neigh", "show", server.IP.String(), "dev", "eth0"), "REACHABLE") {
				if time.Now().After(deadline) {
					t.Fatalf("%s never became REACHABLE", server.IP)
				}
				time.Sleep(20 * time.Millisecond)
			}
			for _, kv := range []string{"delay_first_probe_time=1", "ucast_solicit=2", "retrans_time_ms=200"} {
				mustRun(t, client, "sysctl", "-qw", "net.ipv4.neigh.eth0."+kv)
			}
			mustRun(t, server, "ip", "link", "del", "eth0")
			mustRun(t, client, "ip", "neigh", "change", server.IP.String(), "dev", "eth0", "nud", "stale")
			return server.IP
		}, signal.NUDProbe, true, 300 * time.Millisecond},
		{"ipv6 host went away", func(t *testing.T, l *lab.Lab, client *lab.Host) netip.Addr {
			server := l.MustAddHost(t, "server")
			mustRun(t, client, "ip", "-6", "addr", "add", "fd00:6e63::2/64", "dev", "eth0", "nodad")
			mustRun(t, server, "ip", "-6", "addr", "add", "fd00:6e63::3/64", "dev", "eth0", "nodad")
			gone := netip.MustParseAddr("fd00:6e63::3")
			sendUDP(t, client, netip.AddrPortFrom(gone, 9))
			deadline := time.Now().Add(3 * time.Second)
			for !strings.Contains(mustRun(t, client, "ip", "-6", "neigh", "show", gone.String(), "dev", "eth0"), "REACHABLE") {
				if time.Now().After(deadline) {
					t.Fatalf("%s never became REACHABLE", gone)
				}
				time.Sleep(20 * time.Millisecond)
			}
			for _, kv := range []string{"delay_first_probe_time=1", "ucast_solicit=2", "retrans_time_ms=200"} {
				mustRun(t, client, "sysctl", "-qw", "net.ipv6.neigh.eth0."+kv)
			}
			mustRun(t, server, "ip", "link", "del", "eth0")
			mustRun(t, client, "ip", "-6", "neigh", "change", gone.String(), "dev", "eth0", "nud", "stale")
			return gone
		}, signal.NUDProbe, true, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			addr := tt.setup(t, l, client)
			start := time.Now()
			sendUDP(t, client, netip.AddrPortFrom(addr, 9))
			inClient := func(s signal.Signal) bool {
				return s.NetnsInode == client.Inode && s.Kind == signal.KindNeighFailed
			}
			nf, ok := col.waitFor(func(s signal.Signal) bool { return inClient(s) && s.NeighAddr == addr }, 8*time.Second)
			if !ok {
				t.Fatalf("no neigh_failed for %s; neighbour signals of the client:\n%s", addr, dump(col.matching(inClient)))
			}
			elapsed := time.Since(start)
			if nf.NeighState != tt.state || nf.NeighResolved != tt.resolved || nf.Dev != "eth0" || nf.Ifindex == 0 ||
				nf.NeighProbes == 0 || nf.NetnsCookie == 0 {
				t.Errorf("neigh_failed = %s, want from %v, resolved %v, on eth0 with probes counted", dump([]signal.Signal{nf}), tt.state, tt.resolved)
			}
			if nf.NeighTried < tt.minTried || nf.NeighTried > elapsed+time.Second {
				t.Errorf("tried %v, want between %v and the %v the test waited", nf.NeighTried, tt.minTried, elapsed)
			}
			// Only the transition is reported: no second record for it.
			time.Sleep(500 * time.Millisecond)
			if n := len(col.matching(func(s signal.Signal) bool { return inClient(s) && s.NeighAddr == addr })); n != 1 {
				t.Errorf("%d neigh_failed signals for %s, want 1", n, addr)
			}
			t.Logf("%s: %s after %v", tt.name, dump([]signal.Signal{nf}), elapsed)
		})
	}
}
