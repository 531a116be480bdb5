//go:build linux

package hostctx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Builders for rules as google/nftables lists them from the kernel (the
// expression sequences were taken from `nft`/`iptables-nft` rules listed
// on this kernel).

var (
	tInet   = &nftables.Table{Name: "t", Family: nftables.TableFamilyINet}
	tFilter = &nftables.Table{Name: "filter", Family: nftables.TableFamilyIPv4}
	tIP6    = &nftables.Table{Name: "t6", Family: nftables.TableFamilyIPv6}
)

func base(t *nftables.Table, name string, hook *nftables.ChainHook, prio int32, policy nftables.ChainPolicy) *nftables.Chain {
	p := nftables.ChainPriority(prio)
	return &nftables.Chain{Name: name, Table: t, Hooknum: hook, Priority: &p, Type: nftables.ChainTypeFilter, Policy: &policy}
}

func regular(t *nftables.Table, name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: t}
}

var handleSeq uint64

func rule(c *nftables.Chain, exprs ...expr.Any) *nftables.Rule {
	handleSeq++
	return &nftables.Rule{Table: c.Table, Chain: c, Handle: handleSeq, Exprs: exprs}
}

func l4(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Register: 1, Data: []byte{proto}}}
}

func dport(op expr.CmpOp, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: op, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}

func nfproto4() []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Register: 1, Data: []byte{unix.NFPROTO_IPV4}}}
}

func saddrLoad(n uint32) *expr.Payload {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: n}
}

func cat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch x := p.(type) {
		case []expr.Any:
			out = append(out, x...)
		case expr.Any:
			out = append(out, x)
		}
	}
	return out
}

var (
	drop   = &expr.Verdict{Kind: expr.VerdictDrop}
	accept = &expr.Verdict{Kind: expr.VerdictAccept}
)

func syn(dst string, port uint16) Packet {
	return Packet{Proto: unix.IPPROTO_TCP, Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr(dst), SrcPort: 40000, DstPort: port, TCPFlags: 0x02, InIface: "eth0", Path: PathInput}
}

type chainRules struct {
	c     *nftables.Chain
	rules []*nftables.Rule
}

func build(chains []chainRules, sets ...*nfSet) *ruleset {
	rs := newRuleset()
	for _, s := range sets {
		rs.addSet(s.s, s.elems)
	}
	for _, c := range chains {
		rs.addChain(c.c, c.rules)
	}
	return rs
}

func TestInterpreter(t *testing.T) {
	in := base(tInet, "in", nftables.ChainHookInput, 0, nftables.ChainPolicyAccept)
	inDrop := base(tInet, "in", nftables.ChainHookInput, 0, nftables.ChainPolicyDrop)
	out := base(tInet, "out", nftables.ChainHookOutput, 0, nftables.ChainPolicyAccept)
	sub := regular(tInet, "blocked")
	fInput := base(tFilter, "INPUT", nftables.ChainHookInput, 0, nftables.ChainPolicyAccept)
	in6 := base(tIP6, "in", nftables.ChainHookInput, -50, nftables.ChainPolicyAccept)
	early := base(tInet, "early", nftables.ChainHookInput, -10, nftables.ChainPolicyAccept)
	pre := base(tInet, "pre", nftables.ChainHookPrerouting, 0, nftables.ChainPolicyAccept)

	portSet := &nfSet{s: &nftables.Set{Table: tInet, Name: "__set0", Anonymous: true, KeyType: nftables.TypeInetService},
		elems: []nftables.SetElement{{Key: []byte{0, 22}}, {Key: []byte{0x1f, 0x90}}}}
	// Listed by the kernel as starts and IntervalEnd keys, highest first.
	netSet := &nfSet{s: &nftables.Set{Table: tInet, Name: "__set1", Anonymous: true, Interval: true, KeyType: nftables.TypeIPAddr},
		elems: []nftables.SetElement{{Key: []byte{192, 168, 2, 0}, IntervalEnd: true}, {Key: []byte{192, 168, 1, 0}}, {Key: []byte{11, 0, 0, 0}, IntervalEnd: true}, {Key: []byte{10, 0, 0, 0}}, {Key: []byte{0, 0, 0, 0}, IntervalEnd: true}}}
	named := &nfSet{s: &nftables.Set{Table: tInet, Name: "blocked_ports", KeyType: nftables.TypeInetService},
		elems: []nftables.SetElement{{Key: []byte{0x1f, 0x90}}}}
	vmap := &nfSet{s: &nftables.Set{Table: tInet, Name: "__map0", Anonymous: true, IsMap: true, KeyType: nftables.TypeInetService, DataType: nftables.TypeVerdict},
		elems: []nftables.SetElement{{Key: []byte{0x1f, 0x90}, VerdictData: &expr.Verdict{Kind: expr.VerdictDrop}}, {Key: []byte{0, 22}, VerdictData: &expr.Verdict{Kind: expr.VerdictAccept}}}}

	ctNew := []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
	mark := []expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}, &expr.Cmp{Register: 1, Data: []byte{1, 0, 0, 0}}}

	type want struct {
		err     error
		chain   string
		text    string
		verdict string
		exact   bool
		unknown []string
		via     []string
		ipt     string
		alts    int
	}
	tests := []struct {
		name   string
		chains []chainRules
		sets   []*nfSet
		pkt    Packet
		want   want
	}{
		{
			name:   "tcp dport drop",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(l4(6), dport(0, 8080), drop)...)}}},
			pkt:    syn("10.0.0.3", 8080),
			want:   want{chain: "in", text: "tcp dport 8080 drop", verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name:   "other port is not blamed",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(l4(6), dport(0, 8080), drop)...)}}},
			pkt:    syn("10.0.0.3", 8081),
			want:   want{err: errNoRule},
		},
		{
			name: "accept for another port before a catch-all drop",
			chains: []chainRules{{in, []*nftables.Rule{
				rule(in, cat(l4(6), dport(0, 22), accept)...),
				rule(in, cat(l4(6), drop)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: "meta l4proto tcp drop", verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name: "accepted packet finds nothing",
			chains: []chainRules{{in, []*nftables.Rule{
				rule(in, cat(l4(6), dport(0, 22), accept)...),
				rule(in, cat(l4(6), drop)...),
			}}},
			pkt:  syn("10.0.0.3", 22),
			want: want{err: errNoRule},
		},
		{
			name: "reject with tcp reset",
			chains: []chainRules{{in, []*nftables.Rule{
				rule(in, cat(l4(6), dport(0, 8080), &expr.Counter{Packets: 3, Bytes: 180}, &expr.Reject{Type: 1})...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: "tcp dport 8080 counter packets 3 bytes 180 reject with tcp reset", verdict: "reject with tcp reset", exact: true, via: []string{"in"}},
		},
		{
			name: "drop in a regular chain reached by jump",
			chains: []chainRules{
				{in, []*nftables.Rule{rule(in, cat(l4(6), dport(expr.CmpOpNeq, 22), &expr.Verdict{Kind: expr.VerdictJump, Chain: "blocked"})...)}},
				{sub, []*nftables.Rule{rule(sub, cat(nfproto4(), saddrLoad(4), &expr.Cmp{Register: 1, Data: []byte{10, 9, 9, 9}}, drop)...), rule(sub, cat(l4(6), dport(0, 8080), drop)...)}},
			},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "blocked", text: "tcp dport 8080 drop", verdict: "drop", exact: true, via: []string{"in", "jump blocked"}},
		},
		{
			name: "return from the jumped chain falls back to the caller",
			chains: []chainRules{
				{in, []*nftables.Rule{
					rule(in, &expr.Verdict{Kind: expr.VerdictJump, Chain: "blocked"}),
					rule(in, cat(l4(6), dport(0, 8080), drop)...),
				}},
				{sub, []*nftables.Rule{rule(sub, &expr.Verdict{Kind: expr.VerdictReturn}), rule(sub, drop)}},
			},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: "tcp dport 8080 drop", verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name:   "anonymous set of ports",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(l4(6), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, &expr.Lookup{SourceRegister: 1, SetName: "__set0"}, &expr.Reject{Type: 1})...)}}},
			sets:   []*nfSet{portSet},
			pkt:    syn("10.0.0.3", 8080),
			want:   want{chain: "in", text: "tcp dport { 22, 8080 } reject with tcp reset", verdict: "reject with tcp reset", exact: true, via: []string{"in"}},
		},
		{
			name:   "port outside the set",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(l4(6), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, &expr.Lookup{SourceRegister: 1, SetName: "__set0"}, drop)...)}}},
			sets:   []*nfSet{portSet},
			pkt:    syn("10.0.0.3", 80),
			want:   want{err: errNoRule},
		},
		{
			name:   "named set",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(l4(6), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, &expr.Lookup{SourceRegister: 1, SetName: "blocked_ports"}, drop)...)}}},
			sets:   []*nfSet{named},
			pkt:    syn("10.0.0.3", 8080),
			want:   want{chain: "in", text: "tcp dport @blocked_ports drop", verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name:   "interval set of prefixes and a port range",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(nfproto4(), saddrLoad(4), &expr.Lookup{SourceRegister: 1, SetName: "__set1"}, l4(6), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, &expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: []byte{0, 1}}, &expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: []byte{0x1f, 0x90}}, drop)...)}}},
			sets:   []*nfSet{netSet},
			pkt:    syn("10.0.0.3", 8080),
			want:   want{chain: "in", text: "ip saddr { 10.0.0.0/8, 192.168.1.0/24 } tcp dport >= 1 tcp dport <= 8080 drop", verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name:   "source outside the interval set",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(nfproto4(), saddrLoad(4), &expr.Lookup{SourceRegister: 1, SetName: "__set1"}, drop)...)}}},
			sets:   []*nfSet{netSet},
			pkt:    Packet{Proto: 6, Src: netip.MustParseAddr("11.0.0.1"), Dst: netip.MustParseAddr("10.0.0.3"), DstPort: 80, Path: PathInput},
			want:   want{err: errNoRule},
		},
		{
			name:   "prefix as a short payload load (ip saddr 10.0.0.0/8)",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(nfproto4(), saddrLoad(1), &expr.Cmp{Register: 1, Data: []byte{10}}, l4(6), dport(0, 8080), drop)...)}}},
			pkt:    syn("10.0.0.3", 8080),
			want:   want{chain: "in", text: "ip saddr 10.0.0.0/8 tcp dport 8080 drop", verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name:   "prefix by bitwise mask (ip saddr 10.0.0.0/12) misses 10.16.0.1",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(nfproto4(), saddrLoad(2), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0xff, 0xf0}, Xor: []byte{0, 0}}, &expr.Cmp{Register: 1, Data: []byte{10, 0}}, drop)...)}}},
			pkt:    Packet{Proto: 6, Src: netip.MustParseAddr("10.16.0.1"), Dst: netip.MustParseAddr("10.0.0.3"), DstPort: 80, Path: PathInput},
			want:   want{err: errNoRule},
		},
		{
			name:   "prefix by bitwise mask (ip saddr 10.0.0.0/12) holds 10.1.2.3",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(nfproto4(), saddrLoad(2), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0xff, 0xf0}, Xor: []byte{0, 0}}, &expr.Cmp{Register: 1, Data: []byte{10, 0}}, drop)...)}}},
			pkt:    syn("10.0.0.3", 80),
			want:   want{chain: "in", text: "ip saddr 10.0.0.0/12 drop", verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name:   "ct state new on a SYN",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(ctNew, l4(6), dport(0, 8080), drop)...)}}},
			pkt:    syn("10.0.0.3", 8080),
			want:   want{chain: "in", text: "ct state new tcp dport 8080 drop", verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name:   "ct state unknown for a data segment: probable",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(ctNew, l4(6), dport(0, 8080), drop)...)}}},
			pkt:    func() Packet { p := syn("10.0.0.3", 8080); p.TCPFlags = 0x18; return p }(),
			want:   want{chain: "in", text: "ct state new tcp dport 8080 drop", verdict: "drop", exact: false, unknown: []string{"ct state"}, via: []string{"in"}},
		},
		{
			name: "meta mark not understood; an accept that might match is passed over",
			chains: []chainRules{{in, []*nftables.Rule{
				rule(in, cat(mark, accept)...),
				rule(in, cat(mark, l4(6), dport(0, 8080), drop)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: "meta mark 0x01000000 tcp dport 8080 drop", verdict: "drop", exact: false, unknown: []string{"meta mark"}, via: []string{"in"}},
		},
		{
			name: "an exact rule wins over an earlier probable one, which is named",
			chains: []chainRules{{in, []*nftables.Rule{
				rule(in, cat(mark, &expr.Counter{Packets: 7}, drop)...),
				rule(in, cat(l4(6), &expr.Counter{Packets: 1}, drop)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: "meta l4proto tcp counter packets 1 bytes 0 drop", verdict: "drop", exact: true, via: []string{"in"}, alts: 1},
		},
		{
			name: "an exact rule that never counted loses to an earlier probable one that did",
			chains: []chainRules{{in, []*nftables.Rule{
				rule(in, cat(mark, &expr.Counter{Packets: 7}, drop)...),
				rule(in, cat(l4(6), &expr.Counter{Packets: 0}, drop)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: "meta mark 0x01000000 counter packets 7 bytes 0 drop", verdict: "drop", exact: false, unknown: []string{"meta mark"}, via: []string{"in"}, alts: 1},
		},
		{
			name: "among probable rules the one whose counter moved",
			chains: []chainRules{{in, []*nftables.Rule{
				rule(in, cat(mark, &expr.Counter{Packets: 0}, drop)...),
				rule(in, cat(l4(6), &expr.Limit{Rate: 1}, &expr.Counter{Packets: 4}, drop)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: "meta l4proto tcp limit counter packets 4 bytes 0 drop", verdict: "drop", exact: false, unknown: []string{"limit"}, via: []string{"in"}, alts: 1},
		},
		{
			name: "chain policy drop",
			chains: []chainRules{{inDrop, []*nftables.Rule{
				rule(inDrop, cat(l4(6), dport(0, 22), accept)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: "policy drop", verdict: "policy drop", exact: true, via: []string{"in"}},
		},
		{
			name: "policy drop past a rule that might accept: probable",
			chains: []chainRules{{inDrop, []*nftables.Rule{
				rule(inDrop, cat(mark, accept)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: "policy drop", verdict: "policy drop", exact: false, unknown: []string{"rule " + "HANDLE" + " (meta mark) assumed not to match"}, via: []string{"in"}},
		},
		{
			name: "accept in one base chain does not stop the next",
			chains: []chainRules{
				{in, []*nftables.Rule{rule(in, cat(l4(6), dport(0, 8080), drop)...)}},
				{early, []*nftables.Rule{rule(early, accept)}},
			},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: "tcp dport 8080 drop", verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name: "lower priority is evaluated first",
			chains: []chainRules{
				{in, []*nftables.Rule{rule(in, cat(l4(6), drop)...)}},
				{early, []*nftables.Rule{rule(early, cat(l4(6), dport(0, 8080), drop)...)}},
			},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "early", text: "tcp dport 8080 drop", verdict: "drop", exact: true, via: []string{"early"}},
		},
		{
			name: "prerouting comes before input",
			chains: []chainRules{
				{in, []*nftables.Rule{rule(in, cat(l4(6), drop)...)}},
				{pre, []*nftables.Rule{rule(pre, cat(l4(6), dport(0, 8080), drop)...)}},
			},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "pre", text: "tcp dport 8080 drop", verdict: "drop", exact: true, via: []string{"pre"}},
		},
		{
			name:   "output chain is not on the input path",
			chains: []chainRules{{out, []*nftables.Rule{rule(out, drop)}}},
			pkt:    syn("10.0.0.3", 8080),
			want:   want{err: errNoRule},
		},
		{
			name:   "ip6 table does not see IPv4",
			chains: []chainRules{{in6, []*nftables.Rule{rule(in6, drop)}}},
			pkt:    syn("10.0.0.3", 8080),
			want:   want{err: errNoRule},
		},
		{
			name: "iifname prefix",
			chains: []chainRules{{in, []*nftables.Rule{
				rule(in, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Register: 1, Data: []byte("veth")}, drop),
				rule(in, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Register: 1, Data: []byte("eth")}, drop),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "in", text: `iifname "eth*" drop`, verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name:   "verdict map",
			chains: []chainRules{{in, []*nftables.Rule{rule(in, cat(l4(6), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, &expr.Lookup{SourceRegister: 1, SetName: "__map0", IsDestRegSet: true, DestRegister: 0})...)}}},
			sets:   []*nfSet{vmap},
			pkt:    syn("10.0.0.3", 8080),
			want:   want{chain: "in", text: "tcp dport vmap { 8080, 22 }", verdict: "drop", exact: true, via: []string{"in"}},
		},
		{
			name: "iptables-nft: -p tcp --dport 8080 -j DROP",
			chains: []chainRules{{fInput, []*nftables.Rule{
				rule(fInput, cat(l4(6), dport(0, 8080), &expr.Counter{}, drop)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "INPUT", text: "tcp dport 8080 counter packets 0 bytes 0 drop", verdict: "drop", exact: true, via: []string{"INPUT"}, ipt: "-A INPUT -p tcp --dport 8080 -j DROP"},
		},
		{
			name: "iptables-nft: -s 10.0.0.0/8 -i eth0 -p udp --sport 53 -j REJECT",
			chains: []chainRules{{fInput, []*nftables.Rule{
				rule(fInput, cat(&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Register: 1, Data: []byte("eth0\x00")}, l4(17), saddrLoad(1), &expr.Cmp{Register: 1, Data: []byte{10}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2}, &expr.Cmp{Register: 1, Data: []byte{0, 53}}, &expr.Counter{},
					&expr.Target{Name: "REJECT", Info: &xt.Unknown{3, 0, 0, 0, 0, 0, 0, 0}})...),
			}}},
			pkt:  Packet{Proto: 17, Src: netip.MustParseAddr("10.1.1.1"), Dst: netip.MustParseAddr("10.0.0.3"), SrcPort: 53, DstPort: 5353, InIface: "eth0", Path: PathInput},
			want: want{chain: "INPUT", text: `iifname "eth0" ip saddr 10.0.0.0/8 udp sport 53 counter packets 0 bytes 0 xt target REJECT with icmp-port-unreachable`, verdict: "reject with icmp-port-unreachable", exact: true, via: []string{"INPUT"}, ipt: "-A INPUT -i eth0 -p udp -s 10.0.0.0/8 --sport 53 -j REJECT --reject-with icmp-port-unreachable"},
		},
		{
			name: "xt tcp match and REJECT tcp-reset",
			chains: []chainRules{{fInput, []*nftables.Rule{
				rule(fInput, cat(l4(6), &expr.Match{Name: "tcp", Info: &xt.Tcp{SrcPorts: [2]uint16{0, 0xffff}, DstPorts: [2]uint16{8000, 8100}}},
					&expr.Target{Name: "REJECT", Info: &xt.Unknown{7, 0, 0, 0, 0, 0, 0, 0}})...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "INPUT", text: "meta l4proto tcp xt match tcp --dport 8000:8100 xt target REJECT with tcp-reset", verdict: "reject with tcp-reset", exact: true, via: []string{"INPUT"}, ipt: "-A INPUT -p tcp -m tcp --dport 8000:8100 -j REJECT --reject-with tcp-reset"},
		},
		{
			name: "xt multiport and conntrack state decoded",
			chains: []chainRules{{fInput, []*nftables.Rule{
				rule(fInput, cat(l4(6), &expr.Match{Name: "multiport", Rev: 1, Info: multiportInfo(multiportDest, false, [2]uint16{1, 2}, [2]uint16{8080, 8080})},
					&expr.Match{Name: "conntrack", Rev: 3, Info: &xt.ConntrackMtinfo3{ConntrackMtinfo2: xt.ConntrackMtinfo2{ConntrackMtinfoBase: xt.ConntrackMtinfoBase{MatchFlags: uint16(xt.ConntrackState)}, StateMask: uint16(expr.CtStateBitNEW)}}},
					drop)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "INPUT", text: "meta l4proto tcp xt match multiport xt match conntrack drop", verdict: "drop", exact: true, via: []string{"INPUT"}, ipt: "-A INPUT -p tcp -m multiport --dports 1:2,8080 -m conntrack --ctstate NEW -j DROP"},
		},
		{
			name: "xt multiport miss",
			chains: []chainRules{{fInput, []*nftables.Rule{
				rule(fInput, cat(l4(6), &expr.Match{Name: "multiport", Rev: 1, Info: multiportInfo(multiportDest, false, [2]uint16{1, 2})}, drop)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{err: errNoRule},
		},
		{
			name: "unknown xt match: probable",
			chains: []chainRules{{fInput, []*nftables.Rule{
				rule(fInput, cat(l4(6), dport(0, 8080), &expr.Match{Name: "recent", Info: &xt.Unknown{0}}, &expr.Match{Name: "comment", Info: ptr(xt.Comment("web"))}, drop)...),
			}}},
			pkt:  syn("10.0.0.3", 8080),
			want: want{chain: "INPUT", text: `tcp dport 8080 xt match recent comment "web" drop`, verdict: "drop", exact: false, unknown: []string{"-m recent"}, via: []string{"INPUT"}, ipt: `-A INPUT -p tcp --dport 8080 -m recent -m comment --comment "web" -j DROP`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := build(tc.chains, tc.sets...)
			m, err := rs.attribute(tc.pkt, nil)
			if tc.want.err != nil {
				if !errors.Is(err, tc.want.err) {
					t.Fatalf("err = %v, match %v; want %v", err, m, tc.want.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, u := range tc.want.unknown {
				if strings.Contains(u, "HANDLE") {
					tc.want.unknown[i] = strings.Replace(u, "HANDLE", fmt.Sprint(tc.chains[0].rules[0].Handle), 1)
				}
			}
			got := want{chain: m.Chain, text: m.Text, verdict: m.Verdict, exact: m.Exact, unknown: m.Unknown, via: m.Via, ipt: m.Iptables, alts: len(m.Alternatives)}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// multiportInfo lays out xt_multiport_v1 as the kernel takes it.
func multiportInfo(flags uint8, invert bool, ranges ...[2]uint16) *xt.Unknown {
	b := make([]byte, 48)
	b[0] = flags
	i := 0
	for _, r := range ranges {
		binary.NativeEndian.PutUint16(b[2+2*i:], r[0])
		if r[0] != r[1] {
			b[32+i] = 1
			i++
			binary.NativeEndian.PutUint16(b[2+2*i:], r[1])
		}
		i++
	}
	b[1] = byte(i)
	if invert {
		b[47] = 1
	}
	u := xt.Unknown(b)
	return &u
}

func TestInferPath(t *testing.T) {
	local := map[netip.Addr]bool{netip.MustParseAddr("10.0.0.3"): true}
	p := syn("10.0.0.3", 80)
	p.Path = PathUnknown
	if got := inferPath(p, local); got != PathInput {
		t.Errorf("to a local address: %v", got)
	}
	p.Src, p.Dst = p.Dst, p.Src
	if got := inferPath(p, local); got != PathOutput {
		t.Errorf("from a local address: %v", got)
	}
	p.Src = netip.MustParseAddr("10.9.9.9")
	if got := inferPath(p, local); got != PathForward {
		t.Errorf("neither: %v", got)
	}
	if got := inferPath(p, nil); got != PathUnknown {
		t.Errorf("no addresses known: %v", got)
	}
}

func TestUnknownPathTriesEveryHook(t *testing.T) {
	out := base(tInet, "out", nftables.ChainHookOutput, 0, nftables.ChainPolicyAccept)
	rs := build([]chainRules{{out, []*nftables.Rule{rule(out, cat(l4(6), dport(0, 8080), drop)...)}}})
	p := syn("10.0.0.3", 8080)
	p.Path = PathUnknown
	m, err := rs.attribute(p, nil)
	if err != nil || m.Chain != "out" {
		t.Fatalf("got %v, %v", m, err)
	}
	if !strings.Contains(m.String(), "handle") {
		t.Errorf("String() = %q", m.String())
	}
}

func TestJumpLoopIsBounded(t *testing.T) {
	a, b := regular(tInet, "a"), regular(tInet, "b")
	in := base(tInet, "in", nftables.ChainHookInput, 0, nftables.ChainPolicyAccept)
	rs := build([]chainRules{
		{in, []*nftables.Rule{rule(in, &expr.Verdict{Kind: expr.VerdictJump, Chain: "a"})}},
		{a, []*nftables.Rule{rule(a, &expr.Verdict{Kind: expr.VerdictJump, Chain: "b"})}},
		{b, []*nftables.Rule{rule(b, &expr.Verdict{Kind: expr.VerdictJump, Chain: "a"})}},
	})
	if _, err := rs.attribute(syn("10.0.0.3", 80), nil); err == nil {
		t.Fatal("a jump loop produced a match")
	}
}

func TestAddressTypes(t *testing.T) {
	in := base(tInet, "in", nftables.ChainHookInput, 0, nftables.ChainPolicyAccept)
	fib := func(t uint32) []expr.Any {
		return []expr.Any{&expr.Fib{Register: 1, ResultADDRTYPE: true, FlagDADDR: true}, &expr.Cmp{Register: 1, Data: binary.NativeEndian.AppendUint32(nil, t)}}
	}
	rs := build([]chainRules{{in, []*nftables.Rule{
		rule(in, cat(fib(unix.RTN_BROADCAST), drop)...),
		rule(in, cat(l4(17), &expr.Match{Name: "addrtype", Rev: 1, Info: &xt.AddrTypeV1{Dest: 1 << unix.RTN_MULTICAST}}, &expr.Reject{Type: rejectICMPXUnreach, Code: 1})...),
	}}})
	ai := &addrInfo{local: map[netip.Addr]bool{netip.MustParseAddr("10.0.0.3"): true}, bcast: map[netip.Addr]bool{netip.MustParseAddr("10.0.0.255"): true}}
	udp := func(dst string) Packet {
		return Packet{Proto: 17, Src: netip.MustParseAddr("10.0.0.9"), Dst: netip.MustParseAddr(dst), SrcPort: 5000, DstPort: 6000, Path: PathInput}
	}
	tests := []struct {
		dst   string
		ai    *addrInfo
		text  string
		exact bool
	}{
		{"10.0.0.255", ai, "fib daddr type broadcast drop", true},
		{"224.0.0.9", ai, "meta l4proto udp xt match addrtype reject", true},
		{"10.0.0.3", ai, "", false},
		{"10.0.0.3", nil, "fib daddr type broadcast drop", false}, // addresses unknown
	}
	for _, tc := range tests {
		m, err := rs.attribute(udp(tc.dst), tc.ai)
		if tc.text == "" {
			if err == nil {
				t.Errorf("%s: blamed %+v", tc.dst, m)
			}
			continue
		}
		if err != nil || m.Text != tc.text || m.Exact != tc.exact {
			t.Errorf("%s: got %+v, %v; want %q exact=%v", tc.dst, m, err, tc.text, tc.exact)
		}
	}
}
