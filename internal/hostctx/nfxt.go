//go:build linux

package hostctx

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// iptables-nft translates what it can into native expressions (-p, -s,
// -d, -i, -o, --dport of -p tcp/udp, --syn, -j ACCEPT/DROP/RETURN/<chain>)
// and keeps the rest as xtables "compat" expressions: match/target with
// the extension's name, revision and its kernel struct as raw bytes, in
// the host's byte order and alignment (amd64/arm64 here). google/nftables
// decodes tcp, udp, conntrack and comment; the layouts decoded below are:
//
//	xt_multiport (rev 0):  u8 flags, u8 count, u16 ports[15]                      = 32 bytes
//	xt_multiport_v1:       u8 flags, u8 count, u16 ports[15], u8 pflags[15],
//	                       u8 invert                                              = 48 bytes
//	  flags: 0 source, 1 destination, 2 either; pflags[i]=1: ports[i]..ports[i+1]
//	xt_state_info:         u32 statemask (the ct state bits of nft)               = 8 bytes (padded)
//	ipt_reject_info:       u32 with (enum ipt_reject_with)                        = 8 bytes (padded)
//	ip6t_reject_info:      u32 with (enum ip6t_reject_with)                       = 8 bytes (padded)
const (
	multiportSource = 0
	multiportDest   = 1
	multiportEither = 2
)

var (
	iptRejectWith  = []string{"icmp-net-unreachable", "icmp-host-unreachable", "icmp-proto-unreachable", "icmp-port-unreachable", "icmp-echo-reply", "icmp-net-prohibited", "icmp-host-prohibited", "tcp-reset", "icmp-admin-prohibited"}
	ip6tRejectWith = []string{"icmp6-no-route", "icmp6-adm-prohibited", "icmp6-not-neighbour", "icmp6-addr-unreachable", "icmp6-port-unreachable", "icmp6-echo-reply", "tcp-reset", "icmp6-policy-fail", "icmp6-reject-route"}
)

type multiport struct {
	flags  uint8
	ranges [][2]uint16
	invert bool
}

func decodeMultiport(rev uint32, b []byte) (multiport, bool) {
	var m multiport
	if len(b) < 32 {
		return m, false
	}
	m.flags = b[0]
	n := int(b[1])
	if n > 15 {
		return m, false
	}
	port := func(i int) uint16 { return binary.NativeEndian.Uint16(b[2+2*i:]) }
	if rev == 0 {
		for i := 0; i < n; i++ {
			m.ranges = append(m.ranges, [2]uint16{port(i), port(i)})
		}
		return m, true
	}
	if len(b) < 48 {
		return m, false
	}
	for i := 0; i < n; i++ {
		if b[32+i] != 0 && i+1 < n {
			m.ranges = append(m.ranges, [2]uint16{port(i), port(i + 1)})
			i++
			continue
		}
		m.ranges = append(m.ranges, [2]uint16{port(i), port(i)})
	}
	m.invert = b[47] != 0
	return m, true
}

func inPorts(p uint16, r [2]uint16) bool { return p >= r[0] && p <= r[1] }

// xtMatch decides an xtables match for the packet: matchMaybe for
// extensions (or options) it does not interpret.
func (ev *evaluator) xtMatch(x *expr.Match) matchResult {
	p, ct := ev.p, ev.p.ctState()
	yes := func(b bool) matchResult {
		if b {
			return matchYes
		}
		return matchNo
	}
	switch info := x.Info.(type) {
	case *xt.Tcp:
		if p.Proto != unix.IPPROTO_TCP {
			return matchNo
		}
		if inPorts(p.SrcPort, info.SrcPorts) == (info.InvFlags&xt.TcpInvSrcPorts != 0) ||
			inPorts(p.DstPort, info.DstPorts) == (info.InvFlags&xt.TcpInvDestPorts != 0) {
			return matchNo
		}
		if info.Option != 0 {
			return matchMaybe
		}
		if info.FlagsMask != 0 {
			if p.TCPFlags == 0 {
				return matchMaybe
			}
			return yes((p.TCPFlags&info.FlagsMask == info.FlagsCmp) != (info.InvFlags&xt.TcpInvFlags != 0))
		}
		return matchYes
	case *xt.Udp:
		if p.Proto != unix.IPPROTO_UDP {
			return matchNo
		}
		return yes(inPorts(p.SrcPort, info.SrcPorts) != (info.InvFlags&xt.UdpInvSrcPorts != 0) &&
			inPorts(p.DstPort, info.DstPorts) != (info.InvFlags&xt.UdpInvDestPorts != 0))
	case *xt.Comment:
		return matchYes
	case *xt.AddrType:
		return ev.addrtype(info.Source, info.Dest, info.InvertSource, info.InvertDest, false)
	case *xt.AddrTypeV1:
		const invSrc, invDst, limitIn, limitOut = 1, 2, 4, 8
		return ev.addrtype(info.Source, info.Dest, info.Flags&invSrc != 0, info.Flags&invDst != 0, info.Flags&(limitIn|limitOut) != 0)
	case *xt.ConntrackMtinfo1:
		return ctMatch(info.ConntrackMtinfoBase, uint16(info.StateMask), ct)
	case *xt.ConntrackMtinfo2:
		return ctMatch(info.ConntrackMtinfoBase, info.StateMask, ct)
	case *xt.ConntrackMtinfo3:
		return ctMatch(info.ConntrackMtinfoBase, info.StateMask, ct)
	case *xt.Unknown:
		switch x.Name {
		case "multiport":
			m, ok := decodeMultiport(x.Rev, *info)
			if !ok {
				return matchMaybe
			}
			any := false
			for _, r := range m.ranges {
				switch m.flags {
				case multiportSource:
					any = any || inPorts(p.SrcPort, r)
				case multiportDest:
					any = any || inPorts(p.DstPort, r)
				case multiportEither:
					any = any || inPorts(p.SrcPort, r) || inPorts(p.DstPort, r)
				}
			}
			return yes(any != m.invert)
		case "state":
			if len(*info) < 4 || ct == 0 {
				return matchMaybe
			}
			return yes(binary.NativeEndian.Uint32(*info)&ct != 0)
		}
	}
	return matchMaybe
}

// ctMatch interprets --ctstate. The mask's bits 0-3 (INVALID,
// ESTABLISHED, RELATED, NEW) are nft's ct state bits; SNAT, DNAT and
// UNTRACKED (64, 128, 256) depend on the connection's NAT, unknown here.
func ctMatch(b xt.ConntrackMtinfoBase, stateMask uint16, ct uint32) matchResult {
	if b.MatchFlags != uint16(xt.ConntrackState) || ct == 0 {
		return matchMaybe // only --ctstate is interpreted
	}
	in := uint32(stateMask)&ct != 0
	if !in && stateMask&^0x0f != 0 {
		return matchMaybe
	}
	if in == (b.InvertFlags&uint16(xt.ConntrackState) != 0) {
		return matchNo
	}
	return matchYes
}

// addrtype interprets -m addrtype --src-type/--dst-type (masks of
// 1<<RTN_*) from the namespace's addresses.
func (ev *evaluator) addrtype(src, dst uint16, invSrc, invDst, limitIface bool) matchResult {
	if limitIface {
		return matchMaybe
	}
	for _, c := range []struct {
		mask uint16
		inv  bool
		a    netip.Addr
	}{{src, invSrc, ev.p.Src}, {dst, invDst, ev.p.Dst}} {
		if c.mask == 0 {
			continue
		}
		t, ok := ev.ai.rtnType(c.a)
		if !ok {
			return matchMaybe
		}
		if (c.mask&(1<<t) != 0) == c.inv {
			return matchNo
		}
	}
	return matchYes
}

// xtTarget classifies an xtables target.
func xtTarget(x *expr.Target, fam nftables.TableFamily) (action, string) {
	switch x.Name {
	case "REJECT":
		return actReject, "reject" + xtRejectSuffix(x, fam)
	case "LOG", "NFLOG", "MARK", "CONNMARK", "CT", "TRACE", "TCPMSS", "CLASSIFY", "DSCP", "TOS", "CHECKSUM", "SET", "AUDIT":
		return actContinue, ""
	case "SNAT", "DNAT", "MASQUERADE", "REDIRECT", "NETMAP":
		return actAccept, "nat"
	}
	return actOther, x.Name
}

func xtRejectWith(x *expr.Target, fam nftables.TableFamily) string {
	u, ok := x.Info.(*xt.Unknown)
	if !ok || len(*u) < 4 {
		return ""
	}
	w := binary.NativeEndian.Uint32(*u)
	names := iptRejectWith
	if fam == nftables.TableFamilyIPv6 {
		names = ip6tRejectWith
	}
	if int(w) < len(names) {
		return names[w]
	}
	return strconv.Itoa(int(w))
}

// xtRejectSuffix: the ip6 REJECT target has the same name and revision as
// the ip one but its own enum, told apart by the table's family.
func xtRejectSuffix(x *expr.Target, fam nftables.TableFamily) string {
	if w := xtRejectWith(x, fam); w != "" {
		return " with " + w
	}
	return ""
}

func xtMatchText(x *expr.Match) string {
	switch info := x.Info.(type) {
	case *xt.Tcp:
		return "xt match tcp " + tcpudpOpts(info.SrcPorts, info.DstPorts, info.InvFlags&xt.TcpInvSrcPorts != 0, info.InvFlags&xt.TcpInvDestPorts != 0)
	case *xt.Udp:
		return "xt match udp " + tcpudpOpts(info.SrcPorts, info.DstPorts, info.InvFlags&xt.UdpInvSrcPorts != 0, info.InvFlags&xt.UdpInvDestPorts != 0)
	case *xt.Comment:
		return "comment " + strconv.Quote(string(*info))
	}
	return "xt match " + x.Name
}

func xtTargetText(x *expr.Target, fam nftables.TableFamily) string {
	if x.Name == "REJECT" {
		return "xt target REJECT" + xtRejectSuffix(x, fam)
	}
	return "xt target " + x.Name
}

func portRange(r [2]uint16) string {
	if r[0] == r[1] {
		return strconv.Itoa(int(r[0]))
	}
	return fmt.Sprintf("%d:%d", r[0], r[1])
}

// tcpudpOpts prints the iptables options of xt_tcp/xt_udp.
func tcpudpOpts(sp, dp [2]uint16, invS, invD bool) string {
	var out []string
	if sp != [2]uint16{0, 0xffff} {
		out = append(out, neg(invS)+"--sport "+portRange(sp))
	}
	if dp != [2]uint16{0, 0xffff} {
		out = append(out, neg(invD)+"--dport "+portRange(dp))
	}
	return strings.Join(out, " ")
}

func neg(b bool) string {
	if b {
		return "! "
	}
	return ""
}

// renderIptables prints a rule of an iptables-nft table the way
// iptables-save does ("-A INPUT -p tcp --dport 8080 -j DROP"), or "" when
// the rule holds native expressions iptables has no option for.
func renderIptables(chain string, r *nftables.Rule) string {
	v4 := r.Table.Family != nftables.TableFamilyIPv6
	out := []string{"-A " + chain}
	type reg struct {
		what string // "proto", "saddr", "daddr", "iif", "oif", "sport", "dport", "flags"
		n    int
		mask []byte
	}
	regs := map[uint32]reg{}
	for _, e := range r.Exprs {
		switch x := e.(type) {
		case *expr.Meta:
			switch x.Key {
			case expr.MetaKeyL4PROTO:
				regs[x.Register] = reg{what: "proto"}
			case expr.MetaKeyIIFNAME:
				regs[x.Register] = reg{what: "iif"}
			case expr.MetaKeyOIFNAME:
				regs[x.Register] = reg{what: "oif"}
			default:
				return ""
			}
		case *expr.Payload:
			what := ""
			switch {
			case x.Base == expr.PayloadBaseNetworkHeader && v4 && x.Offset == 12, x.Base == expr.PayloadBaseNetworkHeader && !v4 && x.Offset == 8:
				what = "saddr"
			case x.Base == expr.PayloadBaseNetworkHeader && v4 && x.Offset == 16, x.Base == expr.PayloadBaseNetworkHeader && !v4 && x.Offset == 24:
				what = "daddr"
			case x.Base == expr.PayloadBaseNetworkHeader && (v4 && x.Offset == 9 || !v4 && x.Offset == 6):
				what = "proto"
			case x.Base == expr.PayloadBaseTransportHeader && x.Offset == 0 && x.Len == 2:
				what = "sport"
			case x.Base == expr.PayloadBaseTransportHeader && x.Offset == 2 && x.Len == 2:
				what = "dport"
			case x.Base == expr.PayloadBaseTransportHeader && x.Offset == 13 && x.Len == 1:
				what = "flags"
			default:
				return ""
			}
			regs[x.DestRegister] = reg{what: what, n: int(x.Len)}
		case *expr.Bitwise:
			rg := regs[x.SourceRegister]
			rg.mask = x.Mask
			regs[x.DestRegister] = rg
		case *expr.Cmp:
			rg := regs[x.Register]
			if x.Op != expr.CmpOpEq && x.Op != expr.CmpOpNeq {
				return ""
			}
			not := neg(x.Op == expr.CmpOpNeq)
			switch rg.what {
			case "proto":
				name := protoName(x.Data[0])
				if name == "" {
					name = strconv.Itoa(int(x.Data[0]))
				}
				out = append(out, not+"-p "+name)
			case "saddr", "daddr":
				full := 4
				if !v4 {
					full = 16
				}
				b := make([]byte, full)
				copy(b, x.Data)
				a, _ := netip.AddrFromSlice(b)
				bitsN := len(x.Data) * 8
				if rg.mask != nil {
					bitsN = prefixLen(rg.mask)
				}
				flag := "-s "
				if rg.what == "daddr" {
					flag = "-d "
				}
				out = append(out, not+flag+netip.PrefixFrom(a, bitsN).String())
			case "iif", "oif":
				name := string(x.Data)
				if i := strings.IndexByte(name, 0); i >= 0 {
					name = name[:i]
				} else {
					name += "+"
				}
				flag := "-i "
				if rg.what == "oif" {
					flag = "-o "
				}
				out = append(out, not+flag+name)
			case "sport", "dport":
				out = append(out, not+"--"+rg.what+" "+strconv.Itoa(int(binary.BigEndian.Uint16(x.Data))))
			case "flags":
				if rg.mask != nil && rg.mask[0] == 0x17 && x.Data[0] == 0x02 {
					out = append(out, not+"--syn")
				} else {
					return ""
				}
			default:
				return ""
			}
		case *expr.Range:
			rg := regs[x.Register]
			if rg.what != "sport" && rg.what != "dport" {
				return ""
			}
			out = append(out, neg(x.Op == expr.CmpOpNeq)+"--"+rg.what+" "+
				fmt.Sprintf("%d:%d", binary.BigEndian.Uint16(x.FromData), binary.BigEndian.Uint16(x.ToData)))
		case *expr.Counter:
		case *expr.Match:
			out = append(out, xtMatchOpts(x))
		case *expr.Target:
			t := "-j " + x.Name
			if x.Name == "REJECT" {
				if w := xtRejectWith(x, r.Table.Family); w != "" {
					t += " --reject-with " + w
				}
			}
			out = append(out, t)
		case *expr.Verdict:
			switch x.Kind {
			case expr.VerdictDrop:
				out = append(out, "-j DROP")
			case expr.VerdictAccept:
				out = append(out, "-j ACCEPT")
			case expr.VerdictReturn:
				out = append(out, "-j RETURN")
			case expr.VerdictJump:
				out = append(out, "-j "+x.Chain)
			case expr.VerdictGoto:
				out = append(out, "-g "+x.Chain)
			default:
				return ""
			}
		default:
			return ""
		}
	}
	return strings.Join(out, " ")
}

func xtMatchOpts(x *expr.Match) string {
	switch info := x.Info.(type) {
	case *xt.Tcp:
		s := "-m tcp " + tcpudpOpts(info.SrcPorts, info.DstPorts, info.InvFlags&xt.TcpInvSrcPorts != 0, info.InvFlags&xt.TcpInvDestPorts != 0)
		if info.FlagsMask == 0x17 && info.FlagsCmp == 0x02 {
			s += " --syn"
		}
		return strings.TrimSpace(s)
	case *xt.Udp:
		return strings.TrimSpace("-m udp " + tcpudpOpts(info.SrcPorts, info.DstPorts, info.InvFlags&xt.UdpInvSrcPorts != 0, info.InvFlags&xt.UdpInvDestPorts != 0))
	case *xt.Comment:
		return "-m comment --comment " + strconv.Quote(string(*info))
	case *xt.AddrType:
		return addrtypeOpts(info.Source, info.Dest, info.InvertSource, info.InvertDest)
	case *xt.AddrTypeV1:
		return addrtypeOpts(info.Source, info.Dest, info.Flags&1 != 0, info.Flags&2 != 0)
	case *xt.ConntrackMtinfo1:
		return ctOpts(info.ConntrackMtinfoBase, uint16(info.StateMask))
	case *xt.ConntrackMtinfo2:
		return ctOpts(info.ConntrackMtinfoBase, info.StateMask)
	case *xt.ConntrackMtinfo3:
		return ctOpts(info.ConntrackMtinfoBase, info.StateMask)
	case *xt.Unknown:
		switch x.Name {
		case "multiport":
			if m, ok := decodeMultiport(x.Rev, *info); ok {
				opt := [...]string{"--sports", "--dports", "--ports"}[min(int(m.flags), 2)]
				var ps []string
				for _, r := range m.ranges {
					ps = append(ps, portRange(r))
				}
				return "-m multiport " + neg(m.invert) + opt + " " + strings.Join(ps, ",")
			}
		case "state":
			if len(*info) >= 4 {
				return "-m state --state " + strings.ToUpper(ctStateNames(binary.NativeEndian.Uint32(*info)))
			}
		}
	}
	return "-m " + x.Name
}

func ctOpts(b xt.ConntrackMtinfoBase, stateMask uint16) string {
	if b.MatchFlags&uint16(xt.ConntrackState) == 0 {
		return "-m conntrack"
	}
	return "-m conntrack " + neg(b.InvertFlags&uint16(xt.ConntrackState) != 0) + "--ctstate " + strings.ToUpper(ctStateNames(uint32(stateMask)))
}

func addrtypeOpts(src, dst uint16, invSrc, invDst bool) string {
	types := func(m uint16) string {
		var out []string
		for t := range rtnNames {
			if m&(1<<t) != 0 {
				out = append(out, strings.ToUpper(rtnNames[t]))
			}
		}
		return strings.Join(out, ",")
	}
	s := "-m addrtype"
	if src != 0 {
		s += " " + neg(invSrc) + "--src-type " + types(src)
	}
	if dst != 0 {
		s += " " + neg(invDst) + "--dst-type " + types(dst)
	}
	return s
}
