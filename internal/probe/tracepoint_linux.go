//go:build linux

package probe

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Classic tracepoints (the syscalls:* events) are attached through a perf
// event, which needs the event's numeric ID, published only in tracefs.

var tracefsRoots = []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}

// tracepointID reads the ID of group:name from a mounted tracefs, or, when
// none is mounted, from a tracefs mounted in a private mount namespace on a
// thread of its own (the host's mounts stay as they are).
func tracepointID(group, name string) (uint64, error) {
	rel := filepath.Join("events", group, name, "id")
	for _, root := range tracefsRoots {
		if id, err := readID(filepath.Join(root, rel)); err == nil {
			return id, nil
		}
	}
	type result struct {
		id  uint64
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread never returns to the pool: it dies with the
		// goroutine, and its private mount namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			ch <- result{err: fmt.Errorf("unshare(CLONE_NEWNS): %w", err)}
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			ch <- result{err: fmt.Errorf("making mounts private: %w", err)}
			return
		}
		if err := unix.Mount("nodev", tracefsRoots[0], "tracefs", 0, ""); err != nil {
			ch <- result{err: fmt.Errorf("mounting tracefs: %w", err)}
			return
		}
		id, err := readID(filepath.Join(tracefsRoots[0], rel))
		ch <- result{id, err}
	}()
	r := <-ch
	if r.err != nil {
		return 0, fmt.Errorf("tracepoint %s:%s: tracefs is not mounted and a private mount failed (%w): "+
			"mount it (mount -t tracefs nodev /sys/kernel/tracing) or grant CAP_SYS_ADMIN", group, name, r.err)
	}
	return r.id, nil
}

func readID(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// attachTracepoint attaches prog to the classic tracepoint group:name with a
// BPF link on a perf event. The link holds the event; closing the link
// detaches the program.
func attachTracepoint(prog *ebpf.Program, group, name string) (link.Link, error) {
	id, err := tracepointID(group, name)
	if err != nil {
		return nil, err
	}
	attr := unix.PerfEventAttr{
		Type:        unix.PERF_TYPE_TRACEPOINT,
		Config:      id,
		Sample_type: unix.PERF_SAMPLE_RAW,
		Sample:      1,
		Wakeup:      1,
	}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, -1, 0, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("perf_event_open for tracepoint %s:%s: %w", group, name, err)
	}
	defer unix.Close(fd) // the link keeps its own reference to the event
	l, err := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: prog, Attach: ebpf.AttachPerfEvent})
	if err != nil {
		return nil, fmt.Errorf("attaching to tracepoint %s:%s: %w", group, name, err)
	}
	return l, nil
}
