// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * network-correlator kernel probes: tracepoints (tp_btf) that see TCP
 * connection failures and the kernel's own drop records. Everything a
 * successful connection produces is filtered out here, before the ring
 * buffer, so the success path costs one or two comparisons per hook call.
 */

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58

/* include/net/tcp_states.h (kernel ABI). */
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define TCP_LISTEN 10

/* Record kinds; the same numbers as signal.Kind in Go. */
enum nc_kind {
	NC_KIND_STATE_CHANGE = 1,
	NC_KIND_RETRANSMIT = 2,
	NC_KIND_RESET_RECEIVED = 3,
	NC_KIND_RESET_SENT = 4,
	NC_KIND_DROP = 5,
	NC_KIND_NEIGH_FAILED = 6,
	NC_KIND_CONNECT_ERROR = 7,
	NC_KIND_ICMP_ERROR = 8,
	NC_KIND_ICMP_SENT = 9,
};

/* nc_event.flags */
#define NC_F_FLOW 0x01   /* addresses/ports are valid */
#define NC_F_REASON 0x02 /* reason is valid */
#define NC_F_ERR 0x04    /* err is valid */
#define NC_F_SOCK 0x08   /* a socket was attached (state, cookie) */
#define NC_F_LLADDR 0x10 /* neighbour: the entry holds a link-layer address */
#define NC_F_DURATION 0x20 /* duration_ns is valid */
#define NC_F_BACKLOG 0x40 /* backlog/max_backlog are valid */
#define NC_F_PEER 0x80   /* peer is valid */

/* Drop reason modes (values of the drop_reasons maps). */
#define NC_DROP_ALWAYS 1
#define NC_DROP_AT_LOCATION 2 /* only when the location is in drop_locations */

/*
 * One fixed-size ring buffer record. Integers are host-endian, ports in host
 * order, addresses in network order (IPv4 in the first 4 bytes).
 */
struct nc_event {
	__u64 ts_ns;        /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 netns_cookie; /* net->net_cookie */
	__u64 sock_cookie;  /* bpf_get_socket_cookie, 0 without socket */
	__u64 location;     /* kfree_skb: address inside the freeing function */
	__u32 netns_inum;   /* net->ns.inum */
	__u32 ifindex;
	__u32 pid;          /* tgid of the current task */
	__u32 reason;       /* skb_drop_reason or sk_rst_reason value */
	__s32 sk_err;
	__s32 err;
	__u32 retransmits;  /* icsk_retransmits */
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 kind;
	__u8 family;        /* AF_INET / AF_INET6, 0 when unknown */
	__u8 state;
	__u8 old_state;
	__u8 proto;
	__u8 tcp_flags;
	__u8 flags;
	__u8 _pad;
	char comm[16];
	char dev[16];
	__u8 peer[16];      /* neighbour address, ICMP error sender (family) */
	__u64 duration_ns;  /* neighbour: time spent resolving */
	__u32 probes;       /* neighbour: neigh->probes */
	__u32 mtu;          /* ICMP: next-hop MTU */
	__u32 backlog;      /* listener: sk_ack_backlog */
	__u32 max_backlog;  /* listener: sk_max_ack_backlog */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 _pad2[6];
};

/* Makes the struct part of the BTF so bpf2go can export it (-type nc_event). */
const struct nc_event *const unused_nc_event __attribute__((unused)) = 0;

struct loc_range {
	__u64 lo;
	__u64 hi;
};

#define NC_CORE_REASONS 1024
#define NC_MAX_LOCATIONS 4

/* Size is set by the loader from the configuration. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Records that did not fit in the ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Drop reasons to report, filled by the loader from the kernel BTF enum
 * skb_drop_reason. Core reasons index the array; subsystem reasons (upper
 * 16 bits set) go to the hash. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NC_CORE_REASONS);
	__type(key, __u32);
	__type(value, __u8);
} drop_reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
} drop_reasons_ext SEC(".maps");

/* Function address ranges where NC_DROP_AT_LOCATION reasons count. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NC_MAX_LOCATIONS);
	__type(key, __u32);
	__type(value, struct loc_range);
} drop_locations SEC(".maps");

/* Tracepoint argument lists differ between kernel versions; the loader sets
 * these from the kernel BTF so the verifier never sees an access past the
 * real arguments. */
const volatile bool kfree_skb_has_rx_sk = true;
const volatile bool tcp_send_reset_has_reason = true;
const volatile bool tcp_retransmit_skb_has_err = true;

/* include/uapi/linux/neighbour.h (kernel ABI). */
#define NUD_INCOMPLETE 0x01
#define NUD_PROBE 0x10
#define NUD_FAILED 0x20

/* The kernel's tick rate (CONFIG_HZ), to turn neighbour jiffies into time;
 * set by the loader, 0 when it cannot tell (duration then unknown). */
const volatile __u32 kernel_hz = 0;

/* Neighbours being resolved, by entry address: the state seen while
 * resolving (INCOMPLETE or PROBE) and neigh->updated when that state began.
 * The kernel overwrites both nud_state and updated on the move to FAILED
 * before its tracepoint, so this is how the probe knows what the entry
 * failed from and since when. A new resolution cycle (updated changed)
 * replaces the record, so a reused entry address is not mistaken for an
 * old entry. */
struct neigh_seen {
	__u64 updated;
	__u8 state;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct neigh_seen);
} neigh_resolving SEC(".maps");

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);

	if (n)
		*n += 1;
}

static __always_inline void submit(struct nc_event *e)
{
	__u64 id = bpf_get_current_pid_tgid();

	e->ts_ns = bpf_ktime_get_ns();
	e->pid = id >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (bpf_ringbuf_output(&events, e, sizeof(*e), 0))
		count_lost();
}

static __always_inline void fill_netns(struct nc_event *e, struct net *net)
{
	if (!net || e->netns_cookie)
		return;
	e->netns_cookie = BPF_CORE_READ(net, net_cookie);
	e->netns_inum = BPF_CORE_READ(net, ns.inum);
}

/* Addresses, ports, state, netns and cookie of a socket. The flow is the
 * socket's own view: source = local end. */
static __always_inline void fill_sock(struct nc_event *e, struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	e->flags |= NC_F_SOCK;
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	fill_netns(e, BPF_CORE_READ(sk, __sk_common.skc_net.net));
	if (e->flags & NC_F_FLOW)
		return;
	e->proto = IPPROTO_TCP;
	e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		__be32 a;

		e->family = AF_INET;
		a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memcpy(e->saddr, &a, 4);
		a = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(e->daddr, &a, 4);
		e->flags |= NC_F_FLOW;
	} else if (family == AF_INET6) {
		e->family = AF_INET6;
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
		e->flags |= NC_F_FLOW;
	}
}

/* The device a packet is on: ifindex, name and its netns. */
static __always_inline void fill_dev(struct nc_event *e, struct net_device *dev)
{
	if (!dev)
		return;
	e->ifindex = BPF_CORE_READ(dev, ifindex);
	BPF_CORE_READ_STR_INTO(&e->dev, dev, name);
	fill_netns(e, BPF_CORE_READ(dev, nd_net.net));
}

/*
 * Parses the IPv4/IPv6 header at skb->head + network_header and the L4 header
 * right after it (computed from the IP header, not transport_header, which is
 * not yet set where ip_rcv_core drops). Only TCP, UDP, ICMP and ICMPv6 count;
 * anything else returns -1. IPv6 extension headers are not walked.
 */
static __always_inline int parse_packet(struct sk_buff *skb, struct nc_event *e)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	unsigned char *l3, *l4;
	__u8 l4proto, b0;
	bool first_frag = true;

	if (!head || nh == (__u16)~0U)
		return -1;
	if (proto != ETH_P_IP && proto != ETH_P_IPV6 && proto != 0)
		return -1;
	l3 = head + nh;
	if (bpf_probe_read_kernel(&b0, 1, l3))
		return -1;

	if (b0 >> 4 == 4 && proto != ETH_P_IPV6) {
		__u8 ip[20];
		__u32 ihl;

		if (bpf_probe_read_kernel(ip, sizeof(ip), l3))
			return -1;
		ihl = (ip[0] & 0x0f) * 4;
		if (ihl < 20)
			return -1;
		l4proto = ip[9];
		first_frag = ((ip[6] & 0x1f) | ip[7]) == 0;
		__builtin_memcpy(e->saddr, &ip[12], 4);
		__builtin_memcpy(e->daddr, &ip[16], 4);
		e->family = AF_INET;
		l4 = l3 + ihl;
	} else if (b0 >> 4 == 6 && proto != ETH_P_IP) {
		__u8 ip6[40];

		if (bpf_probe_read_kernel(ip6, sizeof(ip6), l3))
			return -1;
		l4proto = ip6[6];
		__builtin_memcpy(e->saddr, &ip6[8], 16);
		__builtin_memcpy(e->daddr, &ip6[24], 16);
		e->family = AF_INET6;
		l4 = l3 + 40;
	} else {
		return -1;
	}

	switch (l4proto) {
	case IPPROTO_TCP:
		if (first_frag) {
			__u8 th[14];

			if (bpf_probe_read_kernel(th, sizeof(th), l4))
				return -1;
			e->sport = (__u16)th[0] << 8 | th[1];
			e->dport = (__u16)th[2] << 8 | th[3];
			e->tcp_flags = th[13];
		}
		break;
	case IPPROTO_UDP:
		if (first_frag) {
			__u8 uh[4];

			if (bpf_probe_read_kernel(uh, sizeof(uh), l4))
				return -1;
			e->sport = (__u16)uh[0] << 8 | uh[1];
			e->dport = (__u16)uh[2] << 8 | uh[3];
		}
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		break;
	default:
		return -1;
	}
	e->proto = l4proto;
	e->flags |= NC_F_FLOW;
	return 0;
}

/* A packet dropped at a listening socket: its accept queue length and
 * limit (an overflowing handshake is dropped against the listener). */
static __always_inline void fill_listener(struct nc_event *e, struct sock *sk)
{
	if (e->state != TCP_LISTEN)
		return;
	e->backlog = BPF_CORE_READ(sk, sk_ack_backlog);
	e->max_backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
	e->flags |= NC_F_BACKLOG;
}

static __always_inline bool location_allowed(__u64 loc)
{
	for (__u32 i = 0; i < NC_MAX_LOCATIONS; i++) {
		__u32 k = i;
		struct loc_range *r = bpf_map_lookup_elem(&drop_locations, &k);

		if (r && r->lo && loc >= r->lo && loc < r->hi)
			return true;
	}
	return false;
}

/* A socket moved to CLOSE: report only failed connects (from SYN_SENT, any
 * sk_err, including 0 when an ICMP error landed during connect) and closes
 * with an error from any other state. */
SEC("tp_btf/inet_sock_set_state")
int on_inet_sock_set_state(u64 *ctx)
{
	struct sock *sk = (void *)ctx[0];
	int oldstate = (int)ctx[1];
	int newstate = (int)ctx[2];
	struct nc_event e;
	int sk_err;

	/* Hot path (every state change of every TCP socket): the event is
	 * zeroed only once it counts, not before the filters. */
	if (newstate != TCP_CLOSE)
		return 0;
	sk_err = sk->sk_err;
	if (oldstate != TCP_SYN_SENT && sk_err == 0)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;

	__builtin_memset(&e, 0, sizeof(e));
	e.kind = NC_KIND_STATE_CHANGE;
	e.sk_err = sk_err;
	fill_sock(&e, sk);
	e.old_state = oldstate;
	e.state = newstate;
	e.sock_cookie = bpf_get_socket_cookie(sk);
	submit(&e);
	return 0;
}

/* Every retransmission is a failure symptom (SYN unanswered, data or FIN
 * unacknowledged). */
SEC("tp_btf/tcp_retransmit_skb")
int on_tcp_retransmit_skb(u64 *ctx)
{
	struct sock *sk = (void *)ctx[0];
	struct sk_buff *skb = (void *)ctx[1];
	struct nc_event e = {};

	e.kind = NC_KIND_RETRANSMIT;
	if (tcp_retransmit_skb_has_err) {
		e.err = (int)ctx[2];
		e.flags |= NC_F_ERR;
	}
	fill_sock(&e, sk);
	e.retransmits = BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_retransmits);
	if (skb) {
		struct tcp_skb_cb *cb = (void *)&skb->cb[0];

		e.tcp_flags = BPF_CORE_READ(cb, tcp_flags);
	}
	e.sock_cookie = bpf_get_socket_cookie(sk);
	submit(&e);
	return 0;
}

/* A RST arrived on a socket (SYN_SENT: connection refused). */
SEC("tp_btf/tcp_receive_reset")
int on_tcp_receive_reset(u64 *ctx)
{
	struct sock *sk = (void *)ctx[0];
	struct nc_event e = {};

	e.kind = NC_KIND_RESET_RECEIVED;
	e.tcp_flags = 0x04;
	fill_sock(&e, sk);
	e.sock_cookie = bpf_get_socket_cookie(sk);
	submit(&e);
	return 0;
}

/* This host sent a RST. With the triggering segment (skb) the flow is that
 * segment reversed, i.e. the RST's own direction, and tcp_flags are the
 * triggering segment's flags (SYN: nobody listens; ACK/PSH: the peer lost
 * the connection). Without it (active reset) the socket gives the flow. */
SEC("tp_btf/tcp_send_reset")
int on_tcp_send_reset(u64 *ctx)
{
	struct sock *sk = (void *)ctx[0];
	struct sk_buff *skb = (void *)ctx[1];
	struct nc_event e = {};

	e.kind = NC_KIND_RESET_SENT;
	if (tcp_send_reset_has_reason) {
		e.reason = (__u32)ctx[2];
		e.flags |= NC_F_REASON;
	}
	if (skb && parse_packet(skb, &e) == 0) {
		__u8 a[16];
		__u16 p = e.sport;

		__builtin_memcpy(a, e.saddr, 16);
		__builtin_memcpy(e.saddr, e.daddr, 16);
		__builtin_memcpy(e.daddr, a, 16);
		e.sport = e.dport;
		e.dport = p;
		fill_dev(&e, BPF_CORE_READ(skb, dev));
	}
	if (sk) {
		fill_sock(&e, sk);
		e.sock_cookie = bpf_get_socket_cookie(sk);
	}
	if (!(e.flags & NC_F_FLOW))
		return 0;
	submit(&e);
	return 0;
}

/* The kernel freed a packet with a drop reason. Only reasons the loader
 * put in drop_reasons, and only TCP/UDP/ICMP packets, reach user space. */
SEC("tp_btf/kfree_skb")
int on_kfree_skb(u64 *ctx)
{
	struct sk_buff *skb = (void *)ctx[0];
	__u64 location = ctx[1];
	__u32 reason = (__u32)ctx[2];
	struct nc_event e;
	struct sock *sk;
	__u8 *mode;

	/* Hot path: every dropped packet of the host passes here. Keep it to
	 * an inlined array lookup; the event is zeroed only once it counts. */
	if (reason < NC_CORE_REASONS) {
		mode = bpf_map_lookup_elem(&drop_reasons, &reason);
		if (!mode || !*mode)
			return 0;
	} else {
		/* Separate call site so the compiler cannot merge it with the
		 * array lookup (the verifier inlines only single-map sites). */
		asm volatile("" ::: "memory");
		mode = bpf_map_lookup_elem(&drop_reasons_ext, &reason);
		if (!mode || !*mode)
			return 0;
	}
	if (*mode == NC_DROP_AT_LOCATION && !location_allowed(location))
		return 0;
	__builtin_memset(&e, 0, sizeof(e));
	if (parse_packet(skb, &e))
		return 0;

	e.kind = NC_KIND_DROP;
	e.reason = reason;
	e.flags |= NC_F_REASON;
	e.location = location;
	/* netns: the device, else the packet's socket, else the receiving
	 * socket (skb->dev is NULL at LOCAL_OUT and in tcp_v4_do_rcv). */
	fill_dev(&e, BPF_CORE_READ(skb, dev));
	sk = BPF_CORE_READ(skb, sk);
	if (sk) {
		e.state = BPF_CORE_READ(sk, __sk_common.skc_state);
		fill_netns(&e, BPF_CORE_READ(sk, __sk_common.skc_net.net));
		/* skb->sk is an RCU pointer the cookie helper refuses: take the
		 * cookie only if the socket already has one (the other probes
		 * create it at the first retransmit, so only a socket's first
		 * dropped packet may lack it). */
		e.sock_cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		e.flags |= NC_F_SOCK;
		fill_listener(&e, sk);
	} else if (kfree_skb_has_rx_sk) {
		struct sock *rx_sk = (void *)ctx[3];

		if (rx_sk) {
			e.state = BPF_CORE_READ(rx_sk, __sk_common.skc_state);
			fill_netns(&e, BPF_CORE_READ(rx_sk, __sk_common.skc_net.net));
			e.sock_cookie = bpf_get_socket_cookie(rx_sk);
			e.flags |= NC_F_SOCK;
			fill_listener(&e, rx_sk);
		}
	}
	submit(&e);
	return 0;
}

static __always_inline void note_resolving(struct neighbour *n, __u8 state)
{
	__u64 key = (__u64)n;
	__u64 updated = n->updated;
	struct neigh_seen *seen = bpf_map_lookup_elem(&neigh_resolving, &key);
	struct neigh_seen v = { .updated = updated, .state = state };

	if (seen && seen->updated == updated && seen->state == state)
		return;
	bpf_map_update_elem(&neigh_resolving, &key, &v, BPF_ANY);
}

/* The neighbour timer: INCOMPLETE/PROBE entries are remembered, the move to
 * FAILED is reported. Reachable, stale and delayed entries return after one
 * comparison. */
SEC("tp_btf/neigh_timer_handler")
int on_neigh_timer_handler(u64 *ctx)
{
	struct neighbour *n = (void *)ctx[0];
	__u8 state = n->nud_state;
	struct neigh_table *tbl;
	struct neigh_seen *seen;
	struct nc_event e;
	__u64 key = (__u64)n, ha[2] = {};
	int family;

	/* Every neighbour timer of the host passes here: zero the event
	 * only for a FAILED entry. */
	if (state & (NUD_INCOMPLETE | NUD_PROBE)) {
		note_resolving(n, state);
		return 0;
	}
	if (state != NUD_FAILED)
		return 0;
	__builtin_memset(&e, 0, sizeof(e));

	tbl = n->tbl;
	family = BPF_CORE_READ(tbl, family);
	if (family == AF_INET)
		bpf_core_read(e.peer, 4, &n->primary_key);
	else if (family == AF_INET6)
		bpf_core_read(e.peer, 16, &n->primary_key);
	else
		return 0;
	e.kind = NC_KIND_NEIGH_FAILED;
	e.family = family;
	e.flags |= NC_F_PEER;
	e.state = NUD_FAILED;
	seen = bpf_map_lookup_elem(&neigh_resolving, &key);
	if (seen) {
		e.old_state = seen->state;
		if (kernel_hz) {
			__u64 d = bpf_jiffies64() - seen->updated;

			e.duration_ns = d * 1000000000ULL / kernel_hz;
			e.flags |= NC_F_DURATION;
		}
		bpf_map_delete_elem(&neigh_resolving, &key);
	}
	e.probes = BPF_CORE_READ(n, probes.counter);
	bpf_core_read(ha, sizeof(ha), &n->ha);
	if (ha[0] | ha[1])
		e.flags |= NC_F_LLADDR;
	fill_dev(&e, n->dev);
	submit(&e);
	return 0;
}

/* A packet met an unresolved neighbour. The first one starts resolution
 * (INCOMPLETE) here, not in the timer: remember it, so an entry that fails
 * at its first timer still reports INCOMPLETE. */
SEC("tp_btf/neigh_event_send_done")
int on_neigh_event_send_done(u64 *ctx)
{
	struct neighbour *n = (void *)ctx[0];

	if (n->nud_state == NUD_INCOMPLETE)
		note_resolving(n, NUD_INCOMPLETE);
	return 0;
}

/* connect() arguments of a task inside the syscall, in task-local storage
 * (cheaper than a hash keyed by pid: no hashing, no shared buckets; freed
 * with the task). */
struct connect_call {
	__u64 uaddr;
	__u32 fd;
	__u32 addrlen;
	__u8 active;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct connect_call);
} connect_calls SEC(".maps");

/* The loader sets this when the kernel's struct pt_regs is one the exit
 * hook can read connect()'s arguments from (x86-64, arm64): the enter hook
 * is then not attached at all. */
const volatile bool connect_args_from_regs = false;

/* Every connect() of the host passes here: store the arguments, nothing
 * else. Attached only where the arguments cannot be read at exit. */
SEC("tracepoint/syscalls/sys_enter_connect")
int on_sys_enter_connect(struct sys_enter_connect_args *ctx)
{
	struct connect_call *c;

	c = bpf_task_storage_get(&connect_calls, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!c)
		return 0;
	c->uaddr = ctx->uservaddr;
	c->fd = (__u32)ctx->fd;
	c->addrlen = (__u32)ctx->addrlen;
	c->active = 1;
	return 0;
}

/* errno values (include/uapi/asm-generic/errno*.h, kernel ABI). */
#define NC_EINTR 4
#define NC_EBADF 9
#define NC_EAGAIN 11
#define NC_EFAULT 14
#define NC_ENOTSOCK 88
#define NC_EISCONN 106
#define NC_EALREADY 114
#define NC_EINPROGRESS 115
#define NC_ERESTARTSYS 512

/* connect() returned: report errors of IPv4/IPv6 sockets, except those that
 * mean "not finished yet" or "not a network failure": EINPROGRESS,
 * EALREADY, EISCONN, EAGAIN (non-blocking progress), EINTR and the
 * kernel-internal restart codes (a signal), EBADF/ENOTSOCK/EFAULT (program
 * errors). */
SEC("tracepoint/syscalls/sys_exit_connect")
int on_sys_exit_connect(struct sys_exit_connect_args *ctx)
{
	struct connect_call *c;
	struct connect_call call;
	long ret = ctx->ret;
	struct nc_event e;
	struct task_struct *task;
	struct fdtable *fdt;
	struct file *file = 0;
	struct sock *sk = 0;
	__u16 family;

	/* Success path: one comparison. The stored arguments stay behind;
	 * the next sys_enter_connect overwrites them. */
	if (ret >= 0 || ret <= -NC_ERESTARTSYS)
		return 0;
	switch (-ret) {
	case NC_EINPROGRESS:
	case NC_EALREADY:
	case NC_EISCONN:
	case NC_EAGAIN:
	case NC_EINTR:
	case NC_EBADF:
	case NC_ENOTSOCK:
	case NC_EFAULT:
		return 0;
	}
	__builtin_memset(&e, 0, sizeof(e));
	if (connect_args_from_regs) {
		/* The syscall's user registers are intact at its exit but for
		 * the return value register (x86-64: ax; arm64: x0, whose
		 * entry value is kept in orig_x0). */
		struct pt_regs *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());

		if (bpf_core_field_exists(((struct pt_regs___x86 *)0)->di)) {
			struct pt_regs___x86 *r = (void *)regs;

			call.fd = BPF_CORE_READ(r, di);
			call.uaddr = BPF_CORE_READ(r, si);
			call.addrlen = BPF_CORE_READ(r, dx);
		} else if (bpf_core_field_exists(((struct pt_regs___arm64 *)0)->orig_x0)) {
			struct pt_regs___arm64 *r = (void *)regs;

			call.fd = BPF_CORE_READ(r, orig_x0);
			call.uaddr = BPF_CORE_READ(r, regs[1]);
			call.addrlen = BPF_CORE_READ(r, regs[2]);
		} else {
			return 0;
		}
	} else {
		c = bpf_task_storage_get(&connect_calls, bpf_get_current_task_btf(), 0, 0);
		if (!c || !c->active)
			return 0;
		call = *c;
		c->active = 0;
	}
	if (!call.uaddr || bpf_probe_read_user(&family, sizeof(family), (void *)call.uaddr))
		return 0;
	if (family == AF_INET && call.addrlen >= 16) {
		__u8 sin[8];

		if (bpf_probe_read_user(sin, sizeof(sin), (void *)call.uaddr))
			return 0;
		e.dport = (__u16)sin[2] << 8 | sin[3];
		__builtin_memcpy(e.daddr, &sin[4], 4);
	} else if (family == AF_INET6 && call.addrlen >= 24) {
		__u8 sin6[24];

		if (bpf_probe_read_user(sin6, sizeof(sin6), (void *)call.uaddr))
			return 0;
		e.dport = (__u16)sin6[2] << 8 | sin6[3];
		__builtin_memcpy(e.daddr, &sin6[8], 16);
	} else {
		return 0;
	}
	e.kind = NC_KIND_CONNECT_ERROR;
	e.family = family;
	e.err = (int)ret;
	e.flags |= NC_F_FLOW | NC_F_ERR;

	/* The socket behind the fd: protocol, local address, netns. */
	task = (struct task_struct *)bpf_get_current_task();
	fdt = BPF_CORE_READ(task, files, fdt);
	if (fdt && call.fd < BPF_CORE_READ(fdt, max_fds)) {
		struct file **fds = BPF_CORE_READ(fdt, fd);

		/* A plain read: inside bpf_core_read the call.fd access would
		 * become a CO-RE relocation against our own struct. */
		bpf_probe_read_kernel(&file, sizeof(file), fds + call.fd);
	}
	if (file) {
		struct socket *sock = BPF_CORE_READ(file, private_data);

		sk = BPF_CORE_READ(sock, sk);
	}
	if (sk) {
		__u16 skfam = BPF_CORE_READ(sk, __sk_common.skc_family);

		if (skfam != AF_INET && skfam != AF_INET6)
			return 0;
		e.proto = BPF_CORE_READ(sk, sk_protocol);
		e.sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
		if (family == AF_INET) {
			__be32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);

			__builtin_memcpy(e.saddr, &a, 4);
		} else {
			bpf_core_read(e.saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		}
		e.state = BPF_CORE_READ(sk, __sk_common.skc_state);
		e.sock_cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		e.flags |= NC_F_SOCK;
		fill_netns(&e, BPF_CORE_READ(sk, __sk_common.skc_net.net));
	} else {
		fill_netns(&e, BPF_CORE_READ(task, nsproxy, net_ns));
	}
	submit(&e);
	return 0;
}

/* Types of ICMP errors reported (RFC 792, RFC 4443). */
#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMP_FRAG_NEEDED 4
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define TCX_NEXT -1

extern void *bpf_cast_to_kern_ctx(void *) __ksym;

/* Ports of the embedded original packet: the first 4 bytes of its L4
 * header, which every ICMP error quotes (RFC 792: 8 bytes of data). */
static __always_inline void quoted_ports(struct __sk_buff *skb, __u32 off, __u8 proto, struct nc_event *e)
{
	__u8 p[4];

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return;
	if (bpf_skb_load_bytes_relative(skb, off, p, sizeof(p), BPF_HDR_START_NET))
		return;
	e->sport = (__u16)p[0] << 8 | p[1];
	e->dport = (__u16)p[2] << 8 | p[3];
}

/* Fast path of the TC program: the L4 protocol byte read straight from the
 * packet's linear data, with or without an Ethernet header; -1 when the
 * headers are not there (the caller then takes the helper path). */
static __always_inline int l4_proto_fast(struct __sk_buff *skb, __u16 proto)
{
	__u8 *p = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 version = proto == ETH_P_IP ? 4 : 6;

	if ((void *)(p + 24) > end)
		return -1;
	if (((__u16)p[12] << 8 | p[13]) == proto && p[14] >> 4 == version)
		return version == 4 ? p[14 + 9] : p[14 + 6];
	if (p[0] >> 4 == version)
		return version == 4 ? p[9] : p[6];
	return -1;
}

/*
 * ICMP errors received (TC ingress on the configured interfaces): the
 * outer header gives the error's sender, the quoted header the original
 * flow that failed (as its sender sent it). Only headers are read, never
 * payload. Any other packet costs a few loads and comparisons.
 */
SEC("tcx/ingress")
int on_icmp_ingress(struct __sk_buff *skb)
{
	__u16 proto = bpf_ntohs((__u16)skb->protocol);
	struct nc_event e; /* zeroed once the packet is an ICMP error */
	__u32 off;
	__u8 inner_proto;
	int l4;

	if (proto != ETH_P_IP && proto != ETH_P_IPV6)
		return TCX_NEXT;
	l4 = l4_proto_fast(skb, proto);
	if (l4 >= 0 && l4 != IPPROTO_ICMP && l4 != IPPROTO_ICMPV6)
		return TCX_NEXT;

	if (proto == ETH_P_IP) {
		__u8 ip[20], icmp[8], in[20];
		__u32 ihl;

		if (bpf_skb_load_bytes_relative(skb, 0, ip, sizeof(ip), BPF_HDR_START_NET))
			return TCX_NEXT;
		if (ip[9] != IPPROTO_ICMP || (ip[6] & 0x1f) | ip[7])
			return TCX_NEXT;
		ihl = (ip[0] & 0x0f) * 4;
		if (ihl < 20 || bpf_skb_load_bytes_relative(skb, ihl, icmp, sizeof(icmp), BPF_HDR_START_NET))
			return TCX_NEXT;
		if (icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED && icmp[0] != ICMP_PARAMETERPROB)
			return TCX_NEXT;
		off = ihl + 8;
		if (bpf_skb_load_bytes_relative(skb, off, in, sizeof(in), BPF_HDR_START_NET) || in[0] >> 4 != 4)
			return TCX_NEXT;
		__builtin_memset(&e, 0, sizeof(e));
		e.family = AF_INET;
		__builtin_memcpy(e.peer, &ip[12], 4);
		__builtin_memcpy(e.saddr, &in[12], 4);
		__builtin_memcpy(e.daddr, &in[16], 4);
		e.icmp_type = icmp[0];
		e.icmp_code = icmp[1];
		if (icmp[0] == ICMP_DEST_UNREACH && icmp[1] == ICMP_FRAG_NEEDED)
			e.mtu = (__u32)icmp[6] << 8 | icmp[7];
		inner_proto = in[9];
		if (!((in[6] & 0x1f) | in[7]))
			quoted_ports(skb, off + (in[0] & 0x0f) * 4, inner_proto, &e);
	} else if (proto == ETH_P_IPV6) {
		__u8 ip6[40], icmp[8], in6[40];

		if (bpf_skb_load_bytes_relative(skb, 0, ip6, sizeof(ip6), BPF_HDR_START_NET))
			return TCX_NEXT;
		if (ip6[6] != IPPROTO_ICMPV6)
			return TCX_NEXT;
		if (bpf_skb_load_bytes_relative(skb, 40, icmp, sizeof(icmp), BPF_HDR_START_NET))
			return TCX_NEXT;
		if (icmp[0] != ICMPV6_DEST_UNREACH && icmp[0] != ICMPV6_PKT_TOOBIG && icmp[0] != ICMPV6_TIME_EXCEED)
			return TCX_NEXT;
		if (bpf_skb_load_bytes_relative(skb, 48, in6, sizeof(in6), BPF_HDR_START_NET) || in6[0] >> 4 != 6)
			return TCX_NEXT;
		__builtin_memset(&e, 0, sizeof(e));
		e.family = AF_INET6;
		__builtin_memcpy(e.peer, &ip6[8], 16);
		__builtin_memcpy(e.saddr, &in6[8], 16);
		__builtin_memcpy(e.daddr, &in6[24], 16);
		e.icmp_type = icmp[0];
		e.icmp_code = icmp[1];
		if (icmp[0] == ICMPV6_PKT_TOOBIG)
			e.mtu = (__u32)icmp[4] << 24 | (__u32)icmp[5] << 16 | (__u32)icmp[6] << 8 | icmp[7];
		inner_proto = in6[6];
		quoted_ports(skb, 88, inner_proto, &e);
	} else {
		return TCX_NEXT;
	}
	e.kind = NC_KIND_ICMP_ERROR;
	e.proto = inner_proto;
	e.flags |= NC_F_FLOW | NC_F_PEER;
	{
		struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);

		fill_dev(&e, kskb->dev);
	}
	submit(&e);
	return TCX_NEXT;
}

/* This host generated an ICMP error (IPv4: icmp_send; the kernel has no
 * such tracepoint for ICMPv6). skb_in is the packet that caused it, so the
 * flow is that packet's, as its sender sent it. Redirects and other
 * non-error types are left out. */
SEC("tp_btf/icmp_send")
int on_icmp_send(u64 *ctx)
{
	struct sk_buff *skb = (void *)ctx[0];
	int type = (int)ctx[1];
	int code = (int)ctx[2];
	struct nc_event e;
	struct sock *sk;

	if (type != ICMP_DEST_UNREACH && type != ICMP_TIME_EXCEEDED && type != ICMP_PARAMETERPROB)
		return 0;
	__builtin_memset(&e, 0, sizeof(e));
	if (parse_packet(skb, &e))
		return 0;
	e.kind = NC_KIND_ICMP_SENT;
	e.icmp_type = type;
	e.icmp_code = code;
	if (type == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED) {
		/* The tracepoint does not carry the MTU it advertises: it is the
		 * route's device MTU that ip_forward compared the packet with
		 * (the low bit of _skb_refdst is the no-reference flag). */
		unsigned long refdst = BPF_CORE_READ(skb, _skb_refdst) & ~1UL;

		if (refdst)
			e.mtu = BPF_CORE_READ((struct dst_entry *)refdst, dev, mtu);
	}
	fill_dev(&e, BPF_CORE_READ(skb, dev));
	sk = BPF_CORE_READ(skb, sk);
	if (sk)
		fill_netns(&e, BPF_CORE_READ(sk, __sk_common.skc_net.net));
	submit(&e);
	return 0;
}
