// Package correlate is the correlator: it keeps per-connection state over the
// signals from every netns on the node, asks the pattern library whether the
// accumulated evidence makes a diagnosis, ranks competing patterns and
// aggregates repeats of the same cause. It is pure: time comes from the
// signals and from Tick, so replayed recordings behave like live ones.
//
// State is keyed by the 5-tuple in canonical order, so the client socket's
// signals (RST received, SYN retransmits, close) and the packet-level evidence
// from other namespaces on the node (the server's drop of the SYN, its RST)
// meet in one place whichever arrives first. A pattern decides at a trigger
// signal, or asks to be asked again after Config.Grace (Defer), which Tick does.
//
// Aggregation: a diagnosis's Key is pattern/cause/destination ip:port/netns of
// the cause, never the client's ephemeral port. The first occurrence is
// emitted at once. Within Window of it, further connections with the same Key
// only increment Count and LastSeen (and add evidence up to MaxEvidence);
// later signals of a connection already diagnosed (SYN retries, the final
// timeout) add evidence without counting as a new occurrence. When the window
// closes (Tick), the aggregate is emitted once more if it changed. If one of
// its connections still fails after that (a SYN retried for ~135 s), a new
// window opens for the cause without an immediate emission; it is reported
// the same way when it closes, FirstSeen and Count carrying on, so each cause
// is emitted at most once per window. Each record's New is how many
// occurrences it adds to the cause's previous record, so a sum of New over
// the records counts every occurrence once. A full evidence list keeps its
// first entries and rotates the latest few (the final close stays visible).
//
// Memory is bounded by MaxFlows connections (oldest packet-only evidence
// evicted first, then the least recently active connection) and MaxFlows open
// aggregates; Stats counts what was evicted.
package correlate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// NetnsNamer names network namespaces in diagnoses (the host context provider).
type NetnsNamer = pattern.NetnsNamer

// HostContext answers questions about one network namespace's own state
// (hostctx.Netlink through an adapter). ns is the namespace's inode.
type HostContext interface {
	Neighbor(ns uint32, ip netip.Addr) (pattern.NeighborFact, error)
	Route(ns uint32, dst netip.Addr) (pattern.RouteFact, error)
	Listeners(ns uint32, port uint16) ([]pattern.ListenerFact, error)
}

// RuleAttributor finds the netfilter rule that dropped a packet
// (hostctx.Netfilter through an adapter).
type RuleAttributor interface {
	Attribute(drop *signal.Signal) (*pattern.RuleFact, error)
}

// Config of the engine. SYNTimeout, Window and MaxFlows are required; the
// other fields take their defaults when zero.
type Config struct {
	// SYNTimeout: connect age from which unanswered SYNs are diagnosed.
	SYNTimeout time.Duration
	// Window: repeats of a cause within Window of its first emission are
	// aggregated; packet evidence (drops, resets) is kept this long.
	Window time.Duration
	// MaxFlows bounds the connections tracked (and the open aggregates);
	// the oldest is evicted beyond it.
	MaxFlows int

	// Grace: how long a pattern that deferred (a RST without the close) waits
	// before it is asked again on a Tick. Default 200ms.
	Grace time.Duration
	// FlowTTL: idle time after which a connecting socket's state is dropped.
	// Default 150s, longer than the kernel's ~135s SYN retry span.
	FlowTTL time.Duration
	// MaxEvidence bounds the evidence list of an aggregate. Default 16.
	MaxEvidence int
	// NetnsNamer may be nil: namespaces then print as "netns:<inode>".
	NetnsNamer NetnsNamer
	// ARPTimeout: how long after its connect started a connection whose
	// packets wait for neighbour resolution (SYN retransmits failing with
	// EBUSY) is held for the kernel's verdict on the neighbour (the entry
	// going FAILED, at ~3 s with default sysctls: mcast_solicit 3 x
	// retrans_time 1 s), so arp_failure names it rather than syn_dropped
	// diagnosing a queued SYN. Past it, SYNs still queued are diagnosed as
	// arp_failure without the kernel's verdict; if nothing shows them still
	// waiting (resolution may have succeeded) the other patterns decide.
	// Default 4s: the kernel's 3 s and a second for its verdict to arrive.
	ARPTimeout time.Duration
	// MinRetransmits: consecutive retransmission timeouts of an established
	// connection before blackhole or half_open is diagnosed (see
	// pattern.DefaultMinRetransmits); 0 = that default.
	MinRetransmits int
	// Host and Rules may be nil (no host context). They are asked only
	// when a new diagnosis is built, never per signal (see pattern.Need).
	Host  HostContext
	Rules RuleAttributor
	// Cluster may be nil (no Kubernetes context). Its policy verdict is
	// asked once per failing connection, identities once per diagnosis.
	Cluster pattern.Cluster
	// LifecycleWait: with a Cluster that knows pods' lifecycle
	// (pattern.PodLifecycle), how long after a reset by a pod's kernel
	// (what an application's abort also looks like) the connection waits
	// for the cluster to report that pod's container stopped, which makes
	// it peer_lost_state/container_terminated. The kubelet reports it 1-2 s
	// after the container died. Default 5s.
	LifecycleWait time.Duration
	// LifecycleTolerance: how far from the reset that termination
	// (finishedAt, one-second resolution) may be. Default 2s.
	LifecycleTolerance time.Duration
	// Patterns overrides the library (tests); nil = the library with the
	// settings above (SYNTimeout, ARPTimeout, MinRetransmits).
	Patterns []pattern.Pattern
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{SYNTimeout: time.Second, Window: 30 * time.Second, MaxFlows: 16384}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	var errs []error
	req := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be > 0, got %v", name, d))
		}
	}
	opt := func(name string, d time.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must be >= 0 (0 = default), got %v", name, d))
		}
	}
	req("syn_timeout", c.SYNTimeout)
	req("window", c.Window)
	if c.MaxFlows <= 0 {
		errs = append(errs, fmt.Errorf("max_flows must be > 0, got %d", c.MaxFlows))
	}
	opt("grace", c.Grace)
	opt("flow_ttl", c.FlowTTL)
	opt("arp_timeout", c.ARPTimeout)
	opt("lifecycle_wait", c.LifecycleWait)
	opt("lifecycle_tolerance", c.LifecycleTolerance)
	if c.MinRetransmits < 0 {
		errs = append(errs, fmt.Errorf("min_retransmits must be >= 0 (0 = default), got %d", c.MinRetransmits))
	}
	if c.MaxEvidence < 0 {
		errs = append(errs, fmt.Errorf("max_evidence must be >= 0 (0 = default), got %d", c.MaxEvidence))
	}
	if len(c.Patterns) > maxPatterns {
		errs = append(errs, fmt.Errorf("patterns: at most %d, got %d", maxPatterns, len(c.Patterns)))
	}
	for i, p := range c.Patterns {
		if p == nil {
			errs = append(errs, fmt.Errorf("patterns[%d] is nil", i))
		}
	}
	return errors.Join(errs...)
}

// Stats are the engine's counters.
type Stats struct {
	Signals uint64 // observed
	Ignored uint64 // wanted by no pattern and no state for the connection (noise)
	// Diagnoses handed to emit: first occurrences plus aggregate updates.
	Diagnoses        uint64
	AggregateUpdates uint64 // of Diagnoses, re-emitted aggregates
	Aggregated       uint64 // repeats of a cause counted into an open aggregate, not emitted
	FollowUps        uint64 // later signals of an already diagnosed connection (e.g. SYN retries)
	FlowsTracked     int    // connections held now
	OpenAggregates   int    // aggregates held now
	Evicted          uint64 // connections dropped because MaxFlows was reached
	Expired          uint64 // connections dropped after idling
	// AggregatesEvicted: aggregates closed early because MaxFlows of them were open.
	AggregatesEvicted uint64
	// AggregatesReopened: windows started again by a connection still failing
	// after its cause's window closed (e.g. SYN retries beyond Window).
	AggregatesReopened uint64
	// Invalid: diagnoses a pattern built that failed Validate (a bug; not emitted).
	Invalid     uint64
	LastInvalid string
	// PolicyChecks: NetworkPolicy attributions asked of the cluster context
	// (at most one per failing connection).
	PolicyChecks uint64
}

const (
	maxPatterns = 16
	maxSock     = 3 // socket signals kept per connection
	maxPkt      = 4 // drops / sent resets kept per connection
	// A connection is rarely diagnosed by more than two patterns; beyond
	// that, later signals of the extra ones are not folded (still counted).
	maxDiagRefs = 2
	// Neighbour failures kept for matching connections (within Window), and
	// how many one connection's evidence shows.
	maxNeighs  = 64
	maxNeighEv = 4
)

// connKey is the 5-tuple in a canonical order, so both directions (and the
// client's and server's netns) find the same state. Addresses are stored as
// 16 bytes (IPv4 as v4-mapped): no pointers, so the map is cheap to hash and
// the GC need not scan it. NAT is not undone here.
type connKey struct {
	a, b   [16]byte
	ap, bp uint16
	proto  uint8
	// spare fills what would be padding (always zero): a key without
	// padding is hashed and compared as one block of memory, not field by
	// field.
	spare [3]uint8
	// ns is set only for a neighbour failure's pseudo-connection (see
	// observeNeigh): one per address and namespace.
	ns uint64
}

func keyOf(f signal.Flow) connKey {
	src, dst := f.Src.As16(), f.Dst.As16()
	sp, dp := f.SrcPort, f.DstPort
	// Big-endian words order as the bytes do (bytes.Compare), without a call.
	be := binary.BigEndian
	s0, d0 := be.Uint64(src[:8]), be.Uint64(dst[:8])
	s1, d1 := be.Uint64(src[8:]), be.Uint64(dst[8:])
	if s0 > d0 || s0 == d0 && (s1 > d1 || s1 == d1 && sp > dp) {
		src, dst, sp, dp = dst, src, dp, sp
	}
	return connKey{a: src, b: dst, ap: sp, bp: dp, proto: f.Proto}
}

// equal is k == *o, word by word: the == operator on the struct calls
// memequal, a fifth of a lookup's cost.
func (k *connKey) equal(o *connKey) bool {
	le := binary.LittleEndian
	return le.Uint64(k.a[:8]) == le.Uint64(o.a[:8]) && le.Uint64(k.a[8:]) == le.Uint64(o.a[8:]) &&
		le.Uint64(k.b[:8]) == le.Uint64(o.b[:8]) && le.Uint64(k.b[8:]) == le.Uint64(o.b[8:]) &&
		k.ap == o.ap && k.bp == o.bp && k.proto == o.proto && k.spare == o.spare && k.ns == o.ns
}

// aggKey: pattern + cause + destination + the netns of the cause. The
// client's ephemeral port is not part of it, so a hundred refused connects
// to one port are one diagnosis.
type aggKey struct {
	pattern diagnosis.Pattern
	cause   string
	dst     netip.AddrPort
	where   uint64
}

func (k aggKey) String() string {
	return fmt.Sprintf("%s/%s/%s/netns:%d", k.pattern, k.cause, k.dst, k.where)
}

// diagRef ties a connection to the aggregate its diagnosis went into, so its
// later signals find it (or its successor) after the window closed.
type diagRef struct {
	idx uint8
	agg *aggregate
}

// flowState is one connection. Hot fields first: most signals touch only
// the header's cache lines.
type flowState struct {
	key        connKey
	flow       signal.Flow
	last       time.Time
	list       *flowList
	prev, next *flowState
	client     pattern.Netns
	oriented   bool
	pending    bool
	neigh      bool // a neighbour failure's pseudo-connection
	// closed: its last signal came while a pattern waited for outside
	// evidence (a Defer with Until and no verdict): kept until decided.
	closed bool
	nsock  uint8
	npkt   uint8
	nrefs  uint8
	// diagnosed: bit i set once pattern i diagnosed this connection; refs
	// hold the aggregation keys of the first maxDiagRefs of them.
	diagnosed uint16
	// wanted: bit i set once pattern i (of those gated on evidence, see
	// pattern.Gate) wanted one of this connection's signals.
	wanted     uint16
	gen        uint64
	pendingDue time.Time
	// pendingWait: the latest Until of a Defer without a verdict (a wait
	// for outside evidence) at the last evaluation.
	pendingWait time.Time
	refs        [maxDiagRefs]diagRef

	// tuple is the 5-tuple in key order; kept signals store only their
	// direction relative to it.
	tuple signal.Flow
	// hash of key, and the next connection whose key has the same hash.
	hash  uint64
	hnext *flowState
	// syn: the SYN retransmits, nil until one is seen (most connections
	// never retransmit a SYN: kept apart, recycled).
	syn *synRetr
	// pol caches the NetworkPolicy attribution (see policyOf).
	pol *policyCache
	// The kept socket and packet signals (nsock, npkt of them): the first
	// of each here, the others in more, which only a connection that kept
	// a second one gets (most keep one: teardown noise, a storm's drops).
	sock0, pkt0 rec
	more        *moreRecs
}

// moreRecs holds a connection's kept signals after the first of each kind.
type moreRecs struct {
	sock [maxSock - 1]rec
	pkt  [maxPkt - 1]rec
}

// sockRec and pktRec are the i-th kept socket and packet signal (i below
// nsock, npkt).
func (f *flowState) sockRec(i int) *rec {
	if i == 0 {
		return &f.sock0
	}
	return &f.more.sock[i-1]
}

func (f *flowState) pktRec(i int) *rec {
	if i == 0 {
		return &f.pkt0
	}
	return &f.more.pkt[i-1]
}

// synRetr summarises a connection's SYN retransmits: counted, with the
// first and the latest kept.
type synRetr struct {
	count, eperm, ebusy int
	first, last         rec
}

// flowList is an intrusive LRU list: front = most recently touched.
type flowList struct {
	head, tail *flowState
	n          int
	ttl        time.Duration
}

func (l *flowList) pushFront(f *flowState) {
	f.list, f.prev, f.next = l, nil, l.head
	if l.head != nil {
		l.head.prev = f
	} else {
		l.tail = f
	}
	l.head = f
	l.n++
}

func (l *flowList) remove(f *flowState) {
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		l.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		l.tail = f.prev
	}
	f.list, f.prev, f.next = nil, nil, nil
	l.n--
}

type aggregate struct {
	key       aggKey
	d         diagnosis.Diagnosis
	windowEnd time.Time
	emitted   int // Count when last emitted (New of the next record is Count - emitted)
	changed   bool
	followUps int
	omitted   int
	closed    bool
	// latest fact beyond MaxEvidence, rendered at emission (see addEvidence)
	latest      signal.Signal
	latestStart time.Time
	hasLatest   bool
}

type neighEntry struct {
	s       signal.Signal
	claimed bool
}

type pendingRef struct {
	f   *flowState
	gen uint64
}

type match struct {
	idx int
	v   pattern.Verdict
}

// Engine correlates signals into diagnoses. Observe and Tick must be called
// from one goroutine; emit is called synchronously from them.
type Engine struct {
	cfg      Config
	patterns []pattern.Pattern
	emit     func(diagnosis.Diagnosis)
	// ask[k]: the patterns that may decide at a trigger of kind k (bit i =
	// pattern i; kinds beyond 63 share the last entry, which asks all);
	// evidenced: the patterns asked only once they wanted a signal of the
	// connection (flowState.wanted). From the patterns' gates, at New.
	ask       [65]uint16
	all       uint16
	evidenced uint16
	// decided: the patterns whose gate also says at which triggers of
	// those kinds they decide (decides[i]).
	decided uint16
	decides [maxPatterns]func(*signal.Signal) bool
	// wantKinds[k]: the patterns whose Wants may accept a signal of kind k.
	wantKinds [65]uint16

	// flows holds every connection under hash(key); keys whose hashes
	// collide chain through flowState.hnext. An 8-byte key keeps the table
	// small enough to stay in cache, where a map keyed by the 48-byte
	// connKey missed it on most lookups (the engine's largest cost).
	flows  map[uint64]*flowState
	nflows int
	seed   uint64
	// conns: connections with a socket signal (long TTL); packets: only
	// drops/resets seen (TTL Window, evicted first).
	conns, packets flowList
	free           []*flowState
	freeSyn        []*synRetr
	freeMore       []*moreRecs
	// last: the connection of the latest signal, if still held: a
	// connection's signals often come in a burst (a refused connect's four
	// within 100 us), so its map lookup is often skipped.
	last *flowState
	gen  uint64

	aggs   map[aggKey]*aggregate
	aggQ   []*aggregate // in window-end order (windows have one length)
	aggQHd int

	pending []pendingRef

	// neighs: recent neighbour failures (a ring), for connections that
	// failed behind them; claimed once a connection's diagnosis named one.
	neighs   [maxNeighs]neighEntry
	neighN   int
	neighHd  int
	neighBuf [maxNeighEv]signal.Signal
	neighIdx [maxNeighEv]int

	ev      pattern.Evidence
	sockBuf [maxSock]signal.Signal
	pktBuf  [maxPkt]signal.Signal
	retr    pattern.Retransmits
	trigger signal.Signal
	matches [maxPatterns]match
	stats   Stats
	pc      policyOf
}

// New validates cfg and returns an engine that hands diagnoses to emit.
func New(cfg Config, emit func(diagnosis.Diagnosis)) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("correlator config: %w", err)
	}
	if emit == nil {
		return nil, errors.New("correlator: emit func is nil")
	}
	if cfg.Grace == 0 {
		cfg.Grace = 200 * time.Millisecond
	}
	if cfg.FlowTTL == 0 {
		cfg.FlowTTL = 150 * time.Second
	}
	if cfg.MaxEvidence == 0 {
		cfg.MaxEvidence = 16
	}
	if cfg.ARPTimeout == 0 {
		cfg.ARPTimeout = 4 * time.Second
	}
	ps := cfg.Patterns
	if ps == nil {
		ps = pattern.Library(cfg.libraryOptions())
	}
	e := &Engine{
		cfg:      cfg,
		patterns: ps,
		emit:     emit,
		flows:    make(map[uint64]*flowState),
		seed:     rand.Uint64() | 1,
		aggs:     make(map[aggKey]*aggregate),
	}
	e.gates()
	e.conns.ttl = cfg.FlowTTL
	e.packets.ttl = cfg.Window
	e.ev.Namer = cfg.NetnsNamer
	if cfg.Cluster != nil {
		e.pc.e = e
		e.ev.Policy = &e.pc
		e.ev.Cluster = cfg.Cluster
	}
	return e, nil
}

// gates fills the masks from the patterns' gates (pattern.Gate); a pattern
// without one is asked at every signal.
func (e *Engine) gates() {
	for i, p := range e.patterns {
		bit := uint16(1) << i
		var g pattern.Gate
		if gp, ok := p.(pattern.Gated); ok {
			g = gp.Gate()
		}
		for k := range e.wantKinds {
			if g.Wanted == 0 || k == len(e.wantKinds)-1 || g.Wanted.Has(signal.Kind(k)) {
				e.wantKinds[k] |= bit
			}
		}
		if g.Policy && e.cfg.Cluster == nil {
			continue // never matches without the cluster's policy verdict
		}
		e.all |= bit
		if g.Decides != nil {
			e.decided |= bit
			e.decides[i] = g.Decides
		}
		for k := range e.ask {
			if g.Triggers == 0 || k == len(e.ask)-1 || g.Triggers.Has(signal.Kind(k)) {
				e.ask[k] |= bit
			}
		}
		if g.Evidenced {
			e.evidenced |= bit
		}
	}
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	s := e.stats
	s.FlowsTracked = e.nflows
	s.OpenAggregates = len(e.aggs)
	return s
}

// socketSide: signals that come from the connection's own socket.
func socketSide(k signal.Kind) bool {
	return k == signal.KindStateChange || k == signal.KindRetransmit || k == signal.KindResetReceived
}

// Observe feeds one signal.
func (e *Engine) Observe(s signal.Signal) {
	e.stats.Signals++
	// Work on the engine's copy: a pointer to the argument would make every
	// signal escape to the heap through the pattern interface.
	e.trigger = s
	t := &e.trigger
	if t.Kind == signal.KindNeighFailed {
		e.observeNeigh(t)
		return
	}
	k := keyOf(t.Flow)
	f := e.last
	if f == nil || !f.key.equal(&k) {
		var h uint64
		if f, h = e.lookup(&k); f == nil {
			if !e.wanted(t) {
				e.stats.Ignored++
				return
			}
			f = e.newFlow(k, h, t)
		}
	}
	e.last = f
	e.record(f, t)
	e.evaluate(f, t, t.Time)
	// The client socket left SYN_SENT or closed, or connect() returned an
	// error: this connection is decided, unless a pattern waits for the
	// cluster's word on it (its Until bounds the wait; Tick decides).
	if t.Kind == signal.KindStateChange && t.Flow == f.flow &&
		(t.OldState == signal.StateSynSent || t.State == signal.StateClose) ||
		t.Kind == signal.KindConnectError {
		if f.pending && f.pendingWait.After(t.Time) {
			f.closed = true
		} else {
			e.removeFlow(f)
		}
	} else if f.closed && !f.pending {
		e.removeFlow(f) // kept past its last signal, now decided
	}
}

// observeNeigh keeps a neighbour failure for the connections that failed
// behind it, and asks the patterns about it on its own, as a
// pseudo-connection of the address and namespace (a failure no connection
// signal explains: UDP, ICMP, a gateway).
func (e *Engine) observeNeigh(t *signal.Signal) {
	if !t.NeighAddr.IsValid() {
		e.stats.Ignored++
		return
	}
	i := (e.neighHd + e.neighN) % maxNeighs
	if e.neighN == maxNeighs {
		e.neighHd = (e.neighHd + 1) % maxNeighs
	} else {
		e.neighN++
	}
	e.neighs[i] = neighEntry{s: *t}
	t.Flow = signal.Flow{Dst: t.NeighAddr}
	if !e.wanted(t) {
		e.stats.Ignored++
		return
	}
	k := keyOf(t.Flow)
	k.ns = t.NetnsCookie
	if k.ns == 0 {
		k.ns = uint64(t.NetnsInode)
	}
	f, h := e.lookup(&k)
	if f == nil {
		f = e.newFlow(k, h, t)
		f.neigh = true
	}
	e.record(f, t)
	e.evaluate(f, t, t.Time)
	if !f.pending {
		e.removeFlow(f)
	}
}

// neighFor reports whether neighbour entry x concerns connection f: it
// failed within Window in a namespace of the connection's signals.
func (e *Engine) neighFor(f *flowState, x *signal.Signal, now time.Time) bool {
	// The namespace first: it is cheaper than the times, and most entries
	// of a busy node fail it.
	return e.neighNetns(f, pattern.NetnsOf(x)) && now.Sub(x.Time) <= e.cfg.Window && x.Time.Sub(now) <= e.cfg.Window
}

func (e *Engine) neighNetns(f *flowState, ns pattern.Netns) bool {
	if f.neigh {
		return ns.Cookie == f.key.ns || ns.Cookie == 0 && uint64(ns.Inode) == f.key.ns
	}
	if f.client.Known() && ns.SameAs(f.client) {
		return true
	}
	for i := range int(f.npkt) {
		if r := f.pktRec(i); ns.SameAs(pattern.Netns{Cookie: r.cookie, Inode: r.inode}) {
			return true
		}
	}
	return false
}

// fillNeigh puts the neighbour failures concerning f into the evidence,
// the entry of the connection's destination first.
func (e *Engine) fillNeigh(f *flowState, now time.Time) []signal.Signal {
	if e.neighN == 0 {
		return nil
	}
	// One pass, newest first: up to maxNeighEv entries of the destination
	// and as many others, then the destination's first.
	var dst, other [maxNeighEv]int
	nd, no := 0, 0
	for j := e.neighN - 1; j >= 0 && nd < maxNeighEv; j-- {
		i := (e.neighHd + j) % maxNeighs
		x := &e.neighs[i].s
		isDst := x.NeighAddr == f.flow.Dst
		if !isDst && no == maxNeighEv || !e.neighFor(f, x, now) {
			continue
		}
		if isDst {
			dst[nd] = i
			nd++
		} else {
			other[no] = i
			no++
		}
	}
	n := 0
	for _, i := range dst[:nd] {
		e.neighBuf[n], e.neighIdx[n] = e.neighs[i].s, i
		n++
	}
	for _, i := range other[:min(no, maxNeighEv-n)] {
		e.neighBuf[n], e.neighIdx[n] = e.neighs[i].s, i
		n++
	}
	return e.neighBuf[:n]
}

// kindIdx is k's entry in the engine's per-kind masks.
func kindIdx(k signal.Kind) int { return min(int(k), 64) }

func (e *Engine) wanted(s *signal.Signal) bool {
	for m := e.wantKinds[kindIdx(s.Kind)]; m != 0; m &= m - 1 {
		if wants(e.patterns[bits.TrailingZeros16(m)], s) {
			return true
		}
	}
	return false
}

// wants calls the library's own patterns directly (see evaluate).
func wants(p pattern.Pattern, s *signal.Signal) bool {
	switch p := p.(type) {
	case pattern.ConnectionRefused:
		return p.Wants(s)
	case pattern.SYNDropped:
		return p.Wants(s)
	case pattern.ARPFailure:
		return p.Wants(s)
	case pattern.ICMPError:
		return p.Wants(s)
	case pattern.RouteFailure:
		return p.Wants(s)
	case pattern.ListenOverflow:
		return p.Wants(s)
	case pattern.Blackhole:
		return p.Wants(s)
	case pattern.HalfOpen:
		return p.Wants(s)
	case pattern.PeerLostState:
		return p.Wants(s)
	case pattern.NetworkPolicyBlock:
		return p.Wants(s)
	}
	return p.Wants(s)
}

// hash mixes the key's six words with the engine's random seed (so that
// crafted tuples cannot aim at one chain); the map hashes the result again.
func (e *Engine) hash(k *connKey) uint64 {
	le := binary.LittleEndian
	h := mix(le.Uint64(k.a[:8])^e.seed, le.Uint64(k.a[8:])^0xa0761d6478bd642f)
	h = mix(h^le.Uint64(k.b[:8]), le.Uint64(k.b[8:])^0xe7037ed1a0b428db)
	ports := uint64(k.ap) | uint64(k.bp)<<16 | uint64(k.proto)<<32
	return mix(h^ports, k.ns^0x8ebc6af09c88c6e3)
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// lookup returns the connection held under k (nil if none) and k's hash.
func (e *Engine) lookup(k *connKey) (*flowState, uint64) {
	h := e.hash(k)
	f := e.flows[h]
	for f != nil && !f.key.equal(k) {
		f = f.hnext
	}
	return f, h
}

func (e *Engine) newFlow(k connKey, h uint64, s *signal.Signal) *flowState {
	if e.nflows >= e.cfg.MaxFlows {
		victim := e.packets.tail
		if victim == nil {
			victim = e.conns.tail
		}
		if victim != nil {
			e.stats.Evicted++
			if victim.pending {
				// Decide a deferred connection rather than lose it.
				e.evaluate(victim, nil, victim.pendingDue)
			}
			e.removeFlow(victim)
		}
	}
	var f *flowState
	if n := len(e.free); n > 0 {
		f = e.free[n-1]
		e.free = e.free[:n-1]
	} else {
		f = new(flowState)
	}
	e.gen++
	f.key, f.flow, f.gen, f.last = k, s.Flow, e.gen, s.Time
	f.pol = nil
	f.tuple = s.Flow
	if !inKeyOrder(s.Flow, &k) {
		f.tuple = s.Flow.Reverse()
	}
	f.hash, f.hnext = h, e.flows[h]
	e.flows[h] = f
	e.nflows++
	e.packets.pushFront(f)
	return f
}

func (e *Engine) removeFlow(f *flowState) {
	// Every held state is in flows under its hash (newFlow), and a state
	// is removed once.
	switch head := e.flows[f.hash]; {
	case head == f && f.hnext == nil:
		delete(e.flows, f.hash)
	case head == f:
		e.flows[f.hash] = f.hnext
	default:
		for p := head; p != nil; p = p.hnext {
			if p.hnext == f {
				p.hnext = f.hnext
				break
			}
		}
	}
	f.hnext = nil
	e.nflows--
	if e.last == f {
		e.last = nil
	}
	if f.list != nil {
		f.list.remove(f)
	}
	// Zero what was used: drops the strings held by kept signals, and the
	// generation, so stale pending references to a recycled state are
	// recognised. The rest is already zero.
	if f.nsock > 0 {
		f.sock0 = rec{}
	}
	if f.npkt > 0 {
		f.pkt0 = rec{}
	}
	if m := f.more; m != nil {
		clear(m.sock[:max(int(f.nsock)-1, 0)])
		clear(m.pkt[:max(int(f.npkt)-1, 0)])
		e.freeMore = append(e.freeMore, m)
		f.more = nil
	}
	if f.syn != nil {
		*f.syn = synRetr{}
		e.freeSyn = append(e.freeSyn, f.syn)
		f.syn = nil
	}
	f.tuple = signal.Flow{}
	f.key, f.flow, f.last, f.client = connKey{}, signal.Flow{}, time.Time{}, pattern.Netns{}
	f.oriented, f.pending, f.nsock, f.npkt, f.nrefs, f.diagnosed, f.wanted, f.gen = false, false, 0, 0, 0, 0, 0, 0
	f.neigh, f.closed = false, false
	f.pendingWait = time.Time{}
	f.pendingDue, f.refs = time.Time{}, [maxDiagRefs]diagRef{} // drops the aggregate pointers
	e.free = append(e.free, f)
}

// keep stores r as one of f's kept socket (or packet) signals: the first
// maxSock-1 (maxPkt-1) are kept, the last slot holds the latest.
func (e *Engine) keep(f *flowState, packet bool, r *rec) {
	n, most := &f.nsock, maxSock
	if packet {
		n, most = &f.npkt, maxPkt
	}
	i := int(*n)
	if i < most {
		*n++
	} else {
		i = most - 1
	}
	if i > 0 && f.more == nil {
		if k := len(e.freeMore); k > 0 {
			f.more = e.freeMore[k-1]
			e.freeMore = e.freeMore[:k-1]
		} else {
			f.more = new(moreRecs)
		}
	}
	if packet {
		*f.pktRec(i) = *r
	} else {
		*f.sockRec(i) = *r
	}
}

func (e *Engine) record(f *flowState, s *signal.Signal) {
	if s.Time.After(f.last) {
		f.last = s.Time
	}
	for m := e.evidenced &^ f.wanted & e.wantKinds[kindIdx(s.Kind)]; m != 0; m &= m - 1 {
		if i := bits.TrailingZeros16(m); wants(e.patterns[i], s) {
			f.wanted |= 1 << i
		}
	}
	r := pack(s, &f.key)
	switch {
	case s.Kind == signal.KindRetransmit && s.State == signal.StateSynSent:
		sr := f.syn
		if sr == nil {
			if n := len(e.freeSyn); n > 0 {
				sr = e.freeSyn[n-1]
				e.freeSyn = e.freeSyn[:n-1]
			} else {
				sr = new(synRetr)
			}
			f.syn = sr
			sr.first = r
		}
		sr.last = r
		sr.count++
		switch s.Err {
		case -pattern.EPERM:
			sr.eperm++
		case -pattern.EBUSY:
			sr.ebusy++
		}
	case socketSide(s.Kind):
		e.keep(f, false, &r)
	default:
		e.keep(f, true, &r)
	}
	// SYN_SENT signals come from the client socket: they fix the orientation
	// and the client's netns. A SYN's own direction is client -> server too.
	clientSock := (s.Kind == signal.KindRetransmit && s.State == signal.StateSynSent) ||
		(s.Kind == signal.KindResetReceived && s.State == signal.StateSynSent) ||
		(s.Kind == signal.KindStateChange && (s.OldState == signal.StateSynSent || s.State == signal.StateSynSent))
	switch {
	case clientSock:
		f.flow, f.oriented = s.Flow, true
		f.client = pattern.NetnsOf(s)
	case !f.oriented && s.Kind == signal.KindDrop && pattern.IsSYN(s.TCPFlags):
		f.flow, f.oriented = s.Flow, true
	}
	// Move to the long-lived list once the connection's socket is seen.
	target := &e.packets
	if f.oriented && f.client.Known() || socketSide(s.Kind) || f.list == &e.conns {
		target = &e.conns
	}
	if f.list != nil {
		f.list.remove(f)
	}
	target.pushFront(f)
}

func (e *Engine) fillEvidence(f *flowState, trigger *signal.Signal, now time.Time) *pattern.Evidence {
	ev := &e.ev
	ev.Flow, ev.Oriented, ev.Client = f.flow, f.oriented, f.client
	ev.Now, ev.Trigger = now, trigger
	// Patterns read full signals: rebuild the kept ones in scratch space.
	for i := range int(f.nsock) {
		f.sockRec(i).unpack(f.tuple, &e.sockBuf[i])
	}
	for i := range int(f.npkt) {
		f.pktRec(i).unpack(f.tuple, &e.pktBuf[i])
	}
	ev.Socket = e.sockBuf[:f.nsock]
	ev.Packet = e.pktBuf[:f.npkt]
	r := &e.retr
	if sr := f.syn; sr != nil {
		r.Count, r.EPERM, r.EBUSY = sr.count, sr.eperm, sr.ebusy
		sr.first.unpack(f.tuple, &r.First)
		sr.last.unpack(f.tuple, &r.Last)
	} else if r.Count, r.EPERM, r.EBUSY = 0, 0, 0; r.First.Kind != 0 {
		r.First, r.Last = signal.Signal{}, signal.Signal{} // no stale retransmits
	}
	ev.SynRetrans = r
	ev.Neigh = e.fillNeigh(f, now)
	e.pc.f = f
	return ev
}

func (e *Engine) evaluate(f *flowState, trigger *signal.Signal, now time.Time) {
	// Only the patterns whose gate lets them decide here are asked; with
	// none, nothing can change.
	asked := e.all
	if trigger != nil {
		asked = e.ask[kindIdx(trigger.Kind)]
	}
	asked &= ^e.evidenced | f.wanted
	if trigger != nil {
		for m := asked & e.decided; m != 0; m &= m - 1 {
			if i := bits.TrailingZeros16(m); !e.decides[i](trigger) {
				asked &^= 1 << i
			}
		}
	}
	if asked == 0 {
		return
	}
	ev := e.fillEvidence(f, trigger, now)
	n := 0
	deferred := false
	var wait time.Time       // the latest bounded wait for outside evidence
	var hold pattern.Verdict // the strongest Defer that says what it expects
	for m := asked; m != 0; m &= m - 1 {
		i := bits.TrailingZeros16(m)
		p := e.patterns[i]
		ev.Diagnosed = f.diagnosed&(1<<i) != 0
		// The library's own patterns are called directly, not through the
		// interface: ten indirect calls per signal, each copying the large
		// Verdict result once more through the method wrapper, were the
		// engine's largest cost. Any other Pattern takes the default.
		var v pattern.Verdict
		var out pattern.Outcome
		switch p := p.(type) {
		case pattern.ConnectionRefused:
			v, out = p.Match(ev)
		case pattern.SYNDropped:
			v, out = p.Match(ev)
		case pattern.ARPFailure:
			v, out = p.Match(ev)
		case pattern.ICMPError:
			v, out = p.Match(ev)
		case pattern.RouteFailure:
			v, out = p.Match(ev)
		case pattern.ListenOverflow:
			v, out = p.Match(ev)
		case pattern.Blackhole:
			v, out = p.Match(ev)
		case pattern.HalfOpen:
			v, out = p.Match(ev)
		case pattern.PeerLostState:
			v, out = p.Match(ev)
		case pattern.NetworkPolicyBlock:
			v, out = p.Match(ev)
		default:
			v, out = p.Match(ev)
		}
		switch out {
		case pattern.Match:
			e.matches[n] = match{idx: i, v: v}
			n++
		case pattern.Defer:
			deferred = true
			if v.Confidence == 0 && v.Until.After(wait) {
				wait = v.Until
			}
			if v.Confidence > 0 && v.Until.After(now) && (hold.Confidence == 0 || better(v, hold)) {
				hold = v
			}
		}
	}
	best := 0
	for i := 1; i < n; i++ {
		if e.outranks(f, e.matches[i], e.matches[best]) {
			best = i
		}
	}
	// A pattern waiting for evidence that would make it win holds the
	// decision (until its Until): lesser matches must not be emitted first.
	// Never on the connection's last signal: its state goes right after.
	holding := hold.Confidence > 0 && !deciding(f, trigger) && (n == 0 || better(hold, e.matches[best].v) &&
		f.diagnosed&(1<<e.matches[best].idx) == 0)
	f.pendingWait = wait
	switch {
	case n > 0 && !holding:
		f.pending = false
	case deferred || holding:
		due := now.Add(e.cfg.Grace)
		if holding && hold.Until.After(due) {
			due = hold.Until
		}
		if f.pending {
			if holding && due.After(f.pendingDue) {
				f.pendingDue = due
			}
			break
		}
		f.pending, f.pendingDue = true, due
		if len(e.pending) >= 2*e.cfg.MaxFlows {
			e.compactPending() // bounded even if Tick is late: live ones <= MaxFlows
		}
		e.pending = append(e.pending, pendingRef{f, f.gen})
	}
	if n == 0 || holding {
		return
	}
	e.apply(f, ev, e.matches[best], e.matches[:n], best)
}

// deciding reports the connection's last signal (see Observe).
func deciding(f *flowState, t *signal.Signal) bool {
	return t != nil && (t.Kind == signal.KindConnectError || t.Kind == signal.KindStateChange && t.Flow == f.flow &&
		(t.OldState == signal.StateSynSent || t.State == signal.StateClose))
}

// outranks ranks two matches on one connection. A pattern that already
// diagnosed the connection keeps it (later signals are follow-ups of the
// same failure, never a second report) unless the other names a more
// specific cause; otherwise better decides.
func (e *Engine) outranks(f *flowState, a, b match) bool {
	ad, bd := f.diagnosed&(1<<a.idx) != 0, f.diagnosed&(1<<b.idx) != 0
	switch {
	case ad && !bd:
		return a.v.Specificity >= b.v.Specificity
	case bd && !ad:
		return a.v.Specificity > b.v.Specificity
	}
	return better(a.v, b.v)
}

// better ranks verdicts: confidence first, then specificity; a tie keeps the
// earlier pattern in the library order.
func better(a, b pattern.Verdict) bool {
	if a.Confidence != b.Confidence {
		return a.Confidence > b.Confidence
	}
	return a.Specificity > b.Specificity
}

func (e *Engine) apply(f *flowState, ev *pattern.Evidence, m match, all []match, best int) {
	p := e.patterns[m.idx]
	at := f.last // on a Tick: the connection's latest signal, not the tick
	if ev.Trigger != nil {
		at = ev.Trigger.Time
	}
	key := aggKey{pattern: p.ID(), cause: m.v.Cause,
		dst: netip.AddrPortFrom(ev.Flow.Dst, ev.Flow.DstPort), where: m.v.Where.Cookie}
	if m.v.Subject.IsValid() {
		key.dst = m.v.Subject
	}
	if key.where == 0 {
		key.where = uint64(m.v.Where.Inode)
	}
	if f.neigh {
		// A neighbour failure a connection's diagnosis already named is
		// that diagnosis' evidence, not a second occurrence.
		if e.neighClaimed(f) {
			if a := e.aggs[key]; a != nil {
				e.stats.FollowUps++
				a.followUps++
				a.changed = true
				a.touch(at)
				e.addEvidence(a, ev)
				return
			}
		}
	} else if m.v.Subject.IsValid() {
		e.claimNeigh(ev, m.v.Subject.Addr())
	}

	// A later signal of a connection this pattern already diagnosed (SYN
	// retries, the final timeout): the same failure, not a new occurrence.
	if f.diagnosed&(1<<m.idx) != 0 {
		e.stats.FollowUps++
		for i := range f.refs[:f.nrefs] {
			ref := &f.refs[i]
			if int(ref.idx) != m.idx || ref.agg == nil {
				continue
			}
			a := ref.agg
			if a.closed {
				// The window closed while the connection still fails: carry
				// on in the open aggregate of its cause, or reopen one.
				if b := e.aggs[a.key]; b != nil {
					a = b
				} else {
					a = e.reopen(a, at)
				}
				ref.agg = a
			}
			a.followUps++
			a.changed = true
			a.touch(at)
			e.addEvidence(a, ev)
		}
		return
	}
	f.diagnosed |= 1 << m.idx

	if a := e.aggs[key]; a != nil && !at.Before(a.windowEnd) {
		// Its window is over even if no Tick has said so yet: this is a
		// new occurrence, not a repeat within the window.
		e.closeAggregate(a)
	}
	if a := e.aggs[key]; a != nil {
		e.stats.Aggregated++
		e.refer(f, m.idx, a)
		a.d.Count++
		a.changed = true
		a.touch(at)
		e.addEvidence(a, ev)
		return
	}

	ev.Facts = e.resolve(ev, m.v, at)
	d := p.Diagnose(ev, m.v)
	ev.Facts = nil
	if e.cfg.Cluster != nil {
		pattern.AnnotateLifecycle(e.cfg.Cluster, m.v, &d, at)
		pattern.AnnotateCluster(e.cfg.Cluster, ev, &d, at)
	}
	if all = e.rivals(f, ev, all, best); len(all) > 1 {
		d.Details += rankNote(e.patterns, all, best, d.Confidence)
	}
	if len(d.Evidence) > e.cfg.MaxEvidence {
		d.Evidence = d.Evidence[:e.cfg.MaxEvidence]
	}
	d.Key = key.String()
	d.Count, d.New = 1, 1
	d.FirstSeen, d.LastSeen = at, at
	for _, x := range d.Evidence {
		if x.Time.Before(d.FirstSeen) {
			d.FirstSeen = x.Time
		}
	}
	if err := d.Validate(); err != nil {
		e.stats.Invalid++
		e.stats.LastInvalid = err.Error()
		return
	}
	a := &aggregate{key: key, d: d, windowEnd: at.Add(e.cfg.Window), emitted: 1}
	// The emitted copy must never see the aggregate's evidence change.
	a.d.Evidence = slices.Clone(d.Evidence)
	e.open(a)
	e.refer(f, m.idx, a)
	e.send(d)
}

func (e *Engine) refer(f *flowState, idx int, a *aggregate) {
	if int(f.nrefs) < maxDiagRefs {
		f.refs[f.nrefs] = diagRef{idx: uint8(idx), agg: a}
		f.nrefs++
	}
}

func (e *Engine) open(a *aggregate) {
	if len(e.aggs) >= e.cfg.MaxFlows {
		e.stats.AggregatesEvicted++
		e.closeAggregate(e.popAggregate())
	}
	e.aggs[a.key] = a
	e.aggQ = append(e.aggQ, a)
}

// reopen starts a new window for a cause whose window closed while one of
// its connections still fails. Nothing is emitted now: the new window is
// emitted when it closes, as an update (FirstSeen and Count carry on, and
// so does what was last emitted: its New counts from there).
func (e *Engine) reopen(old *aggregate, at time.Time) *aggregate {
	e.stats.AggregatesReopened++
	a := &aggregate{key: old.key, d: old.d, windowEnd: at.Add(e.cfg.Window), emitted: old.emitted}
	a.d.Evidence = e.evidence(old)
	e.open(a)
	return a
}

func (a *aggregate) touch(t time.Time) {
	if t.After(a.d.LastSeen) {
		a.d.LastSeen = t
	}
}

// addEvidence adds the trigger's fact while the list has room. Beyond that
// the latest fact still replaces the last entry, so what changed last (the
// final close) is shown; it is kept as a signal and rendered only when the
// aggregate is emitted, so a storm of repeats costs no formatting.
func (e *Engine) addEvidence(a *aggregate, ev *pattern.Evidence) {
	if ev.Trigger == nil {
		return
	}
	if len(a.d.Evidence) < e.cfg.MaxEvidence {
		a.d.Evidence = append(a.d.Evidence, pattern.Describe(ev, ev.Trigger))
		return
	}
	a.omitted++
	a.latest, a.latestStart, a.hasLatest = *ev.Trigger, pattern.DescribeStart(ev, ev.Trigger), true
}

// evidence is a copy of the aggregate's evidence with the latest fact in
// the last entry.
func (e *Engine) evidence(a *aggregate) []diagnosis.Evidence {
	out := slices.Clone(a.d.Evidence)
	if a.hasLatest && len(out) > 0 {
		out[len(out)-1] = pattern.DescribeSignal(e.cfg.NetnsNamer, &a.latest, a.latestStart)
	}
	return out
}

// rivals adds to the matches at the trigger those other patterns that
// match the connection's evidence as a whole (asked as on a Tick): a pattern
// that matched at an earlier signal and was held back, or that decides only
// at other signals, is a competitor the ranking must name. Only for a new
// diagnosis, so it costs nothing per signal.
func (e *Engine) rivals(f *flowState, ev *pattern.Evidence, all []match, best int) []match {
	if ev.Trigger == nil {
		return all
	}
	trig := ev.Trigger
	ev.Trigger = nil
	n := len(all)
	for i, p := range e.patterns {
		if slices.ContainsFunc(all[:n], func(m match) bool { return m.idx == i }) || n >= len(e.matches) {
			continue
		}
		ev.Diagnosed = f.diagnosed&(1<<i) != 0
		if v, out := p.Match(ev); out == pattern.Match && !better(v, all[best].v) {
			all = append(all, match{idx: i, v: v})
		}
	}
	ev.Trigger = trig
	return all
}

// rankNote says why the winner won. final is the diagnosis' confidence:
// the cluster context may have moved it from the verdict's (raised by the
// peer's lifecycle, lowered when the context is unavailable), and the
// sentence must quote the same value as the field, with the one that was
// ranked when they differ.
func rankNote(ps []pattern.Pattern, all []match, best int, final float64) string {
	w := all[best]
	var b strings.Builder
	fmt.Fprintf(&b, " Ranked first of %d matching patterns (%s, confidence %.2f", len(all), ps[w.idx].ID(), final)
	if math.Abs(final-w.v.Confidence) >= 0.005 {
		fmt.Fprintf(&b, ", %.2f as ranked before the cluster context", w.v.Confidence)
	}
	fmt.Fprintf(&b, ", specificity %d", w.v.Specificity)
	if w.v.Why != "" {
		b.WriteString(": " + w.v.Why)
	}
	b.WriteString("); also matched:")
	for i, m := range all {
		if i == best {
			continue
		}
		fmt.Fprintf(&b, " %s/%s (confidence %.2f, specificity %d)", ps[m.idx].ID(), m.v.Cause, m.v.Confidence, m.v.Specificity)
	}
	b.WriteString(".")
	return b.String()
}

func (e *Engine) send(d diagnosis.Diagnosis) {
	e.stats.Diagnoses++
	e.emit(d)
}

// Tick advances time: decides deferred connections whose grace passed, closes
// aggregation windows (re-emitting an aggregate once if it grew) and expires
// idle state. now is in the signals' clock.
func (e *Engine) Tick(now time.Time) {
	keepN, n := 0, len(e.pending)
	for i := 0; i < n; i++ {
		pr := e.pending[i]
		f := pr.f
		if f.gen != pr.gen || !f.pending {
			continue
		}
		if now.Before(f.pendingDue) {
			e.pending[keepN] = pr
			keepN++
			continue
		}
		f.pending = false
		e.evaluate(f, nil, now) // may defer again: appends past n
		if (f.neigh || f.closed) && !f.pending {
			e.removeFlow(f)
		}
	}
	keepN += copy(e.pending[keepN:], e.pending[n:])
	clear(e.pending[keepN:])
	e.pending = e.pending[:keepN]

	for _, l := range []*flowList{&e.packets, &e.conns} {
		for l.tail != nil && !now.Before(l.tail.last.Add(l.ttl)) {
			e.stats.Expired++
			e.removeFlow(l.tail)
		}
	}

	for e.aggQHd < len(e.aggQ) {
		a := e.aggQ[e.aggQHd]
		if a.closed {
			// Closed early (evicted, or its window ended at a new
			// occurrence): skip it, never the open one behind it.
			e.aggQ[e.aggQHd] = nil
			e.aggQHd++
			continue
		}
		if now.Before(a.windowEnd) {
			break
		}
		e.closeAggregate(e.popAggregate())
	}
}

// Flush decides every deferred connection, emits every aggregate that
// changed and forgets all state: for the end of a recording or a shutdown.
func (e *Engine) Flush() {
	for _, pr := range e.pending {
		if f := pr.f; f.gen == pr.gen && f.pending {
			f.pending = false
			e.evaluate(f, nil, f.pendingDue)
		}
	}
	clear(e.pending)
	e.pending = e.pending[:0]
	for _, l := range []*flowList{&e.packets, &e.conns} {
		for l.tail != nil {
			e.removeFlow(l.tail)
		}
	}
	for a := e.popAggregate(); a != nil; a = e.popAggregate() {
		e.closeAggregate(a)
	}
}

func (e *Engine) compactPending() {
	n := 0
	for _, pr := range e.pending {
		if pr.f.gen == pr.gen && pr.f.pending {
			e.pending[n] = pr
			n++
		}
	}
	clear(e.pending[n:])
	e.pending = e.pending[:n]
}

func (e *Engine) popAggregate() *aggregate {
	for e.aggQHd < len(e.aggQ) {
		a := e.aggQ[e.aggQHd]
		e.aggQ[e.aggQHd] = nil
		e.aggQHd++
		if e.aggQHd > 1024 && e.aggQHd*2 > len(e.aggQ) {
			n := copy(e.aggQ, e.aggQ[e.aggQHd:])
			clear(e.aggQ[n:])
			e.aggQ, e.aggQHd = e.aggQ[:n], 0
		}
		if !a.closed {
			return a
		}
	}
	return nil
}

func (e *Engine) closeAggregate(a *aggregate) {
	if a == nil {
		return
	}
	a.closed = true
	if e.aggs[a.key] == a {
		delete(e.aggs, a.key)
	}
	if !a.changed {
		return
	}
	d := a.d
	d.New = d.Count - a.emitted
	d.Evidence = e.evidence(a)
	d.Details += fmt.Sprintf(" Aggregated: %d occurrence(s) from %s to %s", d.Count,
		d.FirstSeen.Format(time.RFC3339Nano), d.LastSeen.Format(time.RFC3339Nano))
	if a.followUps > 0 {
		d.Details += fmt.Sprintf("; %d later signal(s) of already diagnosed connections", a.followUps)
	}
	if a.omitted > 0 {
		d.Details += fmt.Sprintf("; %d evidence entries omitted", a.omitted)
	}
	d.Details += "."
	if err := d.Validate(); err != nil {
		e.stats.Invalid++
		e.stats.LastInvalid = err.Error()
		return
	}
	e.stats.AggregateUpdates++
	a.emitted = d.Count
	e.send(d)
}
