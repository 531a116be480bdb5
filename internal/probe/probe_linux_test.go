//go:build linux

package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/network-correlator/network-correlator/bpf"
	"github.com/network-correlator/network-correlator/internal/signal"
)

func TestOpenCloseLeavesNoPrograms(t *testing.T) {
	requireProbe(t)
	p, err := Open(Config{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ids := p.programIDs()
	maps := p.mapIDs()
	spec, err := bpf.LoadProbe()
	if err != nil {
		t.Fatal(err)
	}
	wantMaps := 0
	for name := range spec.Maps {
		if !strings.HasPrefix(name, ".") { // .rodata is not loaded
			wantMaps++
		}
	}
	if want := len(spec.Programs); len(ids) != want || len(maps) != wantMaps {
		p.Close()
		t.Fatalf("loaded %d programs and %d maps, want %d and %d", len(ids), len(maps), want, wantMaps)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Program release is synchronous for tracing links, but allow the
	// kernel's deferred free a moment.
	deadline := time.Now().Add(2 * time.Second)
	for {
		left, leftMaps := loadedPrograms(t, ids), loadedMaps(t, maps)
		if len(left)+len(leftMaps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("programs %v and maps %v still loaded after Close", left, leftMaps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loadedMaps returns which of ids the kernel still has.
func loadedMaps(t *testing.T, ids []ebpf.MapID) []ebpf.MapID {
	t.Helper()
	var left []ebpf.MapID
	id := ebpf.MapID(0)
	for {
		next, err := ebpf.MapGetNextID(id)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
			return left
		}
		if err != nil {
			t.Fatalf("listing maps: %v", err)
		}
		if slices.Contains(ids, next) {
			left = append(left, next)
		}
		id = next
	}
}

// loadedPrograms returns which of ids the kernel still has.
func loadedPrograms(t *testing.T, ids []ebpf.ProgramID) []ebpf.ProgramID {
	t.Helper()
	var left []ebpf.ProgramID
	id := ebpf.ProgramID(0)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
			return left
		}
		if err != nil {
			t.Fatalf("listing programs: %v", err)
		}
		if slices.Contains(ids, next) {
			left = append(left, next)
		}
		id = next
	}
}

type family struct {
	name     string
	af       int
	loopback netip.Addr
	rcv      string // the function that drops a SYN nobody listens for
}

var families = []family{
	{"ipv4", unix.AF_INET, netip.MustParseAddr("127.0.0.1"), "tcp_v4_rcv"},
	{"ipv6", unix.AF_INET6, netip.MustParseAddr("::1"), "tcp_v6_rcv"},
}

func sockaddr(a netip.Addr, port int) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Port: port, Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: port, Addr: a.As16()}
}

func localPort(t *testing.T, fd int) uint16 {
	t.Helper()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(sa.Port)
	case *unix.SockaddrInet6:
		return uint16(sa.Port)
	}
	t.Fatalf("unexpected sockaddr %T", sa)
	return 0
}

func sockCookie(t *testing.T, fd int) uint64 {
	t.Helper()
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		t.Fatalf("SO_COOKIE: %v", err)
	}
	return c
}

// A connect to a port nobody listens on: the server side drops the SYN
// (NO_SOCKET) and answers with a RST, the client sees the RST in SYN_SENT
// and closes with ECONNREFUSED.
func TestClosedPort(t *testing.T) {
	_, col := startProbe(t, Config{})
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ns := newTestNetns(t)
			const port = 4242
			fd := ns.socket(t, fam.af)
			err := unix.Connect(fd, sockaddr(fam.loopback, port))
			if !errors.Is(err, unix.ECONNREFUSED) {
				t.Fatalf("connect = %v, want ECONNREFUSED", err)
			}
			cookie := sockCookie(t, fd)
			lport := localPort(t, fd)
			client := signal.Flow{Proto: signal.ProtoTCP, Src: fam.loopback, Dst: fam.loopback, SrcPort: lport, DstPort: port}
			inNs := func(s signal.Signal) bool { return s.NetnsCookie == ns.cookie }

			checks := []struct {
				name string
				pred func(signal.Signal) bool
			}{
				{"ResetReceived in SYN_SENT", func(s signal.Signal) bool {
					return s.Kind == signal.KindResetReceived && s.Flow == client &&
						s.State == signal.StateSynSent && s.SockCookie == cookie
				}},
				{"StateChange SYN_SENT->CLOSE sk_err 111", func(s signal.Signal) bool {
					return s.Kind == signal.KindStateChange && s.Flow == client &&
						s.OldState == signal.StateSynSent && s.State == signal.StateClose &&
						s.SkErr == int32(unix.ECONNREFUSED) && s.SockCookie == cookie
				}},
				{"Drop NO_SOCKET of the SYN at " + fam.rcv, func(s signal.Signal) bool {
					return s.Kind == signal.KindDrop && s.Flow == client && s.DropReason == "NO_SOCKET" &&
						s.DropLocation == fam.rcv && s.TCPFlags == signal.TCPFlagSYN && s.Dev == "lo" &&
						s.NetnsInode == uint32(ns.inode)
				}},
				{"ResetSent NO_SOCKET answering the SYN", func(s signal.Signal) bool {
					return s.Kind == signal.KindResetSent && s.Flow == client.Reverse() &&
						s.ResetReason == "NO_SOCKET" && s.TCPFlags == signal.TCPFlagSYN
				}},
			}
			for _, c := range checks {
				if _, ok := col.waitFor(func(s signal.Signal) bool { return inNs(s) && c.pred(s) }, 3*time.Second); !ok {
					t.Errorf("no %s; signals in the namespace:\n%s", c.name, dump(col.matching(inNs)))
				}
			}
			for _, s := range col.matching(inNs) {
				if s.Time.Before(time.Now().Add(-time.Minute)) || s.Time.After(time.Now().Add(time.Second)) {
					t.Errorf("signal time %v is not about now", s.Time)
				}
			}
		})
	}
}

// An nft rule drops the SYN: the kernel records NETFILTER_DROP at
// nft_do_chain in the namespace, and the client retransmits in SYN_SENT.
// In the input chain the packet has a device (lo); in the output chain it
// has none and the namespace comes from the packet's socket, and the
// retransmission itself fails with EPERM.
func TestFirewallDrop(t *testing.T) {
	_, col := startProbe(t, Config{})
	chains := []struct {
		name    string
		hook    string
		dev     string
		withSk  bool
		reErr   int32
		setPort int
	}{
		{"input", "input", "lo", false, 0, 4243},
		{"output", "output", "", true, -int32(unix.EPERM), 4245},
	}
	for _, ch := range chains {
		for _, fam := range families {
			t.Run(ch.name+"/"+fam.name, func(t *testing.T) {
				ns := newTestNetns(t)
				port := ch.setPort
				ns.nft(t, fmt.Sprintf(`table inet nc_probe_test {
	chain c {
		type filter hook %s priority 0; policy accept;
		tcp dport %d tcp flags syn drop
	}
}`, ch.hook, port))
				srv := ns.socket(t, fam.af)
				if err := unix.Bind(srv, sockaddr(fam.loopback, port)); err != nil {
					t.Fatalf("bind: %v", err)
				}
				if err := unix.Listen(srv, 8); err != nil {
					t.Fatalf("listen: %v", err)
				}
				fd := ns.socket(t, fam.af)
				if err := unix.SetNonblock(fd, true); err != nil {
					t.Fatal(err)
				}
				// Asking for the cookie creates it; a drop can only report a
				// cookie the socket already has (see on_kfree_skb).
				cookie := sockCookie(t, fd)
				if err := unix.Connect(fd, sockaddr(fam.loopback, port)); !errors.Is(err, unix.EINPROGRESS) {
					t.Fatalf("nonblocking connect = %v, want EINPROGRESS", err)
				}
				client := signal.Flow{Proto: signal.ProtoTCP, Src: fam.loopback, Dst: fam.loopback, SrcPort: localPort(t, fd), DstPort: uint16(port)}
				inNs := func(s signal.Signal) bool { return s.NetnsCookie == ns.cookie }

				drop, ok := col.waitFor(func(s signal.Signal) bool {
					return inNs(s) && s.Kind == signal.KindDrop && s.Flow == client
				}, 2*time.Second)
				if !ok {
					t.Fatalf("no drop of the SYN; signals in the namespace:\n%s", dump(col.matching(inNs)))
				}
				if drop.DropReason != "NETFILTER_DROP" || drop.DropLocation != "nft_do_chain" ||
					drop.TCPFlags != signal.TCPFlagSYN || drop.NetnsInode != uint32(ns.inode) || drop.Dev != ch.dev {
					t.Errorf("drop = %s, want NETFILTER_DROP at nft_do_chain of a SYN on %q in netns inode %d",
						dump([]signal.Signal{drop}), ch.dev, ns.inode)
				}
				if ch.withSk && drop.SockCookie != cookie {
					t.Errorf("drop socket cookie %d, want the client's %d", drop.SockCookie, cookie)
				}
				// The first SYN retransmission comes after the initial RTO (1 s).
				re, ok := col.waitFor(func(s signal.Signal) bool {
					return inNs(s) && s.Kind == signal.KindRetransmit && s.Flow == client
				}, 3*time.Second)
				if !ok {
					t.Fatalf("no retransmit; signals in the namespace:\n%s", dump(col.matching(inNs)))
				}
				if re.State != signal.StateSynSent || re.Retransmits != 1 || re.Err != ch.reErr ||
					re.TCPFlags != signal.TCPFlagSYN || re.SockCookie != cookie {
					t.Errorf("retransmit = %s, want SYN_SENT, first retransmission, err %d, SYN, cookie %d",
						dump([]signal.Signal{re}), ch.reErr, cookie)
				}
				if d := re.Time.Sub(drop.Time); d < 800*time.Millisecond || d > 2*time.Second {
					t.Errorf("retransmit %v after the first drop, want about 1 s", d)
				}
			})
		}
	}
}

// With a ring buffer too small for a burst and nobody reading, the kernel
// counts what it could not queue; every record is either read or counted.
func TestLostCounter(t *testing.T) {
	requireProbe(t)
	p, err := Open(Config{RingBufferBytes: 1, ConnectErrors: true}) // one page: 21 records
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	ns := newTestNetns(t)
	lo := netip.MustParseAddr("127.0.0.1")
	const refused = 50 // 5 records each: drop, reset sent, reset received, state change, connect error
	for range refused {
		var fd int
		ns.run(func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0) })
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, sockaddr(lo, 4246)); !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("connect = %v, want ECONNREFUSED", err)
		}
		unix.Close(fd)
	}
	lost := p.Lost()
	if lost == 0 {
		t.Fatalf("Lost() = 0 after %d records into a one-page ring buffer", refused*5)
	}
	var read int
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- p.Run(ctx, func(s signal.Signal) {
			if s.NetnsCookie == ns.cookie {
				read++
			}
		})
	}()
	time.Sleep(300 * time.Millisecond)
	// Close, not cancel: Run must return nil.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Run after Close returned %v, want nil", err)
	}
	cancel()
	if got := uint64(read) + lost; got != refused*5 {
		t.Errorf("read %d + lost %d = %d records, want %d", read, lost, got, refused*5)
	}
	if p.Lost() != lost {
		t.Errorf("Lost() after Close = %d, want %d", p.Lost(), lost)
	}
}

// Stats reports the kernel's per-program accounting; the figures are logged
// for the benchmark notes.
func TestStats(t *testing.T) {
	p, _ := startProbe(t, Config{})
	st, err := EnableStats()
	if err != nil {
		t.Skipf("skipping: %v (needs CAP_SYS_ADMIN)", err)
	}
	defer st.Close()
	before, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	ns := newTestNetns(t)
	var aerr error
	ns.run(func() { aerr = p.AttachICMP("lo") }) // every packet passes the TC program
	if aerr != nil {
		t.Fatal(aerr)
	}
	const conns = 500
	loopbackConnects(t, ns, conns, 4247)
	after, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]ProgramStats{}
	for i, a := range after {
		a.RunCount -= before[i].RunCount
		a.RunTime -= before[i].RunTime
		byName[a.Name] = a
		t.Logf("%-24s %-32s calls %6d  %6.0f ns/call  %.2f calls/conn", a.Name, a.Hook, a.RunCount, a.NsPerCall(), float64(a.RunCount)/conns)
	}
	// Each connection moves two sockets through several states.
	if n := byName["on_inet_sock_set_state"].RunCount; n < 4*conns {
		t.Errorf("inet_sock_set_state ran %d times for %d connections, want >= %d", n, conns, 4*conns)
	}
	if byName["on_inet_sock_set_state"].RunTime <= 0 {
		t.Errorf("no run time accounted with statistics enabled")
	}
}

// loopbackConnects opens, uses and cleanly closes n IPv4 connections in ns.
func loopbackConnects(t testing.TB, ns *testNetns, n, port int) {
	t.Helper()
	loopbackConnectsFamily(t, ns, families[0], n, port)
}

func loopbackConnectsFamily(t testing.TB, ns *testNetns, fam family, n, port int) {
	t.Helper()
	var srv int
	var err error
	ns.run(func() { srv, err = unix.Socket(fam.af, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0) })
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(srv)
	if err := unix.Bind(srv, sockaddr(fam.loopback, port)); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Listen(srv, 64); err != nil {
		t.Fatalf("listen: %v", err)
	}
	buf := make([]byte, 4)
	for i := range n {
		var fd int
		ns.run(func() { fd, err = unix.Socket(fam.af, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0) })
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, sockaddr(fam.loopback, port)); err != nil {
			unix.Close(fd)
			t.Fatalf("connect %d: %v", i, err)
		}
		afd, _, err := unix.Accept(srv)
		if err != nil {
			unix.Close(fd)
			t.Fatalf("accept %d: %v", i, err)
		}
		if _, err := unix.Write(fd, []byte("ping")); err != nil {
			t.Fatalf("write: %v", err)
		}
		if _, err := unix.Read(afd, buf); err != nil {
			t.Fatalf("read: %v", err)
		}
		unix.Close(fd)
		unix.Close(afd)
	}
}

// Successful connections must never reach user space.
func TestSuccessIsSilent(t *testing.T) {
	p, col := startProbe(t, Config{})
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ns := newTestNetns(t)
			var aerr error
			ns.run(func() { aerr = p.AttachICMP("lo") })
			if aerr != nil {
				t.Fatal(aerr)
			}
			const conns = 300
			loopbackConnectsFamily(t, ns, fam, conns, 4244)
			// Give late records (TIME_WAIT, FIN handling in softirq) time to arrive.
			time.Sleep(500 * time.Millisecond)
			if got := col.matching(func(s signal.Signal) bool { return s.NetnsCookie == ns.cookie }); len(got) != 0 {
				t.Errorf("%d successful connections produced %d signals:\n%s", conns, len(got), dump(got))
			}
		})
	}
	if n := p.Lost(); n != 0 {
		t.Errorf("Lost() = %d, want 0", n)
	}
}

func dump(sigs []signal.Signal) string {
	var b strings.Builder
	for _, s := range sigs {
		type fields signal.Signal // no String method: print every field
		fmt.Fprintf(&b, "  %+v\n", fields(s))
	}
	return b.String()
}

// A bare ACK to a listening socket (what a restarted peer that listens
// again receives from a client that still has the old connection): the
// kernel drops it with TCP_FLAGS in tcp_v4_do_rcv after clearing skb->dev,
// so the namespace must come from the receiving socket (rx_sk), and the
// listener answers with a RST whose reason is TCP_FLAGS.
func TestAckToListener(t *testing.T) {
	_, col := startProbe(t, Config{})
	ns := newTestNetns(t)
	lo := netip.MustParseAddr("127.0.0.1")
	const port, fromPort = 4270, 4271
	srv := ns.socket(t, unix.AF_INET)
	if err := unix.Bind(srv, sockaddr(lo, port)); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Listen(srv, 8); err != nil {
		t.Fatalf("listen: %v", err)
	}
	var raw int
	var err error
	ns.run(func() { raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP) })
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	defer unix.Close(raw)
	seg := tcpSegment(lo, lo, fromPort, port, signal.TCPFlagACK)
	if err := unix.Sendto(raw, seg, 0, sockaddr(lo, 0)); err != nil {
		t.Fatalf("sending the ACK: %v", err)
	}
	flow := signal.Flow{Proto: signal.ProtoTCP, Src: lo, Dst: lo, SrcPort: fromPort, DstPort: port}
	inNs := func(s signal.Signal) bool { return s.NetnsCookie == ns.cookie }
	drop, ok := col.waitFor(func(s signal.Signal) bool { return inNs(s) && s.Kind == signal.KindDrop && s.Flow == flow }, 2*time.Second)
	if !ok {
		t.Fatalf("no drop in the namespace; its signals:\n%s", dump(col.matching(inNs)))
	}
	if drop.DropReason != "TCP_FLAGS" || drop.DropLocation != "tcp_v4_do_rcv" || drop.Dev != "" ||
		drop.TCPFlags != signal.TCPFlagACK || drop.State != signal.StateListen || drop.NetnsInode != uint32(ns.inode) {
		t.Errorf("drop = %s, want TCP_FLAGS at tcp_v4_do_rcv, no device, ACK, LISTEN socket, netns inode %d",
			dump([]signal.Signal{drop}), ns.inode)
	}
	rst, ok := col.waitFor(func(s signal.Signal) bool {
		return inNs(s) && s.Kind == signal.KindResetSent && s.Flow == flow.Reverse()
	}, time.Second)
	if !ok || rst.ResetReason != "TCP_FLAGS" || rst.State != signal.StateListen {
		t.Errorf("reset sent = %s (found %v), want reason TCP_FLAGS from the LISTEN socket", dump([]signal.Signal{rst}), ok)
	}
}

// tcpSegment builds a 20-byte TCP header with a valid IPv4 checksum.
func tcpSegment(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000) // seq
	binary.BigEndian.PutUint32(b[8:], 2000) // ack
	b[12] = 5 << 4                          // data offset
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535) // window
	var sum uint32
	s4, d4 := src.As4(), dst.As4()
	pseudo := append(append(s4[:], d4[:]...), 0, unix.IPPROTO_TCP, 0, 20)
	for _, p := range [][]byte{pseudo, b} {
		for i := 0; i < len(p); i += 2 {
			sum += uint32(p[i])<<8 | uint32(p[i+1])
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[16:], ^uint16(sum))
	return b
}

// An established connection aborted by the server (SO_LINGER 0): the server
// sends an active RST (no triggering segment: the flow comes from its
// socket), the client receives it in ESTABLISHED and closes with
// ECONNRESET. On loopback the RST is delivered inside the send, so the
// kernel reports reset_sent after the receiver's signals.
func TestAbortEstablished(t *testing.T) {
	_, col := startProbe(t, Config{})
	ns := newTestNetns(t)
	lo := netip.MustParseAddr("127.0.0.1")
	const port = 4272
	srv := ns.socket(t, unix.AF_INET)
	if err := unix.Bind(srv, sockaddr(lo, port)); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Listen(srv, 8); err != nil {
		t.Fatalf("listen: %v", err)
	}
	cl := ns.socket(t, unix.AF_INET)
	if err := unix.Connect(cl, sockaddr(lo, port)); err != nil {
		t.Fatalf("connect: %v", err)
	}
	afd, _, err := unix.Accept(srv)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	if err := unix.SetsockoptLinger(afd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		t.Fatal(err)
	}
	unix.Close(afd)
	client := signal.Flow{Proto: signal.ProtoTCP, Src: lo, Dst: lo, SrcPort: localPort(t, cl), DstPort: port}
	inNs := func(s signal.Signal) bool { return s.NetnsCookie == ns.cookie }
	checks := []struct {
		name string
		pred func(signal.Signal) bool
	}{
		{"ResetSent from the server socket", func(s signal.Signal) bool {
			return s.Kind == signal.KindResetSent && s.Flow == client.Reverse() && s.ResetReason != "" && s.TCPFlags == 0
		}},
		{"ResetReceived in ESTABLISHED", func(s signal.Signal) bool {
			return s.Kind == signal.KindResetReceived && s.Flow == client && s.State == signal.StateEstablished
		}},
		{"StateChange ESTABLISHED->CLOSE sk_err 104", func(s signal.Signal) bool {
			return s.Kind == signal.KindStateChange && s.Flow == client && s.OldState == signal.StateEstablished &&
				s.SkErr == int32(unix.ECONNRESET)
		}},
	}
	for _, c := range checks {
		if _, ok := col.waitFor(func(s signal.Signal) bool { return inNs(s) && c.pred(s) }, 2*time.Second); !ok {
			t.Errorf("no %s; signals in the namespace:\n%s", c.name, dump(col.matching(inNs)))
		}
	}
}

// A UDP datagram to a closed port is dropped with NO_SOCKET too.
func TestUDPClosedPort(t *testing.T) {
	_, col := startProbe(t, Config{})
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ns := newTestNetns(t)
			var fd int
			var err error
			ns.run(func() { fd, err = unix.Socket(fam.af, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0) })
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			const port = 4273
			if err := unix.Sendto(fd, []byte("hello"), 0, sockaddr(fam.loopback, port)); err != nil {
				t.Fatalf("sendto: %v", err)
			}
			flow := signal.Flow{Proto: signal.ProtoUDP, Src: fam.loopback, Dst: fam.loopback, SrcPort: localPort(t, fd), DstPort: port}
			inNs := func(s signal.Signal) bool { return s.NetnsCookie == ns.cookie }
			if _, ok := col.waitFor(func(s signal.Signal) bool {
				return inNs(s) && s.Kind == signal.KindDrop && s.Flow == flow && s.DropReason == "NO_SOCKET" && s.Dev == "lo"
			}, 2*time.Second); !ok {
				t.Errorf("no NO_SOCKET drop of %s; signals in the namespace:\n%s", flow, dump(col.matching(inNs)))
			}
		})
	}
}

// A connect whose SYNs are all dropped times out: with TCP_SYNCNT 1 the
// socket gives up after about 3 s (two retransmissions on 6.18: the limit
// is a time budget) and moves SYN_SENT->CLOSE with sk_err ETIMEDOUT.
func TestConnectTimeout(t *testing.T) {
	_, col := startProbe(t, Config{})
	ns := newTestNetns(t)
	lo := netip.MustParseAddr("127.0.0.1")
	const port = 4274
	ns.nft(t, `table inet nc_probe_test {
	chain c {
		type filter hook input priority 0; policy accept;
		tcp dport 4274 tcp flags syn drop
	}
}`)
	fd := ns.socket(t, unix.AF_INET)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, sockaddr(lo, port)); !errors.Is(err, unix.EINPROGRESS) {
		t.Fatalf("nonblocking connect = %v, want EINPROGRESS", err)
	}
	client := signal.Flow{Proto: signal.ProtoTCP, Src: lo, Dst: lo, SrcPort: localPort(t, fd), DstPort: port}
	inNs := func(s signal.Signal) bool { return s.NetnsCookie == ns.cookie && s.Flow == client }
	sc, ok := col.waitFor(func(s signal.Signal) bool { return inNs(s) && s.Kind == signal.KindStateChange }, 6*time.Second)
	if !ok {
		t.Fatalf("no state change; signals of the flow:\n%s", dump(col.matching(inNs)))
	}
	if sc.OldState != signal.StateSynSent || sc.State != signal.StateClose || sc.SkErr != int32(unix.ETIMEDOUT) {
		t.Errorf("state change = %s, want SYN_SENT->CLOSE with ETIMEDOUT", dump([]signal.Signal{sc}))
	}
	// Every SYN sent was dropped; the retransmit count runs 1, 2, ...
	var drops, retrans int
	for _, s := range col.matching(inNs) {
		switch s.Kind {
		case signal.KindDrop:
			drops++
		case signal.KindRetransmit:
			retrans++
			if s.Retransmits != uint32(retrans) {
				t.Errorf("retransmit %d reports count %d", retrans, s.Retransmits)
			}
		}
	}
	if retrans < 1 || drops != retrans+1 {
		t.Errorf("%d drops and %d retransmits, want one drop per SYN sent and at least one retransmit", drops, retrans)
	}
}

// A listener with backlog 1 that never accepts, and four handshakes whose
// first ACKs are lost (so every SYN is answered before the accept queue
// fills): when the clients' data arrives, two connections fill the queue
// and the others are dropped against the LISTEN socket (measured on 6.18:
// NO_SOCKET at cookie_v4_check, the SYN-ACK having been a syncookie). The
// drop carries the listener's queue length and limit. A SYN that meets a
// full accept queue is consumed without a drop record: only the client's
// SYN retransmissions show it.
func TestListenQueueOverflow(t *testing.T) {
	_, col := startProbe(t, Config{})
	ns := newTestNetns(t)
	lo := netip.MustParseAddr("127.0.0.1")
	const port = 4290
	ns.nft(t, `table inet nc_probe_test {
	chain c {
		type filter hook input priority 0; policy accept;
		tcp dport 4290 tcp flags & (syn|ack) == ack drop
	}
}`)
	srv := ns.socket(t, unix.AF_INET)
	if err := unix.Bind(srv, sockaddr(lo, port)); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Listen(srv, 1); err != nil {
		t.Fatalf("listen: %v", err)
	}
	var fds []int
	for range 4 {
		fd := ns.socket(t, unix.AF_INET)
		if err := unix.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, sockaddr(lo, port)); !errors.Is(err, unix.EINPROGRESS) {
			t.Fatalf("nonblocking connect = %v, want EINPROGRESS", err)
		}
		fds = append(fds, fd)
	}
	time.Sleep(200 * time.Millisecond) // the clients are ESTABLISHED, the server never saw an ACK
	ns.nft(t, "delete table inet nc_probe_test")
	for _, fd := range fds {
		if _, err := unix.Write(fd, []byte("hello")); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	atListener := func(s signal.Signal) bool {
		return s.NetnsCookie == ns.cookie && s.Kind == signal.KindDrop && s.Flow.DstPort == port && s.State == signal.StateListen
	}
	d, ok := col.waitFor(atListener, 3*time.Second)
	if !ok {
		t.Fatalf("no drop at the listener; signals in the namespace:\n%s",
			dump(col.matching(func(s signal.Signal) bool { return s.NetnsCookie == ns.cookie })))
	}
	if d.MaxBacklog != 1 || d.Backlog <= d.MaxBacklog || d.TCPFlags&signal.TCPFlagACK == 0 {
		t.Errorf("drop = %s, want an ACK segment dropped at a full accept queue (backlog > max 1)", dump([]signal.Signal{d}))
	}
	t.Logf("overflow drop: reason %s at %s, backlog %d/%d", d.DropReason, d.DropLocation, d.Backlog, d.MaxBacklog)
	// Drops at sockets that are not listening carry no queue figures.
	for _, s := range col.matching(func(s signal.Signal) bool { return s.NetnsCookie == ns.cookie && s.Kind == signal.KindDrop }) {
		if s.State != signal.StateListen && (s.Backlog != 0 || s.MaxBacklog != 0) {
			t.Errorf("drop without a listener carries backlog figures: %s", dump([]signal.Signal{s}))
		}
	}
}
