//go:build linux

package correlate_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/livetest"
	"github.com/network-correlator/network-correlator/internal/probe"
	"github.com/network-correlator/network-correlator/internal/signal"
	"golang.org/x/sys/unix"
)

// startLiveLab is startLive keeping every signal recorded in one of the
// lab's namespaces (neighbour failures and connect() errors to addresses
// outside the lab subnet carry no lab flow).
func startLiveLab(t *testing.T, l *lab.Lab) *livetest.Run {
	t.Helper()
	return startLiveKeeping(t, l, probe.Config{ConnectErrors: true}, func(s *signal.Signal) bool {
		return l.HostByInode(s.NetnsInode) != nil || l.Subnet().Contains(s.Flow.Src) || l.Subnet().Contains(s.Flow.Dst)
	})
}

// listenBacklog listens on port in h's namespace with listen(fd, backlog)
// and never accepts, so the accept queue fills.
func listenBacklog(t *testing.T, h *lab.Host, port uint16, backlog int) {
	t.Helper()
	fd, err := h.ListenBacklog(port, backlog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
}

// sendLater, when a scenario sets it, makes the failure happen once the
// probes run.
var sendLater func()

// TestKernelPatternScenarios induces the failures of the neighbour, route,
// ICMP and listen-queue patterns in a lab and checks their diagnoses from
// the real probes (no host context: the correlator's own view).
func TestKernelPatternScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping kernel scenarios in -short mode")
	}
	unused := func(l *lab.Lab) netip.Addr {
		return netip.AddrFrom4([4]byte{l.Subnet().Addr().As4()[0], l.Subnet().Addr().As4()[1], l.Subnet().Addr().As4()[2], 250})
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, l *lab.Lab, client, server *lab.Host) netip.AddrPort // the address to dial
		dials   int
		dial    time.Duration
		wantErr error // nil: any error
		key     func(l *lab.Lab, client, server *lab.Host) string
		summary string
		within  time.Duration
		fixture string // recorded with -record
	}{
		{
			name: "unused IP (ARP fails)", dials: 1, dial: 6 * time.Second, wantErr: syscall.EHOSTUNREACH,
			setup: func(t *testing.T, l *lab.Lab, _, _ *lab.Host) netip.AddrPort {
				return netip.AddrPortFrom(unused(l), 8090)
			},
			key: func(l *lab.Lab, _, _ *lab.Host) string {
				return "arp_failure/never_resolved/" + unused(l).String() + ":0/"
			},
			summary: "on dev eth0 in netns client failed: no host answers, it never resolved", within: 6 * time.Second,
			fixture: "kernel_arp_unused_ip.jsonl",
		},
		{
			name: "blackhole route in the client", dials: 1, dial: time.Second, wantErr: syscall.EINVAL,
			setup: func(t *testing.T, _ *lab.Lab, c, _ *lab.Host) netip.AddrPort {
				if out, err := c.Run("ip", "route", "add", "blackhole", "198.51.100.0/24"); err != nil {
					t.Fatalf("ip route add: %v: %s", err, out)
				}
				return netip.MustParseAddrPort("198.51.100.7:443")
			},
			key:     func(*lab.Lab, *lab.Host, *lab.Host) string { return "route_failure/blackhole_route/198.51.100.7:443/" },
			summary: "connect() to tcp 198.51.100.7:443 in netns client failed with EINVAL: a blackhole route", within: 2 * time.Second,
			fixture: "kernel_route_blackhole_connect.jsonl",
		},
		{
			name: "REJECT admin-prohibited in the server", dials: 1, dial: 2 * time.Second,
			setup: func(t *testing.T, _ *lab.Lab, _, s *lab.Host) netip.AddrPort {
				nftRule(t, s, "input", "tcp dport 8091 reject with icmpx admin-prohibited")
				return netip.AddrPortFrom(s.IP, 8091)
			},
			key: func(_ *lab.Lab, _, s *lab.Host) string {
				return "icmp_error/admin_prohibited/" + s.IP.String() + ":8091/"
			},
			summary: "rejected by a firewall", within: 2 * time.Second,
			fixture: "kernel_icmp_admin_prohibited.jsonl",
		},
		{
			// The probe's measured way to make the kernel drop at a full
			// queue (see probe TestListenQueueOverflow): handshakes whose
			// first ACK is lost complete by syncookie once data arrives.
			name: "accept queue full", dials: 0,
			setup: func(t *testing.T, _ *lab.Lab, c, s *lab.Host) netip.AddrPort {
				listenBacklog(t, s, 8092, 1)
				nftRule(t, s, "input", "tcp dport 8092 tcp flags & (syn|ack) == ack drop")
				to := netip.AddrPortFrom(s.IP, 8092)
				var fds []int
				for range 4 {
					var fd int
					if err := c.Do(func() error {
						var err error
						if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
							return err
						}
						if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()}); !errors.Is(err, unix.EINPROGRESS) {
							return err
						}
						return nil
					}); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { unix.Close(fd) })
					fds = append(fds, fd)
				}
				time.Sleep(200 * time.Millisecond)
				if err := s.Nft("delete table inet nctest"); err != nil {
					t.Fatal(err)
				}
				sendLater = func() {
					for _, fd := range fds {
						unix.Write(fd, []byte("hello"))
					}
				}
				return to
			},
			key: func(_ *lab.Lab, _, s *lab.Host) string {
				return "listen_overflow/accept_queue_full/" + s.IP.String() + ":8092/"
			},
			summary: "Listener on port 8092 in netns server dropped a connection: accept queue full", within: 3 * time.Second,
			fixture: "kernel_listen_overflow.jsonl",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			server := l.MustAddHost(t, "server")
			sendLater = nil
			to := tc.setup(t, l, client, server)
			le := startLiveLab(t, l)
			start := time.Now()
			if sendLater != nil {
				sendLater()
			}
			var errs []error
			for range tc.dials {
				c, err := client.Dial(context.Background(), to, tc.dial)
				if c != nil {
					t.Cleanup(func() { c.Close() })
				}
				errs = append(errs, err)
			}
			if tc.wantErr != nil && (len(errs) == 0 || !errors.Is(errs[0], tc.wantErr)) {
				t.Fatalf("connect error %v, want %v", errs[0], tc.wantErr)
			}
			d := waitKey(t, le, tc.key(l, client, server), tc.within)
			if !strings.Contains(d.Summary, tc.summary) {
				t.Errorf("summary %q, want it to contain %q", d.Summary, tc.summary)
			}
			t.Logf("%s after %v: %s (confidence %.2f)\n%s", d.Pattern, d.LastSeen.Sub(start).Round(time.Millisecond), d.Summary, d.Confidence, d.Details)
			// One failure, one diagnosis: no other pattern reported it.
			time.Sleep(500 * time.Millisecond)
			sigs, ds := le.Snapshot()
			for _, x := range ds {
				if x.Pattern != d.Pattern {
					t.Errorf("also diagnosed as %s: %s\n%s", x.Key, x.Summary, x.Details)
				}
			}
			saveRecording(t, tc.fixture, sigs, "Recorded by TestKernelPatternScenarios -record: "+tc.name+
				" (client "+client.Name+", server "+server.Name+").\nExpect "+tc.key(l, client, server)+" and nothing else.")
		})
	}
}
