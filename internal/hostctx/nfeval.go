//go:build linux

package hostctx

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Path is the way a packet took through a namespace's netfilter hooks.
type Path uint8

const (
	// PathUnknown: Attribute infers the path from the namespace's own
	// addresses (to a local address: input; from one: output; else forward).
	PathUnknown Path = iota
	PathInput        // prerouting, input
	PathForward      // prerouting, forward, postrouting
	PathOutput       // output, postrouting
)

func (p Path) String() string {
	return [...]string{"unknown", "input", "forward", "output"}[p]
}

func (p Path) hooks() []nftables.ChainHook {
	switch p {
	case PathInput:
		return []nftables.ChainHook{unix.NF_INET_PRE_ROUTING, unix.NF_INET_LOCAL_IN}
	case PathForward:
		return []nftables.ChainHook{unix.NF_INET_PRE_ROUTING, unix.NF_INET_FORWARD, unix.NF_INET_POST_ROUTING}
	case PathOutput:
		return []nftables.ChainHook{unix.NF_INET_LOCAL_OUT, unix.NF_INET_POST_ROUTING}
	}
	return []nftables.ChainHook{unix.NF_INET_PRE_ROUTING, unix.NF_INET_LOCAL_IN, unix.NF_INET_FORWARD, unix.NF_INET_LOCAL_OUT, unix.NF_INET_POST_ROUTING}
}

// Packet is what Attribute knows about a dropped packet. Zero fields are
// unknown: rule expressions that test them make a match probable, not exact.
type Packet struct {
	NetnsInode       uint32
	Proto            uint8 // IANA protocol number (signal.ProtoTCP, ...)
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	TCPFlags         uint8  // header flags; 0 = unknown
	InIface          string // input device name (input and forward paths)
	OutIface         string // output device name (output and forward paths)
	// InIfindex/OutIfindex: the same devices by index (Attribute fills
	// whichever of name and index is missing from the namespace's links).
	InIfindex, OutIfindex uint32
	// DropDev/DropIfindex: the dropped skb's device when its direction is
	// not known (a drop signal's Dev). Attribute uses it as the input
	// device on the input path and the output device on the output path;
	// on the forward path it is ambiguous and left out.
	DropDev     string
	DropIfindex uint32
	// CTState is the conntrack state bit (expr.CtStateBitNEW, ...); 0 lets
	// Attribute derive it: a SYN without ACK is NEW, anything else unknown.
	CTState uint32
	Path    Path
	// Time of the drop: a cached ruleset listed before it is listed again
	// (at most every Netfilter.MinReload) so counters include the drop.
	Time time.Time
}

// Counter is a rule's packet and byte counter at the time of attribution.
type Counter struct{ Packets, Bytes uint64 }

// RuleMatch names the netfilter rule (or chain policy) that dropped a packet.
type RuleMatch struct {
	Netns  string // the namespace's name (NetnsNames)
	Family string // ip, ip6, inet, ...
	Table  string
	Chain  string   // the chain holding the rule
	Via    []string // base chain and jumps that led there ("INPUT", "jump f2b")
	Handle uint64   // 0 when the chain's policy dropped it
	// Text is the rule in nft syntax ("tcp dport 8080 drop"); Iptables the
	// same rule as iptables-save prints it ("-A INPUT -p tcp --dport 8080
	// -j DROP") for tables of iptables-nft, else "".
	Text     string
	Iptables string
	Verdict  string // "drop", "reject with tcp reset", "policy drop"
	// Exact: every expression of the rule was understood and matched the
	// packet. Otherwise Unknown says which were not understood (they were
	// assumed to match). Alternatives lists other rules that might have
	// dropped it (probable ones met on the way); when it is not empty even
	// an exact rule is not certain to be the one.
	Exact        bool
	Unknown      []string
	Alternatives []string
	Counter      *Counter // nil when the rule counts nothing
}

func (m *RuleMatch) String() string {
	conf := "exact"
	if !m.Exact {
		conf = "probable, not understood: " + strings.Join(m.Unknown, ", ")
	}
	return fmt.Sprintf("%s %s %s handle %d: %s (%s)", m.Family, m.Table, m.Chain, m.Handle, m.Text, conf)
}

// ruleset is one namespace's netfilter configuration as listed by netlink.
type ruleset struct {
	chains []*nfChain
	byName map[tableKey]map[string]*nfChain
	sets   map[tableKey]map[string]*nfSet
}

type tableKey struct {
	fam  nftables.TableFamily
	name string
}

type nfChain struct {
	c     *nftables.Chain
	rules []*nftables.Rule
}

type nfSet struct {
	s      *nftables.Set
	elems  []nftables.SetElement
	ranges []keyRange // interval sets: [from, to) in key byte order
}

// keyRange is [from, to); to == nil: up to the maximum. end, when set, is
// the inclusive last key as concatenated interval sets list it.
type keyRange struct{ from, to, end []byte }

func newRuleset() *ruleset {
	return &ruleset{byName: map[tableKey]map[string]*nfChain{}, sets: map[tableKey]map[string]*nfSet{}}
}

func (rs *ruleset) addChain(c *nftables.Chain, rules []*nftables.Rule) {
	ch := &nfChain{c: c, rules: rules}
	rs.chains = append(rs.chains, ch)
	k := tableKey{c.Table.Family, c.Table.Name}
	if rs.byName[k] == nil {
		rs.byName[k] = map[string]*nfChain{}
	}
	rs.byName[k][c.Name] = ch
}

func (rs *ruleset) addSet(s *nftables.Set, elems []nftables.SetElement) {
	set := &nfSet{s: s, elems: elems}
	if s.Interval {
		// The kernel lists an interval set as start elements and
		// IntervalEnd elements holding the first key past each range.
		sorted := append([]nftables.SetElement(nil), elems...)
		sort.SliceStable(sorted, func(i, j int) bool { return bytes.Compare(sorted[i].Key, sorted[j].Key) < 0 })
		for i, e := range sorted {
			if e.IntervalEnd {
				continue
			}
			r := keyRange{from: e.Key}
			if len(e.KeyEnd) > 0 { // concatenated interval keys carry their end
				r.to, r.end = incr(e.KeyEnd), e.KeyEnd
			} else if i+1 < len(sorted) && sorted[i+1].IntervalEnd {
				r.to = sorted[i+1].Key
			}
			set.ranges = append(set.ranges, r)
		}
	}
	k := tableKey{s.Table.Family, s.Table.Name}
	if rs.sets[k] == nil {
		rs.sets[k] = map[string]*nfSet{}
	}
	rs.sets[k][s.Name] = set
}

// fields returns the byte sizes of a concatenated key's parts, each padded
// to a 32-bit register; nil for a plain key.
func (s *nfSet) fields() []int {
	if !s.s.Concatenation && !strings.Contains(s.s.KeyType.Name, " . ") {
		return nil
	}
	var out []int
	for _, t := range nftables.ConcatSetTypeElements(s.s.KeyType) {
		if t.Bytes == 0 {
			return nil // a type google/nftables does not know
		}
		out = append(out, int(t.Bytes+3)/4*4)
	}
	return out
}

// inFields: a concatenation of ranges (ip saddr . tcp dport { 10.0.0.0/8 .
// 80-90 }) holds a key when each part is within its own range.
func inFields(key []byte, r keyRange, fields []int) bool {
	last := lastOf(r)
	off := 0
	for _, n := range fields {
		if off+n > len(key) || off+n > len(r.from) || off+n > len(last) {
			return false
		}
		k := key[off : off+n]
		if bytes.Compare(k, r.from[off:off+n]) < 0 || bytes.Compare(k, last[off:off+n]) > 0 {
			return false
		}
		off += n
	}
	return true
}

// incr returns b+1 as a big-endian number, nil on overflow (no upper bound).
func incr(b []byte) []byte {
	out := append([]byte(nil), b...)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out
		}
	}
	return nil
}

func (s *nfSet) contains(key []byte) (*nftables.SetElement, bool) {
	if s.s.Interval {
		fields := s.fields()
		for _, r := range s.ranges {
			if len(fields) > 1 && r.end != nil {
				if inFields(key, r, fields) {
					return nil, true
				}
				continue
			}
			if bytes.Compare(key, r.from) >= 0 && (r.to == nil || bytes.Compare(key, r.to) < 0) {
				return nil, true
			}
		}
		return nil, false
	}
	for i := range s.elems {
		if bytes.Equal(s.elems[i].Key, key) {
			return &s.elems[i], true
		}
	}
	return nil, false
}

// Limits that bound the cost of one attribution (the kernel's own jump
// stack is 16 deep).
const (
	maxJumpDepth = 16
	maxRuleEvals = 20000
)

type evaluator struct {
	rs      *ruleset
	p       Packet
	ai      *addrInfo // the namespace's addresses; nil: unknown
	nh, th  header
	cands   []*RuleMatch
	evals   int
	stopped bool // an exact drop was found
	// passed lists rules of the current base chain that might have
	// matched (not understood) and were assumed not to: a policy drop
	// reached past them is only probable.
	passed []string
}

// attribute evaluates the packet against the base chains of its path in
// hook and priority order, and returns the rule that dropped it.
func (rs *ruleset) attribute(p Packet, ai *addrInfo) (*RuleMatch, error) {
	if !p.Src.IsValid() || !p.Dst.IsValid() {
		return nil, fmt.Errorf("packet without addresses")
	}
	ev := &evaluator{rs: rs, p: p, ai: ai}
	ev.nh, ev.th = p.headers()
	for _, hook := range p.Path.hooks() {
		for _, ch := range rs.baseChains(hook, p.Src.Unmap().Is4()) {
			ev.evalBase(ch)
			if ev.stopped {
				return ev.choose(), nil
			}
		}
	}
	if len(ev.cands) == 0 {
		if ev.evals >= maxRuleEvals {
			return nil, fmt.Errorf("no dropping rule found within %d rule evaluations", maxRuleEvals)
		}
		return nil, errNoRule
	}
	return ev.choose(), nil
}

var errNoRule = fmt.Errorf("no rule or chain policy drops this packet in the current ruleset")

// choose picks among candidates, which are in evaluation order: probable
// ones, then possibly the exact one that ended the walk. The exact rule
// wins, unless its counter says it never matched while an earlier probable
// rule's counter moved: then the packet was dropped before it. Without an
// exact rule, the first probable rule whose counter moved wins, else the
// first. The others are listed as alternatives.
func (ev *evaluator) choose() *RuleMatch {
	moved := func(m *RuleMatch) bool { return m.Counter != nil && m.Counter.Packets > 0 }
	last := ev.cands[len(ev.cands)-1]
	var best *RuleMatch
	if last.Exact {
		best = last
		if last.Counter != nil && last.Counter.Packets == 0 {
			for _, c := range ev.cands[:len(ev.cands)-1] {
				if moved(c) {
					best = c
					break
				}
			}
		}
	} else {
		best = ev.cands[0]
		for _, c := range ev.cands {
			if moved(c) {
				best = c
				break
			}
		}
	}
	for _, c := range ev.cands {
		if c != best {
			best.Alternatives = append(best.Alternatives, fmt.Sprintf("%s %s %s handle %d: %s", c.Family, c.Table, c.Chain, c.Handle, c.Text))
		}
	}
	return best
}

func (rs *ruleset) baseChains(hook nftables.ChainHook, v4 bool) []*nfChain {
	var out []*nfChain
	for _, ch := range rs.chains {
		c := ch.c
		if c.Hooknum == nil || *c.Hooknum != hook {
			continue
		}
		switch c.Table.Family {
		case nftables.TableFamilyINet:
		case nftables.TableFamilyIPv4:
			if !v4 {
				continue
			}
		case nftables.TableFamilyIPv6:
			if v4 {
				continue
			}
		default: // bridge, netdev, arp hooks are not on the IP path
			continue
		}
		out = append(out, ch)
	}
	sort.SliceStable(out, func(i, j int) bool { return prio(out[i].c) < prio(out[j].c) })
	return out
}

func prio(c *nftables.Chain) int32 {
	if c.Priority == nil {
		return 0
	}
	return int32(*c.Priority)
}

// Outcomes of a chain.
type chainOutcome uint8

const (
	outFallthrough chainOutcome = iota // end of chain or return
	outAccept
	outDrop // a drop or reject was found (exact) and recorded
)

func (ev *evaluator) evalBase(ch *nfChain) {
	via := []string{ch.c.Name}
	ev.passed = ev.passed[:0]
	out, _ := ev.evalChain(ch, via, 0, true)
	if out == outFallthrough && ch.c.Policy != nil && *ch.c.Policy == nftables.ChainPolicyDrop {
		m := ev.newMatch(ch, via, nil)
		m.Text = "policy drop"
		m.Verdict = "policy drop"
		m.Exact = len(ev.passed) == 0
		m.Unknown = append([]string(nil), ev.passed...)
		ev.cands = append(ev.cands, m)
		if m.Exact {
			ev.stopped = true
		}
	}
}

// evalChain runs one chain. exact is false once the path got here through
// a rule whose match could not be decided.
func (ev *evaluator) evalChain(ch *nfChain, via []string, depth int, exact bool) (chainOutcome, bool) {
	if depth > maxJumpDepth {
		return outFallthrough, false
	}
	for _, r := range ch.rules {
		if ev.evals >= maxRuleEvals || ev.stopped {
			return outDrop, exact
		}
		ev.evals++
		res := ev.evalRule(ch, r)
		if res.match == matchNo {
			continue
		}
		sure := res.match == matchYes
		switch res.action {
		case actDrop, actReject:
			m := ev.newMatch(ch, via, r)
			m.Verdict = res.verdict
			m.Exact = sure && exact
			m.Unknown = res.unknown
			if sure && !exact {
				m.Unknown = append(m.Unknown, "the jump that led here")
			}
			m.Counter = res.counter
			ev.cands = append(ev.cands, m)
			if m.Exact {
				ev.stopped = true
				return outDrop, true
			}
		case actAccept:
			if sure {
				return outAccept, exact
			}
			// A rule that may accept: the packet was dropped, so assume
			// it did not match and keep looking.
			ev.pass(r, res)
		case actReturn:
			if sure {
				return outFallthrough, exact
			}
			ev.pass(r, res)
		case actOther: // queued or stolen: the packet left the ruleset here
			if sure {
				return outAccept, exact
			}
			ev.pass(r, res)
		case actJump, actGoto:
			target := ev.rs.byName[tableKey{ch.c.Table.Family, ch.c.Table.Name}][res.chain]
			if target == nil {
				continue
			}
			word := "jump "
			if res.action == actGoto {
				word = "goto "
			}
			out, ex := ev.evalChain(target, append(append([]string(nil), via...), word+res.chain), depth+1, exact && sure)
			if out == outDrop {
				return outDrop, ex
			}
			if sure && (out == outAccept || res.action == actGoto) {
				return out, exact
			}
			if !sure {
				ev.pass(r, res)
			}
		}
	}
	return outFallthrough, exact
}

func (ev *evaluator) pass(r *nftables.Rule, res ruleResult) {
	ev.passed = append(ev.passed, fmt.Sprintf("rule %d (%s) assumed not to match", r.Handle, strings.Join(res.unknown, ", ")))
}

func (ev *evaluator) newMatch(ch *nfChain, via []string, r *nftables.Rule) *RuleMatch {
	m := &RuleMatch{
		Family: familyName(ch.c.Table.Family),
		Table:  ch.c.Table.Name,
		Chain:  ch.c.Name,
		Via:    append([]string(nil), via...),
	}
	if r != nil {
		m.Handle = r.Handle
		m.Text = ev.rs.renderNft(r)
		if isIptablesTable(ch.c.Table) {
			m.Iptables = renderIptables(ch.c.Name, r)
		}
	}
	return m
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family(%d)", f)
}

// iptables-nft keeps its rules in the legacy table names of the ip and ip6 families.
func isIptablesTable(t *nftables.Table) bool {
	if t.Family != nftables.TableFamilyIPv4 && t.Family != nftables.TableFamilyIPv6 {
		return false
	}
	switch t.Name {
	case "filter", "nat", "mangle", "raw", "security":
		return true
	}
	return false
}

type matchResult uint8

const (
	matchYes   matchResult = iota
	matchMaybe             // some expression not understood, none failed
	matchNo
)

type action uint8

const (
	actContinue action = iota
	actDrop
	actReject
	actAccept
	actJump
	actGoto
	actReturn
	actOther // queue, stolen: the packet leaves the ruleset
)

type ruleResult struct {
	match   matchResult
	unknown []string
	action  action
	verdict string
	chain   string
	counter *Counter
}

// header is a synthetic packet header: bytes the packet is known to carry
// at each offset; payload loads of other bytes are unknown.
type header struct {
	b     []byte
	known []bool
}

// load returns bytes to be copied into a register, not kept.
func (h header) load(off, n uint32) ([]byte, bool) {
	n = min(n, uint32(len(zero64)))
	if int(off+n) > len(h.b) {
		return zero64[:n], false
	}
	for _, k := range h.known[off : off+n] {
		if !k {
			return zero64[:n], false
		}
	}
	return h.b[off : off+n], true
}

var zero64 [64]byte

func (h header) set(off int, v []byte) {
	copy(h.b[off:], v)
	for i := range v {
		h.known[off+i] = true
	}
}

func newHeader(n int) header { return header{b: make([]byte, n), known: make([]bool, n)} }

func (p Packet) headers() (nh, th header) {
	src, dst := p.Src.Unmap(), p.Dst.Unmap()
	if src.Is4() {
		nh = newHeader(20)
		nh.set(9, []byte{p.Proto})
		a, b := src.As4(), dst.As4()
		nh.set(12, a[:])
		nh.set(16, b[:])
	} else {
		nh = newHeader(40)
		nh.set(6, []byte{p.Proto})
		a, b := src.As16(), dst.As16()
		nh.set(8, a[:])
		nh.set(24, b[:])
	}
	switch p.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP, unix.IPPROTO_UDPLITE:
		th = newHeader(20)
		th.set(0, binary.BigEndian.AppendUint16(nil, p.SrcPort))
		th.set(2, binary.BigEndian.AppendUint16(nil, p.DstPort))
		if p.Proto == unix.IPPROTO_TCP && p.TCPFlags != 0 {
			th.set(13, []byte{p.TCPFlags})
		}
	default:
		th = newHeader(0)
	}
	return nh, th
}

func (p Packet) ctState() uint32 {
	if p.CTState != 0 {
		return p.CTState
	}
	const syn, ack = 0x02, 0x10
	if p.Proto == unix.IPPROTO_TCP && p.TCPFlags&(syn|ack) == syn {
		return expr.CtStateBitNEW
	}
	return 0
}

// regs models nf_tables' data registers: 20 32-bit registers, where the
// legacy 128-bit NFT_REG_1..4 alias NFT_REG32_00..15. src remembers per
// 32-bit register which expression loaded an unknown value, to name it.
type regs struct {
	b     [80]byte
	known [80]bool
	src   [20]expr.Any
}

// unloaded marks a register read before anything was loaded into it.
var unloaded expr.Any = &expr.Immediate{}

func regOff(r uint32) (int, bool) {
	switch {
	case r >= 1 && r <= 4:
		return int(r) * 16, true
	case r >= 8 && r <= 23:
		return int(r-8+4) * 4, true
	}
	return 0, false
}

func (rg *regs) store(r uint32, v []byte, ok bool, src expr.Any) {
	off, valid := regOff(r)
	if !valid {
		return
	}
	n := min(len(v), len(rg.b)-off)
	copy(rg.b[off:off+n], v)
	// Like the kernel's loads, zero the rest of the last 32-bit register
	// (a concatenation's key includes that padding).
	for pad := off + n; pad%4 != 0 && pad < len(rg.b); pad++ {
		rg.b[pad] = 0
		n++
	}
	for i := off; i < off+n; i++ {
		rg.known[i] = ok
	}
	for i := off / 4; i < (off+n+3)/4; i++ {
		rg.src[i] = src
	}
}

// get returns n bytes from register r, and when any is unknown the
// expression that loaded it (nil when all are known).
func (rg *regs) get(r uint32, n int) ([]byte, expr.Any) {
	off, valid := regOff(r)
	if !valid || off+n > len(rg.b) {
		return make([]byte, n), unloaded
	}
	v := rg.b[off : off+n : off+n]
	for i := off; i < off+n; i++ {
		if !rg.known[i] {
			if s := rg.src[i/4]; s != nil {
				return v, s
			}
			return v, unloaded
		}
	}
	return v, nil
}

// describe names the expression behind an unknown value.
func (ev *evaluator) describe(e expr.Any) string {
	switch x := e.(type) {
	case *expr.Meta:
		return metaName(x.Key)
	case *expr.Payload:
		return payloadName(x, ev.p)
	case *expr.Ct:
		return ctName(x.Key)
	case *expr.Fib:
		return fibName(x)
	}
	if e == unloaded {
		return "a register loaded by nothing"
	}
	return strings.ToLower(reflect.TypeOf(e).Elem().Name())
}

var zero16 [16]byte

func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

// meta returns a meta key's value for the packet, or false when unknown.
func (ev *evaluator) meta(k expr.MetaKey) ([]byte, bool) {
	p := ev.p
	v4 := p.Src.Unmap().Is4()
	switch k {
	case expr.MetaKeyL4PROTO:
		return []byte{p.Proto}, true
	case expr.MetaKeyNFPROTO:
		if v4 {
			return []byte{unix.NFPROTO_IPV4}, true
		}
		return []byte{unix.NFPROTO_IPV6}, true
	case expr.MetaKeyPROTOCOL:
		if v4 {
			return []byte{0x08, 0x00}, true
		}
		return []byte{0x86, 0xdd}, true
	case expr.MetaKeyIIFNAME:
		if p.InIface != "" && p.Path != PathOutput {
			return ifname(p.InIface), true
		}
		if p.Path == PathOutput { // no input device on locally generated packets
			return ifname(""), true
		}
	case expr.MetaKeyOIFNAME:
		if p.OutIface != "" && p.Path != PathInput {
			return ifname(p.OutIface), true
		}
		if p.Path == PathInput {
			return ifname(""), true
		}
	case expr.MetaKeyIIF:
		if p.Path == PathOutput {
			return make([]byte, 4), true
		}
		if p.InIfindex != 0 {
			return binary.NativeEndian.AppendUint32(nil, p.InIfindex), true
		}
	case expr.MetaKeyOIF:
		if p.Path == PathInput {
			return make([]byte, 4), true
		}
		if p.OutIfindex != 0 {
			return binary.NativeEndian.AppendUint32(nil, p.OutIfindex), true
		}
	}
	return nil, false
}

func metaName(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyL4PROTO:
		return "meta l4proto"
	case expr.MetaKeyNFPROTO:
		return "meta nfproto"
	case expr.MetaKeyPROTOCOL:
		return "meta protocol"
	case expr.MetaKeyIIFNAME:
		return "iifname"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	case expr.MetaKeyIIF:
		return "iif"
	case expr.MetaKeyOIF:
		return "oif"
	case expr.MetaKeyMARK:
		return "meta mark"
	case expr.MetaKeySKUID:
		return "meta skuid"
	case expr.MetaKeySKGID:
		return "meta skgid"
	case expr.MetaKeyPKTTYPE:
		return "meta pkttype"
	case expr.MetaKeyIIFTYPE:
		return "meta iiftype"
	case expr.MetaKeyOIFTYPE:
		return "meta oiftype"
	case expr.MetaKeyLEN:
		return "meta length"
	case expr.MetaKeyCGROUP:
		return "meta cgroup"
	}
	return fmt.Sprintf("meta key %d", k)
}

func cmpOK(op expr.CmpOp, c int) bool {
	switch op {
	case expr.CmpOpEq:
		return c == 0
	case expr.CmpOpNeq:
		return c != 0
	case expr.CmpOpLt:
		return c < 0
	case expr.CmpOpLte:
		return c <= 0
	case expr.CmpOpGt:
		return c > 0
	case expr.CmpOpGte:
		return c >= 0
	}
	return false
}

// evalRule interprets one rule's expressions in order, as nft_do_chain
// does: a failed comparison ends the rule; a verdict ends it too.
func (ev *evaluator) evalRule(ch *nfChain, r *nftables.Rule) ruleResult {
	var rg regs
	res := ruleResult{match: matchYes}
	maybe := func(what string) {
		res.match = matchMaybe
		for _, u := range res.unknown {
			if u == what {
				return
			}
		}
		res.unknown = append(res.unknown, what)
	}
	fail := func() ruleResult { res.match = matchNo; return res }
	for _, e := range r.Exprs {
		switch x := e.(type) {
		case *expr.Meta:
			if x.SourceRegister { // meta set: a statement
				continue
			}
			v, ok := ev.meta(x.Key)
			if !ok {
				v = zero16[:]
			}
			rg.store(x.Register, v, ok, x)
		case *expr.Payload:
			if x.OperationType != expr.PayloadLoad {
				continue
			}
			var h header
			switch x.Base {
			case expr.PayloadBaseNetworkHeader:
				h = ev.nh
			case expr.PayloadBaseTransportHeader:
				h = ev.th
			}
			v, ok := header{}.load(0, x.Len) // link layer: unknown
			if h.b != nil {
				v, ok = h.load(x.Offset, x.Len)
			}
			rg.store(x.DestRegister, v, ok, x)
		case *expr.Cmp:
			v, unk := rg.get(x.Register, len(x.Data))
			if unk != nil {
				maybe(ev.describe(unk))
				continue
			}
			if !cmpOK(x.Op, bytes.Compare(v, x.Data)) {
				return fail()
			}
		case *expr.Range:
			v, unk := rg.get(x.Register, len(x.FromData))
			if unk != nil {
				maybe(ev.describe(unk))
				continue
			}
			in := bytes.Compare(v, x.FromData) >= 0 && bytes.Compare(v, x.ToData) <= 0
			if in != (x.Op == expr.CmpOpEq) {
				return fail()
			}
		case *expr.Bitwise:
			v, unk := rg.get(x.SourceRegister, int(x.Len))
			if unk != nil || len(x.Mask) < int(x.Len) || len(x.Xor) < int(x.Len) {
				if unk == nil {
					unk = x
				}
				rg.store(x.DestRegister, v, false, unk)
				continue
			}
			var buf [16]byte
			out := buf[:min(len(v), 16)]
			for i := range out {
				out[i] = v[i]&x.Mask[i] ^ x.Xor[i]
			}
			rg.store(x.DestRegister, out, true, nil)
		case *expr.Byteorder:
			v, unk := rg.get(x.SourceRegister, int(x.Len))
			v = append([]byte(nil), v...)
			if unk == nil && x.Size > 1 {
				for i := 0; i+int(x.Size) <= len(v); i += int(x.Size) {
					w := v[i : i+int(x.Size)]
					for a, b := 0, len(w)-1; a < b; a, b = a+1, b-1 {
						w[a], w[b] = w[b], w[a]
					}
				}
			}
			rg.store(x.DestRegister, v, unk == nil, unk)
		case *expr.Ct:
			if x.SourceRegister {
				continue
			}
			if x.Key == expr.CtKeySTATE {
				if st := ev.p.ctState(); st != 0 {
					var b [4]byte
					binary.NativeEndian.PutUint32(b[:], st)
					rg.store(x.Register, b[:], true, nil)
					continue
				}
			}
			rg.store(x.Register, zero16[:], false, x)
		case *expr.Lookup:
			set := ev.rs.sets[tableKey{ch.c.Table.Family, ch.c.Table.Name}][x.SetName]
			if set == nil {
				maybe("set @" + x.SetName + " (not listed)")
				continue
			}
			klen := int(set.s.KeyType.Bytes)
			if klen == 0 {
				klen = 4
			}
			key, unk := rg.get(x.SourceRegister, klen)
			if unk != nil {
				maybe(ev.describe(unk))
				continue
			}
			el, in := set.contains(key)
			if in == x.Invert {
				return fail()
			}
			if x.IsDestRegSet && el != nil {
				if x.DestRegister == 0 && el.VerdictData != nil { // vmap
					return verdictOf(res, el.VerdictData)
				}
				rg.store(x.DestRegister, el.Val, true, nil)
			}
		case *expr.Immediate:
			rg.store(x.Register, x.Data, true, nil)
		case *expr.Fib:
			if t, ok := ev.fibType(x); ok {
				var b [4]byte
				binary.NativeEndian.PutUint32(b[:], t)
				rg.store(x.Register, b[:], true, nil)
				continue
			}
			rg.store(x.Register, zero16[:], false, x)
		case *expr.Verdict:
			return verdictOf(res, x)
		case *expr.Reject:
			res.action, res.verdict = actReject, rejectText(x, ch.c.Table.Family)
			return res
		case *expr.Counter:
			res.counter = &Counter{Packets: x.Packets, Bytes: x.Bytes}
		case *expr.Match:
			switch ev.xtMatch(x) {
			case matchNo:
				return fail()
			case matchMaybe:
				maybe("-m " + x.Name)
			}
		case *expr.Target:
			a, verdict := xtTarget(x, ch.c.Table.Family)
			switch a {
			case actContinue:
				continue
			case actOther:
				maybe("-j " + x.Name)
			}
			res.action, res.verdict = a, verdict
			return res
		case *expr.NAT, *expr.Masq, *expr.Redir:
			res.action, res.verdict = actAccept, "nat"
			return res
		case *expr.Queue:
			res.action, res.verdict = actOther, "queue"
			return res
		case *expr.Log, *expr.Dynset, *expr.Objref, *expr.Notrack:
			// Statements with no effect on the verdict.
		case *expr.Limit, *expr.Quota, *expr.Connlimit:
			maybe(strings.ToLower(reflect.TypeOf(e).Elem().Name()))
		default:
			// Any other expression may load a register or decide the
			// match; what it decides is unknown.
			name := strings.ToLower(reflect.TypeOf(e).Elem().Name())
			maybe(name)
			if d := destRegister(e); d != 0 {
				rg.store(d, zero16[:], false, e)
			}
		}
	}
	return res // no verdict: continue with the next rule
}

// destRegister finds the register an unhandled expression loads, so later
// comparisons on it are reported as unknown rather than compared to zero.
func destRegister(e expr.Any) uint32 {
	v := reflect.ValueOf(e).Elem()
	for _, f := range []string{"Register", "DestRegister"} {
		if fv := v.FieldByName(f); fv.IsValid() && fv.CanUint() {
			return uint32(fv.Uint())
		}
	}
	return 0
}

func verdictOf(res ruleResult, v *expr.Verdict) ruleResult {
	switch v.Kind {
	case expr.VerdictDrop:
		res.action, res.verdict = actDrop, "drop"
	case expr.VerdictAccept:
		res.action, res.verdict = actAccept, "accept"
	case expr.VerdictJump:
		res.action, res.verdict, res.chain = actJump, "jump "+v.Chain, v.Chain
	case expr.VerdictGoto:
		res.action, res.verdict, res.chain = actGoto, "goto "+v.Chain, v.Chain
	case expr.VerdictReturn:
		res.action, res.verdict = actReturn, "return"
	case expr.VerdictContinue:
		res.action = actContinue
	default:
		res.action, res.verdict = actOther, fmt.Sprintf("verdict %d", v.Kind)
	}
	return res
}

func ctName(k expr.CtKey) string {
	switch k {
	case expr.CtKeySTATE:
		return "ct state"
	case expr.CtKeySTATUS:
		return "ct status"
	case expr.CtKeyMARK:
		return "ct mark"
	case expr.CtKeyDIRECTION:
		return "ct direction"
	}
	return fmt.Sprintf("ct key %d", k)
}

// NFT_REJECT_* types and the codes nft prints for them.
const (
	rejectICMPUnreach  = 0
	rejectTCPReset     = 1
	rejectICMPXUnreach = 2
)

var (
	icmpCodes  = map[uint8]string{0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable", 3: "port-unreachable", 9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}
	icmp6Codes = map[uint8]string{0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable", 4: "port-unreachable", 5: "policy-fail", 6: "reject-route"}
	icmpxCodes = map[uint8]string{0: "no-route", 1: "port-unreachable", 2: "host-unreachable", 3: "admin-prohibited"}
)

func rejectText(r *expr.Reject, fam nftables.TableFamily) string {
	switch r.Type {
	case rejectTCPReset:
		return "reject with tcp reset"
	case rejectICMPXUnreach:
		if r.Code == 1 {
			return "reject"
		}
		return "reject with icmpx " + codeName(icmpxCodes, r.Code)
	case rejectICMPUnreach:
		if fam == nftables.TableFamilyIPv6 {
			if r.Code == 4 {
				return "reject"
			}
			return "reject with icmpv6 " + codeName(icmp6Codes, r.Code)
		}
		if r.Code == 3 {
			return "reject"
		}
		return "reject with icmp " + codeName(icmpCodes, r.Code)
	}
	return fmt.Sprintf("reject type %d code %d", r.Type, r.Code)
}

func codeName(m map[uint8]string, c uint8) string {
	if s, ok := m[c]; ok {
		return s
	}
	return fmt.Sprintf("%d", c)
}

// addrInfo is what a namespace's addresses say about an address's type, as
// its local routing table would (RTN_LOCAL, RTN_BROADCAST, else unicast or
// multicast).
type addrInfo struct {
	local map[netip.Addr]bool
	bcast map[netip.Addr]bool
}

// rtnType returns the RTN_* type of an address, false when unknown.
func (ai *addrInfo) rtnType(a netip.Addr) (uint32, bool) {
	if ai == nil || len(ai.local) == 0 {
		return 0, false
	}
	a = a.Unmap()
	switch {
	case ai.local[a] || a.IsLoopback():
		return unix.RTN_LOCAL, true
	case a.IsMulticast():
		return unix.RTN_MULTICAST, true
	case ai.bcast[a] || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return unix.RTN_BROADCAST, true
	}
	return unix.RTN_UNICAST, true
}

// fibType answers `fib saddr|daddr type` lookups that need no device.
func (ev *evaluator) fibType(x *expr.Fib) (uint32, bool) {
	if !x.ResultADDRTYPE || x.FlagIIF || x.FlagOIF || x.FlagMARK || x.FlagSADDR == x.FlagDADDR {
		return 0, false
	}
	if x.FlagDADDR {
		return ev.ai.rtnType(ev.p.Dst)
	}
	return ev.ai.rtnType(ev.p.Src)
}

func fibName(x *expr.Fib) string {
	var in []string
	for _, f := range []struct {
		on   bool
		name string
	}{{x.FlagSADDR, "saddr"}, {x.FlagDADDR, "daddr"}, {x.FlagMARK, "mark"}, {x.FlagIIF, "iif"}, {x.FlagOIF, "oif"}} {
		if f.on {
			in = append(in, f.name)
		}
	}
	out := "oif"
	switch {
	case x.ResultADDRTYPE:
		out = "type"
	case x.ResultOIFNAME:
		out = "oifname"
	}
	return "fib " + strings.Join(in, " . ") + " " + out
}
