// Package replay reads and writes recorded signals as JSON lines, so that the
// correlator and every pattern can be driven without a kernel and a user can
// re-analyse a recording.
//
// # Format
//
// One JSON object per line, UTF-8, "\n" or "\r\n" line endings. Blank lines
// and lines whose first non-blank character is '#' are comments and skipped
// (fixtures use them to say what they show). Each object is one
// signal.Signal; field names are snake_case:
//
//	field          JSON type          Signal field   notes
//	time           string (required)  Time           RFC 3339 with nanoseconds (time.RFC3339Nano)
//	kind           string (required)  Kind           state_change | retransmit | reset_received | reset_sent | drop |
//	                                                 neigh_failed | connect_error | icmp_error | icmp_sent
//	proto          string or number   Flow.Proto     tcp | udp | icmp | icmpv6 | sctp, or the IANA number
//	src, dst       string             Flow.Src/Dst   IP literal ("10.0.0.1", "fd00::1"); both of one family
//	src_port       number             Flow.SrcPort   0..65535
//	dst_port       number             Flow.DstPort   0..65535
//	netns_cookie   number             NetnsCookie    net->net_cookie (uint64)
//	netns_inode    number             NetnsInode     uint32
//	ifindex        number             Ifindex        uint32
//	dev            string             Dev
//	state          string             State          kernel TCP state name: ESTABLISHED, SYN_SENT, ... NEW_SYN_RECV
//	old_state      string             OldState       same names
//	sk_err         number             SkErr          positive errno at a state change (111, 110, ...)
//	err            number             Err            hook return code (tcp_retransmit_skb: -1 EPERM, -16 EBUSY)
//	tcp_flags      string or number   TCPFlags       names joined by '|': "SYN", "RST|ACK"
//	                                                 (FIN SYN RST PSH ACK URG ECE CWR), or 0..255
//	drop_reason    string             DropReason     skb_drop_reason without SKB_DROP_REASON_ ("NO_SOCKET")
//	drop_location  string             DropLocation   function that freed the skb ("nft_do_chain")
//	reset_reason   string             ResetReason    sk_rst_reason without SK_RST_REASON_ ("NO_SOCKET")
//	retransmits    number             Retransmits    icsk_retransmits as the kernel reports it (1 on the
//	                                                 first SYN retransmission on 6.18)
//	sock_cookie    number             SockCookie     uint64
//	pid            number             PID            uint32
//	comm           string             Comm
//	neigh_addr     string             NeighAddr      IP literal of the neighbour that failed to resolve
//	neigh_state    string             NeighState     NUD name it failed from: INCOMPLETE, PROBE, ...
//	neigh_resolved bool               NeighResolved  the entry had a link-layer address
//	neigh_probes   number             NeighProbes    uint32
//	neigh_tried_ns number             NeighTried     nanoseconds, 0..2^63-1
//	icmp_type      number             ICMPType       0..255 (ICMPv4 or ICMPv6 numbering after the flow's family)
//	icmp_code      number             ICMPCode       0..255
//	icmp_from      string             ICMPFrom       IP literal of the ICMP error's sender
//	mtu            number             MTU            next-hop MTU (frag needed / packet too big)
//	backlog        number             Backlog        listener's accept queue length at a drop
//	max_backlog    number             MaxBacklog     listener's accept queue limit
//
// Only time and kind are required; an absent field (or null) is the zero
// value. Unknown fields are errors, so a typo never silently drops a value.
// The Encoder writes fields in the order above and omits zero values, so an
// encoded recording decodes to the same signals.
//
// Example:
//
//	{"time":"2026-11-26T00:00:00.000100Z","kind":"drop","proto":"tcp","src":"10.0.0.1","src_port":40000,"dst":"10.0.0.2","dst_port":8080,"netns_cookie":4098,"netns_inode":4026532300,"dev":"eth0","tcp_flags":"SYN","drop_reason":"NO_SOCKET","drop_location":"tcp_v4_rcv"}
//
// Errors from the Decoder are *Error values naming the line (1-based, counting
// comment lines) and the field.
package replay
