package pattern

import (
	"fmt"
	"net/netip"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// CauseAcceptQueueFull: a listener's accept queue was full.
const CauseAcceptQueueFull = "accept_queue_full"

// ListenOverflow: a listening socket dropped a connection because its
// accept queue was full: drop reason TCP_LISTEN_OVERFLOW, or any drop
// against the LISTEN socket whose queue length exceeds its limit
// (sk_ack_backlog > sk_max_ack_backlog, carried by the probe). Measured on
// 6.18: a SYN meeting a full queue is consumed without a drop record, and a
// handshake completed with a syncookie is dropped as NO_SOCKET at
// cookie_v4_check against the full listener, so the queue figures, not the
// reason, tell the overflow. Clients see retransmits, slow connects,
// resets or timeouts. Diagnosed at the first
// drop, per listener (address, port and namespace): a storm of drops is one
// aggregate; later retransmits of a connection keep it against syn_dropped.
//
// A SYN meeting a full queue leaves no drop record: AcceptQueueFull finds
// that case from host context. A conntrack table that is full is not told
// apart by the kernel's drop reason (it is a NETFILTER_DROP like a rule's):
// ConntrackTableFull asks ctnetlink.
type ListenOverflow struct{}

func (ListenOverflow) ID() diagnosis.Pattern { return diagnosis.PatternListenOverflow }

func listenDrop(s *signal.Signal) bool {
	return s.Kind == signal.KindDrop && (s.DropReason == "TCP_LISTEN_OVERFLOW" || s.MaxBacklog != 0 && s.Backlog > s.MaxBacklog)
}

func (ListenOverflow) Wants(s *signal.Signal) bool { return listenDrop(s) }

func (ListenOverflow) drop(ev *Evidence) *signal.Signal {
	for i := range ev.Packet {
		if s := &ev.Packet[i]; listenDrop(s) {
			return s
		}
	}
	return nil
}

func (p ListenOverflow) Match(ev *Evidence) (Verdict, Outcome) {
	if ev.Flow.Proto != signal.ProtoTCP {
		return Verdict{}, NoMatch
	}
	s := p.drop(ev)
	if s == nil {
		return Verdict{}, NoMatch
	}
	c := 0.8
	if s.MaxBacklog != 0 && s.Backlog > s.MaxBacklog {
		c = 0.9 // the kernel's own numbers show the queue full
	}
	if ev.Retrans().Count > 0 {
		c += 0.05
	}
	return Verdict{Cause: CauseAcceptQueueFull, Where: NetnsOf(s), Specificity: 4, Confidence: clamp(c),
		Subject: netip.AddrPortFrom(s.Flow.Dst, s.Flow.DstPort), Need: NeedListeners,
		Why: "the listening socket's accept queue was full"}, Match
}

func (p ListenOverflow) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	s := p.drop(ev)
	where := NetnsPhrase(ev.Namer, v.Where)
	port := s.Flow.DstPort
	queue := "full"
	if s.MaxBacklog != 0 {
		queue = fmt.Sprintf("%d/%d", s.Backlog, s.MaxBacklog)
	}
	d := diagnosis.Diagnosis{
		Pattern: diagnosis.PatternListenOverflow, Severity: diagnosis.SeverityWarn, Layer: diagnosis.LayerL4,
		ErrorType: "ETIMEDOUT", Flow: ev.Flow, Confidence: v.Confidence,
		Summary: fmt.Sprintf("Listener on port %d in %s dropped a connection: accept queue full (%s)", port, where, queue),
		Details: fmt.Sprintf("The socket listening on %s in %s had %s connections waiting to be accepted when a "+
			"%s segment from %s arrived, so the kernel dropped it (%s at %s). The server accepts more slowly than "+
			"connections arrive, or its listen() backlog is too small.",
			netip.AddrPortFrom(s.Flow.Dst, port), where, queue, flagsOrNone(s.TCPFlags), addrText(s.Flow.Src),
			s.DropReason, orUnknown(s.DropLocation)),
		Impact: fmt.Sprintf("clients of port %d wait for SYN retransmits (1 s, 3 s, ...) and time out if the queue stays full", port),
	}
	backlog := "its listen() backlog"
	if s.MaxBacklog != 0 {
		backlog = fmt.Sprintf("its listen() backlog (now %d)", s.MaxBacklog)
	}
	d.Resolution = fmt.Sprintf("In %s check `ss -ltn 'sport = :%d'` (Recv-Q vs Send-Q); make the server accept faster "+
		"(more workers, no blocking in the accept loop) or raise %s together with net.core.somaxconn.", where, port, backlog)
	if fs := ev.Facts; fs != nil && fs.Listened {
		if len(fs.Listeners) == 0 {
			d.Details += fmt.Sprintf(" Nobody listens on port %d there any more.", port)
		}
		for _, l := range fs.Listeners {
			d.Details += fmt.Sprintf(" Listener %s now: accept queue %d/%d.", l.Addr, l.Backlog, l.MaxBacklog)
		}
	}
	d.Details += ev.Facts.missingText()
	var retr *signal.Signal
	if r := ev.Retrans(); r.Count > 0 {
		retr = &r.Last
	}
	d.Evidence = evidenceFrom(ev, s, retr)
	d.Source, d.Destination = endpoints(ev, v.Where)
	return d
}
