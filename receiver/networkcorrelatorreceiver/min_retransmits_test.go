package networkcorrelatorreceiver

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

// min_retransmits moves the blackhole decision: the project's recording of
// a peer that stops answering (data retransmitted at +1.2, 1.6, 2.4, 4.0,
// 7.2 and 13.6 s, the kernel's ETIMEDOUT close at +40 s) replayed through
// the receiver's real wiring.
func TestMinRetransmitsMovesTheDecision(t *testing.T) {
	const fixture = "blackhole_no_local_drop.jsonl"
	start := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	tests := []struct {
		min  int
		want time.Duration // the first report's LastSeen: the deciding signal
	}{
		// A data flow's first timeout is not kept (single losses are
		// common): the second decides.
		{1, 1600 * time.Millisecond},
		{3, 2400 * time.Millisecond}, // the default
		{5, 7200 * time.Millisecond},
		{15, 40 * time.Second}, // never reached: the ETIMEDOUT close decides
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("min_retransmits=%d", tt.min), func(t *testing.T) {
			d := defaultDeps()
			var mu sync.Mutex
			var first *diagnosis.Diagnosis
			newCorrelator := d.newCorrelator
			d.newCorrelator = func(cfg *Config, cluster pattern.Cluster, emit func(diagnosis.Diagnosis)) (correlator, error) {
				return newCorrelator(cfg, cluster, func(dg diagnosis.Diagnosis) {
					mu.Lock()
					if first == nil && dg.Pattern == diagnosis.PatternBlackhole {
						first = &dg
					}
					mu.Unlock()
					emit(dg)
				})
			}
			cfg := replayConfig(filepath.Join("..", "..", "testdata", "replay", fixture))
			cfg.MinRetransmits = tt.min
			logs, metrics := new(consumertest.LogsSink), new(consumertest.MetricsSink)
			started(t, newFactory(d), cfg, logs, metrics, componenttest.NewNopHost())
			waitFor(t, "the end-of-replay metrics", func() bool { return metrics.DataPointCount() > 0 })
			mu.Lock()
			defer mu.Unlock()
			if first == nil {
				t.Fatalf("min_retransmits %d: no blackhole diagnosis", tt.min)
			}
			if got := first.LastSeen.Sub(start); got != tt.want {
				t.Errorf("min_retransmits %d: first report at +%v, want +%v", tt.min, got, tt.want)
			}
		})
	}
}
