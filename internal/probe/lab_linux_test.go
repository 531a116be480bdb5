//go:build linux

package probe

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// dialNonblocking starts a connect from h's namespace and returns the
// socket (closed at cleanup) and the client's side of the flow.
func dialNonblocking(t *testing.T, h *lab.Host, to netip.AddrPort) (int, signal.Flow) {
	t.Helper()
	var fd int
	err := h.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		return err
	})
	if err != nil {
		t.Fatalf("socket in %s: %v", h.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Connect(fd, sockaddr(to.Addr(), int(to.Port()))); !errors.Is(err, unix.EINPROGRESS) {
		t.Fatalf("nonblocking connect = %v, want EINPROGRESS", err)
	}
	return fd, signal.Flow{Proto: signal.ProtoTCP, Src: h.IP, Dst: to.Addr(), SrcPort: localPort(t, fd), DstPort: to.Port()}
}

// A connect to an unused address of the subnet: ARP never resolves, the
// kernel drops the queued SYN with NEIGH_FAILED in the client's namespace,
// the retransmissions fail with EBUSY (still queued), and connect ends with
// EHOSTUNREACH after about 3 s.
func TestUnusedAddressNeighFailed(t *testing.T) {
	requireProbe(t)
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	_, col := startProbe(t, Config{})
	unused := l.Subnet().Addr()
	for range 200 {
		unused = unused.Next()
	}
	_, flow := dialNonblocking(t, client, netip.AddrPortFrom(unused, 80))
	inClient := func(s signal.Signal) bool { return s.NetnsInode == client.Inode && s.Flow == flow }

	drop, ok := col.waitFor(func(s signal.Signal) bool { return inClient(s) && s.Kind == signal.KindDrop }, 6*time.Second)
	if !ok {
		t.Fatalf("no drop; signals of the flow:\n%s", dump(col.matching(inClient)))
	}
	if drop.DropReason != "NEIGH_FAILED" || drop.Dev != "eth0" || drop.TCPFlags != signal.TCPFlagSYN {
		t.Errorf("drop = %s, want NEIGH_FAILED of a SYN on eth0", dump([]signal.Signal{drop}))
	}
	re, ok := col.waitFor(func(s signal.Signal) bool { return inClient(s) && s.Kind == signal.KindRetransmit }, time.Second)
	if !ok || re.Err != -int32(unix.EBUSY) || re.State != signal.StateSynSent {
		t.Errorf("retransmit = %v (found %v), want one in SYN_SENT with err EBUSY", dump([]signal.Signal{re}), ok)
	}
	sc, ok := col.waitFor(func(s signal.Signal) bool { return inClient(s) && s.Kind == signal.KindStateChange }, 3*time.Second)
	if !ok || sc.OldState != signal.StateSynSent || sc.SkErr != int32(unix.EHOSTUNREACH) {
		t.Errorf("state change = %v (found %v), want SYN_SENT->CLOSE with EHOSTUNREACH", dump([]signal.Signal{sc}), ok)
	}
}

// A packet the gateway cannot route dies in ip_error in the gateway's
// namespace: with forwarding off as IP_INADDRERRORS, and for a blackhole
// route with forwarding on as NOT_SPECIFIED, which the probes report only
// because the location is ip_error.
func TestRouteErrorAtGateway(t *testing.T) {
	requireProbe(t)
	_, col := startProbe(t, Config{})
	tests := []struct {
		name       string
		forwarding bool
		reason     string
	}{
		{"forwarding off", false, "IP_INADDRERRORS"},
		{"blackhole route", true, "NOT_SPECIFIED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			node := l.Node()
			dst := netip.MustParseAddr("198.51.100.7")
			if tt.forwarding {
				if _, err := node.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
					t.Fatal(err)
				}
				if _, err := node.Run("ip", "route", "add", "blackhole", "198.51.100.0/24"); err != nil {
					t.Fatal(err)
				}
			}
			_, flow := dialNonblocking(t, client, netip.AddrPortFrom(dst, 443))
			drop, ok := col.waitFor(func(s signal.Signal) bool {
				return s.Kind == signal.KindDrop && s.Flow == flow
			}, 3*time.Second)
			if !ok {
				t.Fatalf("no drop of %s", flow)
			}
			if drop.DropReason != tt.reason || drop.DropLocation != "ip_error" ||
				drop.NetnsInode != node.Inode || drop.Dev != "br0" {
				t.Errorf("drop = %s, want %s at ip_error on br0 in the gateway's namespace (inode %d)",
					dump([]signal.Signal{drop}), tt.reason, node.Inode)
			}
		})
	}
}
