package networkcorrelatorreceiver

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"

	"github.com/network-correlator/network-correlator/internal/replay"
	"github.com/network-correlator/network-correlator/internal/signal"
	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/metadata"
)

// BenchmarkReplayThroughReceiver measures the whole receiver on a recording
// of a storm of refused connections to one server port (4 signals each,
// aggregated into one cause): decode -> queue -> correlator -> pdata ->
// consumer. Reports signals/s.
func BenchmarkReplayThroughReceiver(b *testing.B) {
	storm := refusedStorm(b, 25000)
	path := filepath.Join(b.TempDir(), "storm.jsonl")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	enc := replay.NewEncoder(w)
	for _, s := range storm {
		if err := enc.Encode(s); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	runStorm(b, NewFactory(), replayConfig(path), len(storm))
}

// BenchmarkPipeline is the same storm without the JSON decoding: decoded
// signals -> queue -> correlator -> pdata -> consumer, on the recording's
// clock. It is the receiver's own cost on top of the engine's.
func BenchmarkPipeline(b *testing.B) {
	storm := refusedStorm(b, 25000)
	d := defaultDeps()
	d.openSource = func(*Config, *zap.Logger) (signalSource, error) {
		return &sliceSource{signals: storm}, nil
	}
	runStorm(b, newFactory(d), replayConfig("in-memory"), len(storm))
}

// sliceSource emits decoded signals and ends, like a recording.
type sliceSource struct{ signals []signal.Signal }

func (s *sliceSource) Run(_ context.Context, emit func(signal.Signal)) error {
	for _, sig := range s.signals {
		emit(sig)
	}
	return nil
}
func (*sliceSource) Lost() uint64 { return 0 }
func (*sliceSource) Close() error { return nil }

// refusedStorm repeats the refused connect of lifecycle.jsonl from conns
// client ports, 1 ms apart.
func refusedStorm(b *testing.B, conns int) []signal.Signal {
	base := decodeFile(b, filepath.Join("testdata", "replay", "lifecycle.jsonl"))
	out := make([]signal.Signal, 0, conns*len(base))
	for i := range conns {
		for _, s := range base {
			s.Time = s.Time.Add(time.Duration(i) * time.Millisecond)
			if s.Flow.SrcPort == 9090 { // the server's RST
				s.Flow.DstPort = uint16(10000 + i%50000)
			} else {
				s.Flow.SrcPort = uint16(10000 + i%50000)
			}
			out = append(out, s)
		}
	}
	return out
}

func runStorm(b *testing.B, fac receiver.Factory, cfg *Config, signals int) {
	conns := int64(signals / 4)
	b.ResetTimer()
	for range b.N {
		logs, metrics := new(consumertest.LogsSink), new(consumertest.MetricsSink)
		set := receivertest.NewNopSettings(metadata.Type)
		lr, _ := fac.CreateLogs(context.Background(), set, cfg, logs)
		mr, _ := fac.CreateMetrics(context.Background(), set, cfg, metrics)
		if err := lr.Start(context.Background(), componenttest.NewNopHost()); err != nil {
			b.Fatal(err)
		}
		for metrics.DataPointCount() == 0 {
			time.Sleep(time.Millisecond)
		}
		_ = mr.Shutdown(context.Background())
		if got := lastPoints(metrics)["networkcorrelator.signals.received"]["state_change"]; got != conns {
			b.Fatalf("%d connection closes seen, want %d", got, conns)
		}
		if logs.LogRecordCount() == 0 {
			b.Fatal("no diagnosis")
		}
	}
	b.ReportMetric(float64(signals*b.N)/b.Elapsed().Seconds(), "signals/s")
}
