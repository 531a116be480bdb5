package pattern

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Helpers shared by the patterns of established connections (blackhole,
// half_open, peer_lost_state): retransmit episodes and segment drops.

// DefaultMinRetransmits is the number of consecutive timer-driven
// retransmissions (icsk_retransmits) from which an established flow is
// diagnosed before the kernel gives up. It is tcp_retries1's default (3):
// the count at which the kernel itself starts to suspect the route
// (dst_negative_advice). At the minimum RTO (200 ms) it is reached ~1.4 s
// after the first loss; a single loss recovered by one retransmit (count 1,
// reset by the next ACK) never reaches it, nor do fast retransmits or tail
// loss probes (count 0).
const DefaultMinRetransmits = 3

// minRetransmits is a MinRetransmits setting with its default applied.
func minRetransmits(n int) uint32 {
	if n <= 0 {
		return DefaultMinRetransmits
	}
	return uint32(n)
}

// wantRetransmit: a retransmit worth opening connection state for. Data
// needs a second consecutive timeout: single losses recovered by one
// retransmit are common on a busy node and would fill the correlator with
// connections that never fail (their first retransmit is then not kept, so
// the outage is dated from the second). A closing socket's FIN is rarer
// and may give up after one or two (tcp_orphan_retries), so its first counts.
func wantRetransmit(s *signal.Signal) bool {
	switch {
	case finState(s.State):
		return s.Retransmits >= 1
	case dataState(s.State):
		return s.Retransmits >= 2
	}
	return false
}

// finStates are the states in which an unacknowledged segment is the
// connection's FIN (or data queued before it): the local end has closed.
func finState(s signal.TCPState) bool {
	return s == signal.StateFinWait1 || s == signal.StateClosing || s == signal.StateLastAck
}

// dataState: the local end has not closed; retransmits are data.
func dataState(s signal.TCPState) bool {
	return s == signal.StateEstablished || s == signal.StateCloseWait
}

// episode summarises one run of unanswered timer-driven retransmissions of
// one socket: the kernel's count (icsk_retransmits) restarts when an ACK
// makes progress, so a lower count than the previous one starts a new run.
type episode struct {
	first, last *signal.Signal
	seen        int // retransmits of the run kept in the evidence
	// later: a signal of the flow was kept after the last one, so later
	// retransmits may have rotated out of the evidence (the count is a floor).
	later bool
	eperm int
	ebusy int
}

// count is the kernel's consecutive retransmit count at the latest one.
func (e *episode) count() uint32 {
	if e.last == nil {
		return 0
	}
	return e.last.Retransmits
}

// retransEpisode returns the latest run of retransmissions in states ok sent
// on flow (the sending socket's own orientation).
func retransEpisode(ev *Evidence, flow signal.Flow, ok func(signal.TCPState) bool) episode {
	var e episode
	for i := range ev.Socket {
		s := &ev.Socket[i]
		if s.Kind != signal.KindRetransmit || s.Flow != flow || !ok(s.State) || s.Retransmits == 0 {
			continue
		}
		if e.last != nil && s.Retransmits <= e.last.Retransmits {
			e = episode{} // progress was made in between: a new run
		}
		if e.first == nil {
			e.first = s
		}
		e.last = s
		e.later = false
		for j := i + 1; j < len(ev.Socket); j++ {
			if ev.Socket[j].Flow == flow {
				e.later = true
			}
		}
		e.seen++
		switch s.Err {
		case -EPERM:
			e.eperm++
		case -EBUSY:
			e.ebusy++
		}
	}
	return e
}

// senderFlow finds the flow of the socket whose retransmits or close the
// evidence holds, in that socket's orientation.
func senderFlow(ev *Evidence) (signal.Flow, bool) {
	if t := ev.Trigger; t != nil && (t.Kind == signal.KindRetransmit || t.Kind == signal.KindStateChange) {
		return t.Flow, true
	}
	for i := len(ev.Socket) - 1; i >= 0; i-- {
		if s := &ev.Socket[i]; s.Kind == signal.KindRetransmit || s.Kind == signal.KindStateChange {
			return s.Flow, true
		}
	}
	return signal.Flow{}, false
}

// segmentDrop is a drop of one of the flow's segments (either direction)
// that explains unanswered retransmits. Drops that mean "no socket" belong to
// peer_lost_state and are not counted here.
type segmentDrops struct {
	first   *signal.Signal // preferred drop: local netfilter, then netfilter, then others
	n       int
	reverse bool // first is a drop of the peer's segments (its ACKs)
	localNF bool // netfilter drop in the sender's own netns
	neigh   bool
}

func flowDrops(ev *Evidence, flow signal.Flow, sender Netns) segmentDrops {
	var d segmentDrops
	rank := func(s *signal.Signal) int {
		switch {
		case s.DropReason == "NETFILTER_DROP" && s.Flow == flow && sender.Known() && NetnsOf(s).SameAs(sender):
			return 3
		case s.DropReason == "NETFILTER_DROP":
			return 2
		}
		return 1
	}
	for i := range ev.Packet {
		s := &ev.Packet[i]
		if s.Kind != signal.KindDrop || IsSYN(s.TCPFlags) || s.TCPFlags&signal.TCPFlagRST != 0 {
			continue
		}
		if s.DropReason == "NO_SOCKET" || s.DropReason == "TCP_FLAGS" {
			continue
		}
		if s.Flow != flow && s.Flow != flow.Reverse() {
			continue
		}
		d.n++
		if d.first == nil || rank(s) > rank(d.first) {
			d.first = s
		}
	}
	if d.first != nil {
		d.reverse = d.first.Flow != flow
		d.localNF = rank(d.first) == 3
		switch d.first.DropReason {
		case "NEIGH_FAILED", "NEIGH_QUEUEFULL", "NEIGH_DEAD":
			d.neigh = true
		}
	}
	return d
}

// icmpAbout reports an ICMP error received or sent about the flow: the
// retransmits were answered, if only by a router; icmp_error owns that.
func icmpAbout(ev *Evidence, flow signal.Flow) bool {
	for i := range ev.Packet {
		s := &ev.Packet[i]
		if (s.Kind == signal.KindICMPError || s.Kind == signal.KindICMPSent) && (s.Flow == flow || s.Flow == flow.Reverse()) {
			return true
		}
	}
	return false
}

// closeOf returns the close of the socket sending on flow from states ok
// with one of the errors (nil = any non-zero).
func closeOf(ev *Evidence, flow signal.Flow, ok func(signal.TCPState) bool, errs ...int32) *signal.Signal {
	for i := len(ev.Socket) - 1; i >= 0; i-- {
		s := &ev.Socket[i]
		if s.Kind != signal.KindStateChange || s.State != signal.StateClose || s.Flow != flow || !ok(s.OldState) || s.SkErr == 0 {
			continue
		}
		if len(errs) == 0 {
			return s
		}
		for _, e := range errs {
			if s.SkErr == e {
				return s
			}
		}
	}
	return nil
}

// outageText says how long the run of retransmits lasted as seen.
func outageText(e *episode, until time.Time) string {
	if e.first == nil {
		return "no retransmit seen"
	}
	span := until.Sub(e.first.Time)
	if span < 0 {
		span = 0
	}
	floor := ""
	if e.later {
		floor = "at least "
	}
	return fmt.Sprintf("%s%d consecutive retransmission timeout(s), the first seen %s before", floor, e.count(), roundAge(span))
}

// streamEndpoints fills Source/Destination for flow (sender -> peer).
func streamEndpoints(ev *Evidence, flow signal.Flow, src, dst Netns) (s, d diagnosis.Endpoint) {
	s = diagnosis.Endpoint{Addr: addrText(flow.Src), Port: flow.SrcPort}
	if src.Known() {
		s.NetnsInode, s.NetnsName = src.Inode, NetnsName(ev.Namer, src)
	}
	d = diagnosis.Endpoint{Addr: addrText(flow.Dst), Port: flow.DstPort}
	if dst.Known() {
		d.NetnsInode, d.NetnsName = dst.Inode, NetnsName(ev.Namer, dst)
	}
	return s, d
}

func addrPort(a netip.Addr, p uint16) string {
	if !a.IsValid() {
		return fmt.Sprintf("port %d", p)
	}
	return netip.AddrPortFrom(a, p).String()
}
