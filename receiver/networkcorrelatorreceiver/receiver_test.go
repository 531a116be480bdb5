package networkcorrelatorreceiver

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/replay"
	"github.com/network-correlator/network-correlator/internal/signal"
	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/metadata"
	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/metadatatest"
)

// started creates the logs and metrics receivers of one config from f,
// starts them and shuts them down at the end of the test.
func started(t *testing.T, f receiver.Factory, cfg *Config, logs consumer.Logs, metrics consumer.Metrics, host component.Host) {
	t.Helper()
	set := receivertest.NewNopSettings(metadata.Type)
	lr, err := f.CreateLogs(context.Background(), set, cfg, logs)
	if err != nil {
		t.Fatal(err)
	}
	mr, err := f.CreateMetrics(context.Background(), set, cfg, metrics)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []component.Component{lr, mr} {
		if err := c.Start(context.Background(), host); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, c := range []component.Component{lr, mr} {
			if err := c.Shutdown(context.Background()); err != nil {
				t.Error(err)
			}
		}
	})
}

func replayConfig(file string) *Config {
	cfg := createDefaultConfig()
	cfg.Source = SourceReplay
	cfg.ReplayFile = file
	// Metrics come once, when the recording ends.
	cfg.CollectionInterval = time.Hour
	return cfg
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// records flattens every log record received, with its resource attributes.
type record struct {
	lr  plog.LogRecord
	res map[string]any
}

func records(sink *consumertest.LogsSink) []record {
	var out []record
	for _, l := range sink.AllLogs() {
		for _, rl := range l.ResourceLogs().All() {
			for _, sl := range rl.ScopeLogs().All() {
				for _, lr := range sl.LogRecords().All() {
					out = append(out, record{lr: lr, res: rl.Resource().Attributes().AsRaw()})
				}
			}
		}
	}
	return out
}

// lastPoints returns, per metric name, the data points of the last batch
// the sink received, keyed by their single attribute value ("" if none).
func lastPoints(sink *consumertest.MetricsSink) map[string]map[string]int64 {
	all := sink.AllMetrics()
	out := map[string]map[string]int64{}
	if len(all) == 0 {
		return out
	}
	for _, rm := range all[len(all)-1].ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				var dps pmetric.NumberDataPointSlice
				switch m.Type() {
				case pmetric.MetricTypeSum:
					dps = m.Sum().DataPoints()
				case pmetric.MetricTypeGauge:
					dps = m.Gauge().DataPoints()
				default:
					continue
				}
				pts := map[string]int64{}
				for _, dp := range dps.All() {
					key := ""
					for _, v := range dp.Attributes().All() {
						key = v.AsString()
					}
					pts[key] = dp.IntValue()
				}
				out[m.Name()] = pts
			}
		}
	}
	return out
}

// A recording replayed through the real correlator: the same path as the
// kernel source, end to end to the consumers.
func TestReplayThroughCorrelator(t *testing.T) {
	hostName, _ := os.Hostname()
	tests := []struct {
		file         string
		wantPatterns []string
		wantSignals  map[string]int64
		serverPort   int64
		errorType    string
	}{
		{
			file:         "lifecycle.jsonl",
			wantPatterns: []string{"connection_refused"},
			wantSignals:  map[string]int64{"drop": 1, "reset_sent": 1, "reset_received": 1, "state_change": 1},
			serverPort:   9090,
			errorType:    "ECONNREFUSED",
		},
		{
			file:         "syn_dropped.jsonl",
			wantPatterns: []string{"syn_dropped"},
			wantSignals:  map[string]int64{"drop": 4, "retransmit": 3},
			serverPort:   443,
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			logs, metrics := new(consumertest.LogsSink), new(consumertest.MetricsSink)
			start := time.Now()
			started(t, NewFactory(), replayConfig(filepath.Join("testdata", "replay", tt.file)), logs, metrics, componenttest.NewNopHost())
			waitFor(t, "the end-of-replay metrics", func() bool { return metrics.DataPointCount() > 0 })
			// The recording spans seconds of recorded time; the replay's
			// clock is the recording's, so it is done long before that.
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("replay took %v: it must not wait for recorded time", d)
			}

			recs := records(logs)
			if len(recs) == 0 {
				t.Fatal("no diagnosis log records")
			}
			seen := map[string]bool{}
			for _, r := range recs {
				attrs := r.lr.Attributes().AsRaw()
				t.Logf("%s: %s (count %v)", attrs["networkcorrelator.pattern"], r.lr.Body().Str(), attrs["networkcorrelator.count"])
				if r.lr.EventName() != EventName {
					t.Errorf("EventName = %q", r.lr.EventName())
				}
				seen[attrs["networkcorrelator.pattern"].(string)] = true
				if got := attrs["server.port"]; got != tt.serverPort {
					t.Errorf("server.port = %v, want %d", got, tt.serverPort)
				}
				if tt.errorType != "" && attrs["error.type"] != tt.errorType {
					t.Errorf("error.type = %v, want %s", attrs["error.type"], tt.errorType)
				}
				if r.res["host.name"] != hostName {
					t.Errorf("resource %v, want host.name %q", r.res, hostName)
				}
			}
			for _, p := range tt.wantPatterns {
				if !seen[p] {
					t.Errorf("no %s diagnosis; got %v", p, seen)
				}
			}
			if len(seen) != len(tt.wantPatterns) {
				t.Errorf("patterns %v, want exactly %v", seen, tt.wantPatterns)
			}

			pts := lastPoints(metrics)
			for kind, n := range tt.wantSignals {
				if got := pts["networkcorrelator.signals.received"][kind]; got != n {
					t.Errorf("signals.received{%s} = %d, want %d", kind, got, n)
				}
			}
			if got := len(pts["networkcorrelator.signals.received"]); got != len(tt.wantSignals) {
				t.Errorf("signals.received has %d kinds, want %d: %v", got, len(tt.wantSignals), pts["networkcorrelator.signals.received"])
			}
			var total int64
			for _, n := range pts["networkcorrelator.diagnoses"] {
				total += n
			}
			if total != int64(len(recs)) {
				t.Errorf("diagnoses metric %v, %d log records", pts["networkcorrelator.diagnoses"], len(recs))
			}
			if got, ok := pts["networkcorrelator.signals.lost"][""]; !ok || got != 0 {
				t.Errorf("signals.lost = %d (present %v), want 0", got, ok)
			}
			// The recording's end moved the clock past every open state.
			if got := pts["networkcorrelator.flows.tracked"][""]; got != 0 {
				t.Errorf("flows.tracked = %d after the replay ended", got)
			}
		})
	}
}

// countingOpener wraps the real opener to count Opens.
func countingOpener(n *atomic.Int32) deps {
	d := defaultDeps()
	open := d.openSource
	d.openSource = func(cfg *Config, logger *zap.Logger) (signalSource, error) {
		n.Add(1)
		return open(cfg, logger)
	}
	return d
}

func TestOneInstanceServesBothPipelines(t *testing.T) {
	var opens atomic.Int32
	f := newFactory(countingOpener(&opens))
	cfg := replayConfig(filepath.Join("testdata", "replay", "lifecycle.jsonl"))
	set := receivertest.NewNopSettings(metadata.Type)
	lr, err := f.CreateLogs(context.Background(), set, cfg, consumertest.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	mr, err := f.CreateMetrics(context.Background(), set, cfg, consumertest.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if lr != mr {
		t.Fatal("the logs and metrics pipelines got different receivers")
	}
	other, err := f.CreateLogs(context.Background(), set, replayConfig(cfg.ReplayFile), consumertest.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if other == lr {
		t.Fatal("a second receiver ID (another config) shares the instance")
	}
	for _, c := range []component.Component{lr, mr} {
		if err := c.Start(context.Background(), componenttest.NewNopHost()); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []component.Component{lr, mr, other} {
		if err := c.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := opens.Load(); n != 1 {
		t.Fatalf("source opened %d times, want 1", n)
	}
}

// fakeSource is a live source without a kernel: it emits its signals, then
// waits for ctx like the probes do.
type fakeSource struct {
	signals []signal.Signal
	lost    uint64
	runErr  error
	closed  atomic.Bool
}

func (f *fakeSource) Run(ctx context.Context, emit func(signal.Signal)) error {
	for _, s := range f.signals {
		emit(s)
	}
	if f.runErr != nil {
		return f.runErr
	}
	<-ctx.Done()
	return ctx.Err()
}
func (f *fakeSource) Lost() uint64 { return f.lost }
func (f *fakeSource) Close() error { f.closed.Store(true); return nil }

func fakeDeps(src signalSource, openErr error) deps {
	d := defaultDeps()
	d.openSource = func(*Config, *zap.Logger) (signalSource, error) {
		if openErr != nil {
			return nil, openErr
		}
		return src, nil
	}
	return d
}

// refusedNow is a connection_refused sequence happening now (a live source's
// signals carry wall-clock times).
func refusedNow(t *testing.T) []signal.Signal {
	now := time.Now()
	src := decodeFile(t, filepath.Join("testdata", "replay", "lifecycle.jsonl"))
	base := src[0].Time
	for i := range src {
		src[i].Time = now.Add(src[i].Time.Sub(base))
	}
	return src
}

func decodeFile(t testing.TB, path string) []signal.Signal {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []signal.Signal
	dec := replay.NewDecoder(f)
	for {
		var s signal.Signal
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
}

func TestLiveSourceMetrics(t *testing.T) {
	src := &fakeSource{signals: refusedNow(t), lost: 7}
	cfg := createDefaultConfig()
	cfg.CollectionInterval = 20 * time.Millisecond
	logs, metrics := new(consumertest.LogsSink), new(consumertest.MetricsSink)
	started(t, newFactory(fakeDeps(src, nil)), cfg, logs, metrics, componenttest.NewNopHost())

	waitFor(t, "the connection_refused diagnosis", func() bool { return logs.LogRecordCount() > 0 })
	waitFor(t, "metrics counting it", func() bool {
		return lastPoints(metrics)["networkcorrelator.diagnoses"]["connection_refused"] == 1
	})
	pts := lastPoints(metrics)
	if got := pts["networkcorrelator.failures"]["connection_refused"]; got != 1 {
		t.Errorf("failures{connection_refused} = %d, want 1", got)
	}
	if got := pts["networkcorrelator.signals.lost"][""]; got != 7 {
		t.Errorf("signals.lost = %d, want the source's 7", got)
	}
	if got := pts["networkcorrelator.signals.received"]["state_change"]; got != 1 {
		t.Errorf("signals.received{state_change} = %d, want 1", got)
	}
	if _, ok := pts["networkcorrelator.flows.tracked"][""]; !ok {
		t.Error("no flows.tracked gauge")
	}
	if _, ok := pts["networkcorrelator.flows.evicted"][""]; !ok {
		t.Error("no flows.evicted counter")
	}
}

func TestStartErrors(t *testing.T) {
	missingCap := errors.New("probe: missing capability: the probes need CAP_BPF and CAP_PERFMON")
	tests := []struct {
		name    string
		cfg     *Config
		deps    deps
		wantErr string
	}{
		{
			name:    "kernel source cannot load",
			cfg:     createDefaultConfig(),
			deps:    fakeDeps(nil, missingCap),
			wantErr: "networkcorrelator: kernel source: probe: missing capability: the probes need CAP_BPF and CAP_PERFMON",
		},
		{
			name:    "replay file missing",
			cfg:     replayConfig(filepath.Join("testdata", "replay", "missing.jsonl")),
			deps:    defaultDeps(),
			wantErr: "networkcorrelator: replay source: replay_file: open testdata/replay/missing.jsonl: no such file or directory",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := newFactory(tt.deps).CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), tt.cfg, consumertest.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			err = r.Start(context.Background(), componenttest.NewNopHost())
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Start() = %v\nwant %s", err, tt.wantErr)
			}
			if err := r.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown after a failed Start: %v", err)
			}
		})
	}
}

func TestCorrelatorErrorClosesSource(t *testing.T) {
	src := &fakeSource{}
	d := fakeDeps(src, nil)
	d.newCorrelator = func(*Config, pattern.Cluster, func(diagnosis.Diagnosis)) (correlator, error) {
		return nil, errors.New("correlator config: max_flows must be > 0, got 0")
	}
	r, err := newFactory(d).CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), createDefaultConfig(), consumertest.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background(), componenttest.NewNopHost()); err == nil || !strings.Contains(err.Error(), "max_flows") {
		t.Fatalf("Start() = %v", err)
	}
	if !src.closed.Load() {
		t.Error("the source was left open")
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// statusHost records the status events the receiver reports.
type statusHost struct {
	component.Host
	mu     sync.Mutex
	events []*componentstatus.Event
}

func (h *statusHost) Report(ev *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

func (h *statusHost) fatal() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range h.events {
		if ev.Status() == componentstatus.StatusFatalError {
			return ev.Err()
		}
	}
	return nil
}

func TestSourceFailureIsFatal(t *testing.T) {
	tests := []struct {
		name    string
		deps    deps
		cfg     *Config
		wantErr string
	}{
		{
			name:    "kernel read error",
			deps:    fakeDeps(&fakeSource{runErr: errors.New("probe: reading the ring buffer: EIO")}, nil),
			cfg:     createDefaultConfig(),
			wantErr: "networkcorrelator: kernel source stopped: probe: reading the ring buffer: EIO",
		},
		{
			// A line longer than the codec's limit stops the reading itself.
			name:    "replay line too long",
			deps:    defaultDeps(),
			cfg:     replayConfig(writeTemp(t, `{"time":"2026-11-26T02:00:00Z","kind":"drop","comm":"`+strings.Repeat("x", 70000)+`"}`+"\n")),
			wantErr: "networkcorrelator: replay source stopped: replay_file ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := &statusHost{Host: componenttest.NewNopHost()}
			started(t, newFactory(tt.deps), tt.cfg, consumertest.NewNop(), consumertest.NewNop(), host)
			waitFor(t, "a fatal status", func() bool { return host.fatal() != nil })
			if err := host.fatal(); !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("fatal error %q, want prefix %q", err, tt.wantErr)
			}
		})
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "recording.jsonl")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A damaged recording (a line cut short, a typo) loses only its bad lines.
func TestReplaySkipsMalformedLines(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "replay", "lifecycle.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\n")
	damaged := strings.Join(lines[:4], "") + `{"time":"2026-11-26T02:00:00.00011Z","kind":"drop","prot` + "\n" +
		`{"time":"2026-11-26T02:00:00.00011Z","kind":"dorp"}` + "\n" + strings.Join(lines[4:], "")
	logs, metrics := new(consumertest.LogsSink), new(consumertest.MetricsSink)
	started(t, NewFactory(), replayConfig(writeTemp(t, damaged)), logs, metrics, componenttest.NewNopHost())
	waitFor(t, "the end-of-replay metrics", func() bool { return metrics.DataPointCount() > 0 })
	if got := lastPoints(metrics)["networkcorrelator.diagnoses"]["connection_refused"]; got != 1 {
		t.Fatalf("connection_refused diagnoses = %d, want 1 despite two bad lines", got)
	}
	var total int64
	for _, n := range lastPoints(metrics)["networkcorrelator.signals.received"] {
		total += n
	}
	if total != 4 {
		t.Fatalf("%d signals received, want the 4 good lines", total)
	}
}

// A refusing logs pipeline loses those diagnoses, not the receiver.
func TestLogsPipelineErrorDoesNotStopReceiver(t *testing.T) {
	metrics := new(consumertest.MetricsSink)
	started(t, NewFactory(), replayConfig(filepath.Join("testdata", "replay", "lifecycle.jsonl")),
		consumertest.NewErr(errors.New("queue full")), metrics, componenttest.NewNopHost())
	waitFor(t, "the end-of-replay metrics", func() bool { return metrics.DataPointCount() > 0 })
	if got := lastPoints(metrics)["networkcorrelator.diagnoses"]["connection_refused"]; got != 1 {
		t.Fatalf("diagnoses = %d, want 1", got)
	}
}

// blockingLogs holds ConsumeLogs until its context ends (a stuck exporter).
type blockingLogs struct{ entered chan struct{} }

func (b *blockingLogs) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }
func (b *blockingLogs) ConsumeLogs(ctx context.Context, _ plog.Logs) error {
	close(b.entered)
	<-ctx.Done()
	return ctx.Err()
}

func TestShutdownWhileConsumerBlocks(t *testing.T) {
	b := &blockingLogs{entered: make(chan struct{})}
	f := NewFactory()
	r, err := f.CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type),
		replayConfig(filepath.Join("testdata", "replay", "lifecycle.jsonl")), b)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		t.Fatal(err)
	}
	<-b.entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a blocked consumer: %v", err)
	}
}

// shiftTo moves a recording so its last signal happens at end.
func shiftTo(sigs []signal.Signal, end time.Time) []signal.Signal {
	d := end.Sub(sigs[len(sigs)-1].Time)
	for i := range sigs {
		sigs[i].Time = sigs[i].Time.Add(d)
	}
	return sigs
}

// histogram returns the count and sum of a single-point histogram.
func histogram(t *testing.T, tt *componenttest.Telemetry, name string) (uint64, float64) {
	t.Helper()
	m, err := tt.GetMetric(name)
	if err != nil {
		return 0, 0
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok || len(h.DataPoints) != 1 {
		t.Fatalf("%s: unexpected data %#v", name, m.Data)
	}
	return h.DataPoints[0].Count, h.DataPoints[0].Sum
}

// The latency histograms count first reports only: a window update is late
// by design. A live source here replays signals stamped in the recent past.
func TestLatencyHistograms(t *testing.T) {
	now := time.Now()
	// A SYN drop whose deciding retransmit was 2 s ago and first drop 3 s
	// ago, then a refusal happening now.
	syn := shiftTo(decodeFile(t, filepath.Join("testdata", "replay", "syn_dropped.jsonl")), now.Add(-2*time.Second))
	sigs := append(syn, refusedNow(t)...)
	cfg := createDefaultConfig()
	cfg.CorrelationWindow = time.Second // the SYN drop's update comes at the next tick

	tt := componenttest.NewTelemetry()
	t.Cleanup(func() { _ = tt.Shutdown(context.Background()) })
	set := metadatatest.NewSettings(tt)
	logs := new(consumertest.LogsSink)
	r, err := newFactory(fakeDeps(&fakeSource{signals: sigs}, nil)).CreateLogs(context.Background(), set, cfg, logs)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Shutdown(context.Background()) })

	waitFor(t, "two first reports and the SYN drop's update", func() bool { return logs.LogRecordCount() == 3 })
	n, sum := histogram(t, tt, "otelcol_networkcorrelator_diagnosis_delay")
	if n != 2 {
		t.Fatalf("diagnosis_delay count = %d, want 2 (first reports only)", n)
	}
	// The SYN drop was decided by a retransmit ~4 s ago (at +1 s of a
	// recording ending 2 s ago), the refusal now.
	if sum < 3.9 || sum > 6 {
		t.Errorf("diagnosis_delay sum = %.3fs, want about 4s", sum)
	}
	n, sum = histogram(t, tt, "otelcol_networkcorrelator_time_to_diagnosis")
	if n != 2 || sum < 4.9 || sum > 7 {
		t.Errorf("time_to_diagnosis count %d sum %.3fs, want 2 and about 5s", n, sum)
	}
}
