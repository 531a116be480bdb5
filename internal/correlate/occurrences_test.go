package correlate

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// occDrop is a SYN of flow f dropped by netfilter in the server's netns.
func occDrop(f signal.Flow, at time.Duration) signal.Signal {
	return signal.Signal{Kind: signal.KindDrop, Time: t0.Add(at), Flow: f, NetnsCookie: serverCookie,
		NetnsInode: serverInode, TCPFlags: signal.TCPFlagSYN, DropReason: "NETFILTER_DROP", DropLocation: "nft_do_chain"}
}

// occStep is one step of a scenario: signals to observe, then an optional
// Tick (or Flush) at engine time.
type occStep struct {
	sigs  []signal.Signal
	tick  time.Duration // 0 = no tick
	flush bool
}

func occRefused(at time.Duration, sport, dport uint16) occStep {
	return occStep{sigs: refusedClosedPort(t0.Add(at), sport, dport)}
}

// checkNew checks the records of each cause: New never counts an
// occurrence twice (each record's Count - New is the previous record's
// Count, or a first report starts a new series), and the sum of New per
// Key is the number of occurrences wanted.
func checkNew(t *testing.T, ds []diagnosis.Diagnosis, want map[string]int) {
	t.Helper()
	sum := map[string]int{}
	last := map[string]int{}
	for i, d := range ds {
		first := d.Count == 1 && d.New == 1
		if !first && d.Count-d.New != last[d.Key] {
			t.Errorf("record %d (%s): count %d new %d, previous record of the cause had count %d",
				i, d.Key, d.Count, d.New, last[d.Key])
		}
		last[d.Key] = d.Count
		sum[d.Key] += d.New
	}
	for k, n := range want {
		if sum[k] != n {
			t.Errorf("%s: sum of New %d, want %d occurrences", k, sum[k], n)
		}
	}
	if len(sum) != len(want) {
		t.Errorf("causes %v, want %v", sum, want)
	}
}

// occurrences is what the engine's counters say it counted: every first
// report plus every repeat counted into an open aggregate.
func occurrences(st Stats) int {
	return int(st.Diagnoses-st.AggregateUpdates) + int(st.Aggregated)
}

const (
	refusedKey8080 = "connection_refused/no_listener/10.0.0.2:8080/netns:4098"
	refusedKey8081 = "connection_refused/no_listener/10.0.0.2:8081/netns:4098"
	refusedKey8082 = "connection_refused/no_listener/10.0.0.2:8082/netns:4098"
)

// The sum of New over every record of a cause is its number of
// occurrences, however the records were cut: windows that close, windows
// reopened by a connection still failing, aggregates evicted early, Flush.
func TestNewCountsEachOccurrenceOnce(t *testing.T) {
	a, b, c := tcpFlow(40000, 5432), tcpFlow(40001, 5432), tcpFlow(40002, 5432)
	tests := []struct {
		name     string
		mod      func(*Config)
		steps    []occStep
		want     map[string]int
		records  int
		reopened uint64
	}{
		{
			name: "repeats in one window",
			steps: []occStep{
				occRefused(0, 30000, 8080), occRefused(time.Second, 30001, 8080), occRefused(2*time.Second, 30002, 8080),
				occRefused(3*time.Second, 30003, 8080), occRefused(4*time.Second, 30004, 8080),
				{tick: 31 * time.Second},
			},
			want:    map[string]int{refusedKey8080: 5},
			records: 2, // first report (New 1), update (Count 5, New 4)
		},
		{
			name: "several windows",
			steps: []occStep{
				occRefused(0, 30000, 8080), occRefused(time.Second, 30001, 8080), occRefused(2*time.Second, 30002, 8080),
				{tick: 31 * time.Second},
				occRefused(40*time.Second, 30003, 8080), occRefused(41*time.Second, 30004, 8080),
				{tick: 71 * time.Second},
				occRefused(100*time.Second, 30005, 8080), // alone in its window: no update
				{tick: 131 * time.Second},
				// Past the window but before a Tick closed it: a new series.
				occRefused(140*time.Second, 30006, 8080), occRefused(171*time.Second, 30007, 8080),
				{tick: 300 * time.Second},
			},
			want:    map[string]int{refusedKey8080: 8},
			records: 7,
		},
		{
			name: "reopened windows",
			mod:  func(c *Config) { c.Window = 10 * time.Second },
			steps: []occStep{
				{sigs: []signal.Signal{occDrop(a, 0), synRetransmit(a, time.Second, 1)}}, // first report
				{tick: 11 * time.Second},                                     // nothing grew
				{sigs: []signal.Signal{synRetransmit(a, 19*time.Second, 8)}}, // a still fails: reopens
				{sigs: []signal.Signal{occDrop(b, 20*time.Second), synRetransmit(b, 21*time.Second, 1)}},
				{tick: 30 * time.Second},                                                                 // update: count 2, New 1
				{sigs: []signal.Signal{synRetransmit(a, 35*time.Second, 9)}},                             // reopens again
				{tick: 46 * time.Second},                                                                 // update: count 2, New 0
				{sigs: []signal.Signal{occDrop(c, 50*time.Second), synRetransmit(c, 51*time.Second, 1)}}, // new series
				{sigs: []signal.Signal{synRetransmit(a, 52*time.Second, 10)}},                            // joins it
				{tick: 70 * time.Second},
			},
			want:     map[string]int{"syn_dropped/netfilter_drop/10.0.0.2:5432/netns:4098": 3},
			records:  5,
			reopened: 2,
		},
		{
			name: "aggregates evicted by max_flows",
			mod:  func(c *Config) { c.MaxFlows = 2 },
			steps: []occStep{
				occRefused(0, 30000, 8080), occRefused(10*time.Millisecond, 30001, 8080),
				occRefused(20*time.Millisecond, 30002, 8081), occRefused(30*time.Millisecond, 30003, 8081),
				occRefused(40*time.Millisecond, 30004, 8082), // evicts 8080's aggregate: its update
				occRefused(50*time.Millisecond, 30005, 8080), // a new series, evicts 8081's
				occRefused(60*time.Millisecond, 30006, 8080),
				{tick: time.Minute},
			},
			want:    map[string]int{refusedKey8080: 4, refusedKey8081: 2, refusedKey8082: 1},
			records: 7,
		},
		{
			name: "flush",
			steps: []occStep{
				occRefused(0, 30000, 8080), occRefused(time.Second, 30001, 8080), occRefused(2*time.Second, 30002, 8081),
				{flush: true},
			},
			want:    map[string]int{refusedKey8080: 2, refusedKey8081: 1},
			records: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, r := newEngine(t, tt.mod)
			for _, s := range tt.steps {
				observeAll(e, s.sigs)
				if s.tick > 0 {
					e.Tick(t0.Add(s.tick))
				}
				if s.flush {
					e.Flush()
				}
			}
			if len(r.ds) != tt.records {
				t.Errorf("%d records, want %d: %v", len(r.ds), tt.records, keys(r.ds))
			}
			checkNew(t, r.ds, tt.want)
			st := e.Stats()
			if st.AggregatesReopened != tt.reopened {
				t.Errorf("%d windows reopened, want %d", st.AggregatesReopened, tt.reopened)
			}
			total := 0
			for _, n := range tt.want {
				total += n
			}
			if got := occurrences(st); got != total {
				t.Errorf("engine counted %d occurrences (%+v), want %d", got, st, total)
			}
		})
	}
}

// A random mix of refused connects and SYNs retried past the window, with
// irregular ticks: the sum of New per cause is still the number of
// connections that failed with that cause.
func TestNewCountsEachOccurrenceOnceRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var reopened, updates uint64
	for round := range 20 {
		e, r := newEngine(t, func(c *Config) { c.Window = 5 * time.Second })
		want := map[string]int{}
		var at time.Duration
		var pending []signal.Signal // retransmits of failing SYNs, in time order
		sport := uint16(20000)
		for range 300 {
			at += time.Duration(rng.IntN(800)) * time.Millisecond
			// Retransmits due by now go first, keeping time order.
			for len(pending) > 0 && !pending[0].Time.After(t0.Add(at)) {
				e.Observe(pending[0])
				pending = pending[1:]
			}
			sport++
			switch port := uint16(8080 + rng.IntN(3)); rng.IntN(4) {
			case 0: // a SYN dropped and retried for up to ~12 s
				f := tcpFlow(sport, 5432)
				e.Observe(occDrop(f, at))
				var retries []signal.Signal
				for i, d := 1, time.Second; i <= 1+rng.IntN(4); i, d = i+1, d*2 {
					retries = append(retries, synRetransmit(f, at+d, uint32(i)))
				}
				pending = mergeByTime(pending, retries)
				want["syn_dropped/netfilter_drop/10.0.0.2:5432/netns:4098"]++
			default:
				observeAll(e, refusedClosedPort(t0.Add(at), sport, port))
				want[refusedKeyFor(port)]++
			}
			if rng.IntN(3) == 0 {
				e.Tick(t0.Add(at))
			}
		}
		for _, s := range pending {
			e.Observe(s)
		}
		e.Tick(t0.Add(at + time.Hour))
		t.Run("", func(t *testing.T) {
			checkNew(t, r.ds, want)
			total := 0
			for _, n := range want {
				total += n
			}
			st := e.Stats()
			if occurrences(st) != total || st.Invalid != 0 {
				t.Errorf("round %d: engine counted %d occurrences, want %d (%+v)", round, occurrences(st), total, st)
			}
			reopened += st.AggregatesReopened
			updates += st.AggregateUpdates
		})
	}
	// The mix must exercise what it is about.
	if reopened == 0 || updates == 0 {
		t.Errorf("%d windows reopened, %d updates over every round: the scenario lost its point", reopened, updates)
	}
	t.Logf("%d windows reopened, %d updates", reopened, updates)
}

func refusedKeyFor(port uint16) string {
	switch port {
	case 8080:
		return refusedKey8080
	case 8081:
		return refusedKey8081
	}
	return refusedKey8082
}

// mergeByTime merges two signal lists sorted by time.
func mergeByTime(a, b []signal.Signal) []signal.Signal {
	out := make([]signal.Signal, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if b[0].Time.Before(a[0].Time) {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	return append(append(out, a...), b...)
}
