//go:build linux

package hostctx

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNetnsNamesHostAndSelf(t *testing.T) {
	n := NewNetnsNames()
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		t.Skipf("skipping: /proc/self/ns/net unreadable: %v", err)
	}
	self := uint32(st.Ino)
	if err := syscall.Stat("/proc/1/ns/net", &st); err != nil {
		if err := syscall.Stat("/proc/2/ns/net", &st); err != nil {
			t.Skipf("skipping: neither /proc/1/ns/net nor /proc/2/ns/net is readable (needs root and a shared pid namespace): %v", err)
		}
	}
	got := n.Name(self, 0)
	if uint32(st.Ino) == self && got != "host" {
		t.Errorf("Name(own netns) = %q, want host", got)
	}
	if got := n.Name(1, 0); got != "netns:1" {
		t.Errorf("unknown inode = %q, want netns:1", got)
	}
	if got := n.Name(0, 0); got != "netns:unknown" {
		t.Errorf("inode 0 = %q", got)
	}
}

func TestNetnsNamesIPNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating a named network namespace needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: ip (iproute2) is not installed")
	}
	name := fmt.Sprintf("nctest-names-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		t.Fatal(err)
	}
	n := NewNetnsNames()
	n.MinRescan = 0
	if got := n.Name(uint32(st.Ino), 0); got != name {
		t.Errorf("Name = %q, want %q", got, name)
	}
}

// A fake /proc and /run/netns: process names, ip-netns names winning over
// them, and the rescan rate limit.
func TestNetnsNamesScanRules(t *testing.T) {
	dir := t.TempDir()
	proc, nsdir := filepath.Join(dir, "proc"), filepath.Join(dir, "netns")
	mk := func(p string) uint32 {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return uint32(st.Ino)
	}
	podNS := mk(filepath.Join(proc, "40", "ns", "net"))
	// pid 41 shares pid 40's namespace (a hard link has the same inode).
	if err := os.MkdirAll(filepath.Join(proc, "41", "ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(proc, "40", "ns", "net"), filepath.Join(proc, "41", "ns", "net")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "40", "comm"), []byte("pause\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "41", "comm"), []byte("nginx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	labNS := mk(filepath.Join(proc, "50", "ns", "net"))
	if err := os.MkdirAll(nsdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(proc, "50", "ns", "net"), filepath.Join(nsdir, "blue")); err != nil {
		t.Fatal(err)
	}

	clock := time.Unix(1000, 0)
	n := &NetnsNames{ProcDir: proc, NetnsDir: nsdir, TTL: time.Minute, MinRescan: time.Second, now: func() time.Time { return clock }}
	if got := n.Name(podNS, 0); got != "pid 40 (pause)" {
		t.Errorf("pod namespace = %q, want the lowest pid's name", got)
	}
	if got := n.Name(labNS, 0); got != "blue" {
		t.Errorf("ip-netns namespace = %q, want blue", got)
	}

	// /proc/1 is hidden here, so kthreadd's namespace is the host's.
	kthreadd := mk(filepath.Join(proc, "2", "ns", "net"))
	clock = clock.Add(2 * time.Second)
	if got := n.Name(kthreadd, 0); got != "host" {
		t.Errorf("kthreadd's namespace = %q, want host", got)
	}

	late := mk(filepath.Join(proc, "60", "ns", "net"))
	if got := n.Name(late, 0); !strings.HasPrefix(got, "netns:") {
		t.Errorf("a namespace seen within MinRescan of the last scan = %q, want no rescan", got)
	}
	clock = clock.Add(2 * time.Second)
	if got := n.Name(late, 0); got != "pid 60 ()" {
		t.Errorf("after MinRescan = %q, want pid 60", got)
	}
}
