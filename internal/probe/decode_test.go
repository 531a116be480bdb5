package probe

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/network-correlator/network-correlator/bpf"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// The decoder's offsets must match the C struct as bpf2go saw it.
func TestRecordLayoutMatchesGeneratedType(t *testing.T) {
	var e bpf.ProbeNcEvent
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"size", unsafe.Sizeof(e), recordSize},
		{"ts_ns", unsafe.Offsetof(e.TsNs), offTsNs},
		{"netns_cookie", unsafe.Offsetof(e.NetnsCookie), offNetnsCookie},
		{"sock_cookie", unsafe.Offsetof(e.SockCookie), offSockCookie},
		{"location", unsafe.Offsetof(e.Location), offLocation},
		{"netns_inum", unsafe.Offsetof(e.NetnsInum), offNetnsInum},
		{"ifindex", unsafe.Offsetof(e.Ifindex), offIfindex},
		{"pid", unsafe.Offsetof(e.Pid), offPid},
		{"reason", unsafe.Offsetof(e.Reason), offReason},
		{"sk_err", unsafe.Offsetof(e.SkErr), offSkErr},
		{"err", unsafe.Offsetof(e.Err), offErr},
		{"retransmits", unsafe.Offsetof(e.Retransmits), offRetransmits},
		{"sport", unsafe.Offsetof(e.Sport), offSport},
		{"dport", unsafe.Offsetof(e.Dport), offDport},
		{"saddr", unsafe.Offsetof(e.Saddr), offSaddr},
		{"daddr", unsafe.Offsetof(e.Daddr), offDaddr},
		{"kind", unsafe.Offsetof(e.Kind), offKind},
		{"family", unsafe.Offsetof(e.Family), offFamily},
		{"state", unsafe.Offsetof(e.State), offState},
		{"old_state", unsafe.Offsetof(e.OldState), offOldState},
		{"proto", unsafe.Offsetof(e.Proto), offProto},
		{"tcp_flags", unsafe.Offsetof(e.TcpFlags), offTCPFlags},
		{"flags", unsafe.Offsetof(e.Flags), offFlags},
		{"comm", unsafe.Offsetof(e.Comm), offComm},
		{"dev", unsafe.Offsetof(e.Dev), offDev},
		{"peer", unsafe.Offsetof(e.Peer), offPeer},
		{"duration_ns", unsafe.Offsetof(e.DurationNs), offDurationNs},
		{"probes", unsafe.Offsetof(e.Probes), offProbes},
		{"mtu", unsafe.Offsetof(e.Mtu), offMTU},
		{"backlog", unsafe.Offsetof(e.Backlog), offBacklog},
		{"max_backlog", unsafe.Offsetof(e.MaxBacklog), offMaxBacklog},
		{"icmp_type", unsafe.Offsetof(e.IcmpType), offICMPType},
		{"icmp_code", unsafe.Offsetof(e.IcmpCode), offICMPCode},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: generated %d, decoder %d", tt.name, tt.got, tt.want)
		}
	}
}

// rec builds a raw record the way the kernel program fills it.
type rec struct {
	ts, netnsCookie, sockCookie, location uint64
	netnsInum, ifindex, pid, reason       uint32
	skErr, err                            int32
	retransmits                           uint32
	sport, dport                          uint16
	saddr, daddr                          netip.Addr
	kind, family, state, oldState         uint8
	proto, tcpFlags, flags                uint8
	comm, dev                             string
	peer                                  netip.Addr
	durationNs                            uint64
	probes, mtu, backlog, maxBacklog      uint32
	icmpType, icmpCode                    uint8
}

func (r rec) bytes() []byte {
	b := make([]byte, recordSize)
	ne := binary.NativeEndian
	ne.PutUint64(b[offTsNs:], r.ts)
	ne.PutUint64(b[offNetnsCookie:], r.netnsCookie)
	ne.PutUint64(b[offSockCookie:], r.sockCookie)
	ne.PutUint64(b[offLocation:], r.location)
	ne.PutUint32(b[offNetnsInum:], r.netnsInum)
	ne.PutUint32(b[offIfindex:], r.ifindex)
	ne.PutUint32(b[offPid:], r.pid)
	ne.PutUint32(b[offReason:], r.reason)
	ne.PutUint32(b[offSkErr:], uint32(r.skErr))
	ne.PutUint32(b[offErr:], uint32(r.err))
	ne.PutUint32(b[offRetransmits:], r.retransmits)
	ne.PutUint16(b[offSport:], r.sport)
	ne.PutUint16(b[offDport:], r.dport)
	if r.saddr.IsValid() {
		s := r.saddr.AsSlice()
		copy(b[offSaddr:], s)
		copy(b[offDaddr:], r.daddr.AsSlice())
	}
	b[offKind], b[offFamily], b[offState], b[offOldState] = r.kind, r.family, r.state, r.oldState
	b[offProto], b[offTCPFlags], b[offFlags] = r.proto, r.tcpFlags, r.flags
	copy(b[offComm:offComm+15], r.comm)
	copy(b[offDev:offDev+15], r.dev)
	if r.peer.IsValid() {
		copy(b[offPeer:], r.peer.AsSlice())
	}
	ne.PutUint64(b[offDurationNs:], r.durationNs)
	ne.PutUint32(b[offProbes:], r.probes)
	ne.PutUint32(b[offMTU:], r.mtu)
	ne.PutUint32(b[offBacklog:], r.backlog)
	ne.PutUint32(b[offMaxBacklog:], r.maxBacklog)
	b[offICMPType], b[offICMPCode] = r.icmpType, r.icmpCode
	return b
}

type fakeSyms map[uint64]string

func (f fakeSyms) symbol(a uint64) string { return f[a] }

func TestDecode(t *testing.T) {
	d := decoder{
		wallMinusMono: 1_700_000_000_000_000_000,
		dropReasons:   map[uint32]string{3: "NO_SOCKET", 12: "NETFILTER_DROP"},
		rstReasons:    map[uint32]string{1: "NO_SOCKET"},
		syms:          fakeSyms{0xffffffff81fbe0a0: "nft_do_chain"},
	}
	v4a, v4b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	v6a, v6b := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	mapped := func(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }
	at := time.Unix(0, 1_700_000_000_000_000_000+5_000_000_123)

	tests := []struct {
		name string
		in   rec
		want signal.Signal
	}{
		{
			name: "connect refused state change",
			in: rec{ts: 5_000_000_123, kind: 1, family: afInet, proto: 6, flags: flagFlow | flagSock,
				saddr: v4a, daddr: v4b, sport: 40000, dport: 80, state: 7, oldState: 2, skErr: 111,
				netnsCookie: 4096, netnsInum: 4026531840, sockCookie: 77, pid: 42, comm: "curl"},
			want: signal.Signal{Kind: signal.KindStateChange, Time: at,
				Flow:        signal.Flow{Proto: 6, Src: v4a, Dst: v4b, SrcPort: 40000, DstPort: 80},
				NetnsCookie: 4096, NetnsInode: 4026531840, State: signal.StateClose, OldState: signal.StateSynSent,
				SkErr: 111, SockCookie: 77, PID: 42, Comm: "curl"},
		},
		{
			name: "retransmit with err",
			in: rec{ts: 5_000_000_123, kind: 2, family: afInet6, proto: 6, flags: flagFlow | flagErr | flagSock,
				saddr: v6a, daddr: v6b, sport: 1, dport: 2, state: 2, retransmits: 3, err: -16, tcpFlags: 0x02},
			want: signal.Signal{Kind: signal.KindRetransmit, Time: at,
				Flow:  signal.Flow{Proto: 6, Src: v6a, Dst: v6b, SrcPort: 1, DstPort: 2},
				State: signal.StateSynSent, Retransmits: 3, Err: -16, TCPFlags: 0x02},
		},
		{
			name: "err ignored without its flag",
			in:   rec{ts: 5_000_000_123, kind: 2, err: -16},
			want: signal.Signal{Kind: signal.KindRetransmit, Time: at},
		},
		{
			name: "v4-mapped socket addresses are unmapped",
			in: rec{ts: 5_000_000_123, kind: 3, family: afInet6, proto: 6, flags: flagFlow,
				saddr: mapped(v4a), daddr: mapped(v4b), sport: 5, dport: 6, state: 2, tcpFlags: 0x04},
			want: signal.Signal{Kind: signal.KindResetReceived, Time: at,
				Flow:  signal.Flow{Proto: 6, Src: v4a, Dst: v4b, SrcPort: 5, DstPort: 6},
				State: signal.StateSynSent, TCPFlags: 0x04},
		},
		{
			name: "reset sent with reason",
			in: rec{ts: 5_000_000_123, kind: 4, family: afInet, proto: 6, flags: flagFlow | flagReason,
				saddr: v4b, daddr: v4a, sport: 80, dport: 40000, reason: 1, tcpFlags: 0x02, dev: "eth0", ifindex: 2},
			want: signal.Signal{Kind: signal.KindResetSent, Time: at,
				Flow:        signal.Flow{Proto: 6, Src: v4b, Dst: v4a, SrcPort: 80, DstPort: 40000},
				ResetReason: "NO_SOCKET", TCPFlags: 0x02, Dev: "eth0", Ifindex: 2},
		},
		{
			name: "drop with symbolized location",
			in: rec{ts: 5_000_000_123, kind: 5, family: afInet, proto: 6, flags: flagFlow | flagReason,
				saddr: v4a, daddr: v4b, sport: 40000, dport: 80, reason: 12, location: 0xffffffff81fbe0a0,
				tcpFlags: 0x02, dev: "veth-a", ifindex: 7, netnsCookie: 9},
			want: signal.Signal{Kind: signal.KindDrop, Time: at,
				Flow:       signal.Flow{Proto: 6, Src: v4a, Dst: v4b, SrcPort: 40000, DstPort: 80},
				DropReason: "NETFILTER_DROP", DropLocation: "nft_do_chain", TCPFlags: 0x02,
				Dev: "veth-a", Ifindex: 7, NetnsCookie: 9},
		},
		{
			name: "unknown reason and location stay visible",
			in: rec{ts: 5_000_000_123, kind: 5, family: afInet, proto: 1, flags: flagFlow | flagReason,
				saddr: v4a, daddr: v4b, reason: 999, location: 0x1234},
			want: signal.Signal{Kind: signal.KindDrop, Time: at,
				Flow:       signal.Flow{Proto: 1, Src: v4a, Dst: v4b},
				DropReason: "REASON_999", DropLocation: "0x1234"},
		},
		{
			name: "neighbour failed from PROBE, had a link-layer address",
			in: rec{ts: 5_000_000_123, kind: 6, family: afInet, flags: flagPeer | flagLLAddr | flagDuration,
				peer: v4b, state: 0x20, oldState: 0x10, probes: 3, durationNs: 1_500_000_000, dev: "eth0", ifindex: 2, netnsCookie: 9},
			want: signal.Signal{Kind: signal.KindNeighFailed, Time: at, NeighAddr: v4b, NeighState: signal.NUDProbe,
				NeighResolved: true, NeighProbes: 3, NeighTried: 1500 * time.Millisecond, Dev: "eth0", Ifindex: 2, NetnsCookie: 9},
		},
		{
			name: "neighbour without duration or peer flag",
			in:   rec{ts: 5_000_000_123, kind: 6, family: afInet6, peer: v6a, state: 0x20, oldState: 0x01, durationNs: 7},
			want: signal.Signal{Kind: signal.KindNeighFailed, Time: at, NeighState: signal.NUDIncomplete},
		},
		{
			name: "connect error",
			in: rec{ts: 5_000_000_123, kind: 7, family: afInet, proto: 6, flags: flagFlow | flagErr | flagSock,
				saddr: netip.IPv4Unspecified(), daddr: v4b, dport: 443, err: -113, state: 7, pid: 42, comm: "curl", netnsInum: 5},
			want: signal.Signal{Kind: signal.KindConnectError, Time: at,
				Flow: signal.Flow{Proto: 6, Src: netip.IPv4Unspecified(), Dst: v4b, DstPort: 443},
				Err:  -113, State: signal.StateClose, PID: 42, Comm: "curl", NetnsInode: 5},
		},
		{
			name: "ICMP error received: frag needed",
			in: rec{ts: 5_000_000_123, kind: 8, family: afInet, proto: 17, flags: flagFlow | flagPeer,
				saddr: v4a, daddr: v4b, sport: 5000, dport: 9, peer: netip.MustParseAddr("10.0.0.254"),
				icmpType: 3, icmpCode: 4, mtu: 1000, dev: "eth0", ifindex: 2},
			want: signal.Signal{Kind: signal.KindICMPError, Time: at,
				Flow:     signal.Flow{Proto: 17, Src: v4a, Dst: v4b, SrcPort: 5000, DstPort: 9},
				ICMPType: 3, ICMPCode: 4, MTU: 1000, ICMPFrom: netip.MustParseAddr("10.0.0.254"), Dev: "eth0", Ifindex: 2},
		},
		{
			name: "ICMP error sent",
			in: rec{ts: 5_000_000_123, kind: 9, family: afInet, proto: 6, flags: flagFlow,
				saddr: v4a, daddr: v4b, sport: 5000, dport: 80, tcpFlags: 0x02, icmpType: 3, icmpCode: 10},
			want: signal.Signal{Kind: signal.KindICMPSent, Time: at,
				Flow:     signal.Flow{Proto: 6, Src: v4a, Dst: v4b, SrcPort: 5000, DstPort: 80},
				TCPFlags: 0x02, ICMPType: 3, ICMPCode: 10},
		},
		{
			name: "drop at a listener with its backlog",
			in: rec{ts: 5_000_000_123, kind: 5, family: afInet, proto: 6, flags: flagFlow | flagReason | flagSock | flagBacklog,
				saddr: v4a, daddr: v4b, sport: 40000, dport: 80, reason: 3, state: 10, backlog: 2, maxBacklog: 1},
			want: signal.Signal{Kind: signal.KindDrop, Time: at,
				Flow:       signal.Flow{Proto: 6, Src: v4a, Dst: v4b, SrcPort: 40000, DstPort: 80},
				DropReason: "NO_SOCKET", State: signal.StateListen, Backlog: 2, MaxBacklog: 1},
		},
		{
			name: "backlog ignored without its flag",
			in:   rec{ts: 5_000_000_123, kind: 5, backlog: 2, maxBacklog: 1},
			want: signal.Signal{Kind: signal.KindDrop, Time: at},
		},
		{
			name: "full-length comm and dev are not truncated",
			in:   rec{ts: 5_000_000_123, kind: 5, comm: "abcdefghijklmno", dev: "0123456789abcde"},
			want: signal.Signal{Kind: signal.KindDrop, Time: at, Comm: "abcdefghijklmno", Dev: "0123456789abcde"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got signal.Signal
			if err := d.decode(tt.in.bytes(), &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !got.Time.Equal(tt.want.Time) {
				t.Errorf("time %v, want %v", got.Time, tt.want.Time)
			}
			got.Time, tt.want.Time = time.Time{}, time.Time{}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	d := decoder{}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"short", make([]byte, recordSize-1), "183 bytes"},
		{"kind 0", rec{kind: 0}.bytes(), "unknown kind 0"},
		{"kind 10", rec{kind: 10}.bytes(), "unknown kind 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s signal.Signal
			err := d.decode(tt.in, &s)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("decode error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestRingBufferSize(t *testing.T) {
	tests := []struct {
		bytes   int
		want    int
		wantErr string
	}{
		{0, DefaultRingBufferBytes, ""},
		{1, 4096, ""},
		{4096, 4096, ""},
		{4097, 8192, ""},
		{100_000, 131072, ""},
		{MaxRingBufferBytes, MaxRingBufferBytes, ""},
		{MaxRingBufferBytes + 1, 0, "exceeds the maximum"},
		{-1, 0, "negative"},
	}
	for _, tt := range tests {
		got, err := Config{RingBufferBytes: tt.bytes}.ringBufferSize(4096)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("size %d: error %v, want %q", tt.bytes, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("size %d: %v", tt.bytes, err)
		case got != tt.want:
			t.Errorf("size %d: got %d, want %d", tt.bytes, got, tt.want)
		}
	}
}

func TestParseKallsyms(t *testing.T) {
	in := `ffffffff81000000 T _stext
ffffffff81fbdf90 T nft_do_chain	[nf_tables]
ffffffff81fbe400 t nft_other	[nf_tables]
ffffffff8204c370 t ip_error
ffffffff8204c500 t ip_next
ffffffff82000000 D some_data
ffffffff81500000 W weak_fn
`
	st, err := parseKallsyms(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr uint64
		want string
	}{
		{0xffffffff81fbe0a0, "nft_do_chain"},
		{0xffffffff81fbdf90, "nft_do_chain"},
		{0xffffffff8204c371, "ip_error"},
		{0xffffffff81600000, "weak_fn"},
		{0xffffffff80000000, ""},
		{0xffffffff82000001, "nft_other"}, // data symbols are not functions
	} {
		if got := st.symbol(tt.addr); got != tt.want {
			t.Errorf("symbol(%#x) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	r := st.ranges("ip_error")
	if len(r) != 1 || r[0] != [2]uint64{0xffffffff8204c370, 0xffffffff8204c500} {
		t.Errorf("ranges(ip_error) = %x", r)
	}
	hidden, err := parseKallsyms(strings.NewReader("0000000000000000 T a\n0000000000000000 t b\n"))
	if err != nil || hidden != nil {
		t.Errorf("all-zero addresses: got %v, %v; want nil, nil", hidden, err)
	}
}

func TestDropModes(t *testing.T) {
	names := map[uint32]string{0: "NOT_DROPPED_YET", 1: "CONSUMED", 2: "NOT_SPECIFIED", 3: "NO_SOCKET", 12: "NETFILTER_DROP", 104: "QUEUE_PURGE"}
	tests := []struct {
		name    string
		in      []string
		want    map[uint32]uint8
		wantErr string
	}{
		{"default skips what this kernel lacks", nil,
			map[uint32]uint8{2: modeAtLocation, 3: modeAlways, 12: modeAlways}, ""},
		{"prefix and case", []string{"skb_drop_reason_netfilter_drop", " QUEUE_PURGE "},
			map[uint32]uint8{12: modeAlways, 104: modeAlways}, ""},
		{"unknown name", []string{"NO_SUCH"}, nil, "no SKB_DROP_REASON_NO_SUCH"},
		{"not a drop", []string{"CONSUMED"}, nil, "not a drop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dropModes(tt.in, names)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	d := decoder{dropReasons: map[uint32]string{12: "NETFILTER_DROP"}, syms: fakeSyms{0x10: "nft_do_chain"}}
	raw := rec{ts: 1, kind: 5, family: afInet, proto: 6, flags: flagFlow | flagReason, reason: 12, location: 0x10,
		saddr: netip.MustParseAddr("10.0.0.1"), daddr: netip.MustParseAddr("10.0.0.2"), sport: 1, dport: 2,
		comm: "curl", dev: "eth0"}.bytes()
	var s signal.Signal
	b.ReportAllocs()
	for b.Loop() {
		if err := d.decode(raw, &s); err != nil {
			b.Fatal(err)
		}
	}
}
