//go:build linux

package probe

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/network-correlator/network-correlator/bpf"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// connectFrom runs one connect() in h's namespace and returns the socket's
// local port and the connect error.
func connectFrom(t *testing.T, h *lab.Host, typ int, to netip.AddrPort, nonblock bool) (uint16, error) {
	t.Helper()
	var cerr error
	var lport uint16
	err := h.Do(func() error {
		flags := unix.SOCK_CLOEXEC
		if nonblock {
			flags |= unix.SOCK_NONBLOCK
		}
		af := unix.AF_INET
		if to.Addr().Is6() {
			af = unix.AF_INET6
		}
		fd, err := unix.Socket(af, typ|flags, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cerr = unix.Connect(fd, sockaddr(to.Addr(), int(to.Port())))
		if sa, err := unix.Getsockname(fd); err == nil {
			switch sa := sa.(type) {
			case *unix.SockaddrInet4:
				lport = uint16(sa.Port)
			case *unix.SockaddrInet6:
				lport = uint16(sa.Port)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("socket in %s: %v", h.Name, err)
	}
	return lport, cerr
}

// connect() errors that change no socket state (a blackhole, unreachable
// or prohibit route, or no route at all in the caller's own namespace) and
// a blocking connect refused by the peer are reported from the syscall's
// return with the errno, the destination, the protocol, the caller's pid
// and its namespace. A non-blocking connect in progress is not an error.
//
// Both ways of getting connect()'s arguments are tested: from the task's
// registers at exit (x86-64/arm64, no enter hook) and from the enter hook.
func TestConnectError(t *testing.T) {
	requireProbe(t)
	for _, mode := range []struct {
		name     string
		fromRegs bool
	}{{"registers", true}, {"enter hook", false}} {
		t.Run(mode.name, func(t *testing.T) {
			if mode.fromRegs {
				spec, _ := btf.LoadKernelSpec()
				if spec == nil || !argsInRegs(spec) {
					t.Skip("skipping: this architecture's pt_regs is not one the probe reads")
				}
			}
			p, err := open(Config{ConnectErrors: true}, func(spec *ebpf.CollectionSpec) error {
				return spec.Variables[bpf.ProbeVarConnectArgsFromRegs].Set(mode.fromRegs)
			})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			col := runProbe(t, p)
			if u := p.Unavailable(); len(u) != 0 {
				t.Fatalf("hooks not attached: %v", u)
			}
			wantProgs := 1
			if !mode.fromRegs {
				wantProgs = 2
			}
			var attached int
			for _, pr := range p.progs {
				if strings.Contains(pr.hook, "connect") {
					attached++
				}
			}
			if attached != wantProgs {
				t.Errorf("%d connect hooks attached, want %d", attached, wantProgs)
			}
			testConnectErrors(t, col)
		})
	}
}

func testConnectErrors(t *testing.T, col *collector) {
	l := lab.New(t)
	tests := []struct {
		name     string
		route    []string // added in the host's namespace; nil: none
		dst      string
		port     uint16
		typ      int
		nonblock bool
		errno    unix.Errno // 0: no signal expected
	}{
		{"blackhole route", []string{"blackhole", "198.51.100.0/24"}, "198.51.100.7", 443, unix.SOCK_STREAM, false, unix.EINVAL},
		{"unreachable route", []string{"unreachable", "198.51.100.0/24"}, "198.51.100.7", 443, unix.SOCK_STREAM, false, unix.EHOSTUNREACH},
		{"prohibit route", []string{"prohibit", "198.51.100.0/24"}, "198.51.100.7", 443, unix.SOCK_STREAM, false, unix.EACCES},
		{"unreachable route, UDP", []string{"unreachable", "198.51.100.0/24"}, "198.51.100.7", 53, unix.SOCK_DGRAM, false, unix.EHOSTUNREACH},
		{"no route", []string{"del", "default"}, "198.51.100.7", 443, unix.SOCK_STREAM, false, unix.ENETUNREACH},
		{"no route, IPv6", nil, "2001:db8::7", 443, unix.SOCK_STREAM, false, unix.ENETUNREACH},
		{"prohibit route, IPv6", []string{"-6", "prohibit", "2001:db8::/64"}, "2001:db8::7", 443, unix.SOCK_STREAM, false, unix.EACCES},
		{"refused, blocking", nil, "", 4280, unix.SOCK_STREAM, false, unix.ECONNREFUSED},
		{"in progress, non-blocking", nil, "", 4281, unix.SOCK_STREAM, true, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := l.MustAddHost(t, fmt.Sprintf("c%d", i))
			switch {
			case tt.route == nil:
			case tt.route[0] == "del":
				mustRun(t, h, "ip", append([]string{"route"}, tt.route...)...)
			case tt.route[0] == "-6":
				mustRun(t, h, "ip", append([]string{"-6", "route", "add"}, tt.route[1:]...)...)
			default:
				mustRun(t, h, "ip", append([]string{"route", "add"}, tt.route...)...)
			}
			dst := l.Node().IP // the gateway: nobody listens on the port
			if tt.dst != "" {
				dst = netip.MustParseAddr(tt.dst)
			}
			to := netip.AddrPortFrom(dst, tt.port)
			lport, cerr := connectFrom(t, h, tt.typ, to, tt.nonblock)
			want := error(tt.errno)
			if tt.errno == 0 {
				want = unix.EINPROGRESS
			}
			if !errors.Is(cerr, want) {
				t.Fatalf("connect = %v, want %v", cerr, want)
			}
			ofHost := func(s signal.Signal) bool {
				return s.Kind == signal.KindConnectError && s.NetnsInode == h.Inode
			}
			if tt.errno == 0 {
				time.Sleep(300 * time.Millisecond)
				if got := col.matching(ofHost); len(got) != 0 {
					t.Errorf("connect_error for %v:\n%s", cerr, dump(got))
				}
				return
			}
			s, ok := col.waitFor(ofHost, 2*time.Second)
			if !ok {
				t.Fatalf("no connect_error in %s", h.Name)
			}
			proto := signal.ProtoTCP
			if tt.typ == unix.SOCK_DGRAM {
				proto = signal.ProtoUDP
			}
			if s.Err != -int32(tt.errno) || s.Flow.Dst != dst || s.Flow.DstPort != tt.port || s.Flow.Proto != proto ||
				s.PID != uint32(os.Getpid()) || s.NetnsCookie == 0 || s.Flow.SrcPort != lport {
				t.Errorf("connect_error = %s, want err %d to proto %d %v from pid %d, local port %d",
					dump([]signal.Signal{s}), -int32(tt.errno), proto, to, os.Getpid(), lport)
			}
		})
	}
}
