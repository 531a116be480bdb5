package correlate

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// failureLoad is a steady stream of failures, one started every `every`,
// cycling through five kinds, each to its own destination so every one is
// a first occurrence (emitted, not aggregated): a refused connect (decided
// at the client's close), a connect() into a blackhole route and a listen
// overflow (decided at their single signal), a SYN dropped by a rule
// (decided at the first retransmit, 1 s after the connect) and an unused IP
// (SYNs queued behind ARP, decided at the kernel's FAILED ~3 s in). It
// returns the signals in time order and when each failure started, by
// destination.
func failureLoad(n int, every time.Duration) ([]signal.Signal, map[netip.Addr]time.Time) {
	var out []signal.Signal
	start := make(map[netip.Addr]time.Time, n)
	for i := range n {
		at := t0.Add(time.Duration(i) * every)
		sport := uint16(1024 + i%60000)
		dst := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		f := signal.Flow{Proto: signal.ProtoTCP, Src: clientIP, Dst: dst, SrcPort: sport, DstPort: 8080}
		start[dst] = at
		cl := func(s signal.Signal) signal.Signal {
			s.Flow, s.NetnsCookie, s.NetnsInode = f, clientCookie, clientInode
			return s
		}
		sv := func(s signal.Signal) signal.Signal {
			s.Flow, s.NetnsCookie, s.NetnsInode, s.Dev = f, serverCookie, serverInode, "eth0"
			return s
		}
		switch i % 5 {
		case 0:
			out = append(out,
				sv(signal.Signal{Kind: signal.KindDrop, Time: at, TCPFlags: signal.TCPFlagSYN, DropReason: "NO_SOCKET", DropLocation: "tcp_v4_rcv"}),
				cl(signal.Signal{Kind: signal.KindResetReceived, Time: at.Add(80 * time.Microsecond), State: signal.StateSynSent}),
				cl(signal.Signal{Kind: signal.KindStateChange, Time: at.Add(90 * time.Microsecond), OldState: signal.StateSynSent,
					State: signal.StateClose, SkErr: 111}))
		case 1:
			s := cl(signal.Signal{Kind: signal.KindConnectError, Time: at, Err: -22})
			s.Flow.SrcPort = 0
			out = append(out, s)
		case 2:
			out = append(out, sv(signal.Signal{Kind: signal.KindDrop, Time: at, TCPFlags: signal.TCPFlagSYN,
				DropReason: "TCP_LISTEN_OVERFLOW", DropLocation: "tcp_conn_request", Backlog: 129, MaxBacklog: 128}))
		case 3:
			drop := sv(signal.Signal{Kind: signal.KindDrop, TCPFlags: signal.TCPFlagSYN, DropReason: "NETFILTER_DROP", DropLocation: "nft_do_chain"})
			d0, d1 := drop, drop
			d0.Time, d1.Time = at, at.Add(time.Second+100*time.Microsecond)
			out = append(out, d0, cl(signal.Signal{Kind: signal.KindRetransmit, Time: at.Add(time.Second), State: signal.StateSynSent,
				TCPFlags: signal.TCPFlagSYN, Retransmits: 1}), d1)
		case 4:
			r := func(k uint32) signal.Signal {
				return cl(signal.Signal{Kind: signal.KindRetransmit, Time: at.Add(time.Duration(k) * time.Second), State: signal.StateSynSent,
					TCPFlags: signal.TCPFlagSYN, Retransmits: k, Err: -16})
			}
			nf := signal.Signal{Kind: signal.KindNeighFailed, Time: at.Add(3 * time.Second), NetnsCookie: clientCookie, NetnsInode: clientInode,
				Dev: "eth0", NeighAddr: dst, NeighState: signal.NUDIncomplete, NeighProbes: 6, NeighTried: 3 * time.Second}
			out = append(out, r(1), r(2), nf,
				cl(signal.Signal{Kind: signal.KindDrop, Time: at.Add(3*time.Second + 300*time.Microsecond), Dev: "eth0",
					TCPFlags: signal.TCPFlagSYN, DropReason: "NEIGH_FAILED", DropLocation: "neigh_invalidate"}),
				cl(signal.Signal{Kind: signal.KindStateChange, Time: at.Add(3*time.Second + time.Millisecond), OldState: signal.StateSynSent,
					State: signal.StateClose, SkErr: 113}))
		}
	}
	slices.SortStableFunc(out, func(a, b signal.Signal) int { return a.Time.Compare(b.Time) })
	return out, start
}

// BenchmarkTimeToDiagnosis measures, under a steady failure load (one
// failure started per millisecond of signal time, five kinds), how long
// after its deciding signal a diagnosis is emitted: the engine's own cost,
// wall clock from the Observe or Tick call that emitted it (p50/p99-ns), and
// the decision delay the patterns choose by design, signal time from the
// failure's first signal to the emission (p50/p99-decision-ms: 0 for
// single-signal failures, 1 s for a dropped SYN, ~3 s for ARP). The
// kernel-to-pipeline figure adds the probe and receiver stages.
func BenchmarkTimeToDiagnosis(b *testing.B) {
	sigs, start := failureLoad(max(b.N, 5), time.Millisecond)
	var walls []time.Duration
	var decisions []time.Duration
	var callStart time.Time
	var now time.Time
	cfg := DefaultConfig()
	cfg.MaxFlows = 1 << 16
	e, err := New(cfg, func(d diagnosis.Diagnosis) {
		if strings.Contains(d.Details, "Aggregated:") {
			return // window updates are not first diagnoses
		}
		walls = append(walls, time.Since(callStart))
		if s, ok := start[d.Flow.Dst]; ok {
			decisions = append(decisions, now.Sub(s))
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	walls = make([]time.Duration, 0, len(sigs))
	decisions = make([]time.Duration, 0, len(sigs))
	b.ReportAllocs()
	b.ResetTimer()
	next := t0
	for i := range sigs {
		s := sigs[i]
		for !s.Time.Before(next) { // tick every 10 ms of signal time
			now, callStart = next, time.Now()
			e.Tick(next)
			next = next.Add(10 * time.Millisecond)
		}
		now, callStart = s.Time, time.Now()
		e.Observe(s)
	}
	for end := next.Add(10 * time.Second); next.Before(end); next = next.Add(10 * time.Millisecond) {
		now, callStart = next, time.Now()
		e.Tick(next)
	}
	b.StopTimer()
	if len(walls) == 0 {
		b.Fatal("no diagnosis emitted")
	}
	pct := func(xs []time.Duration, p float64) time.Duration {
		slices.Sort(xs)
		return xs[min(len(xs)-1, int(p*float64(len(xs))))]
	}
	b.ReportMetric(float64(pct(walls, 0.50).Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(pct(walls, 0.99).Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(pct(decisions, 0.50).Microseconds())/1e3, "p50-decision-ms")
	b.ReportMetric(float64(pct(decisions, 0.99).Microseconds())/1e3, "p99-decision-ms")
	b.ReportMetric(float64(len(walls)), "diagnoses")
	if st := e.Stats(); st.Invalid != 0 {
		b.Fatalf("%d invalid diagnoses: %s", st.Invalid, st.LastInvalid)
	}
}

// The load's failures are each diagnosed once, by the expected pattern.
func TestFailureLoadDiagnosed(t *testing.T) {
	sigs, _ := failureLoad(50, time.Millisecond)
	e, r := newEngine(t, nil)
	now := t0
	for _, s := range sigs {
		for ; now.Before(s.Time); now = now.Add(10 * time.Millisecond) {
			e.Tick(now)
		}
		e.Observe(s)
	}
	e.Flush()
	count := map[diagnosis.Pattern]int{}
	for _, d := range r.ds {
		if !strings.Contains(d.Details, "Aggregated:") {
			count[d.Pattern]++
		}
	}
	want := map[diagnosis.Pattern]int{"connection_refused": 10, "route_failure": 10, "listen_overflow": 10, "syn_dropped": 10, "arp_failure": 10}
	for p, n := range want {
		if count[p] != n {
			t.Errorf("%s: %d first diagnoses, want %d (all: %v)", p, count[p], n, count)
		}
	}
}
