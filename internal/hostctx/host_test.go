//go:build linux

package hostctx

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/signal"
	"golang.org/x/sys/unix"
)

func TestHostRoute(t *testing.T) {
	l := lab.New(t)
	cli := l.MustAddHost(t, "client")
	srv := l.MustAddHost(t, "server")
	for _, args := range [][]string{
		{"route", "add", "blackhole", "10.77.0.0/16"},
		{"route", "add", "unreachable", "10.78.0.0/16"},
		{"route", "add", "prohibit", "10.79.1.0/24"},
	} {
		if _, err := cli.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	h := NewNetlink()
	tests := []struct {
		dst     string
		typ     string
		prefix  string
		err     error
		gateway netip.Addr
		dev     string
	}{
		{dst: "10.77.3.4", typ: "blackhole", prefix: "10.77.0.0/16", err: syscall.EINVAL},
		{dst: "10.78.3.4", typ: "unreachable", prefix: "10.78.0.0/16", err: syscall.EHOSTUNREACH},
		{dst: "10.79.1.9", typ: "prohibit", prefix: "10.79.1.0/24", err: syscall.EACCES},
		{dst: srv.IP.String(), typ: "unicast", dev: "eth0"},
		{dst: "192.0.2.1", typ: "unicast", dev: "eth0", gateway: l.Node().IP},
		{dst: "127.0.0.1", typ: "local", dev: "lo"},
	}
	for _, tc := range tests {
		t.Run(tc.dst, func(t *testing.T) {
			r, err := h.Route(cli.Inode, netip.MustParseAddr(tc.dst))
			if err != nil {
				t.Fatal(err)
			}
			if r.Type != tc.typ || !errors.Is(r.Err, tc.err) && !(tc.err == nil && r.Err == nil) || r.Dev != tc.dev || r.Gateway != tc.gateway {
				t.Errorf("got %+v, want type %s err %v dev %q gateway %v", r, tc.typ, tc.err, tc.dev, tc.gateway)
			}
			if tc.prefix != "" && r.Prefix.String() != tc.prefix {
				t.Errorf("prefix %v, want %s", r.Prefix, tc.prefix)
			}
		})
	}
}

func TestHostNeighborFailed(t *testing.T) {
	l := lab.New(t)
	cli := l.MustAddHost(t, "client")
	// Resolution gives up after one solicitation 100 ms later instead of
	// three at one-second intervals.
	for _, kv := range []string{"net.ipv4.neigh.eth0.mcast_solicit=1", "net.ipv4.neigh.eth0.retrans_time_ms=100"} {
		if _, err := cli.Run("sysctl", "-qw", kv); err != nil {
			t.Fatal(err)
		}
	}
	unused := l.Subnet().Addr().As4()
	unused[3] = 250
	ip := netip.AddrFrom4(unused)
	h := NewNetlink()
	if _, err := h.Neighbor(cli.Inode, ip); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before any traffic: err = %v, want ErrNotFound", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if c, err := cli.Dial(ctx, netip.AddrPortFrom(ip, 80), 3*time.Second); err == nil {
		c.Close()
		t.Fatal("connect to an unused address succeeded")
	}
	n, err := h.Neighbor(cli.Inode, ip)
	if err != nil {
		t.Fatal(err)
	}
	if n.State != signal.NUDFailed || n.Dev != "eth0" || n.IP != ip || len(n.LLAddr) != 0 {
		t.Errorf("got %+v, want a FAILED entry on eth0 without a link-layer address", n)
	}
	// The gateway answers: REACHABLE (or STALE) with its MAC.
	if c, err := cli.Dial(ctx, netip.AddrPortFrom(l.Node().IP, 9), time.Second); err == nil {
		c.Close()
	}
	gw, err := h.Neighbor(cli.Inode, l.Node().IP)
	if err != nil {
		t.Fatal(err)
	}
	if gw.State&(signal.NUDReachable|signal.NUDStale|signal.NUDDelay) == 0 || len(gw.LLAddr) != 6 {
		t.Errorf("gateway entry %+v", gw)
	}
}

func TestHostListeners(t *testing.T) {
	l := lab.New(t)
	srv := l.MustAddHost(t, "server")
	cli := l.MustAddHost(t, "client")
	const port, backlog = 7070, 7
	var fd int
	err := srv.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: srv.IP.As4()}); err != nil {
			return err
		}
		return unix.Listen(fd, backlog)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	// Two connections completed and never accepted sit in the queue.
	for i := 0; i < 2; i++ {
		c, err := cli.Dial(context.Background(), netip.AddrPortFrom(srv.IP, port), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	h := NewNetlink()
	var ls []Listener
	for deadline := time.Now().Add(2 * time.Second); ; {
		if ls, err = h.Listeners(srv.Inode, port); err != nil {
			t.Fatal(err)
		}
		if len(ls) == 1 && ls[0].Backlog == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := Listener{Addr: netip.AddrPortFrom(srv.IP, port), Backlog: 2, MaxBacklog: backlog}
	if len(ls) != 1 || ls[0].Addr != want.Addr || ls[0].Backlog != want.Backlog || ls[0].MaxBacklog != want.MaxBacklog || ls[0].Inode == 0 {
		t.Fatalf("listeners = %+v, want one like %+v", ls, want)
	}
	// An IPv6 wildcard listener.
	ln, err := func() (ln net.Listener, err error) {
		err = srv.Do(func() error { ln, err = net.Listen("tcp6", "[::]:7071"); return err })
		return
	}()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if ls, err := h.Listeners(srv.Inode, 7071); err != nil || len(ls) != 1 || ls[0].Addr != netip.MustParseAddrPort("[::]:7071") || ls[0].MaxBacklog == 0 {
		t.Errorf("IPv6 listener: %+v, %v", ls, err)
	}
	// Nobody listens on that port in the client's namespace.
	if ls, err := h.Listeners(cli.Inode, port); err != nil || len(ls) != 0 {
		t.Errorf("client listeners = %+v, %v", ls, err)
	}
}

func TestHostLink(t *testing.T) {
	l := lab.New(t)
	cli := l.MustAddHost(t, "client")
	if _, err := cli.Run("ip", "link", "set", "eth0", "mtu", "1400"); err != nil {
		t.Fatal(err)
	}
	var idx int
	if err := cli.Do(func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err == nil {
			idx = ifc.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h := NewNetlink()
	lk, err := h.Link(cli.Inode, uint32(idx))
	if err != nil {
		t.Fatal(err)
	}
	if lk.Name != "eth0" || lk.MTU != 1400 || lk.Type != "veth" || !lk.AdminUp || lk.OperState != "up" {
		t.Errorf("got %+v", lk)
	}
	if _, err := h.Link(cli.Inode, 9999); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing device: err = %v, want ErrNotFound", err)
	}
	// The bridge port in the node namespace names its master.
	var port, br int
	if err := l.Node().Do(func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range ifs {
			switch i.Name {
			case "br0":
				br = i.Index
			case "lo":
			default:
				port = i.Index // the client's veth peer
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if lk, err := h.Link(l.Node().Inode, uint32(port)); err != nil || lk.Master != uint32(br) {
		t.Errorf("bridge port: %+v, %v; want master %d", lk, err, br)
	}
}

func TestHostUnknownNamespace(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	h := NewNetlink()
	if _, err := h.Route(1, netip.MustParseAddr("10.0.0.1")); err == nil {
		t.Error("a namespace that does not exist gave no error")
	}
}

// The caller's own namespace is found through /proc/self.
func TestHostOwnNamespace(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	self, ok := nsInode("/proc/self/ns/net")
	if !ok {
		t.Skip("skipping: /proc/self/ns/net is unreadable")
	}
	lk, err := NewNetlink().Link(self, 1)
	if err != nil || lk.Name != "lo" {
		t.Errorf("ifindex 1 of our own namespace: %+v, %v; want lo", lk, err)
	}
}
