package pattern

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Causes of a neighbour resolution failure.
const (
	// CauseNeighNeverResolved: the address never answered: no such host on
	// the link (a wrong or released IP, a host that never came up).
	CauseNeighNeverResolved = "never_resolved"
	// CauseNeighGone: the entry had resolved before and stopped answering
	// its re-confirmation: the host went away (deleted pod, moved IP).
	CauseNeighGone = "host_gone"
	// CauseNeighUnresolved: packets waited behind resolution and were
	// dropped or timed out, but the kernel's FAILED verdict (with the
	// entry's history) was not seen.
	CauseNeighUnresolved = "unresolved"
)

// ARPFailure: address resolution (ARP, or NDP for IPv6) of a next hop
// failed. The kernel's verdict is the neighbour entry going FAILED
// (KindNeighFailed); the connection side shows SYN retransmits that never
// left (EBUSY), the queued packets dropped with NEIGH_FAILED and
// EHOSTUNREACH at the close. A failure is diagnosed once per address and
// namespace: with the connection that failed behind it when one is seen
// within the grace period, else on its own (UDP, ICMP, a gateway).
//
// It outranks syn_dropped's neighbour_unresolved (same root, fewer facts):
// a connection whose SYN waits behind resolution is held (Verdict.Until)
// until the kernel's FAILED arrives or Timeout after the connect, then
// diagnosed here with or without it.
type ARPFailure struct {
	// Timeout: see correlate.Config.ARPTimeout; <= 0 means 4 s.
	Timeout time.Duration
}

func (ARPFailure) ID() diagnosis.Pattern { return diagnosis.PatternARPFailure }

func neighDrop(s *signal.Signal) bool {
	if s.Kind != signal.KindDrop {
		return false
	}
	switch s.DropReason {
	case "NEIGH_FAILED", "NEIGH_QUEUEFULL", "NEIGH_DEAD", "NEIGH_CREATEFAIL":
		return true
	}
	return false
}

func hasNeighDrop(ev *Evidence) bool {
	for i := range ev.Packet {
		if neighDrop(&ev.Packet[i]) {
			return true
		}
	}
	return false
}

func (ARPFailure) Wants(s *signal.Signal) bool {
	switch s.Kind {
	case signal.KindNeighFailed:
		return true
	case signal.KindRetransmit:
		return s.Err == -EBUSY
	case signal.KindDrop:
		return neighDrop(s)
	}
	return false
}

func (p ARPFailure) timeout() time.Duration {
	if p.Timeout <= 0 {
		return 4 * time.Second
	}
	return p.Timeout
}

type arpFacts struct {
	neigh, drop, close *signal.Signal
	ebusy              int
	gateway            bool // the failed address is not the destination
}

func (ARPFailure) facts(ev *Evidence) arpFacts {
	f := arpFacts{ebusy: ev.Retrans().EBUSY}
	for i := range ev.Packet {
		if s := &ev.Packet[i]; neighDrop(s) && f.drop == nil {
			f.drop = s
		}
	}
	for i := range ev.Neigh { // the destination's entry first
		n := &ev.Neigh[i]
		if n.NeighAddr == ev.Flow.Dst {
			f.neigh = n
			break
		}
		// Another address (a gateway) only when the kernel dropped this
		// connection's queued packet as that entry failed: in a busy
		// namespace other neighbours fail for other reasons.
		if f.drop != nil && NetnsOf(n).SameAs(NetnsOf(f.drop)) && absDur(f.drop.Time.Sub(n.Time)) <= neighDropSlack {
			f.neigh, f.gateway = n, true
			break
		}
	}
	f.close = ev.SocketSignal(func(s *signal.Signal) bool { return ClientClose(s) && s.SkErr == EHOSTUNREACH })
	return f
}

// neighDropSlack: how close a queued packet's NEIGH_FAILED drop follows
// its entry's FAILED (the same timer run; the ring buffer may reorder).
const neighDropSlack = 100 * time.Millisecond

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func (p ARPFailure) Match(ev *Evidence) (Verdict, Outcome) {
	t := ev.Trigger
	if ev.Flow.Proto == 0 { // a neighbour failure's own pseudo-connection
		if len(ev.Neigh) == 0 || ev.Neigh[0].NeighAddr != ev.Flow.Dst {
			return Verdict{}, NoMatch
		}
		if t != nil && !ev.Diagnosed {
			return Verdict{}, Defer // let a connection failing behind it claim it first
		}
		return p.verdict(ev, &arpFacts{neigh: &ev.Neigh[0]}), Match
	}
	if ev.Retrans().EBUSY == 0 && !hasNeighDrop(ev) {
		return Verdict{}, NoMatch // the common case, without building facts
	}
	f := p.facts(ev)
	if f.neigh == nil && f.drop == nil && f.close == nil && (t == nil || t.Kind != signal.KindConnectError) {
		start := ev.ConnectStart()
		if start.IsZero() {
			start = ev.Now
		}
		if until := start.Add(p.timeout()); ev.Now.Before(until) {
			// Only queued SYNs so far: the kernel gives up at ~3 s; wait
			// for its verdict, and keep syn_dropped from reporting the
			// queued SYN first.
			return Verdict{Cause: CauseNeighUnresolved, Confidence: 0.9, Specificity: 4, Until: until}, Defer
		}
	}
	if f.neigh == nil && f.close == nil && f.drop != nil && ev.Now.Sub(f.drop.Time) < neighDropSlack &&
		(t == nil || t.Kind != signal.KindConnectError) {
		// The entry's FAILED comes from the same timer run as the queued
		// packet's drop, just after it: wait for it, so the diagnosis can
		// say whether the address ever resolved and on which device.
		return Verdict{Cause: CauseNeighUnresolved, Confidence: 0.9, Specificity: 4, Until: f.drop.Time.Add(neighDropSlack)}, Defer
	}
	if f.neigh == nil && !p.pastTimeout(ev, &f) {
		// Resolution may have succeeded since (success sends nothing).
		return Verdict{}, NoMatch
	}
	return p.verdict(ev, &f), Match
}

// pastTimeout: without the kernel's verdict, something shows packets still
// waiting at Timeout: a queued packet's drop, the close, or a queued
// retransmit at or after it.
func (p ARPFailure) pastTimeout(ev *Evidence, f *arpFacts) bool {
	if f.drop != nil || f.close != nil {
		return true
	}
	r := ev.Retrans()
	start := ev.ConnectStart()
	return r.Count > 0 && r.Last.Err == -EBUSY && !start.IsZero() && r.Last.Time.Sub(start) >= p.timeout()
}

func (p ARPFailure) verdict(ev *Evidence, f *arpFacts) Verdict {
	v := Verdict{Specificity: 4, Need: NeedNeighbor, Where: ev.Client}
	c := 0.6
	addr := ev.Flow.Dst
	switch {
	case f.neigh == nil:
		c = 0.7
		v.Cause = CauseNeighUnresolved
		v.Why = "packets waited for address resolution that did not complete"
		if f.drop != nil {
			c += 0.15
			v.Where = NetnsOf(f.drop)
		}
		if f.ebusy > 0 {
			c += 0.1
		}
	default:
		addr = f.neigh.NeighAddr
		v.Where = NetnsOf(f.neigh)
		v.Cause = CauseNeighNeverResolved
		if f.neigh.NeighResolved {
			v.Cause = CauseNeighGone
		}
		v.Why = "the kernel gave up resolving the next hop (neighbour FAILED)"
		c = 0.8
		if f.ebusy > 0 || f.drop != nil {
			c += 0.1
		}
		if !f.gateway && (f.ebusy > 0 || f.drop != nil) {
			c += 0.05
		}
		if f.gateway {
			c -= 0.1
		}
	}
	if f.close != nil {
		c += 0.05
	}
	v.Subject = netip.AddrPortFrom(addr, 0)
	v.Confidence = clamp(c)
	return v
}

func (p ARPFailure) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	f := p.facts(ev)
	if ev.Flow.Proto == 0 {
		f = arpFacts{neigh: &ev.Neigh[0]}
	}
	addr := v.Subject.Addr()
	proto, table := "ARP", "ARP"
	if addr.Is6() && !addr.Is4In6() {
		proto, table = "NDP", "neighbour (NDP)"
	}
	where := NetnsPhrase(ev.Namer, v.Where)
	dev := "its device"
	if f.neigh != nil && f.neigh.Dev != "" {
		dev = "dev " + f.neigh.Dev
	} else if f.drop != nil && f.drop.Dev != "" {
		dev = "dev " + f.drop.Dev
	}
	d := diagnosis.Diagnosis{
		Pattern: diagnosis.PatternARPFailure, Severity: diagnosis.SeverityError, Layer: diagnosis.LayerL2,
		ErrorType: "EHOSTUNREACH", Flow: ev.Flow, Confidence: v.Confidence,
	}
	target := addrText(addr)
	if ev.Flow.Proto != 0 {
		target = connectTarget(ev.Flow)
	}
	d.Impact = fmt.Sprintf("traffic to %s through %s fails with EHOSTUNREACH (connect() after ~3 s at default sysctls); "+
		"packets queued meanwhile are dropped", target, addrText(addr))
	switch v.Cause {
	case CauseNeighGone:
		d.Summary = fmt.Sprintf("%s for %s on %s in %s failed: the host answered before and went away", proto, addrText(addr), dev, where)
		d.Resolution = fmt.Sprintf("%s was reachable and stopped answering: if the host or pod was removed or its IP moved, "+
			"update whoever still sends to it (DNS, endpoints, a cached address); otherwise check that host's link "+
			"(`ip neigh show %s`, `ip link`).", addrText(addr), addrText(addr))
	case CauseNeighNeverResolved:
		d.Summary = fmt.Sprintf("%s for %s on %s in %s failed: no host answers, it never resolved", proto, addrText(addr), dev, where)
		d.Resolution = fmt.Sprintf("Nothing on the link owns %s: fix the address the client uses (a wrong IP, a released "+
			"pod IP), or bring the host up on that link; check the subnet and `ip neigh show %s` in %s.",
			addrText(addr), addrText(addr), where)
	default:
		d.Summary = fmt.Sprintf("%s for %s in %s did not resolve: packets waiting for it were not sent", proto, addrText(addr), where)
		d.Resolution = fmt.Sprintf("Check that %s (or the gateway towards it) is up and answers %s on that link "+
			"(`ip neigh show`, `ip route get %s`).", addrText(addr), proto, addrText(ev.Flow.Dst))
	}
	if f.gateway {
		d.Summary += fmt.Sprintf(" (next hop towards %s)", addrText(ev.Flow.Dst))
	}
	details := ""
	if n := f.neigh; n != nil {
		details = fmt.Sprintf("The kernel's %s entry for %s on %s in %s went FAILED", table, addrText(addr), dev, where)
		if n.NeighState != 0 {
			details += " from " + n.NeighState.String()
		}
		if n.NeighTried > 0 {
			details += fmt.Sprintf(" after trying for %s", roundAge(n.NeighTried))
		}
		if n.NeighProbes > 0 {
			details += fmt.Sprintf(" (%d probes)", n.NeighProbes)
		}
		if n.NeighResolved {
			details += "; it had a link-layer address before: the neighbour answered once and no longer does."
		} else {
			details += "; it never held a link-layer address: nothing on the link ever answered for it."
		}
	} else {
		details = fmt.Sprintf("The kernel's neighbour entry for %s was not seen going FAILED (its history is unknown), "+
			"but packets waited for its resolution and were not sent.", addrText(addr))
	}
	if f.ebusy > 0 {
		details += fmt.Sprintf(" %d SYN retransmit(s) returned EBUSY: queued behind resolution, never sent.", f.ebusy)
	}
	if f.drop != nil {
		details += fmt.Sprintf(" The queued packet was dropped with %s.", f.drop.DropReason)
	}
	if f.gateway {
		details += fmt.Sprintf(" %s is not the destination %s: it is the next hop (gateway) the route uses.", addrText(addr), addrText(ev.Flow.Dst))
	}
	if ev.Facts != nil && ev.Facts.Neighbor != nil {
		nb := ev.Facts.Neighbor
		details += fmt.Sprintf(" Neighbour table now: %s %s", addrText(nb.IP), nb.State)
		if nb.LLAddr != "" {
			details += " lladdr " + nb.LLAddr
		}
		details += "."
	}
	d.Details = details + ev.Facts.missingText()
	var first *signal.Signal
	if r := ev.Retrans(); r.Count > 0 && ev.Flow.Proto != 0 {
		first = &r.First
	}
	d.Evidence = evidenceFrom(ev, f.neigh, first, f.drop, f.close)
	d.Source, d.Destination = endpoints(ev, Netns{})
	if ev.Flow.Proto == 0 {
		d.Source = diagnosis.Endpoint{NetnsInode: v.Where.Inode, NetnsName: NetnsName(ev.Namer, v.Where)}
		d.Destination = diagnosis.Endpoint{Addr: addrText(addr)}
	}
	return d
}
