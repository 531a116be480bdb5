package networkcorrelatorreceiver

import (
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// withPort moves a recorded connection to another client port (both
// directions) and shifts it by d.
func withPort(sigs []signal.Signal, clientPort uint16, serverPort uint16, d time.Duration) []signal.Signal {
	out := slices.Clone(sigs)
	for i := range out {
		out[i].Time = out[i].Time.Add(d)
		if out[i].Flow.SrcPort == serverPort {
			out[i].Flow.DstPort = clientPort
		} else {
			out[i].Flow.SrcPort = clientPort
		}
	}
	return out
}

// failureStorm: refused connects repeated in two windows, and a dropped SYN
// still retried after its window closed (the window reopens) while a second
// connection fails the same way. Returns the signals in time order and the
// failing connections per pattern.
func failureStorm(t *testing.T) ([]signal.Signal, map[string]int64) {
	refused := decodeFile(t, filepath.Join("testdata", "replay", "lifecycle.jsonl"))
	syn := decodeFile(t, filepath.Join("testdata", "replay", "syn_dropped.jsonl"))
	base := syn[0].Time
	refused = withPort(refused, refused[0].Flow.SrcPort, 9090, base.Sub(refused[0].Time)) // same clock

	var sigs []signal.Signal
	for i, at := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 40 * time.Second, 41 * time.Second} {
		sigs = append(sigs, withPort(refused, uint16(41000+i), 9090, at)...)
	}
	sigs = append(sigs, syn...) // connection A: SYN dropped, retried at +1, +2, +3 s
	// A retried again at +20 s, after its 10 s window closed: the window reopens.
	late := syn[len(syn)-2:]
	late = withPort(late, syn[0].Flow.SrcPort, 443, 17*time.Second)
	late[0].Retransmits = 4
	sigs = append(sigs, late...)
	// Connection B, the same cause, counted into the reopened window.
	sigs = append(sigs, withPort(syn, 42001, 443, 21*time.Second)...)
	slices.SortStableFunc(sigs, func(a, b signal.Signal) int { return a.Time.Compare(b.Time) })
	return sigs, map[string]int64{"connection_refused": 5, "syn_dropped": 2}
}

// networkcorrelator.failures counts every failure once: it is the sum of
// the New of the records handed over, and the number of failing connections,
// while networkcorrelator.diagnoses counts the records.
func TestFailuresMetric(t *testing.T) {
	sigs, want := failureStorm(t)
	d := fakeDeps(&sliceSource{signals: sigs}, nil)
	var mu sync.Mutex
	sumNew := map[string]int64{}
	records := map[string]int64{}
	newCorrelator := d.newCorrelator
	d.newCorrelator = func(cfg *Config, cluster pattern.Cluster, emit func(diagnosis.Diagnosis)) (correlator, error) {
		return newCorrelator(cfg, cluster, func(dg diagnosis.Diagnosis) {
			mu.Lock()
			sumNew[string(dg.Pattern)] += int64(dg.New)
			records[string(dg.Pattern)]++
			mu.Unlock()
			t.Logf("%s count %d new %d", dg.Pattern, dg.Count, dg.New)
			emit(dg)
		})
	}
	cfg := replayConfig("in-memory")
	cfg.CorrelationWindow = 10 * time.Second
	logs, metrics := new(consumertest.LogsSink), new(consumertest.MetricsSink)
	started(t, newFactory(d), cfg, logs, metrics, componenttest.NewNopHost())
	waitFor(t, "the end-of-replay metrics", func() bool { return metrics.DataPointCount() > 0 })

	mu.Lock()
	defer mu.Unlock()
	pts := lastPoints(metrics)
	for pat, n := range want {
		if got := pts["networkcorrelator.failures"][pat]; got != n || got != sumNew[pat] {
			t.Errorf("failures{%s} = %d, want %d failing connections = %d, the sum of New", pat, got, n, sumNew[pat])
		}
		if got := pts["networkcorrelator.diagnoses"][pat]; got != records[pat] {
			t.Errorf("diagnoses{%s} = %d, want %d records", pat, got, records[pat])
		}
		// Records are not failures: repeats aggregate into fewer records,
		// retries that only add evidence make more.
		if records[pat] == n {
			t.Errorf("%s: %d records for %d failures: the scenario does not tell them apart", pat, records[pat], n)
		}
	}
	if len(pts["networkcorrelator.failures"]) != len(want) {
		t.Errorf("failures %v, want patterns %v", pts["networkcorrelator.failures"], want)
	}
	if n := int64(logs.LogRecordCount()); n != records["connection_refused"]+records["syn_dropped"] {
		t.Errorf("%d log records, %v emitted", n, records)
	}
}

// Disabled in the config, the metric is not emitted; the others are.
func TestFailuresMetricDisabled(t *testing.T) {
	sigs, _ := failureStorm(t)
	cfg := replayConfig("in-memory")
	cfg.Metrics.NetworkcorrelatorFailures.Enabled = false
	logs, metrics := new(consumertest.LogsSink), new(consumertest.MetricsSink)
	started(t, newFactory(fakeDeps(&sliceSource{signals: sigs}, nil)), cfg, logs, metrics, componenttest.NewNopHost())
	waitFor(t, "the end-of-replay metrics", func() bool { return metrics.DataPointCount() > 0 })
	pts := lastPoints(metrics)
	if _, ok := pts["networkcorrelator.failures"]; ok {
		t.Errorf("networkcorrelator.failures emitted while disabled: %v", pts["networkcorrelator.failures"])
	}
	if len(pts["networkcorrelator.diagnoses"]) == 0 {
		t.Error("networkcorrelator.diagnoses missing")
	}
}
