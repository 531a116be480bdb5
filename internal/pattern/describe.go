package pattern

import (
	"fmt"
	"net/netip"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// describeMore renders the signal kinds of the neighbour, connect() and
// ICMP hooks as evidence facts.
func describeMore(namer NetnsNamer, s *signal.Signal) string {
	ns := NetnsPhrase(namer, NetnsOf(s))
	switch s.Kind {
	case signal.KindNeighFailed:
		return neighFact(ns, s)
	case signal.KindConnectError:
		f := fmt.Sprintf("connect() to %s in %s returned %s", connectTarget(s.Flow), ns, ErrnoName(s.Err))
		if s.Comm != "" {
			f += fmt.Sprintf(" (pid %d %s)", s.PID, s.Comm)
		}
		return f
	case signal.KindICMPError:
		f := fmt.Sprintf("ICMP %s from %s received in %s about %s", icmpName(s), addrText(s.ICMPFrom), ns, flowText(s.Flow))
		if s.Dev != "" {
			f += " on dev " + s.Dev
		}
		return f + mtuText(s)
	case signal.KindICMPSent:
		return fmt.Sprintf("ICMP %s sent by the kernel in %s about %s", icmpName(s), ns, flowText(s.Flow)) + mtuText(s)
	}
	return s.String()
}

func neighFact(ns string, s *signal.Signal) string {
	proto := "ARP"
	if s.NeighAddr.Is6() {
		proto = "NDP"
	}
	f := fmt.Sprintf("%s for %s on dev %s in %s gave up: entry FAILED", proto, addrText(s.NeighAddr), orUnknown(s.Dev), ns)
	if s.NeighState != 0 {
		f += " from " + s.NeighState.String()
	}
	if s.NeighTried > 0 {
		f += fmt.Sprintf(" after %s", roundAge(s.NeighTried))
	}
	if s.NeighProbes > 0 {
		f += fmt.Sprintf(" (probes=%d)", s.NeighProbes)
	}
	if s.NeighResolved {
		f += ", it had resolved before"
	} else {
		f += ", never resolved"
	}
	return f
}

func connectTarget(f signal.Flow) string {
	return fmt.Sprintf("%s %s", protoText(f.Proto), flowDstAddr(f))
}

func flowDstAddr(f signal.Flow) string {
	if f.DstPort == 0 {
		return addrText(f.Dst)
	}
	return netip.AddrPortFrom(f.Dst, f.DstPort).String()
}

func protoText(p uint8) string {
	switch p {
	case signal.ProtoTCP:
		return "tcp"
	case signal.ProtoUDP:
		return "udp"
	case signal.ProtoICMP:
		return "icmp"
	case signal.ProtoICMPv6:
		return "icmpv6"
	case signal.ProtoSCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto %d", p)
}

func mtuText(s *signal.Signal) string {
	if s.MTU == 0 {
		return ""
	}
	return fmt.Sprintf(", next-hop MTU %d", s.MTU)
}

// icmpName names an ICMP or ICMPv6 error after the flow's family.
func icmpName(s *signal.Signal) string {
	v6 := s.Flow.Dst.Is6() && !s.Flow.Dst.Is4In6()
	if !s.Flow.Dst.IsValid() {
		v6 = s.ICMPFrom.Is6()
	}
	n := icmpKindOf(v6, s.ICMPType, s.ICMPCode)
	if v6 {
		return fmt.Sprintf("%s (ICMPv6 type %d code %d)", n.name, s.ICMPType, s.ICMPCode)
	}
	return fmt.Sprintf("%s (type %d code %d)", n.name, s.ICMPType, s.ICMPCode)
}
