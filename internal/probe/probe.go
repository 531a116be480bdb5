// Package probe loads the kernel probes of package bpf, attaches them to
// their tracepoints and decodes the ring buffer records into signal.Signal.
// The probes are Linux-only; on other systems Open and Check return
// ErrUnsupported.
//
// Hooks (all tp_btf: fentry/fexit and kprobes are not available everywhere)
// and what each lets through to user space:
//
//	inet_sock_set_state  -> CLOSE from SYN_SENT (any sk_err), or with sk_err != 0
//	tcp_retransmit_skb   every retransmission (state, err, icsk_retransmits, flags)
//	tcp_receive_reset    every RST received (socket state, e.g. SYN_SENT)
//	tcp_send_reset       every RST sent (sk_rst_reason, triggering segment's flags)
//	kfree_skb            drop reasons in the configured set, TCP/UDP/ICMP only;
//	                     NOT_SPECIFIED only when freed in ip_error
//	neigh_timer_handler  an entry's move to FAILED (ARP/NDP gave up); entries
//	                     in INCOMPLETE/PROBE are remembered in a map (what the
//	                     entry failed from, since when), nothing is sent
//	neigh_event_send_done nothing sent; remembers an entry entering INCOMPLETE
//	icmp_send            ICMPv4 errors this host generates (types 3, 11, 12),
//	                     with the flow of the packet that caused them
//	TC ingress (tcx)     ICMP/ICMPv6 errors received on watched interfaces
//	                     (v4 types 3, 11, 12; v6 types 1, 2, 3): the sender and
//	                     the quoted original flow, MTU of frag-needed/too-big
//	sys_exit_connect     (classic tracepoint) connect() errors of IPv4/IPv6 sockets, not EINPROGRESS,
//	                     EALREADY, EISCONN, EAGAIN, EINTR/restart, EBADF,
//	                     ENOTSOCK, EFAULT; pid/comm are the caller's. The
//	                     arguments come from the task's saved registers
//	                     (x86-64, arm64): success costs one comparison
//	sys_enter_connect    only on other architectures: stores the arguments
//	                     in task-local storage for the exit hook
//
// The TC program needs CAP_NET_ADMIN besides CAP_BPF; without it received
// ICMP errors are left out and Unavailable says so. It is attached with
// TCX (Linux 6.6+) on Config.Interfaces at Open and by AttachICMP later;
// a packet crossing two watched interfaces of one namespace (a bridge port
// and the bridge) is reported once per interface.
//
// The syscall tracepoints need tracefs for their IDs: a mounted one, or
// one mounted privately (CAP_SYS_ADMIN). Without either they are left out
// and Unavailable says so. connect() through io_uring is not seen.
//
// Reason names come from the running kernel's BTF enums, locations from
// /proc/kallsyms (needs CAP_SYSLOG; hex addresses without it). A drop's
// network namespace is its device's, else its socket's, else the receiving
// socket's (rx_sk).
package probe

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config selects the ring buffer size and the drop reasons reported.
type Config struct {
	// RingBufferBytes is the size of the ring buffer shared with the kernel.
	// 0 selects DefaultRingBufferBytes; other values are rounded up to a
	// power-of-two number of pages and must not exceed MaxRingBufferBytes.
	RingBufferBytes int
	// DropReasons lists the kernel's skb_drop_reason names to report, with
	// or without the SKB_DROP_REASON_ prefix ("NETFILTER_DROP"). Empty
	// selects DefaultDropReasons. Names are resolved against the running
	// kernel's BTF; an unknown name is an error.
	DropReasons []string
	// Interfaces names the interfaces of the network namespace Open runs
	// in whose ingress is watched for ICMP errors (a TC program). Empty
	// selects every interface present at Open and, through a link watch,
	// every interface created later in that namespace. Names select only
	// those (an unknown name is an error). Interfaces of other namespaces
	// (pods) are attached with Probe.AttachICMP from their namespace.
	Interfaces []string
	// ConnectErrors attaches the connect() syscall exit tracepoint, which
	// catches connect() calls that fail before any socket state changes
	// (no route, blackhole/unreachable/prohibit routes). Off by default:
	// enabling any syscall tracepoint sends every syscall of every task on
	// the host through the kernel's slow syscall-work path, which costs far
	// more than the program itself (measured here: connect/accept
	// throughput 0.94-0.96 of baseline with it, 0.98 without).
	ConnectErrors bool
}

const (
	DefaultRingBufferBytes = 1 << 20
	MaxRingBufferBytes     = 1 << 30
)

// ErrUnsupported is returned where the probes cannot exist (not Linux).
var ErrUnsupported = errors.New("probe: eBPF probes need Linux")

// defaultDropReasons are failures a healthy connection never produces.
// Left out on purpose: QUEUE_PURGE, SOCKET_CLOSE, TCP_CLOSE, TCP_OLD_DATA,
// TCP_OFOMERGE, TCP_RESET, SOCKET_FILTER and other reasons of ordinary
// teardown, duplicate segments or packet sockets. NOT_SPECIFIED is
// reported only where freed by one of notSpecifiedAt.
var defaultDropReasons = []string{
	"NETFILTER_DROP",
	"NO_SOCKET",
	"TCP_FLAGS",
	"OTHERHOST",
	"IP_RPFILTER",
	"IP_INADDRERRORS",
	"IP_INNOROUTES",
	"IP_OUTNOROUTES",
	"IP_INVALID_SOURCE",
	"IP_LOCAL_SOURCE",
	"IP_INVALID_DEST",
	"NEIGH_CREATEFAIL",
	"NEIGH_FAILED",
	"NEIGH_QUEUEFULL",
	"NEIGH_DEAD",
	"TCP_LISTEN_OVERFLOW",
	"SOCKET_BACKLOG",
	"PKT_TOO_BIG",
	"XFRM_POLICY",
	"BPF_CGROUP_EGRESS",
	"TC_INGRESS",
	"TC_EGRESS",
	"SECURITY_HOOK",
	"IPV6DISABLED",
	"NOT_SPECIFIED",
}

// notSpecifiedAt are the kernel functions where a NOT_SPECIFIED drop means a
// failure (ip_error: a blackhole/unreachable route on a forwarding host);
// elsewhere NOT_SPECIFIED is too common to mean anything.
var notSpecifiedAt = []string{"ip_error"}

// DefaultDropReasons returns the drop reasons reported when
// Config.DropReasons is empty.
func DefaultDropReasons() []string {
	return append([]string(nil), defaultDropReasons...)
}

// ringBufferSize validates the configured size and rounds it up to a
// power-of-two multiple of the page size, as the kernel requires.
func (c Config) ringBufferSize(pageSize int) (int, error) {
	n := c.RingBufferBytes
	switch {
	case n < 0:
		return 0, fmt.Errorf("probe: RingBufferBytes %d is negative", n)
	case n == 0:
		n = DefaultRingBufferBytes
	case n > MaxRingBufferBytes:
		return 0, fmt.Errorf("probe: RingBufferBytes %d exceeds the maximum %d", n, MaxRingBufferBytes)
	}
	size := pageSize
	for size < n {
		size <<= 1
	}
	return size, nil
}

// normalizeDropReason turns "skb_drop_reason_netfilter_drop" or
// "NETFILTER_DROP" into "NETFILTER_DROP".
func normalizeDropReason(s string) string {
	return strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), dropReasonPrefix)
}

const (
	dropReasonPrefix = "SKB_DROP_REASON_"
	rstReasonPrefix  = "SK_RST_REASON_"
)

// ProgramStats is the kernel's accounting for one attached program. The
// kernel counts only while BPF statistics are enabled (EnableStats or
// sysctl kernel.bpf_stats_enabled=1).
type ProgramStats struct {
	Name     string // program name in bpf/probe.c
	Hook     string // e.g. "tp_btf/kfree_skb"
	RunCount uint64
	RunTime  time.Duration
	// RecursionMisses counts calls the kernel skipped because another
	// program was running on the CPU (missed events).
	RecursionMisses uint64
}

// NsPerCall is the mean cost of one call.
func (s ProgramStats) NsPerCall() float64 {
	if s.RunCount == 0 {
		return 0
	}
	return float64(s.RunTime.Nanoseconds()) / float64(s.RunCount)
}

// dropModes resolves reason names to kernel values and their filter mode.
func dropModes(want []string, names map[uint32]string) (map[uint32]uint8, error) {
	byName := make(map[string]uint32, len(names))
	for v, n := range names {
		byName[n] = v
	}
	useDefault := len(want) == 0
	if useDefault {
		want = defaultDropReasons
	}
	modes := make(map[uint32]uint8, len(want))
	for _, w := range want {
		n := normalizeDropReason(w)
		v, ok := byName[n]
		switch {
		case !ok && useDefault:
			continue // an older kernel without this reason
		case !ok:
			return nil, fmt.Errorf("probe: drop reason %q: this kernel's enum skb_drop_reason has no SKB_DROP_REASON_%s", w, n)
		case n == "NOT_DROPPED_YET" || n == "CONSUMED":
			return nil, fmt.Errorf("probe: drop reason %q is not a drop", w)
		case n == "NOT_SPECIFIED":
			modes[v] = modeAtLocation
		default:
			modes[v] = modeAlways
		}
	}
	return modes, nil
}

const (
	modeAlways     = 1 // NC_DROP_ALWAYS
	modeAtLocation = 2 // NC_DROP_AT_LOCATION
	coreReasons    = 1024
	maxLocations   = 4
)
