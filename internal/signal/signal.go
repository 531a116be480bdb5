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
)

var kindNames = map[Kind]string{
	KindUnknown:       "unknown",
	KindStateChange:   "state_change",
	KindRetransmit:    "retransmit",
	KindResetReceived: "reset_received",
	KindResetSent:     "reset_sent",
	KindDrop:          "drop",
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
}

func (s Signal) String() string {
	return fmt.Sprintf("%s %s %s", s.Time.Format(time.RFC3339Nano), s.Kind, s.Flow)
}
