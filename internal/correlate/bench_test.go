package correlate

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/replay"
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
	benchObserve(b, benchSigs, span)
}

var (
	fixtureOnce sync.Once
	fixtureSigs []signal.Signal
)

// BenchmarkObserveFixtures is BenchmarkObserve on fixtureWorkload: every
// pattern's recorded sequences, near misses and success noise.
func BenchmarkObserveFixtures(b *testing.B) {
	const span = 60 * time.Second
	fixtureOnce.Do(func() { fixtureSigs = fixtureWorkload(span, 30000) })
	benchObserve(b, fixtureSigs, span)
}

// replayLoop feeds b.N signals of sigs to e, repeating the recording with
// its clock shifted past span so windows keep closing, and ticks every
// 100 ms of signal time as the live source does.
func replayLoop(b *testing.B, e *Engine, sigs []signal.Signal, span time.Duration) {
	var shift time.Duration
	nextTick := t0
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
}

func benchObserve(b *testing.B, sigs []signal.Signal, span time.Duration) {
	emitted := 0
	e, err := New(DefaultConfig(), func(d diagnosis.Diagnosis) { emitted++ })
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC() // setup garbage must not be collected on the clock
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	replayLoop(b, e, sigs, span)
	b.StopTimer()
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signals/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	st := e.Stats()
	if b.N > len(sigs) && (st.Diagnoses == 0 || st.FlowsTracked > DefaultConfig().MaxFlows) {
		b.Fatalf("stats %+v", st)
	}
}

// fixtureWorkload simulates `span` of a busy node from the replay fixtures
// (testdata/replay), sorted by time: `instances` sequences, each a fixture
// replayed at a random start with fresh client ports (every failing connect
// a new flow) and its addresses moved into one of 8 address groups (so
// repeats of a cause aggregate, as on a node whose clients keep failing
// against a few services). About 60% of the sequences are what a busy node
// sends when nothing fails: teardown noise (noise_teardown,
// reset_teardown_noise) and signal.SuccessNoise (a listener's answer to a
// late ACK, tail-loss probes); the rest are drawn evenly from the other
// fixtures, failures of every pattern and their near misses. success.jsonl
// is left out: the probes filter those state changes in the kernel.
func fixtureWorkload(span time.Duration, instances int) []signal.Signal {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "replay", "*.jsonl"))
	if err != nil || len(files) == 0 {
		panic(fmt.Sprintf("no replay fixtures: %v", err))
	}
	var noise, failures [][]signal.Signal
	for _, path := range files {
		name := filepath.Base(path)
		if name == "success.jsonl" {
			continue
		}
		seq := decodeFixture(path)
		if name == "noise_teardown.jsonl" || name == "reset_teardown_noise.jsonl" {
			noise = append(noise, seq)
		} else {
			failures = append(failures, seq)
		}
	}
	// signal.SuccessNoise: a late pure ACK answered by the listener (drop
	// and RST, TCP_FLAGS), and a tail-loss probe (icsk_retransmits 0).
	client, server := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	lateACK := signal.Flow{Proto: signal.ProtoTCP, Src: client, Dst: server, SrcPort: 45000, DstPort: 8080}
	noise = append(noise, []signal.Signal{
		{Kind: signal.KindDrop, Time: t0, Flow: lateACK, NetnsCookie: serverCookie, NetnsInode: serverInode,
			State: signal.StateListen, TCPFlags: signal.TCPFlagACK, DropReason: "TCP_FLAGS", DropLocation: "tcp_v4_rcv"},
		{Kind: signal.KindResetSent, Time: t0.Add(5 * time.Microsecond), NetnsCookie: serverCookie, NetnsInode: serverInode,
			Flow:  signal.Flow{Proto: signal.ProtoTCP, Src: netip.IPv4Unspecified(), Dst: client, SrcPort: 8080, DstPort: 45000},
			State: signal.StateListen, TCPFlags: signal.TCPFlagACK, ResetReason: "TCP_FLAGS"},
	}, []signal.Signal{
		{Kind: signal.KindRetransmit, Time: t0, Flow: signal.Flow{Proto: signal.ProtoTCP, Src: client, Dst: server,
			SrcPort: 46000, DstPort: 8080}, NetnsCookie: clientCookie, NetnsInode: clientInode,
			State: signal.StateEstablished, TCPFlags: signal.TCPFlagPSH | signal.TCPFlagACK},
	})

	rng := rand.New(rand.NewPCG(3, 4))
	nextPort := 0
	var out []signal.Signal
	for i := range instances {
		var seq []signal.Signal
		if rng.IntN(10) < 6 {
			seq = noise[rng.IntN(len(noise))]
		} else {
			seq = failures[rng.IntN(len(failures))]
		}
		start := t0.Add(time.Duration(rng.Int64N(int64(span))))
		group := byte(i % 8)
		ports := map[uint16]uint16{}
		port := func(p uint16) uint16 {
			if p < 32768 {
				return p // a service's port
			}
			if q, ok := ports[p]; ok {
				return q
			}
			q := uint16(32768 + nextPort%28000)
			nextPort++
			ports[p] = q
			return q
		}
		first := seq[0].Time
		for _, s := range seq {
			s.Time = start.Add(s.Time.Sub(first))
			s.Flow.Src, s.Flow.Dst = moveAddr(s.Flow.Src, group), moveAddr(s.Flow.Dst, group)
			s.Flow.SrcPort, s.Flow.DstPort = port(s.Flow.SrcPort), port(s.Flow.DstPort)
			s.NeighAddr, s.ICMPFrom = moveAddr(s.NeighAddr, group), moveAddr(s.ICMPFrom, group)
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b signal.Signal) int { return a.Time.Compare(b.Time) })
	return out
}

// moveAddr puts an address into address group g (its second byte for IPv4,
// third for IPv6), leaving the unspecified and invalid ones alone.
func moveAddr(a netip.Addr, g byte) netip.Addr {
	if !a.IsValid() || a.IsUnspecified() {
		return a
	}
	if a.Is4() {
		b := a.As4()
		b[1] += g
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	b[2] += g
	return netip.AddrFrom16(b)
}

func decodeFixture(path string) []signal.Signal {
	f, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	dec := replay.NewDecoder(f)
	var out []signal.Signal
	for {
		var s signal.Signal
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			panic(fmt.Sprintf("%s: %v", path, err))
		}
		out = append(out, s)
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

// The fixture workload diagnoses with most of the library, and its noise
// stays quiet.
func TestFixtureWorkloadShape(t *testing.T) {
	sigs := fixtureWorkload(20*time.Second, 3000)
	e, r := newEngine(t, nil)
	for _, s := range sigs {
		e.Observe(s)
	}
	e.Tick(t0.Add(time.Hour))
	st := e.Stats()
	by := map[diagnosis.Pattern]int{}
	for _, d := range r.ds {
		by[d.Pattern]++
	}
	t.Logf("%d signals, %d ignored, %d diagnoses by pattern %v", len(sigs), st.Ignored, len(r.ds), by)
	if len(by) < 8 || st.Ignored == 0 || st.Aggregated == 0 || st.Invalid != 0 {
		t.Fatalf("workload does not exercise the library: %v %+v", by, st)
	}
}

// BenchmarkFailureStorm: a storm of distinct failing connections, each a
// SYN dropped by a rule and its first retransmission (the connections
// stay open: no close, no Tick), far more than the engine may hold. One op
// is the whole storm through a new engine with the receiver's default
// max_flows. It reports the heap the engine keeps after the storm (after a
// GC) per connection held, and asserts the bound: no more connections than
// MaxFlows, every one beyond it evicted and counted.
func BenchmarkFailureStorm(b *testing.B) {
	const (
		flows    = 1_000_000
		maxFlows = 65536 // the receiver's default max_flows
	)
	sigs := make([]signal.Signal, 0, 2)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		cfg := DefaultConfig()
		cfg.MaxFlows = maxFlows
		e, err := New(cfg, func(diagnosis.Diagnosis) {})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for n := range flows {
			// 100k new connections per second of signal time, from 4000
			// clients to 20 services.
			at := t0.Add(time.Duration(n) * 10 * time.Microsecond)
			f := signal.Flow{Proto: signal.ProtoTCP, Src: netip.AddrFrom4([4]byte{10, 1, byte(n / 250 % 16), byte(n % 250)}),
				Dst: netip.AddrFrom4([4]byte{10, 2, 0, byte(n % 20)}), SrcPort: uint16(1024 + n/4000%60000), DstPort: 5432}
			sigs = append(sigs[:0],
				signal.Signal{Kind: signal.KindDrop, Time: at, Flow: f, NetnsCookie: serverCookie, NetnsInode: serverInode,
					TCPFlags: signal.TCPFlagSYN, DropReason: "NETFILTER_DROP", DropLocation: "nft_do_chain", Dev: "eth0"},
				signal.Signal{Kind: signal.KindRetransmit, Time: at.Add(time.Second), Flow: f, NetnsCookie: clientCookie,
					NetnsInode: clientInode, State: signal.StateSynSent, TCPFlags: signal.TCPFlagSYN, Retransmits: 1})
			for _, s := range sigs {
				e.Observe(s)
			}
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		st := e.Stats()
		runtime.KeepAlive(e)
		if st.FlowsTracked > maxFlows || st.Evicted != flows-uint64(st.FlowsTracked) {
			b.Fatalf("not bounded: %d held (max %d), %d evicted of %d", st.FlowsTracked, maxFlows, st.Evicted, flows)
		}
		held := float64(after.HeapAlloc) - float64(before.HeapAlloc)
		b.ReportMetric(float64(st.FlowsTracked), "flows-held")
		b.ReportMetric(float64(st.Evicted), "evicted")
		b.ReportMetric(held/float64(st.FlowsTracked), "heap-B/flow")
		b.ReportMetric(held/(1<<20), "heap-MiB")
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*flows*2), "ns/signal")
}
