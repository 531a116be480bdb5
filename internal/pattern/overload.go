package pattern

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// OverloadContext tells whether a server-side resource on this node ran out
// when a connection failed without a drop record that says so: a listener's
// accept queue (a SYN meeting a full queue is consumed silently) or a
// namespace's conntrack table (its drops are NETFILTER_DROP like a rule's).
// hostctx.Overload implements it over sock_diag, /proc and ctnetlink.
//
// Unlike Facts, which are looked up after the ranking, these answers decide
// whether a pattern matches, so AcceptQueueFull and ConntrackTableFull ask at
// their decision points only (an overdue SYN retransmit, a SYN's
// NETFILTER_DROP), never per signal of the success path; the implementation
// caches and rate-limits its lookups.
type OverloadContext interface {
	// AcceptQueue finds the listener for dst in the network namespace on
	// this node that owns dst's address (the client's own for a loopback
	// address). ErrNotLocal: no namespace here owns it.
	AcceptQueue(client Netns, dst netip.AddrPort) (AcceptQueueFact, error)
	// Conntrack reads the conntrack table of a namespace.
	Conntrack(ns Netns) (ConntrackFact, error)
}

// ErrNotLocal: the destination is not an address of this node.
var ErrNotLocal = errors.New("address not owned by a network namespace on this node")

// AcceptQueueFact is a listener and its namespace's listen counters.
type AcceptQueueFact struct {
	At       time.Time
	Netns    Netns
	Listener ListenerFact
	// Process owning the listening socket ("pid 42 (nginx)"), "" if unknown.
	Process string
	// Somaxconn is net.core.somaxconn in that namespace (0: unknown).
	Somaxconn uint32
	// Overflows and Drops are TcpExtListenOverflows / TcpExtListenDrops of
	// the namespace now; Prev* the previous reading (PrevAt zero: none).
	Overflows, Drops         uint64
	PrevOverflows, PrevDrops uint64
	PrevAt                   time.Time
}

// Full reports the kernel's own test (sk_acceptq_is_full): more waiting
// connections than the backlog, so the next SYN is dropped.
func (f *AcceptQueueFact) Full() bool {
	return f.Listener.Backlog > f.Listener.MaxBacklog
}

// OverflowsRose is how much ListenOverflows grew since the previous reading.
func (f *AcceptQueueFact) OverflowsRose() uint64 {
	if f.PrevAt.IsZero() || f.Overflows < f.PrevOverflows {
		return 0
	}
	return f.Overflows - f.PrevOverflows
}

// counters renders the MIB counters and their growth for people.
func (f *AcceptQueueFact) counters() string {
	s := fmt.Sprintf("TcpExtListenOverflows %d, TcpExtListenDrops %d", f.Overflows, f.Drops)
	if !f.PrevAt.IsZero() {
		s += fmt.Sprintf(" (+%d and +%d in the %s before)", f.OverflowsRose(), sub(f.Drops, f.PrevDrops),
			roundAge(f.At.Sub(f.PrevAt)))
	} else {
		s += " (since the namespace was created)"
	}
	return s
}

// ConntrackFact is a namespace's conntrack table: entries (counted per
// namespace) against nf_conntrack_max (global on this kernel), and the
// statistics summed over CPUs.
type ConntrackFact struct {
	At                            time.Time
	Entries, Max                  uint32
	Drop, EarlyDrop, InsertFailed uint64
	// Prev* are the previous reading (PrevAt zero: none).
	PrevDrop, PrevEarlyDrop, PrevInsertFailed uint64
	PrevAt                                    time.Time
}

// Full: no room for a new entry (Max 0 means no limit).
func (f *ConntrackFact) Full() bool { return f.Max > 0 && f.Entries >= f.Max }

// DropsRose is how many packets conntrack dropped since the previous reading.
func (f *ConntrackFact) DropsRose() uint64 {
	if f.PrevAt.IsZero() {
		return 0
	}
	return sub(f.Drop, f.PrevDrop)
}

func (f *ConntrackFact) counters() string {
	s := fmt.Sprintf("%d/%d entries; counters drop %d, early_drop %d, insert_failed %d", f.Entries, f.Max,
		f.Drop, f.EarlyDrop, f.InsertFailed)
	if !f.PrevAt.IsZero() {
		s += fmt.Sprintf(" (+%d, +%d, +%d in the %s before)", f.DropsRose(), sub(f.EarlyDrop, f.PrevEarlyDrop),
			sub(f.InsertFailed, f.PrevInsertFailed), roundAge(f.At.Sub(f.PrevAt)))
	}
	return s
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}
