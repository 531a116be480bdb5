// Package pattern is the failure pattern library. A Pattern looks at what the
// correlator has accumulated for one connection (Evidence) and says whether it
// makes a diagnosis. Patterns are pure: no I/O, no clocks, no state of their
// own, so each is tested on replayed signals alone.
package pattern

import (
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// NetnsNamer gives a network namespace a human name ("server", "host",
// "pod default/web-0"); the host context provider implements it.
type NetnsNamer interface {
	Name(inode uint32, cookie uint64) string
}

// Netns identifies a network namespace: Cookie is unique, Inode is what
// /proc/<pid>/ns/net shows (and is reused).
type Netns struct {
	Cookie uint64
	Inode  uint32
}

// Known reports whether the namespace was seen at all.
func (n Netns) Known() bool { return n.Cookie != 0 || n.Inode != 0 }

// NetnsOf returns the namespace a signal was recorded in.
func NetnsOf(s *signal.Signal) Netns { return Netns{Cookie: s.NetnsCookie, Inode: s.NetnsInode} }

// SameAs compares by cookie when both have one, else by inode.
func (n Netns) SameAs(o Netns) bool {
	if n.Cookie != 0 && o.Cookie != 0 {
		return n.Cookie == o.Cookie
	}
	return n.Inode != 0 && n.Inode == o.Inode
}

// Retransmits summarises a connection's SYN retransmissions (tcp_retransmit_skb
// in SYN_SENT) so that a storm of them costs constant memory.
type Retransmits struct {
	Count       int
	First, Last signal.Signal
	EPERM       int // err=-1: the local firewall refused the send
	EBUSY       int // err=-16: queued behind neighbour resolution, never sent
}

// Evidence is what the correlator holds about one connection when it asks the
// patterns. Slices are views into the correlator's state: read, never keep.
type Evidence struct {
	// Flow is client -> server when Oriented (learned from the client socket
	// or from a SYN); otherwise the orientation of the first signal.
	Flow     signal.Flow
	Oriented bool
	// Client is the client socket's netns, zero until a socket signal is seen.
	Client Netns
	// Now is the evaluation time: the trigger's time, or the Tick time.
	Now time.Time
	// Trigger is the signal being observed; nil when the correlator
	// re-evaluates on a Tick (after a pattern asked to Defer).
	Trigger *signal.Signal
	// Socket: state changes, received resets and non-SYN retransmits of the
	// connection's sockets, in arrival order (bounded: the first ones and the latest).
	Socket []signal.Signal
	// Packet: drops and sent resets for the same 5-tuple in either direction,
	// from any netns on the node (bounded likewise).
	Packet []signal.Signal
	// Diagnosed: the pattern being asked already diagnosed this connection,
	// so a Match now is a follow-up (set by the correlator per pattern).
	Diagnosed bool
	// SynRetrans summarises retransmits in SYN_SENT (nil = none); a pointer
	// so asking every pattern does not copy it.
	SynRetrans *Retransmits
	Namer      NetnsNamer
	// Neigh: neighbour resolution failures (KindNeighFailed) recorded
	// within the correlation window in the namespaces of this connection's
	// signals, the destination's own entry first.
	Neigh []signal.Signal
	// Facts: host context the correlator looked up for the verdict's Need;
	// set only when Diagnose is called, nil without a host context provider.
	Facts *Facts
	// Policy: the NetworkPolicy verdict of this connection, nil without a
	// cluster context (see Cluster).
	Policy PolicyChecker
	// Cluster is the cluster context, nil without one. Patterns ask it only
	// once the kernel evidence shows a failure (see ServiceNoEndpoints).
	Cluster Cluster
}

// Outcome of asking a pattern.
type Outcome uint8

const (
	NoMatch Outcome = iota
	Match
	// Defer: not yet; ask again on a Tick once the correlator's grace period
	// after this trigger has passed (e.g. a RST arrived but the close did not).
	Defer
)

// Verdict is a pattern's cheap answer; the full Diagnosis is built only for the
// first occurrence of a cause.
type Verdict struct {
	// Cause is a stable, low-cardinality id of the root cause within the
	// pattern ("no_listener", "netfilter_drop"); with the pattern, the
	// destination and Where it forms the aggregation key.
	Cause string
	// Where is the netns the cause sits in (zero if not on this node).
	Where      Netns
	Confidence float64
	// Specificity breaks confidence ties: higher names a more precise cause.
	Specificity int
	// Why is one clause said when this verdict wins a ranking.
	Why string
	// Subject, when valid, replaces the flow's destination in the
	// aggregation key: the cause is about it (a neighbour, a listener),
	// whatever port the failing connections used.
	Subject netip.AddrPort
	// Need asks the correlator for host context before Diagnose.
	Need Need
	// Until, with Defer: the evidence this pattern waits for may take until
	// then (e.g. the kernel giving up ARP). A Defer whose verdict would
	// outrank every Match holds the connection's decision until then. One
	// without a Confidence waits for evidence from outside the kernel (the
	// cluster's report of a container's end): the connection is kept past
	// its last signal until then and asked again every grace period.
	Until time.Time
}

// Pattern is one failure pattern.
type Pattern interface {
	ID() diagnosis.Pattern
	// Wants reports whether a signal may matter to this pattern when the
	// correlator holds nothing yet for its 5-tuple; if no pattern wants it,
	// the signal is dropped at once (the noise fast path). Must not allocate.
	Wants(s *signal.Signal) bool
	// Match decides on the evidence. Must not allocate when it does not match.
	Match(ev *Evidence) (Verdict, Outcome)
	// Diagnose builds the diagnosis for a Match. The correlator fills Key,
	// FirstSeen, LastSeen and Count.
	Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis
}

// Default returns the library with its defaults; synTimeout is the connect
// age from which unanswered SYNs are diagnosed (see SYNDropped).
func Default(synTimeout time.Duration) []Pattern {
	return Library(Options{SYNTimeout: synTimeout})
}

// Options are the library's settings.
type Options struct {
	SYNTimeout time.Duration
	// ARPTimeout: see ARPFailure.Timeout.
	ARPTimeout time.Duration
	// MinRetransmits: consecutive retransmission timeouts before an
	// established flow is diagnosed (blackhole, half_open); 0 = the default.
	MinRetransmits int
	// Overload: host context for AcceptQueueFull and ConntrackTableFull;
	// nil leaves them out (replays, no host context).
	Overload OverloadContext
	// Cluster: when it answers PodLifecycle, peer_lost_state waits up to
	// LifecycleWait for the termination of a pod's container behind a
	// reset (see PeerLostState); nil or without it, no wait.
	Cluster Cluster
	// LifecycleWait, LifecycleTolerance: PeerLostState.Wait and Tolerance.
	LifecycleWait, LifecycleTolerance time.Duration
}

// Library returns every pattern with the given settings.
func Library(o Options) []Pattern {
	ps := []Pattern{ConnectionRefused{}, SYNDropped{Timeout: o.SYNTimeout}, ARPFailure{Timeout: o.ARPTimeout}, ICMPError{},
		RouteFailure{}, ListenOverflow{},
		Blackhole{MinRetransmits: o.MinRetransmits}, HalfOpen{MinRetransmits: o.MinRetransmits}, o.peerLost(),
		NetworkPolicyBlock{SYN: SYNDropped{Timeout: o.SYNTimeout}}, ServiceNoEndpoints{SYN: SYNDropped{Timeout: o.SYNTimeout}}}
	if o.Overload != nil {
		ps = append(ps, AcceptQueueFull{SYN: SYNDropped{Timeout: o.SYNTimeout}, Host: o.Overload},
			ConntrackTableFull{SYN: SYNDropped{Timeout: o.SYNTimeout}, Host: o.Overload})
	}
	return ps
}

func (o Options) peerLost() PeerLostState {
	p := PeerLostState{Wait: o.LifecycleWait, Tolerance: o.LifecycleTolerance}
	if pl, ok := o.Cluster.(PodLifecycle); ok {
		p.Restarts = pl
	}
	return p
}

// Errno values seen in sk_err and hook return codes (Linux, all architectures
// that matter here).
const (
	EPERM        = 1
	EBUSY        = 16
	EPIPE        = 32
	ECONNRESET   = 104
	ETIMEDOUT    = 110
	ECONNREFUSED = 111
	EHOSTUNREACH = 113
)

var errnoNames = map[int32]string{
	EPERM: "EPERM", EBUSY: "EBUSY", EPIPE: "EPIPE", ECONNRESET: "ECONNRESET", ETIMEDOUT: "ETIMEDOUT",
	ECONNREFUSED: "ECONNREFUSED", EHOSTUNREACH: "EHOSTUNREACH", 101: "ENETUNREACH", 22: "EINVAL", 13: "EACCES",
}

// ErrnoName names an errno (sign ignored), or returns "errno N".
func ErrnoName(e int32) string {
	if e < 0 {
		e = -e
	}
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", e)
}

// Hook names the kernel hook behind a signal kind (Evidence.Source).
func Hook(k signal.Kind) string {
	switch k {
	case signal.KindStateChange:
		return "sock:inet_sock_set_state"
	case signal.KindRetransmit:
		return "tcp:tcp_retransmit_skb"
	case signal.KindResetReceived:
		return "tcp:tcp_receive_reset"
	case signal.KindResetSent:
		return "tcp:tcp_send_reset"
	case signal.KindDrop:
		return "skb:kfree_skb"
	case signal.KindNeighFailed:
		return "neigh:neigh_timer_handler"
	case signal.KindConnectError:
		return "syscalls:sys_exit_connect"
	case signal.KindICMPError:
		return "tc:icmp_ingress"
	case signal.KindICMPSent:
		return "icmp:icmp_send"
	}
	return k.String()
}

// NetnsName renders a namespace for people: the namer's name, else "netns:<inode>".
func NetnsName(n NetnsNamer, ns Netns) string {
	if n != nil {
		if s := n.Name(ns.Inode, ns.Cookie); s != "" {
			return s
		}
	}
	if ns.Inode == 0 && ns.Cookie != 0 {
		return fmt.Sprintf("netns:cookie:%d", ns.Cookie)
	}
	return fmt.Sprintf("netns:%d", ns.Inode)
}

// NetnsPhrase is the namespace for prose: "netns server" when the namer
// knows it, else "netns:<inode>".
func NetnsPhrase(n NetnsNamer, ns Netns) string {
	if n != nil {
		if s := n.Name(ns.Inode, ns.Cookie); s != "" {
			return "netns " + s
		}
	}
	return NetnsName(nil, ns)
}

// IsSYN reports a connection request: SYN without ACK.
func IsSYN(flags uint8) bool {
	return flags&signal.TCPFlagSYN != 0 && flags&signal.TCPFlagACK == 0
}

// ClientClose reports the client socket leaving SYN_SENT for CLOSE.
func ClientClose(s *signal.Signal) bool {
	return s.Kind == signal.KindStateChange && s.OldState == signal.StateSynSent && s.State == signal.StateClose
}

var noRetrans Retransmits

// Retrans returns the SYN retransmit summary, never nil; do not modify it.
func (ev *Evidence) Retrans() *Retransmits {
	if ev.SynRetrans == nil {
		return &noRetrans
	}
	return ev.SynRetrans
}

// SynDrops calls f for each drop of this connection's SYN (client -> server,
// SYN without ACK) in arrival order; f returns false to stop.
func (ev *Evidence) SynDrops(f func(s *signal.Signal) bool) {
	for i := range ev.Packet {
		s := &ev.Packet[i]
		if s.Kind == signal.KindDrop && IsSYN(s.TCPFlags) && s.Flow == ev.Flow {
			if !f(s) {
				return
			}
		}
	}
}

// FirstSynDrop returns the first SYN drop with the given reason ("" = any).
func (ev *Evidence) FirstSynDrop(reason string) *signal.Signal {
	var found *signal.Signal
	ev.SynDrops(func(s *signal.Signal) bool {
		if reason == "" || s.DropReason == reason {
			found = s
			return false
		}
		return true
	})
	return found
}

// ResetSent returns the first RST sent by a netns here in answer to this
// connection's SYN (the probe reports the triggering segment's flags; 0 when
// unknown).
func (ev *Evidence) ResetSent() *signal.Signal {
	for i := range ev.Packet {
		if s := &ev.Packet[i]; ResetForSYN(s) {
			return s
		}
	}
	return nil
}

// ResetForSYN reports a sent RST whose triggering segment was a SYN (or unknown).
func ResetForSYN(s *signal.Signal) bool {
	return s.Kind == signal.KindResetSent && (s.TCPFlags == 0 || IsSYN(s.TCPFlags))
}

// SocketSignal returns the first socket signal satisfying f.
func (ev *Evidence) SocketSignal(f func(s *signal.Signal) bool) *signal.Signal {
	for i := range ev.Socket {
		if f(&ev.Socket[i]) {
			return &ev.Socket[i]
		}
	}
	return nil
}

// synSchedule is when the n-th SYN retransmission (n = 0 for the first)
// fires after connect() at default sysctls (initial RTO 1 s,
// tcp_syn_linear_timeouts 4): +1,2,3,4,5 s, then doubling: 7, 11, 19, 35,
// 67 s (KERNEL.md measured +1..5,7,11,19,35,69). Other settings only make it
// later, so it is a lower bound.
func synSchedule(n uint32) time.Duration {
	if n <= 4 {
		return time.Duration(n+1) * time.Second
	}
	if n > 30 {
		n = 30
	}
	return time.Duration(3+(1<<(n-3))) * time.Second
}

// synOrdinal is a SYN retransmit's place (0 = first). The kernel counts
// icsk_retransmits before sending, so the first reports 1 (measured on 6.18).
func synOrdinal(s *signal.Signal) uint32 {
	if s.Retransmits == 0 {
		return 0
	}
	return s.Retransmits - 1
}

// ConnectStart estimates when the client's connect() sent its first SYN: the
// earliest of a drop of that SYN, a state change into SYN_SENT, and the first
// retransmit minus its place in the kernel's SYN schedule. Zero if unknown.
func (ev *Evidence) ConnectStart() time.Time {
	var start time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (start.IsZero() || t.Before(start)) {
			start = t
		}
	}
	if r := ev.Retrans(); r.Count > 0 {
		earlier(r.First.Time.Add(-synSchedule(synOrdinal(&r.First))))
	}
	if d := ev.FirstSynDrop(""); d != nil {
		earlier(d.Time)
	}
	if s := ev.SocketSignal(func(s *signal.Signal) bool {
		return s.Kind == signal.KindStateChange && s.State == signal.StateSynSent && s.Flow == ev.Flow
	}); s != nil {
		earlier(s.Time)
	}
	return start
}

// Describe renders one signal as an evidence line in the context of the
// connection (e.g. how long after the connect a retransmit came).
func Describe(ev *Evidence, s *signal.Signal) diagnosis.Evidence {
	return DescribeSignal(ev.Namer, s, DescribeStart(ev, s))
}

// DescribeStart is the connect start Describe would use for s (zero when s
// does not need one), so a caller can render s later with DescribeSignal.
func DescribeStart(ev *Evidence, s *signal.Signal) time.Time {
	if ClientClose(s) || s.Kind == signal.KindRetransmit && s.State == signal.StateSynSent {
		return ev.ConnectStart()
	}
	return time.Time{}
}

// DescribeSignal renders s; connectStart (may be zero) dates a SYN
// retransmit or a failed connect's close relative to the connect.
func DescribeSignal(namer NetnsNamer, s *signal.Signal, connectStart time.Time) diagnosis.Evidence {
	ns := NetnsPhrase(namer, NetnsOf(s))
	var fact string
	switch s.Kind {
	case signal.KindDrop:
		dev := s.Dev
		if dev == "" {
			dev = "none (local output or socket-level)"
		}
		fact = fmt.Sprintf("%s packet %s dropped in %s (dev %s): reason %s at %s",
			flagsOrNone(s.TCPFlags), flowText(s.Flow), ns, dev, s.DropReason, orUnknown(s.DropLocation))
		if s.MaxBacklog != 0 {
			fact += fmt.Sprintf(", listener's accept queue %d/%d", s.Backlog, s.MaxBacklog)
		}
	case signal.KindResetSent:
		fact = fmt.Sprintf("RST sent by the kernel in %s on %s", ns, flowText(s.Flow))
		if s.TCPFlags != 0 {
			fact += " in answer to a " + flagsOrNone(s.TCPFlags) + " segment"
		}
		if s.ResetReason != "" {
			fact += ", reason " + s.ResetReason
		}
	case signal.KindResetReceived:
		fact = fmt.Sprintf("RST received by the socket in %s in state %s on %s", ns, s.State, flowText(s.Flow))
	case signal.KindStateChange:
		fact = fmt.Sprintf("socket in %s went %s -> %s", ns, s.OldState, s.State)
		if s.SkErr != 0 {
			fact += fmt.Sprintf(" with sk_err=%d (%s)", s.SkErr, ErrnoName(s.SkErr))
		}
		if ClientClose(s) && !connectStart.IsZero() {
			fact += fmt.Sprintf(", %s after the connect started", roundAge(s.Time.Sub(connectStart)))
		}
	case signal.KindRetransmit:
		fact = fmt.Sprintf("%s retransmit in %s (icsk_retransmits=%d)", flagsOrNone(s.TCPFlags), s.State, s.Retransmits)
		if s.Err != 0 {
			fact += fmt.Sprintf(", send failed err=%d (%s)", s.Err, ErrnoName(s.Err))
		}
		if s.State == signal.StateSynSent && !connectStart.IsZero() {
			fact += fmt.Sprintf(", %s after the connect started", roundAge(s.Time.Sub(connectStart)))
		}
	default:
		fact = describeMore(namer, s)
	}
	return diagnosis.Evidence{Time: s.Time, Source: Hook(s.Kind), Fact: fact}
}

func roundAge(d time.Duration) time.Duration {
	switch {
	case d > 10*time.Second:
		return d.Round(time.Second)
	case d > 10*time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}

func flowText(f signal.Flow) string {
	return fmt.Sprintf("%s -> %s", netip.AddrPortFrom(f.Src, f.SrcPort), netip.AddrPortFrom(f.Dst, f.DstPort))
}

func flagsOrNone(f uint8) string {
	var names []byte
	for i, n := range [...]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"} {
		if f&(1<<i) != 0 {
			if len(names) > 0 {
				names = append(names, '|')
			}
			names = append(names, n...)
		}
	}
	if len(names) == 0 {
		return "a"
	}
	return string(names)
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown location"
	}
	return s
}

// endpoints fills Source/Destination from the flow and known namespaces.
func endpoints(ev *Evidence, server Netns) (src, dst diagnosis.Endpoint) {
	src = diagnosis.Endpoint{Addr: addrText(ev.Flow.Src), Port: ev.Flow.SrcPort}
	if ev.Client.Known() {
		src.NetnsInode = ev.Client.Inode
		src.NetnsName = NetnsName(ev.Namer, ev.Client)
	}
	dst = diagnosis.Endpoint{Addr: addrText(ev.Flow.Dst), Port: ev.Flow.DstPort}
	if server.Known() {
		dst.NetnsInode = server.Inode
		dst.NetnsName = NetnsName(ev.Namer, server)
	}
	return src, dst
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// evidenceFrom describes, in time order, the signals that support a diagnosis.
func evidenceFrom(ev *Evidence, sigs ...*signal.Signal) []diagnosis.Evidence {
	out := make([]diagnosis.Evidence, 0, len(sigs))
	for _, s := range sigs {
		if s != nil {
			out = append(out, Describe(ev, s))
		}
	}
	// insertion sort: a handful of entries
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Time.Before(out[j-1].Time); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// clamp bounds a confidence and rounds it to hundredths: sums of weights
// must not show floating-point noise (0.9500000000000001) downstream.
func clamp(c float64) float64 {
	switch {
	case c < 0.05:
		return 0.05
	case c > 0.98:
		return 0.98
	}
	return math.Round(c*100) / 100
}
