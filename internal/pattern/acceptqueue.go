package pattern

import (
	"fmt"
	"net/netip"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// AcceptQueueFull: a SYN to a listener on this node whose accept queue is
// full, diagnosed as listen_overflow (cause accept_queue_full, as
// ListenOverflow's drops are) although no drop was seen.
//
// KERNEL facts (6.18, measured in the lab): tcp_conn_request drops a SYN
// that meets a full accept queue (sk_ack_backlog > sk_max_ack_backlog) after
// counting LINUX_MIB_LISTENOVERFLOWS and LISTENDROPS, then
// tcp_rcv_state_process frees it with consume_skb: no kfree_skb, no reset,
// no socket state change; the client only retransmits its SYN, and the
// namespace's TcpExtListenOverflows/ListenDrops count each one. No
// tracepoint tells that drop apart: skb:consume_skb fires at the same
// tcp_rcv_state_process offset for every SYN a listener takes (the listener
// is not attached to the skb), and sock:sk_data_ready for every data
// arrival on any socket (34 events in 2.5 s on an idle node; it shows a
// queue filling, not the drop): per-packet costs on the success path.
// kprobes are not built in and fentry is refused. So the evidence is host context asked only
// when a SYN to a local address goes unanswered with no drop seen: sock_diag
// in the namespace owning the address gives the listener's queue (rqueue =
// sk_ack_backlog, wqueue = sk_max_ack_backlog), /proc/<ns>/net/netstat the
// counters. It is asked at the SYN retransmit where syn_dropped would say
// "no local drop seen" (~1 s after connect()), and outranks it (and
// blackhole, which never sees a handshake) because it names the cause on
// this node instead of blaming the path.
//
// Not a match: a SYN drop seen (the drop's own pattern says why), a
// listener that is slow but not full (its queue below the backlog), a full
// listener on another port or address, a destination not on this node.
type AcceptQueueFull struct {
	// SYN decides when an unanswered SYN is overdue (its Timeout).
	SYN SYNDropped
	// Host: nil disables the pattern (replays without host context).
	Host OverloadContext
}

func (AcceptQueueFull) ID() diagnosis.Pattern { return diagnosis.PatternListenOverflow }

func (p AcceptQueueFull) Wants(s *signal.Signal) bool {
	return p.Host != nil && s.Kind == signal.KindRetransmit && s.State == signal.StateSynSent
}

// maxOverloadAsks: the overload patterns decide at the first SYN
// retransmits (the first is due ~1 s after connect()); asking again at
// every later one of a connection that keeps failing would only repeat the
// lookup.
const maxOverloadAsks = 3

// followUp reports a later signal of a connection this pattern diagnosed.
func followUp(ev *Evidence) bool {
	t := ev.Trigger
	return t == nil || t.Flow == ev.Flow && (t.Kind == signal.KindRetransmit && t.State == signal.StateSynSent || ClientClose(t)) ||
		t.Kind == signal.KindDrop && IsSYN(t.TCPFlags)
}

func (p AcceptQueueFull) Match(ev *Evidence) (Verdict, Outcome) {
	if p.Host == nil || !ev.Oriented || ev.Flow.Proto != signal.ProtoTCP {
		return Verdict{}, NoMatch
	}
	if ev.Diagnosed {
		// The same failure going on: keep it (no lookup), so syn_dropped
		// does not report the connection a second time.
		if followUp(ev) {
			return Verdict{Cause: CauseAcceptQueueFull, Confidence: 0.8, Specificity: 4}, Match
		}
		return Verdict{}, NoMatch
	}
	t := ev.Trigger
	r := ev.Retrans()
	if r.Count == 0 || r.Count > maxOverloadAsks {
		return Verdict{}, NoMatch
	}
	switch {
	case t == nil:
		if !p.SYN.overdue(ev, &r.Last) {
			return Verdict{}, NoMatch
		}
	case t.Kind == signal.KindRetransmit && t.State == signal.StateSynSent && t.Flow == ev.Flow:
		if !p.SYN.overdue(ev, t) {
			return Verdict{}, NoMatch
		}
	default:
		return Verdict{}, NoMatch
	}
	// A drop or a send error explains the silence better than a queue.
	if r.EPERM > 0 || r.EBUSY > 0 || ev.FirstSynDrop("") != nil {
		return Verdict{}, NoMatch
	}
	f, ok := p.lookup(ev)
	if !ok {
		return Verdict{}, NoMatch
	}
	c := 0.8 // the kernel's own test says the queue is full now
	if f.OverflowsRose() > 0 {
		c += 0.1 // and it has been dropping SYNs since the last look
	} else if f.Overflows > 0 {
		c += 0.05
	}
	if r.Count > 1 {
		c += 0.05
	}
	return Verdict{Cause: CauseAcceptQueueFull, Where: f.Netns, Specificity: 4, Confidence: clamp(c),
		Subject: netip.AddrPortFrom(ev.Flow.Dst, ev.Flow.DstPort),
		Why:     "the listener's accept queue on this node is full, where SYNs are dropped without a drop record"}, Match
}

func (p AcceptQueueFull) lookup(ev *Evidence) (AcceptQueueFact, bool) {
	f, err := p.Host.AcceptQueue(ev.Client, netip.AddrPortFrom(ev.Flow.Dst, ev.Flow.DstPort))
	if err != nil || !f.Full() {
		return AcceptQueueFact{}, false
	}
	return f, true
}

func (p AcceptQueueFull) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	f, _ := p.lookup(ev) // cached by the context: the answer Match saw
	l := f.Listener
	where := NetnsPhrase(ev.Namer, v.Where)
	dst := netip.AddrPortFrom(ev.Flow.Dst, ev.Flow.DstPort)
	r := ev.Retrans()
	owner := ""
	if f.Process != "" {
		owner = ", owned by " + f.Process
	}
	d := diagnosis.Diagnosis{
		Pattern: diagnosis.PatternListenOverflow, Severity: diagnosis.SeverityWarn, Layer: diagnosis.LayerL4,
		ErrorType: "ETIMEDOUT", Flow: ev.Flow, Confidence: v.Confidence,
		Summary: fmt.Sprintf("SYN to %s dropped: the listener %s in %s has a full accept queue (%d/%d)",
			dst, l.Addr, where, l.Backlog, l.MaxBacklog),
		Details: fmt.Sprintf("The socket listening on %s in %s%s holds %d connections waiting to be accepted "+
			"against a listen() backlog of %d, so the kernel drops every new SYN (tcp_conn_request) without a drop "+
			"record; the client only retransmits (%d SYN retransmit(s) seen, no drop of this SYN on this node). "+
			"The application accepts more slowly than connections arrive, or its backlog is too small. Namespace "+
			"counters: %s.", l.Addr, where, owner, l.Backlog, l.MaxBacklog, r.Count, f.counters()),
		Impact: fmt.Sprintf("connect() to %s waits for SYN retransmits (1 s, 3 s, ...) and times out after about "+
			"2 minutes while the queue stays full", dst),
	}
	somax := "net.core.somaxconn"
	if f.Somaxconn != 0 {
		somax = fmt.Sprintf("net.core.somaxconn (now %d; the kernel caps the backlog to it)", f.Somaxconn)
	}
	d.Resolution = fmt.Sprintf("Make the application accept faster (more workers, no blocking in the accept loop)"+
		"%s, or raise its listen() backlog (now %d) together with %s in %s; check with "+
		"`ss -ltn 'sport = :%d'` there (Recv-Q vs Send-Q) and `nstat -az TcpExtListenOverflows`.",
		owner, l.MaxBacklog, somax, where, dst.Port())
	var first, last *signal.Signal
	if r.Count > 0 {
		first = &r.First
		if r.Count > 1 {
			last = &r.Last
		}
	}
	d.Evidence = evidenceFrom(ev, first, last)
	d.Evidence = append(d.Evidence, diagnosis.Evidence{Time: f.At, Source: "hostctx:sock_diag",
		Fact: fmt.Sprintf("listener %s in %s%s: accept queue %d/%d (full: more than the backlog waiting); %s",
			l.Addr, where, owner, l.Backlog, l.MaxBacklog, f.counters())})
	d.Source, d.Destination = endpoints(ev, v.Where)
	return d
}

// Gate: both overload patterns decide (or follow up) at a SYN retransmit,
// a SYN's drop or the client's close; on a Tick only with one of them
// wanted (a SYN retransmit, or conntrack's SYN NETFILTER_DROP).
func (AcceptQueueFull) Gate() Gate {
	return Gate{Triggers: KindsOf(signal.KindRetransmit, signal.KindStateChange, signal.KindDrop),
		Decides: overloadDecides, Evidenced: true}
}

func overloadDecides(t *signal.Signal) bool {
	return t.Kind == signal.KindRetransmit && t.State == signal.StateSynSent || ClientClose(t) ||
		t.Kind == signal.KindDrop && IsSYN(t.TCPFlags)
}
