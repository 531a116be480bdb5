/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Trimmed kernel types for the network-correlator probes.
 *
 * Only the fields the probes read are declared, with the names and types they
 * have in the kernel's BTF (`bpftool btf dump file /sys/kernel/btf/vmlinux
 * format c`). Every struct carries preserve_access_index, so the loader
 * relocates each access to the running kernel's real offsets (CO-RE): member
 * order and struct sizes here do not matter, names and types do. Keeping this
 * subset instead of the 2.8 MB dump makes the objects independent of the
 * machine they are regenerated on.
 */
#ifndef NC_VMLINUX_H
#define NC_VMLINUX_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;

/* UAPI constants (include/uapi/linux/bpf.h); stable ABI values. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};

enum {
	BPF_ANY = 0,
};

enum {
	BPF_F_NO_PREALLOC = 1,
};

enum {
	BPF_LOCAL_STORAGE_GET_F_CREATE = 1,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
	__u64 net_cookie;
};

typedef struct {
	struct net *net;
} possible_net_t;

typedef struct {
	__s64 counter;
} atomic64_t;

typedef struct {
	int counter;
} atomic_t;

struct sock_common {
	union {
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
};

struct sock {
	struct sock_common __sk_common;
	int sk_err;
	u16 sk_protocol;
	u32 sk_ack_backlog;
	u32 sk_max_ack_backlog;
};

struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

struct inet_connection_sock {
	__u8 icsk_retransmits;
};

struct net_device {
	char name[16];
	int ifindex;
	possible_net_t nd_net;
	unsigned int mtu;
};

struct dst_entry {
	struct net_device *dev;
};

struct sk_buff {
	struct sock *sk;
	struct net_device *dev;
	unsigned long _skb_refdst;
	char cb[48];
	__be16 protocol;
	__u16 network_header;
	unsigned char *head;
};

struct tcp_skb_cb {
	__u8 tcp_flags;
};

struct neigh_table {
	int family;
	unsigned int key_len;
};

struct neighbour {
	struct neigh_table *tbl;
	unsigned long confirmed;
	unsigned long updated;
	atomic_t probes;
	u8 nud_state;
	unsigned char ha[32];
	struct net_device *dev;
	u8 primary_key[0];
};

struct file {
	void *private_data;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct nsproxy {
	struct net *net_ns;
};

struct task_struct {
	struct files_struct *files;
	struct nsproxy *nsproxy;
};

struct socket {
	short type;
	struct sock *sk;
};

/* A task's saved user registers, in the two layouts the connect() probe
 * knows (CO-RE flavours: the ___suffix is ignored when matching the
 * kernel's struct pt_regs; only the running architecture's fields exist). */
struct pt_regs___x86 {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
};

struct pt_regs___arm64 {
	__u64 regs[31];
	__u64 orig_x0;
};

#pragma clang attribute pop

/* UAPI struct __sk_buff (include/uapi/linux/bpf.h), the TC program's
 * context: accesses are rewritten by the verifier from these fixed offsets,
 * so this is the real layout up to the last field used, not CO-RE. */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
};

enum bpf_hdr_start_off {
	BPF_HDR_START_MAC = 0,
	BPF_HDR_START_NET = 1,
};

/* Classic tracepoint records of syscalls:sys_{enter,exit}_connect
 * (tracefs events/syscalls/.../format; fixed layout, not CO-RE). */
struct sys_enter_connect_args {
	__u64 common;
	int syscall_nr;
	__u64 fd;
	__u64 uservaddr;
	__u64 addrlen;
};

struct sys_exit_connect_args {
	__u64 common;
	int syscall_nr;
	long ret;
};

#endif /* NC_VMLINUX_H */
