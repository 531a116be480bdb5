//go:build linux

// Package hostctx gives diagnoses the host's own terms, per network
// namespace: its name (NetnsNames), its neighbours, routes, listening
// sockets and devices (Host, implemented over netlink by Netlink), and the
// netfilter rule that dropped a packet (Netfilter). See Host for how the
// correlator is meant to use them.
package hostctx

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NetnsNames names network namespaces by inode: "host" for the initial
// namespace, the `ip netns` name when one is bound under /run/netns, else the
// process that lives in it ("pid 4242 (nginx)"), else "netns:<inode>".
//
// The kernel reuses inode numbers once a namespace is gone, so answers are
// cached only for TTL, and a miss rescans at most once per MinRescan so a
// storm of unknown namespaces cannot turn into a storm of /proc walks.
type NetnsNames struct {
	ProcDir   string // default /proc
	NetnsDir  string // default /run/netns
	TTL       time.Duration
	MinRescan time.Duration
	now       func() time.Time

	mu      sync.Mutex
	names   map[uint32]string
	scanned time.Time
}

// NewNetnsNames returns a namer over the live /proc and /run/netns.
func NewNetnsNames() *NetnsNames {
	return &NetnsNames{ProcDir: "/proc", NetnsDir: "/run/netns", TTL: 30 * time.Second, MinRescan: time.Second, now: time.Now}
}

// Name implements the correlator's NetnsNamer. The cookie is unused: user
// space has no way to read a namespace's cookie without entering it.
func (n *NetnsNames) Name(inode uint32, _ uint64) string {
	if inode == 0 {
		return "netns:unknown"
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	if n.names == nil || now.Sub(n.scanned) > n.TTL {
		n.scan(now)
	}
	if name, ok := n.names[inode]; ok {
		return name
	}
	if now.Sub(n.scanned) >= n.MinRescan {
		n.scan(now)
		if name, ok := n.names[inode]; ok {
			return name
		}
	}
	return fmt.Sprintf("netns:%d", inode)
}

func (n *NetnsNames) scan(now time.Time) {
	names := map[uint32]string{}
	// Processes first, so that the better names below overwrite them.
	pids, _ := filepath.Glob(filepath.Join(n.ProcDir, "[0-9]*"))
	lowest := map[uint32]int{}
	for _, dir := range pids {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		ino, ok := nsInode(filepath.Join(dir, "ns", "net"))
		if !ok {
			continue
		}
		// The lowest pid in a namespace is its first process: the
		// container's init or a pod's pause process.
		if p, seen := lowest[ino]; seen && p < pid {
			continue
		}
		lowest[ino] = pid
		comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
		names[ino] = fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm)))
	}
	if entries, err := os.ReadDir(n.NetnsDir); err == nil {
		for _, e := range entries {
			if ino, ok := nsInode(filepath.Join(n.NetnsDir, e.Name())); ok {
				names[ino] = e.Name()
			}
		}
	}
	// The initial namespace is init's; where /proc/1 is hidden from us (a
	// sandbox), kthreadd's, since kernel threads never leave it.
	for _, pid := range []string{"1", "2"} {
		if ino, ok := nsInode(filepath.Join(n.ProcDir, pid, "ns", "net")); ok {
			names[ino] = "host"
			break
		}
	}
	n.names = names
	n.scanned = now
}

// nsInode stats a namespace file (a /proc/<pid>/ns/net link or an
// `ip netns` bind mount) and returns its inode.
func nsInode(path string) (uint32, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, false
	}
	return uint32(st.Ino), true
}
