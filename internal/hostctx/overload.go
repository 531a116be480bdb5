//go:build linux

package hostctx

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Overload implements pattern.OverloadContext: it finds the listener of a
// local destination (in whichever namespace owns the address) with its
// accept queue and the namespace's listen counters, and reads a
// namespace's conntrack table.
//
// The correlator asks it only at a failing connection's decision points
// (an overdue SYN retransmit, a SYN's NETFILTER_DROP), from one goroutine,
// but the lookups block that goroutine, so they are bounded: answers are
// cached for AnswerTTL (a pattern's Match and Diagnose see one answer),
// listener lookups of local destinations are limited to MaxLookups per
// second (beyond it the
// answer is "unknown" and syn_dropped decides as without host context), and
// a conntrack reading is reused for CTMinInterval.
//
// Measured here (6.18, 10 namespaces, 100 processes): the address index
// 11 ms to build (about 1 ms per namespace), a listener lookup on it (sock_diag
// and the netstat counters through a thread in the namespace) under 1 ms,
// naming the owner of a full listener up to 7 ms once (OwnerBudget 25 ms, then
// kept), a conntrack reading (two ctnetlink requests) 0.4-0.7 ms.
type Overload struct {
	ProcDir, NetnsDir string
	AnswerTTL         time.Duration
	MaxLookups        int // listener lookups per second
	CTMinInterval     time.Duration
	// AddrTTL: how long the address -> namespace index is trusted; a miss
	// rebuilds it at most once per AddrMinRescan, so that SYNs unanswered by
	// remote hosts (every one is asked about) cost a map lookup, not a scan
	// of every namespace; a namespace created since is missed until then.
	// Only the first index is built while the correlator waits; later ones
	// are built in the background (about 1 ms per namespace: on a node with
	// a hundred pods, a stall of every diagnosis behind it otherwise) and
	// answer the lookups after them.
	AddrTTL, AddrMinRescan time.Duration
	// MaxProcScan bounds the processes whose file descriptors are read to
	// name a listener's owner (those in its namespace are read first).
	MaxProcScan int
	// OwnerBudget bounds the time spent naming a full listener's owner.
	OwnerBudget time.Duration

	now func() time.Time
	nl  *Netlink

	mu        sync.Mutex
	addrs     map[netip.Addr][]uint32
	addrsAt   time.Time
	scanning  bool // a background rebuild of addrs is under way
	answers   map[aqKey]aqAnswer
	mib       map[uint32]mibReading
	ct        map[uint32]ctReading
	owner     map[[2]uint32]string
	window    time.Time
	lookups   int
	maxCached int
}

type aqKey struct {
	client uint32
	dst    netip.AddrPort
}

type aqAnswer struct {
	f   pattern.AcceptQueueFact
	err error
	at  time.Time
}

type mibReading struct {
	overflows, drops uint64
	at               time.Time
}

type ctReading struct {
	f   pattern.ConntrackFact
	err error
}

// NewOverload returns the implementation over the live /proc and /run/netns.
func NewOverload() *Overload {
	return &Overload{ProcDir: "/proc", NetnsDir: "/run/netns", AnswerTTL: 500 * time.Millisecond, MaxLookups: 20,
		CTMinInterval: 100 * time.Millisecond, AddrTTL: 30 * time.Second, AddrMinRescan: 5 * time.Second,
		MaxProcScan: 1024, OwnerBudget: 25 * time.Millisecond, now: time.Now, nl: NewNetlink(), maxCached: 1024,
		answers: map[aqKey]aqAnswer{}, mib: map[uint32]mibReading{}, ct: map[uint32]ctReading{},
		owner: map[[2]uint32]string{}}
}

var _ pattern.OverloadContext = (*Overload)(nil)

// AcceptQueue implements pattern.OverloadContext.
func (o *Overload) AcceptQueue(client pattern.Netns, dst netip.AddrPort) (pattern.AcceptQueueFact, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	k := aqKey{client.Inode, dst}
	if a, ok := o.answers[k]; ok && now.Sub(a.at) < o.AnswerTTL {
		return a.f, a.err
	}
	f, err := o.acceptQueue(client, dst, now)
	if len(o.answers) >= o.maxCached {
		clear(o.answers)
	}
	o.answers[k] = aqAnswer{f: f, err: err, at: now}
	return f, err
}

func (o *Overload) acceptQueue(client pattern.Netns, dst netip.AddrPort, now time.Time) (pattern.AcceptQueueFact, error) {
	addr := dst.Addr().Unmap()
	var owners []uint32
	if addr.IsLoopback() {
		if client.Inode == 0 {
			return pattern.AcceptQueueFact{}, errors.New("loopback destination of an unknown namespace")
		}
		owners = []uint32{client.Inode}
	} else {
		owners = o.owners(addr, now)
	}
	if len(owners) == 0 {
		return pattern.AcceptQueueFact{}, fmt.Errorf("%v: %w", addr, pattern.ErrNotLocal)
	}
	// Only local destinations cost a lookup, so only they are limited.
	if now.Sub(o.window) >= time.Second {
		o.window, o.lookups = now, 0
	}
	if o.lookups >= o.MaxLookups {
		return pattern.AcceptQueueFact{}, fmt.Errorf("listener lookups: more than %d/s, skipped", o.MaxLookups)
	}
	o.lookups++
	f, err := o.listenerIn(owners, dst, addr, now)
	if err != nil && !addr.IsLoopback() && now.Sub(o.addrsAt) >= o.AddrMinRescan {
		// The index may be stale (an address moved, a namespace went):
		// later lookups get a new one.
		o.rescanLocked(now)
	}
	return f, err
}

func (o *Overload) listenerIn(owners []uint32, dst netip.AddrPort, addr netip.Addr, now time.Time) (pattern.AcceptQueueFact, error) {
	for _, ns := range owners {
		ls, err := o.nl.Listeners(ns, dst.Port())
		if err != nil {
			continue
		}
		l, ok := listenerFor(ls, addr)
		if !ok {
			continue
		}
		f := pattern.AcceptQueueFact{At: now, Netns: pattern.Netns{Inode: ns},
			Listener: pattern.ListenerFact{Addr: l.Addr, Backlog: l.Backlog, MaxBacklog: l.MaxBacklog}}
		if c, err := readListenCounters(ns); err == nil {
			f.Overflows, f.Drops, f.Somaxconn = c.overflows, c.drops, c.somaxconn
			if p, ok := o.mib[ns]; ok {
				f.PrevOverflows, f.PrevDrops, f.PrevAt = p.overflows, p.drops, p.at
			}
			if len(o.mib) >= o.maxCached {
				clear(o.mib)
			}
			o.mib[ns] = mibReading{overflows: c.overflows, drops: c.drops, at: now}
		}
		if f.Full() {
			f.Process = o.socketOwner(ns, l.Inode)
		}
		return f, nil
	}
	return pattern.AcceptQueueFact{}, fmt.Errorf("no listener for %v in netns %v", dst, owners)
}

// listenerFor picks the socket that takes connections to addr: one bound
// to it, else a wildcard one (an IPv6 wildcard also takes IPv4 unless
// v6only, which sock_diag does not say here).
func listenerFor(ls []Listener, addr netip.Addr) (Listener, bool) {
	var wild *Listener
	for i := range ls {
		a := ls[i].Addr.Addr().Unmap()
		switch {
		case a == addr:
			return ls[i], true
		case a.IsUnspecified() && (a.Is4() == addr.Is4() || a.Is6()) && wild == nil:
			wild = &ls[i]
		}
	}
	if wild != nil {
		return *wild, true
	}
	return Listener{}, false
}

// owners returns the namespaces holding addr as a local address. The
// index is rebuilt when a lookup misses or finds no listener (at most once
// per AddrMinRescan) and when older than AddrTTL: about a millisecond per
// namespace, so not for every failure.
func (o *Overload) owners(addr netip.Addr, now time.Time) []uint32 {
	if o.addrs == nil {
		o.addrs, o.addrsAt = indexAddrs(o.NetnsDir, o.ProcDir), now
	}
	ns, ok := o.addrs[addr]
	if now.Sub(o.addrsAt) > o.AddrTTL || !ok && now.Sub(o.addrsAt) >= o.AddrMinRescan {
		o.rescanLocked(now)
	}
	return ns
}

// rescanLocked starts a background rebuild of the address index unless
// one runs; o.mu is held. addrsAt moves now, so that misses until the new
// index arrives do not start another.
func (o *Overload) rescanLocked(now time.Time) {
	if o.scanning {
		return
	}
	o.scanning, o.addrsAt = true, now
	go func() {
		idx := indexAddrs(o.NetnsDir, o.ProcDir)
		o.mu.Lock()
		o.addrs, o.scanning = idx, false
		o.mu.Unlock()
	}()
}

// indexAddrs indexes the addresses of every namespace found under
// /run/netns and /proc/*/ns/net.
func indexAddrs(netnsDir, procDir string) map[netip.Addr][]uint32 {
	idx := map[netip.Addr][]uint32{}
	for ino, path := range namespaceFiles(netnsDir, procDir) {
		h, ok := openIfInode(path, ino)
		if !ok {
			continue
		}
		nh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
		h.Close()
		if err != nil {
			continue
		}
		as, err := nh.AddrList(nil, netlink.FAMILY_ALL)
		nh.Close()
		if err != nil {
			continue
		}
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				ip = ip.Unmap()
				idx[ip] = append(idx[ip], ino)
			}
		}
	}
	return idx
}

// namespaceFiles returns one openable file per network namespace: its
// `ip netns` bind mount, else a process's ns/net link.
func namespaceFiles(netnsDir, procDir string) map[uint32]string {
	out := map[uint32]string{}
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			p := filepath.Join(netnsDir, e.Name())
			if ino, ok := nsInode(p); ok {
				out[ino] = p
			}
		}
	}
	pids, _ := filepath.Glob(filepath.Join(procDir, "[0-9]*"))
	for _, dir := range pids {
		p := filepath.Join(dir, "ns", "net")
		if ino, ok := nsInode(p); ok {
			if _, seen := out[ino]; !seen {
				out[ino] = p
			}
		}
	}
	return out
}

type listenCounters struct {
	overflows, drops uint64
	somaxconn        uint32
}

// readListenCounters reads TcpExtListenOverflows/ListenDrops and
// net.core.somaxconn as the namespace sees them, from a thread switched
// into it (/proc/thread-self/net is the calling thread's namespace).
func readListenCounters(ns uint32) (listenCounters, error) {
	var c listenCounters
	err := inNetns(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/netstat")
		if err != nil {
			return err
		}
		m := parseNetstat(b, "TcpExt")
		var ok1, ok2 bool
		c.overflows, ok1 = m["ListenOverflows"]
		c.drops, ok2 = m["ListenDrops"]
		if !ok1 || !ok2 {
			return errors.New("netstat without TcpExt ListenOverflows/ListenDrops")
		}
		if s, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
			v, _ := strconv.ParseUint(strings.TrimSpace(string(s)), 10, 32)
			c.somaxconn = uint32(v)
		}
		return nil
	})
	return c, err
}

// parseNetstat reads one section of /proc/net/netstat: a line of names and
// a line of values, both prefixed "<section>:".
func parseNetstat(b []byte, section string) map[string]uint64 {
	var names []string
	out := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != section+":" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		for i, v := range f[1:] {
			if i < len(names) {
				if n, err := strconv.ParseUint(v, 10, 64); err == nil {
					out[names[i]] = n
				}
			}
		}
		break
	}
	return out
}

// inNetns runs fn on a locked OS thread switched into the namespace; a
// thread that cannot switch back is discarded with its goroutine.
func inNetns(ns uint32, fn func() error) error {
	target, err := OpenNetns(ns)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return // the thread exits with the goroutine
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %d: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("leave netns %d: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// socketOwner names the process holding the socket inode: processes in
// the namespace first, then any (a process may create sockets in another
// namespace from a switched thread), up to MaxProcScan processes and
// OwnerBudget (about 7 ms for 100 processes here when it has to read them
// all; a busy node may need more: the owner is best effort). An answer,
// found or not, is kept for the socket.
func (o *Overload) socketOwner(ns, inode uint32) string {
	if inode == 0 {
		return ""
	}
	k := [2]uint32{ns, inode}
	if s, ok := o.owner[k]; ok {
		return s
	}
	s := o.scanOwner(ns, inode)
	if len(o.owner) >= o.maxCached {
		clear(o.owner)
	}
	o.owner[k] = s
	return s
}

func (o *Overload) scanOwner(ns, inode uint32) string {
	deadline := time.Now().Add(o.OwnerBudget)
	pids, _ := filepath.Glob(filepath.Join(o.ProcDir, "[0-9]*"))
	var rest []string
	want := fmt.Sprintf("socket:[%d]", inode)
	scanned := 0
	try := func(dir string) string {
		scanned++
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			return ""
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && l == want {
				comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
				return fmt.Sprintf("pid %s (%s)", filepath.Base(dir), strings.TrimSpace(string(comm)))
			}
		}
		return ""
	}
	for _, dir := range pids {
		if got, ok := nsInode(filepath.Join(dir, "ns", "net")); ok && got == ns {
			if s := try(dir); s != "" {
				return s
			}
		} else {
			rest = append(rest, dir)
		}
	}
	for _, dir := range rest {
		if scanned >= o.MaxProcScan || time.Now().After(deadline) {
			break
		}
		if s := try(dir); s != "" {
			return s
		}
	}
	return ""
}

// Conntrack implements pattern.OverloadContext: the namespace's table
// with the previous reading's counters, reusing a reading younger than
// CTMinInterval.
func (o *Overload) Conntrack(ns pattern.Netns) (pattern.ConntrackFact, error) {
	if ns.Inode == 0 {
		return pattern.ConntrackFact{}, errors.New("conntrack: unknown network namespace")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	prev, had := o.ct[ns.Inode]
	if had && now.Sub(prev.f.At) < o.CTMinInterval {
		return prev.f, prev.err
	}
	s, err := ReadConntrackStats(ns.Inode)
	f := pattern.ConntrackFact{At: now, Entries: s.Entries, Max: s.Max, Drop: s.Drop, EarlyDrop: s.EarlyDrop,
		InsertFailed: s.InsertFailed}
	if had && prev.err == nil {
		f.PrevDrop, f.PrevEarlyDrop, f.PrevInsertFailed, f.PrevAt = prev.f.Drop, prev.f.EarlyDrop, prev.f.InsertFailed, prev.f.At
	}
	if len(o.ct) >= o.maxCached {
		clear(o.ct)
	}
	o.ct[ns.Inode] = ctReading{f: f, err: err}
	return f, err
}
