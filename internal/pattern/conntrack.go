package pattern

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// CauseConntrackFull: no conntrack entry could be allocated for a new flow.
const CauseConntrackFull = "table_full"

// conntrackSubject keys the aggregate by namespace alone: the table is the
// cause, whatever destination the failing connections used.
var conntrackSubject = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)

// ConntrackTableFull: a SYN dropped as NETFILTER_DROP in a namespace whose
// conntrack table is full.
//
// KERNEL facts (6.18): when nf_conntrack_in cannot allocate an entry (the
// namespace's count would exceed nf_conntrack_max and early_drop found no
// unassured entry to evict) it counts the per-CPU `drop` statistic and
// returns NF_DROP, which nf_hook_slow frees as NETFILTER_DROP: the drop
// reason is the one a rule's DROP gives. ctnetlink tells them apart:
// IPCTNL_MSG_CT_GET_STATS (entries of the namespace, the global max) and
// IPCTNL_MSG_CT_GET_STATS_CPU (drop, early_drop, insert_failed per CPU),
// read in the namespace of the drop. nf_conntrack_max is read-only outside
// the initial namespace while the count compared with it is per namespace.
//
// Asked at a SYN's NETFILTER_DROP (which also gives the counters a reading
// to compare with) and decided where syn_dropped would blame a netfilter
// rule (the first SYN retransmit, ~1 s after connect()), or, for a client
// on another host (no retransmit seen here), at the drop of its
// retransmitted SYN: it matches when
// the table is full or its drop counter rose since the previous reading,
// and outranks syn_dropped because the rule attribution cannot explain a
// drop made before the filter chains (conntrack's hooks run at priority
// -200). Not a match: a rule's DROP while the table has room and conntrack
// dropped nothing (the rule attribution names it), a drop of another
// reason.
type ConntrackTableFull struct {
	SYN  SYNDropped
	Host OverloadContext
}

func (ConntrackTableFull) ID() diagnosis.Pattern { return diagnosis.PatternConntrackTableFull }

func nfSYNDrop(s *signal.Signal) bool {
	return s.Kind == signal.KindDrop && s.DropReason == "NETFILTER_DROP" && IsSYN(s.TCPFlags)
}

func (p ConntrackTableFull) Wants(s *signal.Signal) bool {
	return p.Host != nil && (nfSYNDrop(s) || s.Kind == signal.KindRetransmit && s.State == signal.StateSynSent)
}

func (p ConntrackTableFull) Match(ev *Evidence) (Verdict, Outcome) {
	if p.Host == nil || !ev.Oriented {
		return Verdict{}, NoMatch
	}
	if ev.Diagnosed {
		if followUp(ev) {
			return Verdict{Cause: CauseConntrackFull, Confidence: 0.8, Specificity: 4}, Match
		}
		return Verdict{}, NoMatch
	}
	t := ev.Trigger
	r := ev.Retrans()
	if r.Count > maxOverloadAsks {
		return Verdict{}, NoMatch
	}
	switch {
	case t == nil:
		if r.Count == 0 || !p.SYN.overdue(ev, &r.Last) {
			return Verdict{}, NoMatch
		}
	case nfSYNDrop(t) && t.Flow == ev.Flow:
		if r.Count > 0 {
			return Verdict{}, NoMatch // decided at the retransmits
		}
		if !p.SYN.overdue(ev, t) {
			// Too early to diagnose: read the counters now, so the
			// decision at the retransmit sees them rise.
			_, _ = p.Host.Conntrack(NetnsOf(t))
			return Verdict{}, NoMatch
		}
		// The same SYN dropped again with no retransmit seen: the client
		// is on another host (e.g. a NodePort), decide on its drops.
		if ev.Client.Known() || synDrops(ev) > maxOverloadAsks {
			return Verdict{}, NoMatch
		}
	case t.Kind == signal.KindRetransmit && t.State == signal.StateSynSent && t.Flow == ev.Flow:
		if !p.SYN.overdue(ev, t) {
			return Verdict{}, NoMatch
		}
	default:
		return Verdict{}, NoMatch
	}
	drop := ev.FirstSynDrop("NETFILTER_DROP")
	if drop == nil {
		return Verdict{}, NoMatch
	}
	f, ok := p.lookup(drop)
	if !ok {
		return Verdict{}, NoMatch
	}
	c := 0.75
	if f.Full() {
		c += 0.1
	}
	if f.DropsRose() > 0 {
		c += 0.1
	}
	return Verdict{Cause: CauseConntrackFull, Where: NetnsOf(drop), Specificity: 4, Confidence: clamp(c),
		Subject: conntrackSubject, Need: NeedRule,
		Why: "the namespace's conntrack table is full: conntrack, not a rule, dropped the SYN"}, Match
}

func synDrops(ev *Evidence) int {
	n := 0
	ev.SynDrops(func(*signal.Signal) bool { n++; return true })
	return n
}

func (p ConntrackTableFull) lookup(drop *signal.Signal) (ConntrackFact, bool) {
	f, err := p.Host.Conntrack(NetnsOf(drop))
	if err != nil || !f.Full() && f.DropsRose() == 0 {
		return ConntrackFact{}, false
	}
	return f, true
}

func (p ConntrackTableFull) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	drop := ev.FirstSynDrop("NETFILTER_DROP")
	f, _ := p.lookup(drop) // cached by the context: the answer Match saw
	where := NetnsPhrase(ev.Namer, v.Where)
	dst := netip.AddrPortFrom(ev.Flow.Dst, ev.Flow.DstPort)
	r := ev.Retrans()
	state := "full"
	seen := fmt.Sprintf("%d SYN retransmit(s) seen", r.Count)
	if r.Count == 0 {
		seen = fmt.Sprintf("the client is not on this node: %d drops of its SYN seen", synDrops(ev))
	}
	if !f.Full() {
		state = "overflowing (full moments ago)"
	}
	d := diagnosis.Diagnosis{
		Pattern: diagnosis.PatternConntrackTableFull, Severity: diagnosis.SeverityError, Layer: diagnosis.LayerL3,
		ErrorType: "ETIMEDOUT", Flow: ev.Flow, Confidence: v.Confidence,
		Summary: fmt.Sprintf("SYN to %s dropped in %s: conntrack table %s (%d/%d entries)", dst, where, state,
			f.Entries, f.Max),
		Details: fmt.Sprintf("netfilter dropped the SYN in %s at %s (%s), and conntrack "+
			"did it: the namespace's table holds %d entries of nf_conntrack_max %d, so a new flow gets no entry "+
			"unless early_drop can evict an unassured one; ctnetlink statistics: %s.", where,
			orUnknown(drop.DropLocation), seen, f.Entries, f.Max, f.counters()),
		Impact: "every new connection through that namespace (in and out) is dropped while the table stays full; " +
			"established flows keep working",
		Resolution: fmt.Sprintf("Raise net.netfilter.nf_conntrack_max (global: set it in the host namespace, "+
			"`sysctl -w net.netfilter.nf_conntrack_max=N`) and the hash size (net.netfilter.nf_conntrack_buckets), "+
			"shorten the conntrack timeouts that keep idle entries (nf_conntrack_tcp_timeout_established, "+
			"..._time_wait), and find the flow storm filling the table in %s (`conntrack -S`, `conntrack -L`).", where),
	}
	if rule := ruleOf(ev); rule != nil {
		d.Details += fmt.Sprintf(" The ruleset there would also drop it (%s), but conntrack's hooks run before "+
			"the filter chains.", rule.Phrase())
	} else if ev.Facts != nil {
		for _, m := range ev.Facts.Missing {
			if strings.HasPrefix(m, "netfilter rule: ") {
				d.Details += fmt.Sprintf(" No netfilter rule explains the drop (%s).", strings.TrimPrefix(m, "netfilter rule: "))
			}
		}
	}
	var first *signal.Signal
	if r.Count > 0 {
		first = &r.First
	} else if t := ev.Trigger; t != nil && nfSYNDrop(t) && !t.Time.Equal(drop.Time) {
		first = ev.Trigger // the retransmitted SYN's drop
	}
	d.Evidence = appendRule(ev, evidenceFrom(ev, drop, first))
	d.Evidence = append(d.Evidence, diagnosis.Evidence{Time: f.At, Source: "hostctx:ctnetlink",
		Fact: fmt.Sprintf("conntrack in %s: %s", where, f.counters())})
	d.Source, d.Destination = endpoints(ev, v.Where)
	return d
}

// Gate: see AcceptQueueFull's.
func (ConntrackTableFull) Gate() Gate {
	return Gate{Triggers: KindsOf(signal.KindRetransmit, signal.KindStateChange, signal.KindDrop),
		Decides: overloadDecides, Evidenced: true}
}
