package pattern

import (
	"fmt"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Causes of a routing failure.
const (
	CauseNoRoute          = "no_route"
	CauseBlackholeRoute   = "blackhole_route"
	CauseUnreachableRoute = "unreachable_route"
	CauseProhibitRoute    = "prohibit_route"
	// CauseRouteDropOnPath: a namespace forwarding the packet (the host, a
	// router namespace) had a blackhole/unreachable/prohibit route for it
	// (ip_error frees it as NOT_SPECIFIED, KERNEL.md).
	CauseRouteDropOnPath = "route_drop_on_path"
	CauseRPFilter        = "rp_filter"
)

const (
	errEACCES      = 13
	errEINVAL      = 22
	errENETUNREACH = 101
)

// RouteFailure: routing refused the packet. From connect() errors that
// change no socket state (the caller's own netns has no route, or a
// blackhole/unreachable/prohibit route: ENETUNREACH, EINVAL, EHOSTUNREACH,
// EACCES before any port was bound), and from drops: IP_INNOROUTES /
// IP_OUTNOROUTES, NOT_SPECIFIED freed in ip_error (such a route in a
// forwarding namespace) and IP_RPFILTER (reverse-path filter). A drop is
// diagnosed at once, and keeps the connection against syn_dropped's
// kernel_drop (same drop, less said). An EHOSTUNREACH from connect() after
// the neighbour failed is ARP's, not a route's.
type RouteFailure struct{}

func (RouteFailure) ID() diagnosis.Pattern { return diagnosis.PatternRouteFailure }

func routeConnectErr(s *signal.Signal) bool {
	if s.Kind != signal.KindConnectError || s.Flow.Proto == signal.ProtoTCP && s.Flow.SrcPort != 0 {
		// A bound TCP port: routing succeeded and the connect itself failed.
		return false
	}
	switch -s.Err {
	case errENETUNREACH, EHOSTUNREACH, errEINVAL, errEACCES:
		return true
	}
	return false
}

func routeDrop(s *signal.Signal) bool {
	if s.Kind != signal.KindDrop {
		return false
	}
	switch s.DropReason {
	case "IP_INNOROUTES", "IP_OUTNOROUTES", "IP_RPFILTER":
		return true
	case "NOT_SPECIFIED":
		return s.DropLocation == "ip_error"
	}
	return false
}

func (RouteFailure) Wants(s *signal.Signal) bool { return routeConnectErr(s) || routeDrop(s) }

func (RouteFailure) cause(ev *Evidence) *signal.Signal {
	if t := ev.Trigger; t != nil && routeConnectErr(t) {
		return t
	}
	for i := range ev.Packet {
		if s := &ev.Packet[i]; routeDrop(s) {
			return s
		}
	}
	return nil
}

func (p RouteFailure) Match(ev *Evidence) (Verdict, Outcome) {
	if ev.Flow.Proto == 0 {
		return Verdict{}, NoMatch
	}
	s := p.cause(ev)
	if s == nil {
		return Verdict{}, NoMatch
	}
	v := Verdict{Where: NetnsOf(s), Specificity: 4, Need: NeedRoute, Confidence: 0.85,
		Why: "routing refused the packet"}
	if s.Kind == signal.KindConnectError {
		for i := range ev.Neigh {
			if ev.Neigh[i].NeighAddr == s.Flow.Dst {
				return Verdict{}, NoMatch // the neighbour failed: ARP's
			}
		}
		switch -s.Err {
		case errENETUNREACH:
			v.Cause, v.Confidence = CauseNoRoute, 0.9
		case errEINVAL:
			v.Cause = CauseBlackholeRoute
		case EHOSTUNREACH:
			v.Cause, v.Confidence = CauseUnreachableRoute, 0.8
		case errEACCES:
			v.Cause = CauseProhibitRoute
		}
		v.Why = "connect() failed in routing, before any packet was sent"
		return v, Match
	}
	switch s.DropReason {
	case "IP_RPFILTER":
		v.Cause, v.Need = CauseRPFilter, 0
		v.Why = "the reverse-path filter dropped the packet"
	case "NOT_SPECIFIED":
		v.Cause = CauseRouteDropOnPath
		v.Why = "a blackhole/unreachable/prohibit route on the path dropped the packet (ip_error)"
	default:
		v.Cause, v.Confidence = CauseNoRoute, 0.9
	}
	if ev.Retrans().Count > 0 {
		v.Confidence += 0.05
	}
	v.Confidence = clamp(v.Confidence)
	return v, Match
}

func (p RouteFailure) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	s := p.cause(ev)
	where := NetnsPhrase(ev.Namer, v.Where)
	dst := connectTarget(ev.Flow)
	ip := addrText(ev.Flow.Dst)
	d := diagnosis.Diagnosis{
		Pattern: diagnosis.PatternRouteFailure, Severity: diagnosis.SeverityError, Layer: diagnosis.LayerL3,
		Flow: ev.Flow, Confidence: v.Confidence, ErrorType: "ETIMEDOUT",
	}
	var rt *RouteFact
	if ev.Facts != nil {
		rt = ev.Facts.Route
	}
	routeText := func(kind string) string {
		if rt != nil && rt.Type != "" && rt.Type != "unicast" && rt.Type != "local" {
			t := rt.Type + " route"
			if rt.Prefix.IsValid() {
				t += " " + rt.Prefix.String()
			}
			if rt.Table != 0 && rt.Table != 254 {
				t += fmt.Sprintf(" (table %d)", rt.Table)
			}
			return t
		}
		return kind
	}
	switch v.Cause {
	case CauseNoRoute, CauseBlackholeRoute, CauseUnreachableRoute, CauseProhibitRoute:
		r := map[string]string{CauseNoRoute: "no route", CauseBlackholeRoute: "a blackhole route",
			CauseUnreachableRoute: "an unreachable route", CauseProhibitRoute: "a prohibit route"}[v.Cause]
		r = routeText(r)
		if s.Kind == signal.KindConnectError {
			d.ErrorType = ErrnoName(s.Err)
			d.Summary = fmt.Sprintf("connect() to %s in %s failed with %s: %s to %s", dst, where, d.ErrorType, r, ip)
			d.Details = fmt.Sprintf("The connect() returned %s at once: routing in %s refused %s (%s), so no packet left "+
				"and no socket state changed.", d.ErrorType, where, ip, r)
			if s.Comm != "" {
				d.Details += fmt.Sprintf(" Caller: pid %d (%s).", s.PID, s.Comm)
			}
			d.Impact = fmt.Sprintf("every connection to %s from %s fails immediately", ip, where)
		} else {
			d.Summary = fmt.Sprintf("Packets to %s dropped in %s: %s (%s)", dst, where, r, s.DropReason)
			d.Details = fmt.Sprintf("The kernel in %s found no route for %s and dropped the packet with %s at %s.",
				where, ip, s.DropReason, orUnknown(s.DropLocation))
			d.Impact = fmt.Sprintf("traffic to %s through %s is lost; TCP connects time out", ip, where)
		}
		switch {
		case rt != nil && rt.Prefix.IsValid():
			d.Resolution = fmt.Sprintf("In %s remove the %s route (`ip route del %s %s`) or add a more specific route to %s.",
				where, rt.Type, rt.Type, rt.Prefix, ip)
		case v.Cause == CauseNoRoute:
			d.Resolution = fmt.Sprintf("Add a route to %s in %s (a default route or the subnet's): `ip route get %s` shows the failure.", ip, where, ip)
		default:
			d.Resolution = fmt.Sprintf("In %s find the route covering %s (`ip route show table all | grep -E 'blackhole|unreachable|prohibit'`) "+
				"and remove it or add a more specific one.", where, ip)
		}
	case CauseRouteDropOnPath:
		d.Summary = fmt.Sprintf("Packets to %s dropped in %s by %s (ip_error)", dst, where,
			routeText("a blackhole/unreachable/prohibit route"))
		d.Details = fmt.Sprintf("%s forwards this flow and its route for %s refuses it: the kernel freed the packet in ip_error "+
			"(NOT_SPECIFIED). A blackhole route sends no ICMP, so the client only times out.", where, ip)
		d.Impact = fmt.Sprintf("connections to %s through %s time out", dst, where)
		d.Resolution = fmt.Sprintf("In %s check `ip route get %s` and remove the blackhole/unreachable/prohibit route covering it.", where, ip)
	case CauseRPFilter:
		d.Summary = fmt.Sprintf("Packets from %s to %s dropped by the reverse-path filter in %s", addrText(ev.Flow.Src), dst, where)
		d.Details = fmt.Sprintf("Strict rp_filter in %s dropped the packet (IP_RPFILTER on dev %s): the route back to %s does "+
			"not use the interface it arrived on (asymmetric routing, or a source address it has no route for).",
			where, orUnknown(s.Dev), addrText(ev.Flow.Src))
		d.Impact = fmt.Sprintf("traffic from %s to %s is silently dropped; connects time out", addrText(ev.Flow.Src), dst)
		d.Resolution = fmt.Sprintf("In %s route %s back through dev %s, or set net.ipv4.conf.%s.rp_filter=2 (loose) "+
			"or 0 where asymmetric routing is intended.", where, addrText(ev.Flow.Src), orUnknown(s.Dev), orUnknown(s.Dev))
	}
	if rt != nil {
		d.Details += fmt.Sprintf(" Route lookup now: %s", rt.Type)
		if rt.Err != "" {
			d.Details += " (" + rt.Err + ")"
		}
		d.Details += "."
	}
	d.Details += ev.Facts.missingText()
	var first *signal.Signal
	if r := ev.Retrans(); r.Count > 0 {
		first = &r.Last
	}
	d.Evidence = evidenceFrom(ev, s, first)
	src, dstEp := endpoints(ev, Netns{})
	if s.Kind == signal.KindConnectError {
		src.NetnsInode, src.NetnsName = v.Where.Inode, NetnsName(ev.Namer, v.Where)
	}
	d.Source, d.Destination = src, dstEp
	return d
}
