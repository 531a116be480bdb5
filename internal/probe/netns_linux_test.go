//go:build linux

package probe

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// testNetns is a private network namespace owned by one locked OS thread.
// Sockets created in it stay in it; the namespace disappears when the
// thread exits and the last socket is closed (t.Cleanup does both).
type testNetns struct {
	tid    int
	inode  uint64
	cookie uint64
	do     chan func()
}

func newTestNetns(t testing.TB) *testNetns {
	t.Helper()
	ns := &testNetns{do: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, and with it the namespace, dies
		// when this goroutine returns.
		runtime.LockOSThread()
		if err := ns.setup(); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for f := range ns.do {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("creating a network namespace: %v", err)
	}
	t.Cleanup(func() { close(ns.do) })
	return ns
}

func (ns *testNetns) setup() error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
	}
	ns.tid = unix.Gettid()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return err
	}
	ns.inode = st.Ino
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	ns.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return fmt.Errorf("SO_NETNS_COOKIE: %w", err)
	}
	return nil
}

// run executes f on the namespace's thread.
func (ns *testNetns) run(f func()) {
	done := make(chan struct{})
	ns.do <- func() { f(); close(done) }
	<-done
}

// socket creates a TCP socket inside the namespace, closed at cleanup.
func (ns *testNetns) socket(t testing.TB, family int) int {
	t.Helper()
	var fd int
	var err error
	ns.run(func() { fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0) })
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// nft loads a ruleset into the namespace; it vanishes with the namespace.
func (ns *testNetns) nft(t *testing.T, ruleset string) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipping: the nft command (package nftables) is not installed")
	}
	cmd := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/task/%d/ns/net", os.Getpid(), ns.tid), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
}

// collector runs a Probe and keeps every signal.
type collector struct {
	mu   sync.Mutex
	sigs []signal.Signal
}

func (c *collector) add(s signal.Signal) {
	c.mu.Lock()
	c.sigs = append(c.sigs, s)
	c.mu.Unlock()
}

func (c *collector) matching(pred func(signal.Signal) bool) []signal.Signal {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []signal.Signal
	for _, s := range c.sigs {
		if pred(s) {
			out = append(out, s)
		}
	}
	return out
}

// waitFor polls until pred matches a signal or the timeout passes.
func (c *collector) waitFor(pred func(signal.Signal) bool, timeout time.Duration) (signal.Signal, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if m := c.matching(pred); len(m) > 0 {
			return m[0], true
		}
		if time.Now().After(deadline) {
			return signal.Signal{}, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireProbe skips unless the probes can load here.
func requireProbe(t *testing.T) {
	t.Helper()
	if err := Check(); err != nil {
		t.Skipf("skipping kernel test: %v", err)
	}
}

// startProbe opens the probes and runs them into a collector until cleanup.
func startProbe(t *testing.T, cfg Config) (*Probe, *collector) {
	t.Helper()
	requireProbe(t)
	p, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p, runProbe(t, p)
}

// runProbe runs an opened probe into a collector and closes it at cleanup.
func runProbe(t *testing.T, p *Probe) *collector {
	t.Helper()
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, c.add) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}
