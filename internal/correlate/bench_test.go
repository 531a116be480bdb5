package correlate

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// mixedWorkload simulates `span` of a busy node's failure signals, sorted by
// time. By signal count: about half teardown noise (EPIPE/ECONNRESET closes,
// RSTs on established flows, data-segment NO_SOCKET drops), a third refused
// connects (closed port and REJECT, four signals each) to 50 services, and the
// rest connects whose SYN is dropped (drops + retransmits + final timeout).
// Client ports are unique, so every failing connect is a new flow.
func mixedWorkload(span time.Duration, connects int) []signal.Signal {
	rng := rand.New(rand.NewPCG(1, 2))
	var out []signal.Signal
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}) }
	at := func() time.Time { return t0.Add(time.Duration(rng.Int64N(int64(span)))) }
	port := 1024
	next := func() uint16 { port++; return uint16(1024 + port%60000) }
	for i := range connects {
		client := addr(i % 2000)
		start := at()
		switch i % 4 {
		case 0, 1: // refused: closed port or REJECT
			f := signal.Flow{Proto: signal.ProtoTCP, Src: client, Dst: addr(3000 + i%50), SrcPort: next(), DstPort: uint16(8000 + i%50)}
			reason, loc := "NO_SOCKET", "tcp_v4_rcv"
			if i%4 == 1 {
				reason, loc = "NETFILTER_DROP", "nft_do_chain"
			}
			out = append(out,
				signal.Signal{Kind: signal.KindDrop, Time: start, Flow: f, NetnsCookie: serverCookie, NetnsInode: serverInode,
					TCPFlags: signal.TCPFlagSYN, DropReason: reason, DropLocation: loc, Dev: "eth0"},
				signal.Signal{Kind: signal.KindResetReceived, Time: start.Add(80 * time.Microsecond), Flow: f,
					NetnsCookie: clientCookie, NetnsInode: clientInode, State: signal.StateSynSent},
				signal.Signal{Kind: signal.KindStateChange, Time: start.Add(90 * time.Microsecond), Flow: f,
					NetnsCookie: clientCookie, NetnsInode: clientInode, OldState: signal.StateSynSent, State: signal.StateClose, SkErr: 111})
			if reason == "NO_SOCKET" {
				out = append(out, signal.Signal{Kind: signal.KindResetSent, Time: start.Add(10 * time.Microsecond), Flow: f.Reverse(),
					NetnsCookie: serverCookie, NetnsInode: serverInode, TCPFlags: signal.TCPFlagSYN, ResetReason: "NO_SOCKET"})
			}
		case 2: // SYN dropped by a rule: drop, 3 retransmits (each dropped), timeout
			f := signal.Flow{Proto: signal.ProtoTCP, Src: client, Dst: addr(4000 + i%20), SrcPort: next(), DstPort: 5432}
			for n := range 4 {
				t := start.Add(time.Duration(n) * time.Second)
				out = append(out, signal.Signal{Kind: signal.KindDrop, Time: t.Add(100 * time.Microsecond), Flow: f,
					NetnsCookie: serverCookie, NetnsInode: serverInode, TCPFlags: signal.TCPFlagSYN,
					DropReason: "NETFILTER_DROP", DropLocation: "nft_do_chain", Dev: "eth0"})
				if n > 0 {
					out = append(out, signal.Signal{Kind: signal.KindRetransmit, Time: t, Flow: f, NetnsCookie: clientCookie,
						NetnsInode: clientInode, State: signal.StateSynSent, TCPFlags: signal.TCPFlagSYN, Retransmits: uint32(n)})
				}
			}
			out = append(out, signal.Signal{Kind: signal.KindStateChange, Time: start.Add(5 * time.Second), Flow: f,
				NetnsCookie: clientCookie, NetnsInode: clientInode, OldState: signal.StateSynSent, State: signal.StateClose, SkErr: 110})
		case 3: // teardown noise: 10 signals
			for range 10 {
				f := signal.Flow{Proto: signal.ProtoTCP, Src: addr(3000 + rng.IntN(50)), Dst: client, SrcPort: 8080, DstPort: next()}
				t := at()
				switch rng.IntN(4) {
				case 0:
					out = append(out, signal.Signal{Kind: signal.KindStateChange, Time: t, Flow: f, NetnsCookie: serverCookie,
						OldState: signal.StateCloseWait, State: signal.StateClose, SkErr: 32})
				case 1:
					out = append(out, signal.Signal{Kind: signal.KindStateChange, Time: t, Flow: f, NetnsCookie: serverCookie,
						OldState: signal.StateEstablished, State: signal.StateClose, SkErr: 104})
				case 2:
					out = append(out, signal.Signal{Kind: signal.KindResetReceived, Time: t, Flow: f, NetnsCookie: serverCookie,
						State: signal.StateEstablished})
				case 3:
					out = append(out, signal.Signal{Kind: signal.KindDrop, Time: t, Flow: f, NetnsCookie: serverCookie,
						TCPFlags: signal.TCPFlagPSH | signal.TCPFlagACK, DropReason: "NO_SOCKET", DropLocation: "tcp_v4_rcv"})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b signal.Signal) int { return a.Time.Compare(b.Time) })
	return out
}

// BenchmarkObserve: one op = one signal through Observe, with a Tick every
// 100 ms of signal time as the live source would. The recording repeats with
// its clock shifted, so windows keep closing and state keeps turning over.
// Besides wall time it reports the process CPU time per signal (GC included),
// which stays meaningful on a machine shared with other work; run with
// -cpu 1 for the one-core figure.
var (
	benchOnce sync.Once
	benchSigs []signal.Signal
)

func BenchmarkObserve(b *testing.B) {
	const span = 60 * time.Second
	benchOnce.Do(func() { benchSigs = mixedWorkload(span, 40000) })
	sigs := benchSigs
	emitted := 0
	e, err := New(DefaultConfig(), func(d diagnosis.Diagnosis) { emitted++ })
	if err != nil {
		b.Fatal(err)
	}
	var shift time.Duration
	nextTick := t0
	runtime.GC() // setup garbage must not be collected on the clock
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i % len(sigs)
		if j == 0 && i > 0 {
			shift += span + 10*time.Second
		}
		s := sigs[j]
		s.Time = s.Time.Add(shift)
		if !s.Time.Before(nextTick) {
			e.Tick(s.Time)
			nextTick = s.Time.Add(100 * time.Millisecond)
		}
		e.Observe(s)
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signals/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	st := e.Stats()
	if b.N > len(sigs) && (st.Diagnoses == 0 || st.FlowsTracked > DefaultConfig().MaxFlows) {
		b.Fatalf("stats %+v", st)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestWorkloadShape(t *testing.T) {
	sigs := mixedWorkload(60*time.Second, 4000)
	e, r := newEngine(t, nil)
	for _, s := range sigs {
		e.Observe(s)
	}
	e.Tick(t0.Add(time.Hour))
	st := e.Stats()
	// 50 refused services x 2 causes... every key emitted at least once, noise never.
	if st.Ignored == 0 || st.Aggregated == 0 || len(r.ds) == 0 || st.Invalid != 0 {
		t.Fatalf("workload does not exercise the engine: %+v", st)
	}
	for _, d := range r.ds {
		if d.Pattern != diagnosis.PatternConnectionRefused && d.Pattern != diagnosis.PatternSYNDropped {
			t.Fatalf("unexpected %s", d.Pattern)
		}
	}
}

// BenchmarkObserveNoise: the fast path for signals no pattern wants and no
// connection state holds (teardown closes), the bulk on a busy node.
func BenchmarkObserveNoise(b *testing.B) {
	e, err := New(DefaultConfig(), func(diagnosis.Diagnosis) {})
	if err != nil {
		b.Fatal(err)
	}
	s := signal.Signal{Kind: signal.KindStateChange, Time: t0, Flow: tcpFlow(1, 8080),
		OldState: signal.StateCloseWait, State: signal.StateClose, SkErr: 32}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s.Flow.DstPort = uint16(i)
		e.Observe(s)
	}
	if e.Stats().Ignored != uint64(b.N) {
		b.Fatalf("noise not ignored: %+v", e.Stats())
	}
}

// BenchmarkObserveRefusedStorm: a storm of refused connects to one port, all
// four signals of each (server drop and RST, client RST and close), one
// aggregate per window.
func BenchmarkObserveRefusedStorm(b *testing.B) {
	var seq []signal.Signal
	for p := range 60000 {
		seq = append(seq, refusedClosedPort(t0.Add(time.Duration(p)*100*time.Microsecond), uint16(1024+p), 8080)...)
	}
	e, err := New(DefaultConfig(), func(diagnosis.Diagnosis) {})
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	var shift time.Duration
	for i := 0; i < b.N; i++ {
		j := i % len(seq)
		if j == 0 {
			shift += time.Hour
			e.Tick(t0.Add(shift))
		}
		s := seq[j]
		s.Time = s.Time.Add(shift)
		e.Observe(s)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signals/s")
	if st := e.Stats(); b.N > 4 && st.Diagnoses == 0 {
		b.Fatalf("nothing diagnosed: %+v", st)
	}
}
