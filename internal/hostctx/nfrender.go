//go:build linux

package hostctx

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// fieldKind says how to print a value loaded from a field.
type fieldKind uint8

const (
	kRaw fieldKind = iota
	kAddr
	kPort
	kProto
	kNfproto
	kIfname
	kCtState
	kTCPFlags
	kEther
	kRTType
)

// field is what a register holds while a rule is rendered.
type field struct {
	name   string
	kind   fieldKind
	full   int    // the field's size; a shorter load is an address prefix
	l4     uint8  // the transport protocol a transport field belongs to
	l3     bool   // a network-header field (its family makes nfproto implicit)
	mask   []byte // from a bitwise and
	loaded int
}

// fieldAt names a payload load. v4 is the network family in context, l4
// the transport protocol a previous match established (0 if none).
func fieldAt(base expr.PayloadBase, off, n uint32, v4 bool, l4 uint8) field {
	switch base {
	case expr.PayloadBaseNetworkHeader:
		if v4 {
			switch {
			case off == 9 && n == 1:
				return field{name: "ip protocol", kind: kProto, full: 1, l3: true}
			case off == 12 && n <= 4:
				return field{name: "ip saddr", kind: kAddr, full: 4, l3: true}
			case off == 16 && n <= 4:
				return field{name: "ip daddr", kind: kAddr, full: 4, l3: true}
			}
			return field{name: fmt.Sprintf("@nh,%d,%d", off*8, n*8), l3: true}
		}
		switch {
		case off == 6 && n == 1:
			return field{name: "ip6 nexthdr", kind: kProto, full: 1, l3: true}
		case off == 8 && n <= 16:
			return field{name: "ip6 saddr", kind: kAddr, full: 16, l3: true}
		case off == 24 && n <= 16:
			return field{name: "ip6 daddr", kind: kAddr, full: 16, l3: true}
		}
		return field{name: fmt.Sprintf("@nh,%d,%d", off*8, n*8), l3: true}
	case expr.PayloadBaseTransportHeader:
		proto := protoName(l4)
		if proto == "" {
			proto = "th"
		}
		switch {
		case off == 0 && n == 2:
			return field{name: proto + " sport", kind: kPort, full: 2, l4: l4}
		case off == 2 && n == 2:
			return field{name: proto + " dport", kind: kPort, full: 2, l4: l4}
		case off == 13 && n == 1 && l4 == unix.IPPROTO_TCP:
			return field{name: "tcp flags", kind: kTCPFlags, full: 1, l4: l4}
		}
		return field{name: fmt.Sprintf("@th,%d,%d", off*8, n*8)}
	}
	return field{name: fmt.Sprintf("@ll,%d,%d", off*8, n*8)}
}

func payloadName(x *expr.Payload, p Packet) string {
	return fieldAt(x.Base, x.Offset, x.Len, p.Src.Unmap().Is4(), p.Proto).name
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	case unix.IPPROTO_UDPLITE:
		return "udplite"
	}
	return ""
}

var cmpOps = map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ", expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= "}

// value prints data loaded from f the way nft lists it.
func (f field) value(b []byte) string {
	switch f.kind {
	case kAddr:
		bitsSet := len(b) * 8
		if f.mask != nil {
			bitsSet = prefixLen(f.mask)
		}
		full := make([]byte, f.full)
		copy(full, b)
		a, _ := netip.AddrFromSlice(full)
		if bitsSet < f.full*8 {
			return netip.PrefixFrom(a, bitsSet).String()
		}
		return a.String()
	case kPort:
		if len(b) == 2 {
			return strconv.Itoa(int(binary.BigEndian.Uint16(b)))
		}
	case kProto:
		if len(b) == 1 {
			if n := protoName(b[0]); n != "" {
				return n
			}
			return strconv.Itoa(int(b[0]))
		}
	case kNfproto:
		if len(b) == 1 {
			switch b[0] {
			case unix.NFPROTO_IPV4:
				return "ipv4"
			case unix.NFPROTO_IPV6:
				return "ipv6"
			}
		}
	case kIfname:
		s := string(b)
		if i := strings.IndexByte(s, 0); i >= 0 {
			return strconv.Quote(s[:i])
		}
		return strconv.Quote(s + "*") // a prefix comparison
	case kCtState:
		if len(b) == 4 {
			return ctStateNames(binary.NativeEndian.Uint32(b))
		}
	case kTCPFlags:
		if len(b) == 1 {
			return tcpFlagNames(b[0])
		}
	case kRTType:
		if len(b) == 4 {
			return rtnName(binary.NativeEndian.Uint32(b))
		}
	case kEther:
		if len(b) == 2 {
			switch binary.BigEndian.Uint16(b) {
			case 0x0800:
				return "ip"
			case 0x86dd:
				return "ip6"
			}
		}
	}
	return fmt.Sprintf("0x%x", b)
}

func prefixLen(mask []byte) int {
	n := 0
	for _, m := range mask {
		n += bits.OnesCount8(m)
	}
	return n
}

func ctStateNames(v uint32) string {
	names := []struct {
		bit  uint32
		name string
	}{{expr.CtStateBitINVALID, "invalid"}, {expr.CtStateBitESTABLISHED, "established"}, {expr.CtStateBitRELATED, "related"}, {expr.CtStateBitNEW, "new"}, {expr.CtStateBitUNTRACKED, "untracked"}}
	var out []string
	for _, n := range names {
		if v&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return strings.Join(out, ",")
}

func tcpFlagNames(v uint8) string {
	names := []string{"fin", "syn", "rst", "psh", "ack", "urg", "ecn", "cwr"}
	var out []string
	for i, n := range names {
		if v&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "0x0"
	}
	return strings.Join(out, "|")
}

// renderNft prints a rule roughly as `nft list ruleset` does: one match per
// loaded field, implicit protocol dependencies left out.
func (rs *ruleset) renderNft(r *nftables.Rule) string {
	fam := r.Table.Family
	v4 := fam != nftables.TableFamilyIPv6
	var l4 uint8
	var out []string
	// Protocol matches nft adds as dependencies of an address or port
	// match ("meta nfproto ipv4", "meta l4proto tcp") wait here and are
	// left out if a match that implies them follows, as `nft list` does.
	type dep struct{ text, kind string }
	var pending []dep
	emit := func(s string, implies string) {
		var keep []dep
		for _, d := range pending {
			switch {
			case strings.Contains(implies, d.kind):
			case d.kind == "l4" && implies == "l3":
				// An address match between a protocol dependency and
				// the port match that implies it.
				keep = append(keep, d)
			default:
				out = append(out, d.text)
			}
		}
		pending = keep
		if s != "" {
			out = append(out, s)
		}
	}
	depend := func(text, kind string) { pending = append(pending, dep{text, kind}) }
	regs := map[int]field{} // by 32-bit register index
	for _, e := range r.Exprs {
		switch x := e.(type) {
		case *expr.Meta:
			if x.SourceRegister {
				emit(metaName(x.Key)+" set …", "")
				continue
			}
			f := field{name: metaName(x.Key)}
			switch x.Key {
			case expr.MetaKeyL4PROTO:
				f.kind = kProto
			case expr.MetaKeyNFPROTO:
				f.kind = kNfproto
			case expr.MetaKeyPROTOCOL:
				f.kind = kEther
			case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
				f.kind = kIfname
			}
			regs[ridx(x.Register)] = f
		case *expr.Payload:
			if x.OperationType != expr.PayloadLoad {
				emit("payload write …", "")
				continue
			}
			f := fieldAt(x.Base, x.Offset, x.Len, v4, l4)
			f.loaded = int(x.Len)
			if f.kind == kAddr && int(x.Len) < f.full {
				f.mask = make([]byte, x.Len)
				for i := range f.mask {
					f.mask[i] = 0xff
				}
			}
			regs[ridx(x.DestRegister)] = f
		case *expr.Ct:
			if x.SourceRegister {
				emit(ctName(x.Key)+" set …", "")
				continue
			}
			f := field{name: ctName(x.Key)}
			if x.Key == expr.CtKeySTATE {
				f.kind = kCtState
			}
			regs[ridx(x.Register)] = f
		case *expr.Fib:
			f := field{name: fibName(x)}
			if x.ResultADDRTYPE {
				f.kind = kRTType
			}
			regs[ridx(x.Register)] = f
		case *expr.Bitwise:
			f := regs[ridx(x.SourceRegister)]
			switch f.kind {
			case kAddr:
				f.mask = x.Mask
			case kCtState, kTCPFlags:
				f.mask = x.Mask
			default:
				f.name = fmt.Sprintf("%s & 0x%x", f.name, x.Mask)
			}
			regs[ridx(x.DestRegister)] = f
		case *expr.Cmp:
			f := regs[ridx(x.Register)]
			op := cmpOps[x.Op]
			switch {
			case f.kind == kCtState && f.mask != nil && x.Op == expr.CmpOpNeq && isZero(x.Data):
				emit(f.name+" "+f.value(f.mask), "")
			case f.kind == kCtState && f.mask != nil && x.Op == expr.CmpOpEq && isZero(x.Data):
				emit(f.name+" != "+f.value(f.mask), "")
			case f.kind == kTCPFlags && f.mask != nil:
				eq := "=="
				if x.Op == expr.CmpOpNeq {
					eq = "!="
				}
				emit(fmt.Sprintf("tcp flags & (%s) %s %s", tcpFlagNames(f.mask[0]), eq, f.value(x.Data)), "l4")
			default:
				// A protocol match is an implicit dependency of the
				// transport or address match that usually follows it.
				if (f.name == "meta l4proto" || f.name == "ip protocol" || f.name == "ip6 nexthdr") && x.Op == expr.CmpOpEq && len(x.Data) == 1 {
					l4 = x.Data[0]
					depend(f.name+" "+f.value(x.Data), "l4")
					continue
				}
				if f.name == "meta nfproto" && x.Op == expr.CmpOpEq && len(x.Data) == 1 {
					v4 = x.Data[0] == unix.NFPROTO_IPV4
					if fam == nftables.TableFamilyINet {
						depend(f.name+" "+f.value(x.Data), "l3")
						continue
					}
				}
				implied := ""
				if f.l4 != 0 {
					implied = "l4"
				} else if f.l3 {
					implied = "l3"
				}
				emit(strings.TrimSpace(f.name+" "+op+f.value(x.Data)), implied)
			}
		case *expr.Range:
			f := regs[ridx(x.Register)]
			op := ""
			if x.Op == expr.CmpOpNeq {
				op = "!= "
			}
			implied := ""
			if f.l4 != 0 {
				implied = "l4"
			}
			emit(fmt.Sprintf("%s %s%s-%s", f.name, op, f.value(x.FromData), f.value(x.ToData)), implied)
		case *expr.Lookup:
			f := regs[ridx(x.SourceRegister)]
			op := ""
			if x.Invert {
				op = "!= "
			}
			implied := ""
			if f.l4 != 0 {
				implied = "l4"
			} else if f.l3 {
				implied = "l3"
			}
			set := rs.sets[tableKey{fam, r.Table.Name}][x.SetName]
			what := "@" + x.SetName
			var parts []field
			if set != nil {
				parts = concatParts(regs, x.SourceRegister, set)
			}
			if len(parts) > 1 {
				var names []string
				for _, p := range parts {
					names = append(names, p.name)
					if p.l4 != 0 {
						implied += "l4"
					} else if p.l3 {
						implied += "l3"
					}
				}
				f.name = strings.Join(names, " . ")
			}
			if set != nil && set.s.Anonymous {
				what = set.render(f, parts)
			}
			if x.IsDestRegSet && x.DestRegister == 0 {
				emit(fmt.Sprintf("%s %svmap %s", f.name, op, what), implied)
				continue
			}
			emit(fmt.Sprintf("%s %s%s", f.name, op, what), implied)
		case *expr.Counter:
			emit(fmt.Sprintf("counter packets %d bytes %d", x.Packets, x.Bytes), "")
		case *expr.Verdict:
			emit(verdictText(x), "")
		case *expr.Reject:
			emit(rejectText(x, fam), "")
		case *expr.Immediate:
			// Loads data for a following statement (nat, vmap, ...).
		case *expr.Log:
			emit("log", "")
		case *expr.Match:
			emit(xtMatchText(x), "")
		case *expr.Target:
			emit(xtTargetText(x, fam), "")
		default:
			emit(strings.ToLower(fmt.Sprintf("%T", e)[len("*expr."):]), "")
		}
	}
	emit("", "")
	return strings.Join(out, " ")
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func verdictText(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictQueue:
		return "queue"
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}

// render prints an anonymous set's elements: `{ 22, 8080 }`, intervals as
// prefixes where they are one, else as ranges.
func (s *nfSet) render(f field, parts []field) string {
	var items []string
	switch {
	case len(parts) > 1:
		sizes := s.fields()
		for _, r := range s.keyRanges() {
			var each []string
			off := 0
			for i, p := range parts {
				n := sizes[i]
				w := min(n, p.full)
				if p.full == 0 {
					w = n
				}
				end := r.end
				if end == nil {
					end = r.from
				}
				each = append(each, rangeText(p, keyRange{from: r.from[off : off+w], end: end[off : off+w]}))
				off += n
			}
			items = append(items, strings.Join(each, " . "))
		}
	case s.s.Interval:
		for _, r := range s.ranges {
			items = append(items, rangeText(f, r))
		}
	default:
		for _, e := range s.elems {
			items = append(items, f.value(e.Key))
		}
	}
	return "{ " + strings.Join(items, ", ") + " }"
}

func rangeText(f field, r keyRange) string {
	last := lastOf(r)
	if string(last) == string(r.from) {
		return f.value(r.from)
	}
	if f.kind == kAddr {
		from, _ := netip.AddrFromSlice(r.from)
		for bitsN := 0; bitsN <= len(r.from)*8; bitsN++ {
			p := netip.PrefixFrom(from, bitsN)
			if p.Masked().Addr() != from {
				continue
			}
			// The prefix's last address must be the range's last key.
			if lastAddr(p) == string(last) {
				return p.String()
			}
		}
	}
	return f.value(r.from) + "-" + f.value(last)
}

func lastOf(r keyRange) []byte {
	if r.end != nil {
		return r.end
	}
	if r.to == nil {
		out := make([]byte, len(r.from))
		for i := range out {
			out[i] = 0xff
		}
		return out
	}
	out := append([]byte(nil), r.to...)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]--
		if out[i] != 0xff {
			break
		}
	}
	return out
}

func lastAddr(p netip.Prefix) string {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return string(b)
}

// ridx maps a register number to its 32-bit register index (see regOff).
func ridx(r uint32) int {
	off, _ := regOff(r)
	return off / 4
}

// concatParts returns the fields loaded into consecutive registers for a
// lookup in a set with a concatenated key, nil for a plain key.
func concatParts(regs map[int]field, src uint32, s *nfSet) []field {
	sizes := s.fields()
	if len(sizes) < 2 {
		return nil
	}
	idx := ridx(src)
	var out []field
	for _, n := range sizes {
		out = append(out, regs[idx])
		idx += n / 4
	}
	return out
}

// keyRanges lists a concatenated set's elements as ranges (single keys
// have no end).
func (s *nfSet) keyRanges() []keyRange {
	if s.s.Interval {
		return s.ranges
	}
	out := make([]keyRange, 0, len(s.elems))
	for _, e := range s.elems {
		out = append(out, keyRange{from: e.Key})
	}
	return out
}

var rtnNames = []string{"unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable", "prohibit", "throw", "nat", "xresolve"}

func rtnName(t uint32) string {
	if int(t) < len(rtnNames) {
		return rtnNames[t]
	}
	return strconv.Itoa(int(t))
}
