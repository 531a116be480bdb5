//go:build linux

package hostctx

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Netfilter attributes netfilter drops to the rule that made them. It reads
// each namespace's nftables ruleset over netlink (iptables-nft rules are
// nftables rules too), keeps it for TTL, and interprets the rules against
// the dropped packet's headers.
//
// Interpreted exactly: meta l4proto/nfproto/protocol/iifname/oifname/iif/oif,
// payload loads of the IPv4/IPv6 addresses and protocol and of TCP/UDP/SCTP
// ports and TCP flags, cmp, range, bitwise, byteorder, immediate, lookups in
// anonymous and named sets, interval and concatenated sets and verdict maps,
// ct state (NEW for a SYN, else unknown unless Packet.CTState says),
// fib saddr/daddr type and -m addrtype (from the namespace's addresses),
// jump/goto/return/accept/drop/reject, chain policies, base chain order by
// hook and priority, and the xtables matches tcp, udp, multiport, comment,
// conntrack/state --ctstate, and the REJECT target. Everything else (marks,
// limits, quotas, socket, rt, other xt extensions, ct fields other than
// state) is not understood: a rule that needs it is assumed to match if it
// drops (probable, named in Unknown) and not to if it accepts. Heuristic
// parts: the path when not given (from the namespace's addresses), the
// output device (the route to the destination), and the choice among
// probable rules (counters).
//
// The correlator calls it when it emits a diagnosis of a NETFILTER_DROP, not
// per packet: a cache miss costs one netlink dump per chain and set of the
// namespace (about a millisecond for a few hundred rules), a hit only the
// interpretation, bounded by maxRuleEvals.
type Netfilter struct {
	names *NetnsNames
	// TTL bounds how stale a ruleset (and its counters) may be. Rulesets
	// change, so keep it short.
	TTL time.Duration
	// MaxNamespaces bounds the cache; beyond it the oldest entry goes.
	MaxNamespaces int
	// MinReload bounds how often a drop newer than the cached ruleset
	// makes it list the ruleset again (see Packet.Time).
	MinReload time.Duration

	mu    sync.Mutex
	cache map[uint32]*nfSlot
	now   func() time.Time
}

type nfEntry struct {
	rs    *ruleset
	addrs addrInfo          // the namespace's own and broadcast addresses
	links map[string]uint32 // device name -> ifindex
	at    time.Time
	cost  time.Duration // how long the listing took
}

// NewNetfilter returns an attributor; names may be nil (RuleMatch.Netns
// then says "netns:<inode>").
func NewNetfilter(names *NetnsNames) *Netfilter {
	return &Netfilter{names: names, TTL: 2 * time.Second, MaxNamespaces: 64, MinReload: 100 * time.Millisecond, cache: map[uint32]*nfSlot{}, now: time.Now}
}

// Attribute finds the rule in the packet's namespace that drops or rejects
// it. The error says why none was found (namespace gone, no permission, no
// dropping rule in the current ruleset).
func (n *Netfilter) Attribute(p Packet) (*RuleMatch, error) {
	if p.NetnsInode == 0 {
		return nil, errors.New("netfilter attribution: packet without a network namespace")
	}
	e, err := n.entry(p.NetnsInode, p.Time)
	if err != nil {
		return nil, err
	}
	if p.Path == PathUnknown {
		p.Path = inferPath(p, e.addrs.local)
	}
	if p.DropDev != "" || p.DropIfindex != 0 {
		switch {
		case p.Path == PathInput && p.InIface == "" && p.InIfindex == 0:
			p.InIface, p.InIfindex = p.DropDev, p.DropIfindex
		case p.Path == PathOutput && p.OutIface == "" && p.OutIfindex == 0:
			p.OutIface, p.OutIfindex = p.DropDev, p.DropIfindex
		}
	}
	if (p.Path == PathOutput || p.Path == PathForward) && p.OutIface == "" && p.OutIfindex == 0 {
		// The kernel routes before the output and forward hooks, so the
		// route to the destination names the output device.
		if r, err := NewNetlink().Route(p.NetnsInode, p.Dst); err == nil && r.Err == nil {
			p.OutIfindex = r.Ifindex
		}
	}
	p.InIface, p.InIfindex = e.device(p.InIface, p.InIfindex)
	p.OutIface, p.OutIfindex = e.device(p.OutIface, p.OutIfindex)
	m, err := e.rs.attribute(p, &e.addrs)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", n.name(p.NetnsInode), err)
	}
	m.Netns = n.name(p.NetnsInode)
	return m, nil
}

// device completes a device's name from its index or the reverse.
func (e *nfEntry) device(name string, index uint32) (string, uint32) {
	if name != "" && index == 0 {
		return name, e.links[name]
	}
	if name == "" && index != 0 {
		for n, i := range e.links {
			if i == index {
				return n, index
			}
		}
	}
	return name, index
}

func (n *Netfilter) name(ino uint32) string {
	if n.names == nil {
		return fmt.Sprintf("netns:%d", ino)
	}
	return n.names.Name(ino, 0)
}

// inferPath: a packet to one of the namespace's addresses went through
// input, one from them through output, any other was forwarded.
func inferPath(p Packet, local map[netip.Addr]bool) Path {
	switch {
	case local[p.Dst.Unmap()]:
		return PathInput
	case local[p.Src.Unmap()]:
		return PathOutput
	case len(local) > 0:
		return PathForward
	}
	return PathUnknown
}

// nfSlot holds one namespace's cached listing. Its mutex is held while
// listing, so concurrent callers for that namespace share one listing and
// callers for other namespaces are not held up.
type nfSlot struct {
	mu sync.Mutex
	e  *nfEntry // guarded by mu
	// at and cost mirror e's for eviction; guarded by Netfilter.mu.
	at   time.Time
	cost time.Duration
}

func (n *Netfilter) entry(ino uint32, dropped time.Time) (*nfEntry, error) {
	n.mu.Lock()
	s := n.cache[ino]
	if s == nil {
		n.evict(n.now())
		s = &nfSlot{}
		n.cache[ino] = s
	}
	n.mu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	now := n.now()
	if e := s.e; e != nil {
		// A listing is never repeated sooner than ten times what it
		// cost, so a huge ruleset (kube-proxy) under a storm of drops
		// takes at most a tenth of a core.
		age, floor := now.Sub(e.at), 10*e.cost
		stale := !dropped.IsZero() && e.at.Before(dropped) && age >= max(n.MinReload, floor)
		if age < max(n.TTL, floor) && !stale {
			return e, nil
		}
	}
	start := time.Now()
	e, err := loadNetfilter(ino)
	n.mu.Lock()
	defer n.mu.Unlock()
	if err != nil {
		s.e = nil
		if n.cache[ino] == s {
			delete(n.cache, ino)
		}
		return nil, err
	}
	e.at, e.cost = now, time.Since(start)
	s.e, s.at, s.cost = e, e.at, e.cost
	return e, nil
}

// evict drops expired slots and, at MaxNamespaces, the oldest one. Slots
// still being listed for the first time (zero at) are left alone.
func (n *Netfilter) evict(now time.Time) {
	for k, s := range n.cache {
		if !s.at.IsZero() && now.Sub(s.at) >= max(n.TTL, 10*s.cost) {
			delete(n.cache, k)
		}
	}
	for len(n.cache) >= n.MaxNamespaces {
		var oldest uint32
		var found bool
		for k, s := range n.cache {
			if !s.at.IsZero() && (!found || s.at.Before(n.cache[oldest].at)) {
				oldest, found = k, true
			}
		}
		if !found {
			return
		}
		delete(n.cache, oldest)
	}
}

func loadNetfilter(ino uint32) (*nfEntry, error) {
	ns, err := OpenNetns(ino)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	// One socket for the whole listing rather than one per request.
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables netlink in netns %d: %w", ino, err)
	}
	defer conn.CloseLasting()
	rs, err := listRuleset(conn)
	if err != nil {
		return nil, fmt.Errorf("list nftables ruleset in netns %d: %w", ino, err)
	}
	e := &nfEntry{rs: rs, addrs: addrInfo{local: map[netip.Addr]bool{}, bcast: map[netip.Addr]bool{}}, links: map[string]uint32{}}
	h, err := netlink.NewHandleAt(ns)
	if err == nil {
		defer h.Close()
		if links, err := h.LinkList(); err == nil {
			for _, l := range links {
				e.links[l.Attrs().Name] = uint32(l.Attrs().Index)
			}
		}
		if addrs, err := h.AddrList(nil, netlink.FAMILY_ALL); err == nil {
			for _, a := range addrs {
				ip, ok := netip.AddrFromSlice(a.IP)
				if !ok {
					continue
				}
				e.addrs.local[ip.Unmap()] = true
				if b, ok := netip.AddrFromSlice(a.Broadcast); ok && b.Unmap().Is4() && !b.Unmap().IsUnspecified() {
					e.addrs.bcast[b.Unmap()] = true
				}
				// The kernel adds the subnet's last address as a broadcast
				// route for IPv4 prefixes shorter than /31.
				if ones, bits := a.Mask.Size(); ip.Unmap().Is4() && bits == 32 && ones < 31 {
					e.addrs.bcast[lastAddrOf(netip.PrefixFrom(ip.Unmap(), ones))] = true
				}
			}
		}
	}
	return e, nil
}

func listRuleset(conn *nftables.Conn) (*ruleset, error) {
	rs := newRuleset()
	tables, err := conn.ListTables()
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		sets, err := conn.GetSets(t)
		if err != nil {
			return nil, fmt.Errorf("sets of table %s: %w", t.Name, err)
		}
		for _, s := range sets {
			elems, err := conn.GetSetElements(s)
			if err != nil {
				return nil, fmt.Errorf("elements of set %s: %w", s.Name, err)
			}
			rs.addSet(s, elems)
		}
	}
	chains, err := conn.ListChains()
	if err != nil {
		return nil, err
	}
	for _, c := range chains {
		rules, err := conn.GetRules(c.Table, c)
		if err != nil {
			return nil, fmt.Errorf("rules of chain %s: %w", c.Name, err)
		}
		rs.addChain(c, rules)
	}
	return rs, nil
}

// OpenNetns opens the network namespace with this inode: an `ip netns`
// bind mount under /run/netns, else /proc/<pid>/ns/net of a process in it.
// The caller closes the handle.
func OpenNetns(ino uint32) (netns.NsHandle, error) {
	return openNetnsIn("/run/netns", "/proc", ino)
}

func lastAddrOf(p netip.Prefix) netip.Addr {
	a, _ := netip.AddrFromSlice([]byte(lastAddr(p)))
	return a
}
