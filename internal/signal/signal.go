// Package signal holds the kernel-independent failure signals that the probes
// emit and the correlator consumes. A Signal is a flat record so that the live
// kernel source and the replay (JSON-lines) source produce the same thing.
package signal

import (
	"fmt"
	"net/netip"
	"time"
)

// Kind names which kernel hook produced a signal.
type Kind uint8

const (
	KindUnknown Kind = iota
	// KindStateChange: sock:inet_sock_set_state, only transitions that matter
	// for failures (e.g. SYN_SENT -> CLOSE, FIN_WAIT1 -> CLOSE with an error).
	KindStateChange
	// KindRetransmit: tcp:tcp_retransmit_skb.
	KindRetransmit
	// KindResetReceived: tcp:tcp_receive_reset.
	KindResetReceived
	// KindResetSent: tcp:tcp_send_reset.
	KindResetSent
	// KindDrop: skb:kfree_skb with a drop reason other than NOT_DROPPED_YET/CONSUMED.
	KindDrop
	// KindNeighFailed: a neighbour entry (ARP or IPv6 NDP) moved to FAILED:
	// address resolution gave up (neigh:neigh_timer_handler).
	KindNeighFailed
	// KindConnectError: connect() returned an error to the application
	// (syscalls:sys_exit_connect), including errors that change no socket
	// state (no route, blackhole/unreachable/prohibit route).
	KindConnectError
	// KindICMPError: an ICMP or ICMPv6 error arrived on a watched interface
	// (TC ingress). Flow is the original flow the error is about.
	KindICMPError
	// KindICMPSent: this host generated an ICMP or ICMPv6 error
	// (icmp:icmp_send). Flow is the packet that caused it.
	KindICMPSent
)

var kindNames = map[Kind]string{
	KindUnknown:       "unknown",
	KindStateChange:   "state_change",
	KindRetransmit:    "retransmit",
	KindResetReceived: "reset_received",
	KindResetSent:     "reset_sent",
	KindDrop:          "drop",
	KindNeighFailed:   "neigh_failed",
	KindConnectError:  "connect_error",
	KindICMPError:     "icmp_error",
	KindICMPSent:      "icmp_sent",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	for k, n := range kindNames {
		if n == s && k != KindUnknown {
			return k, nil
		}
	}
	return KindUnknown, fmt.Errorf("unknown signal kind %q", s)
}

// TCPState mirrors the kernel's TCP_* socket states (include/net/tcp_states.h);
// these values are part of the kernel ABI and stable.
type TCPState uint8

const (
	StateEstablished TCPState = 1 + iota
	StateSynSent
	StateSynRecv
	StateFinWait1
	StateFinWait2
	StateTimeWait
	StateClose
	StateCloseWait
	StateLastAck
	StateListen
	StateClosing
	StateNewSynRecv
)

var stateNames = [...]string{
	"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV",
}

func (s TCPState) String() string {
	if int(s) < len(stateNames) && s != 0 {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE(%d)", uint8(s))
}

// ParseTCPState is the inverse of TCPState.String.
func ParseTCPState(s string) (TCPState, error) {
	for i, n := range stateNames {
		if i > 0 && n == s {
			return TCPState(i), nil
		}
	}
	return 0, fmt.Errorf("unknown TCP state %q", s)
}

// NUDState is a neighbour entry's state (include/uapi/linux/neighbour.h,
// NUD_*; bit values, part of the kernel ABI).
type NUDState uint8

const (
	NUDIncomplete NUDState = 0x01
	NUDReachable  NUDState = 0x02
	NUDStale      NUDState = 0x04
	NUDDelay      NUDState = 0x08
	NUDProbe      NUDState = 0x10
	NUDFailed     NUDState = 0x20
	NUDNoARP      NUDState = 0x40
	NUDPermanent  NUDState = 0x80
)

var nudNames = [...]string{"INCOMPLETE", "REACHABLE", "STALE", "DELAY", "PROBE", "FAILED", "NOARP", "PERMANENT"}

func (n NUDState) String() string {
	for i, name := range nudNames {
		if n == 1<<i {
			return name
		}
	}
	return fmt.Sprintf("NUD(%#x)", uint8(n))
}

// ParseNUDState is the inverse of NUDState.String for single states.
func ParseNUDState(s string) (NUDState, error) {
	for i, name := range nudNames {
		if name == s {
			return NUDState(1 << i), nil
		}
	}
	return 0, fmt.Errorf("unknown neighbour state %q", s)
}

// ICMP types of the errors the probes report (RFC 792, RFC 4443).
const (
	ICMPDestUnreachable uint8 = 3  // codes: 0 net, 1 host, 3 port, 4 frag needed, 9/10/13 prohibited
	ICMPTimeExceeded    uint8 = 11 // code 0: TTL exceeded in transit

	ICMPv6DestUnreachable uint8 = 1 // codes: 0 no route, 1 prohibited, 3 address, 4 port
	ICMPv6PacketTooBig    uint8 = 2
	ICMPv6TimeExceeded    uint8 = 3
)

// Protocol numbers (IANA).
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// TCP header flag bits.
const (
	TCPFlagFIN uint8 = 0x01
	TCPFlagSYN uint8 = 0x02
	TCPFlagRST uint8 = 0x04
	TCPFlagPSH uint8 = 0x08
	TCPFlagACK uint8 = 0x10
)

// Flow is the 5-tuple as seen from the socket that owns it (for a connect:
// Src is the client, Dst the server). For a dropped packet it is the packet's
// own source and destination.
type Flow struct {
	Proto   uint8
	Src     netip.Addr
	Dst     netip.Addr
	SrcPort uint16
	DstPort uint16
}

// Reverse returns the flow seen from the other end.
func (f Flow) Reverse() Flow {
	return Flow{Proto: f.Proto, Src: f.Dst, Dst: f.Src, SrcPort: f.DstPort, DstPort: f.SrcPort}
}

func (f Flow) String() string {
	return fmt.Sprintf("%s %s -> %s", protoName(f.Proto),
		netip.AddrPortFrom(f.Src, f.SrcPort), netip.AddrPortFrom(f.Dst, f.DstPort))
}

func protoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return fmt.Sprintf("proto(%d)", p)
}

// Signal is one failure-relevant kernel event. Fields that do not apply to a
// Kind are zero.
type Signal struct {
	Kind Kind
	// Time is wall-clock time of the event (the probe converts the kernel's
	// monotonic timestamp).
	Time time.Time
	Flow Flow
	// NetnsCookie uniquely identifies the network namespace (net->net_cookie);
	// inode numbers are reused, cookies are not. NetnsInode is kept for
	// matching against /proc/<pid>/ns/net and `ip netns`.
	NetnsCookie uint64
	NetnsInode  uint32
	// Ifindex / Dev: the packet's device when known (drops).
	Ifindex uint32
	Dev     string

	// State is the socket state (retransmit, reset) or the new state (state change).
	State    TCPState
	OldState TCPState
	// SkErr is sk->sk_err at a state change (e.g. 111 ECONNREFUSED, 110 ETIMEDOUT).
	SkErr int32
	// Err is the return code the hook reports (tcp_retransmit_skb's err).
	Err int32
	// TCPFlags of the packet (drops, resets).
	TCPFlags uint8
	// DropReason is the kernel's skb_drop_reason name without the
	// SKB_DROP_REASON_ prefix (e.g. "NETFILTER_DROP", "NO_SOCKET").
	DropReason string
	// DropLocation is the kernel function that freed the skb (e.g. "nft_do_chain").
	DropLocation string
	// ResetReason is the kernel's sk_rst_reason name without the
	// SK_RST_REASON_ prefix for a sent reset (e.g. "NO_SOCKET"), when the
	// kernel reports one (6.10+).
	ResetReason string
	// Retransmits is the socket's timeout-retransmission count at a
	// retransmit (icsk_retransmits). The kernel counts before sending, so
	// the first SYN retransmission reports 1 (measured on 6.18); fast
	// retransmits (not timer driven) report 0.
	Retransmits uint32
	// SockCookie identifies the socket across signals when the kernel gives one.
	SockCookie uint64

	// PID/Comm of the task that was running; meaningful only in process
	// context (connect, sendmsg), never in softirq (see KERNEL.md).
	PID  uint32
	Comm string

	// Neighbour entries (KindNeighFailed). NeighAddr is the address that
	// did not resolve: a next hop (a host of the subnet or a gateway), not
	// necessarily the destination of any flow. Dev/Ifindex name its device.
	NeighAddr netip.Addr
	// NeighState is the state the entry failed from: INCOMPLETE (a new
	// resolution got no answer) or PROBE (an entry that was in use stopped
	// answering its re-confirmation); 0 when the probe did not see it.
	NeighState NUDState
	// NeighResolved: the entry held a link-layer address, i.e. the
	// neighbour answered at least once during the entry's life.
	NeighResolved bool
	// NeighProbes is the kernel's probe counter (neigh->probes). For a new
	// (INCOMPLETE) entry the kernel starts it at ucast_solicit because
	// there is no address to unicast to: at default sysctls an unused
	// address fails with 6 for 3 broadcast solicitations (measured, 6.18).
	NeighProbes uint32
	// NeighTried is how long the entry tried before it failed: since it
	// entered INCOMPLETE or PROBE (neigh->updated). 0 when unknown.
	NeighTried time.Duration

	// ICMP errors (KindICMPError, KindICMPSent): type and code of the
	// error (ICMPv4 or ICMPv6 numbering after Flow's address family).
	ICMPType uint8
	ICMPCode uint8
	// ICMPFrom is the sender of a received ICMP error: the router or host
	// that reported it (KindICMPError).
	ICMPFrom netip.Addr
	// MTU is the next-hop MTU of an ICMP fragmentation-needed (3/4) or an
	// ICMPv6 packet-too-big.
	MTU uint32

	// Backlog and MaxBacklog are a listening socket's accept queue length
	// and limit (sk_ack_backlog / sk_max_ack_backlog) when a drop hit a
	// listener (e.g. DropReason TCP_LISTEN_OVERFLOW); both 0 otherwise.
	Backlog    uint32
	MaxBacklog uint32
}

func (s Signal) String() string {
	return fmt.Sprintf("%s %s %s", s.Time.Format(time.RFC3339Nano), s.Kind, s.Flow)
}
