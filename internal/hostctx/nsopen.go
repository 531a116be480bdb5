//go:build linux

package hostctx

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsPaths remembers where each namespace was last found, so that repeated
// opens skip the /proc walk; every hit is checked against the inode again.
// Bounded: it is emptied when it reaches maxNsPaths (namespaces churn).
var nsPaths = struct {
	sync.Mutex
	m map[uint32]string
}{m: map[uint32]string{}}

const maxNsPaths = 4096

func nsPathLoad(ino uint32) (string, bool) {
	nsPaths.Lock()
	defer nsPaths.Unlock()
	p, ok := nsPaths.m[ino]
	return p, ok
}

func nsPathStore(ino uint32, p string) {
	nsPaths.Lock()
	defer nsPaths.Unlock()
	if len(nsPaths.m) >= maxNsPaths {
		clear(nsPaths.m)
	}
	nsPaths.m[ino] = p
}

func nsPathDelete(ino uint32) {
	nsPaths.Lock()
	defer nsPaths.Unlock()
	delete(nsPaths.m, ino)
}

func openNetnsIn(netnsDir, procDir string, ino uint32) (netns.NsHandle, error) {
	if p, ok := nsPathLoad(ino); ok {
		if h, ok := openIfInode(p, ino); ok {
			return h, nil
		}
		nsPathDelete(ino)
	}
	var candidates []string
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			candidates = append(candidates, filepath.Join(netnsDir, e.Name()))
		}
	}
	candidates = append(candidates, filepath.Join(procDir, "self", "ns", "net"))
	for _, c := range candidates {
		if h, ok := openIfInode(c, ino); ok {
			nsPathStore(ino, c)
			return h, nil
		}
	}
	pids, _ := filepath.Glob(filepath.Join(procDir, "[0-9]*"))
	for _, dir := range pids {
		p := filepath.Join(dir, "ns", "net")
		if got, ok := nsInode(p); !ok || got != ino {
			continue
		}
		if h, ok := openIfInode(p, ino); ok {
			// A pid's path is only remembered while that process lives;
			// the check on reuse catches a recycled pid.
			nsPathStore(ino, p)
			return h, nil
		}
	}
	return -1, fmt.Errorf("network namespace %d not found under %s or %s/*/ns/net (gone, or not visible without root)", ino, netnsDir, procDir)
}

// openIfInode opens a namespace file and keeps it only if the opened
// namespace has the inode (the file may have changed since a stat).
func openIfInode(path string, ino uint32) (netns.NsHandle, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, false
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || uint32(st.Ino) != ino {
		unix.Close(fd)
		return -1, false
	}
	return netns.NsHandle(fd), true
}
