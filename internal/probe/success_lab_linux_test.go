//go:build linux

package probe

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Successful traffic between two lab hosts through the bridge, with every
// hook attached (the ICMP probe on both hosts and the gateway), sends
// nothing: blocking and non-blocking TCP connects (EINPROGRESS is not an
// error), UDP request/response, and address resolution that succeeds.
// It logs every program's cost over that traffic.
func TestSuccessIsSilentLab(t *testing.T) {
	requireProbe(t)
	p, col := startProbe(t, Config{})
	if u := p.Unavailable(); len(u) != 0 {
		t.Fatalf("hooks not attached: %v", u)
	}
	st, serr := EnableStats()
	if serr == nil {
		defer st.Close()
	}
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	for _, h := range []*lab.Host{client, server} {
		if err := h.Do(func() error { return p.AttachICMP("eth0") }); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Node().Do(func() error { return p.AttachICMP("br0") }); err != nil {
		t.Fatal(err)
	}
	before, _ := p.Stats()

	ln, err := server.Listen(5080)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	var udp *net.UDPConn
	if err := server.Do(func() error {
		var err error
		udp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(server.IP, 5053)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := udp.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			udp.WriteToUDPAddrPort(buf[:n], from)
		}
	}()

	const conns = 200
	to := netip.AddrPortFrom(server.IP, 5080)
	buf := make([]byte, 4)
	for i := range conns {
		// net.Dialer connects non-blocking (EINPROGRESS, then poll).
		c, err := client.Dial(context.Background(), to, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// Blocking connects and UDP exchanges from the client's namespace.
	err = client.Do(func() error {
		for range 50 {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = unix.Connect(fd, sockaddr(server.IP, 5080))
			unix.Close(fd)
			if err != nil {
				return err
			}
		}
		u, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(server.IP, 5053)))
		if err != nil {
			return err
		}
		defer u.Close()
		for range 50 {
			if _, err := u.Write([]byte("q")); err != nil {
				return err
			}
			u.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := u.Read(buf); err != nil {
				return errors.Join(errors.New("udp echo"), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	inLab := func(s signal.Signal) bool {
		return s.NetnsInode == client.Inode || s.NetnsInode == server.Inode || s.NetnsInode == l.Node().Inode
	}
	// Seen on a loaded machine: late pure ACKs of finished connections
	// processed by the listener (TCP_FLAGS drop + RST from the LISTEN
	// socket) and tail-loss probes of a FIN. They are the kernel's
	// behaviour under load, not a probe fault, and the correlator must not
	// conclude on them (signal.SuccessNoise). Anything else fails the test.
	if n := len(col.matching(func(s signal.Signal) bool { return inLab(s) && signal.SuccessNoise(s) })); n > 0 {
		t.Logf("%d signals of successful traffic under load (signal.SuccessNoise), tolerated", n)
	}
	if got := col.matching(func(s signal.Signal) bool { return inLab(s) && !signal.SuccessNoise(s) }); len(got) != 0 {
		t.Errorf("successful traffic produced %d signals:\n%s", len(got), dump(got))
	}
	if n := p.Lost(); n != 0 {
		t.Errorf("Lost() = %d, want 0", n)
	}
	if serr != nil {
		t.Logf("no cost figures: %v", serr)
		return
	}
	logStats(t, p, before)
}

// logStats logs each program's calls and mean cost since before. The
// kernel counts every call on the machine, not only the test's.
func logStats(t *testing.T, p *Probe, before []ProgramStats) {
	t.Helper()
	after, err := p.Stats()
	if err != nil || len(after) != len(before) {
		t.Logf("no cost figures: %v", err)
		return
	}
	for i, a := range after {
		a.RunCount -= before[i].RunCount
		a.RunTime -= before[i].RunTime
		if a.RunCount > 0 {
			t.Logf("%-26s %-40s calls %6d  %6.0f ns/call", a.Name, a.Hook, a.RunCount, a.NsPerCall())
		}
	}
}

// withStats enables the kernel's run time accounting for the test, when
// permitted, and returns the figures so far.
func withStats(t *testing.T, p *Probe) []ProgramStats {
	t.Helper()
	st, err := EnableStats()
	if err != nil {
		t.Logf("no cost figures: %v", err)
		return nil
	}
	t.Cleanup(func() { st.Close() })
	before, _ := p.Stats()
	return before
}
