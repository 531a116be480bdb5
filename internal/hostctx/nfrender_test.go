//go:build linux

package hostctx

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

func TestRenderIptables(t *testing.T) {
	c := base(tFilter, "OUTPUT", nftables.ChainHookOutput, 0, nftables.ChainPolicyAccept)
	flags := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x17}, Xor: []byte{0}},
		&expr.Cmp{Register: 1, Data: []byte{0x02}},
	}
	daddr := func(op expr.CmpOp, a string) []expr.Any {
		ip := netip.MustParseAddr(a).As4()
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}, &expr.Cmp{Op: op, Register: 1, Data: ip[:]}}
	}
	tests := []struct {
		name  string
		exprs []expr.Any
		nft   string
		ipt   string
	}{
		{"negated destination, out device, syn", cat(&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Register: 1, Data: []byte("eth")}, l4(6), daddr(expr.CmpOpNeq, "10.0.0.1"), flags, drop),
			`oifname "eth*" ip daddr != 10.0.0.1 tcp flags & (fin|syn|rst|ack) == syn drop`, "-A OUTPUT -o eth+ -p tcp ! -d 10.0.0.1/32 --syn -j DROP"},
		{"port range and goto", cat(l4(17), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, &expr.Range{Register: 1, FromData: []byte{0, 53}, ToData: []byte{0, 60}}, &expr.Verdict{Kind: expr.VerdictGoto, Chain: "DNS"}),
			"udp dport 53-60 goto DNS", "-A OUTPUT -p udp --dport 53:60 -g DNS"},
		{"native set: no iptables form", cat(l4(6), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, &expr.Lookup{SourceRegister: 1, SetName: "s"}, drop),
			"tcp dport @s drop", ""},
	}
	rs := newRuleset()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rule(c, tc.exprs...)
			if got := rs.renderNft(r); got != tc.nft {
				t.Errorf("nft text %q, want %q", got, tc.nft)
			}
			if got := renderIptables("OUTPUT", r); got != tc.ipt {
				t.Errorf("iptables text %q, want %q", got, tc.ipt)
			}
		})
	}
}

func TestRejectText(t *testing.T) {
	tests := []struct {
		r    expr.Reject
		fam  nftables.TableFamily
		want string
	}{
		{expr.Reject{Type: rejectTCPReset}, nftables.TableFamilyINet, "reject with tcp reset"},
		{expr.Reject{Type: rejectICMPXUnreach, Code: 1}, nftables.TableFamilyINet, "reject"},
		{expr.Reject{Type: rejectICMPXUnreach, Code: 3}, nftables.TableFamilyINet, "reject with icmpx admin-prohibited"},
		{expr.Reject{Type: rejectICMPUnreach, Code: 3}, nftables.TableFamilyIPv4, "reject"},
		{expr.Reject{Type: rejectICMPUnreach, Code: 10}, nftables.TableFamilyIPv4, "reject with icmp host-prohibited"},
		{expr.Reject{Type: rejectICMPUnreach, Code: 4}, nftables.TableFamilyIPv6, "reject"},
		{expr.Reject{Type: rejectICMPUnreach, Code: 1}, nftables.TableFamilyIPv6, "reject with icmpv6 admin-prohibited"},
	}
	for _, tc := range tests {
		if got := rejectText(&tc.r, tc.fam); got != tc.want {
			t.Errorf("%+v in %v: %q, want %q", tc.r, tc.fam, got, tc.want)
		}
	}
}

func TestInterpreterIPv6(t *testing.T) {
	in := base(tIP6, "in", nftables.ChainHookInput, 0, nftables.ChainPolicyAccept)
	pfx := netip.MustParseAddr("2001:db8::").As16()
	rs := build([]chainRules{{in, []*nftables.Rule{
		// ip6 saddr 2001:db8::/32 meta l4proto udp udp dport 53 (through byteorder) drop
		rule(in, cat(
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 4}, &expr.Cmp{Register: 1, Data: pfx[:4]},
			l4(unix.IPPROTO_UDP),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderNtoh, Len: 2, Size: 2},
			&expr.Cmp{Register: 1, Data: binary.LittleEndian.AppendUint16(nil, 53)},
			drop)...),
	}}})
	p := Packet{Proto: unix.IPPROTO_UDP, Src: netip.MustParseAddr("2001:db8:1::5"), Dst: netip.MustParseAddr("2001:db8:2::1"), SrcPort: 5353, DstPort: 53, Path: PathInput}
	m, err := rs.attribute(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Exact || m.Family != "ip6" {
		t.Errorf("got %+v", m)
	}
	if m.Text[:len("ip6 saddr 2001:db8::/32")] != "ip6 saddr 2001:db8::/32" {
		t.Errorf("text %q", m.Text)
	}
	p.Src = netip.MustParseAddr("2001:db9::5")
	if _, err := rs.attribute(p, nil); err == nil {
		t.Error("a source outside the prefix was blamed")
	}
	// IPv4 packets never reach ip6 tables.
	if _, err := rs.attribute(syn("10.0.0.3", 53), nil); err == nil {
		t.Error("ip6 table matched an IPv4 packet")
	}
}
