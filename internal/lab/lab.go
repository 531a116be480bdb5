//go:build linux

// Package lab builds throwaway network topologies for end-to-end tests: a
// "node" network namespace holding a Linux bridge, and "hosts" (stand-ins for
// pods) in their own namespaces, each joined to the bridge by a veth pair.
// Nothing is created in the caller's namespace, so deleting the lab's
// namespaces removes every link, address, route and firewall rule it made.
package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace a lab creates; Sweep uses it to
// find leftovers of a killed test run.
const Prefix = "nclab"

var labSeq atomic.Uint32

// Lab is one isolated topology. Create it with New; it is removed by Close
// (registered with t.Cleanup by New).
type Lab struct {
	name   string // Prefix-<pid>-<seq>
	subnet netip.Prefix
	node   *Host
	mu     sync.Mutex
	hosts  []*Host
	closed bool
}

// Host is a network namespace attached to the lab's bridge.
type Host struct {
	Name  string     // short name given by the test ("client", "server")
	Netns string     // the `ip netns` name
	IP    netip.Addr // address on the lab subnet
	Inode uint32     // inode of the namespace, as the kernel probes report it
	lab   *Lab
}

// Check reports what the environment lacks for a lab, or nil.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("network lab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN to create network namespaces)")
	}
	for _, tool := range []string{"ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("network lab needs %q (iproute2) on PATH", tool)
		}
	}
	return nil
}

// New creates a lab with an empty bridge, or skips the test naming what is
// missing. The lab is removed when the test ends, also when it fails.
func New(tb testing.TB) *Lab {
	tb.Helper()
	if err := Check(); err != nil {
		tb.Skipf("skipping: %v", err)
	}
	l, err := Create()
	if err != nil {
		tb.Fatalf("create lab: %v", err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("remove lab: %v", err)
		}
	})
	return l
}

// Create builds a lab outside of a test (benchmarks, tools); the caller must Close it.
func Create() (*Lab, error) {
	seq := labSeq.Add(1)
	pid := os.Getpid()
	l := &Lab{
		name: fmt.Sprintf("%s-%d-%d", Prefix, pid, seq),
		// A per-lab subnet keeps flows of labs that run at the same time
		// apart when a test filters signals by address.
		subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + pid%50), byte(seq), 0}), 24),
	}
	node, err := l.addNetns("node")
	if err != nil {
		return nil, err
	}
	l.node = node
	node.IP = l.subnet.Addr().Next() // .1, the hosts' gateway
	if err := node.ip("link", "add", "br0", "type", "bridge"); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	if err := node.ip("addr", "add", prefixOf(node.IP, l.subnet), "dev", "br0"); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	if err := node.ip("link", "set", "br0", "up"); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

// Name is the lab's unique name (the prefix of its namespaces).
func (l *Lab) Name() string { return l.name }

// Subnet is the lab's address range.
func (l *Lab) Subnet() netip.Prefix { return l.subnet }

// Subnet6 is an IPv6 prefix for the lab, unique like Subnet: a test that
// needs IPv6 adds addresses of it to the hosts (`ip -6 addr add ... nodad`).
func (l *Lab) Subnet6() netip.Prefix {
	v4 := l.subnet.Addr().As4()
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 6: v4[1], 7: v4[2]}), 64)
}

// Node is the namespace that holds the bridge and routes between hosts.
func (l *Lab) Node() *Host { return l.node }

// AddHost creates a namespace joined to the bridge with the next free address
// and a default route through the node.
func (l *Lab) AddHost(name string) (*Host, error) {
	l.mu.Lock()
	n := len(l.hosts)
	l.mu.Unlock()
	h, err := l.addNetns(name)
	if err != nil {
		return nil, err
	}
	h.IP = l.subnet.Addr()
	for i := 0; i < n+1; i++ { // hosts[0] is the node at .1
		h.IP = h.IP.Next()
	}
	// The peer is created in the node namespace and its other end moved into
	// the host, so the caller's namespace never sees either.
	port := fmt.Sprintf("v%d", n)
	steps := [][]string{
		{"link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.Netns},
		{"link", "set", port, "master", "br0"},
		{"link", "set", port, "up"},
	}
	for _, s := range steps {
		if err := l.node.ip(s...); err != nil {
			return nil, err
		}
	}
	for _, s := range [][]string{
		{"addr", "add", prefixOf(h.IP, l.subnet), "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"route", "add", "default", "via", l.node.IP.String()},
	} {
		if err := h.ip(s...); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// MustAddHost is AddHost for tests.
func (l *Lab) MustAddHost(tb testing.TB, name string) *Host {
	tb.Helper()
	h, err := l.AddHost(name)
	if err != nil {
		tb.Fatalf("add lab host %s: %v", name, err)
	}
	return h
}

// Hosts returns every host, the node first.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// HostByInode finds the lab host whose namespace has this inode.
func (l *Lab) HostByInode(inode uint32) *Host {
	for _, h := range l.Hosts() {
		if h.Inode == inode {
			return h
		}
	}
	return nil
}

func (l *Lab) addNetns(name string) (*Host, error) {
	h := &Host{Name: name, Netns: l.name + "-" + name, lab: l}
	if out, err := exec.Command("ip", "netns", "add", h.Netns).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", h.Netns, err, bytes.TrimSpace(out))
	}
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	var st syscall.Stat_t
	if err := syscall.Stat("/var/run/netns/"+h.Netns, &st); err != nil {
		return nil, fmt.Errorf("stat netns %s: %w", h.Netns, err)
	}
	h.Inode = uint32(st.Ino)
	if err := h.ip("link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return h, nil
}

// Close deletes every namespace of the lab, which removes its links, routes
// and firewall rules with them. It is safe to call twice.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for i := len(l.hosts) - 1; i >= 0; i-- {
		if err := deleteNetns(l.hosts[i].Netns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func deleteNetns(name string) error {
	out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// Sweep removes namespaces left by labs whose process no longer exists (a
// test binary killed by a timeout cannot run its cleanups).
func Sweep() error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		parts := strings.Split(name, "-")
		if len(parts) < 3 || parts[0] != Prefix {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || processAlive(pid) {
			continue
		}
		if err := deleteNetns(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func prefixOf(a netip.Addr, p netip.Prefix) string {
	return netip.PrefixFrom(a, p.Bits()).String()
}

// Do runs fn on an OS thread switched into the host's namespace. Sockets
// created inside fn stay in that namespace after Do returns.
func (h *Host) Do(fn func() error) error {
	target, err := netns.GetFromName(h.Netns)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", h.Netns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	// A fresh goroutine whose thread is discarded if it cannot switch back,
	// so no other goroutine ever runs in the wrong namespace.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", h.Netns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", h.Netns, err))
			return // the thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen opens a TCP listener in the host's namespace on its lab address.
func (h *Host) Listen(port uint16) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(h.IP, port).String())
		return err
	})
	return ln, err
}

// ListenBacklog opens a TCP listening socket on the host's address and
// port with listen(fd, backlog) and never accepts on it, so its accept
// queue fills (net.Listen always asks for somaxconn). The caller closes fd.
func (h *Host) ListenBacklog(port uint16, backlog int) (int, error) {
	fd := -1
	err := h.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port), Addr: h.IP.As4()}); err != nil {
			return err
		}
		return unix.Listen(fd, backlog)
	})
	if err != nil && fd >= 0 {
		unix.Close(fd)
		fd = -1
	}
	return fd, err
}

// Dial connects from the host's namespace with the given timeout.
func (h *Host) Dial(ctx context.Context, to netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		// The socket is created here, in the namespace; the connect can
		// finish on any thread because the socket keeps its namespace.
		d := net.Dialer{Timeout: timeout}
		var err error
		c, err = d.DialContext(ctx, "tcp", to.String())
		return err
	})
	return c, err
}

// Run executes a command inside the host's namespace and returns its output.
func (h *Host) Run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.Netns, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(args, " "), h.Netns, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Nft loads an nftables script (as `nft -f -`) in the host's namespace.
func (h *Host) Nft(script string) error {
	cmd := exec.Command("ip", "netns", "exec", h.Netns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", h.Netns, err, bytes.TrimSpace(out))
	}
	return nil
}

// Iptables runs iptables with args in the host's namespace.
func (h *Host) Iptables(args ...string) error {
	_, err := h.Run("iptables", args...)
	return err
}

func (h *Host) ip(args ...string) error {
	full := append([]string{"-n", h.Netns}, args...)
	if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(full, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
