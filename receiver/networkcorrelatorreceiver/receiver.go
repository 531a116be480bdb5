package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/receiver"
	"go.uber.org/zap"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/metadata"
)

const (
	// tickInterval is how often the engine's clock advances: with the kernel
	// source every 250 ms of wall time, with a replay whenever the
	// recording's clock has moved on by as much. It bounds how late a
	// deferred decision or a closed window is reported.
	tickInterval = 250 * time.Millisecond
	// signalQueue is the buffer between the source and the correlator; when
	// it is full the source waits (the kernel ring buffer then fills and the
	// kernel counts lost signals, it never blocks).
	signalQueue = 4096
	// maxBatch bounds how many queued signals are correlated before the
	// diagnoses they produced are handed to the pipeline.
	maxBatch = 512
	// replayHorizon (beyond the correlation window) is how far past the
	// last recorded signal the engine's clock is moved when a recording
	// ends, so every deferred decision, window and flow state closes.
	replayHorizon = time.Hour
)

// networkReceiver is the one instance behind the logs and metrics pipelines
// of a networkcorrelator receiver ID.
type networkReceiver struct {
	cfg      *Config
	set      receiver.Settings
	deps     deps
	hostName string

	// Set at creation (before Start), read by the pipeline goroutine.
	nextLogs    consumer.Logs
	nextMetrics consumer.Metrics
	telemetry   *metadata.TelemetryBuilder

	src         signalSource
	stopCluster func()
	cancel      context.CancelFunc
	wg          sync.WaitGroup
}

func newReceiver(cfg *Config, set receiver.Settings, d deps) (*networkReceiver, error) {
	tb, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, fmt.Errorf("networkcorrelator: internal telemetry: %w", err)
	}
	host, err := os.Hostname()
	if err != nil {
		set.Logger.Warn("Cannot read the host name; diagnoses about the host carry no host.name", zap.Error(err))
	}
	return &networkReceiver{cfg: cfg, set: set, deps: d, hostName: host, telemetry: tb}, nil
}

// Start opens the source (for the kernel: loads and attaches the probes) and
// starts the pipeline. What the source needs and lacks (BTF, capabilities,
// a readable replay_file) is returned here, so the collector does not start.
func (r *networkReceiver) Start(ctx context.Context, host component.Host) error {
	src, err := r.deps.openSource(r.cfg, r.set.Logger)
	if err != nil {
		return fmt.Errorf("networkcorrelator: %s source: %w", r.cfg.Source, err)
	}
	p := &pipeline{
		r:        r,
		src:      src,
		recorded: r.cfg.Source == SourceReplay,
		mb: metadata.NewMetricsBuilder(r.cfg.MetricsBuilderConfig, r.set,
			metadata.WithStartTime(pcommon.NewTimestampFromTime(time.Now()))),
		diagnoses: make(map[diagnosis.Pattern]int64),
		failures:  make(map[diagnosis.Pattern]int64),
	}
	var cluster pattern.Cluster
	if r.cfg.Kubernetes.EnableK8sMetadata {
		// Waits at most kubernetes.sync_timeout; an unreachable API server
		// is not an error: diagnoses then say the context is missing.
		c, stop, err := r.deps.startCluster(ctx, r.cfg, r.set.Logger)
		if err != nil {
			return errors.Join(fmt.Errorf("networkcorrelator: %w", err), src.Close())
		}
		cluster, r.stopCluster = c, stop
	}
	eng, err := r.deps.newCorrelator(r.cfg, cluster, p.emit)
	if err != nil {
		r.shutdownCluster()
		return errors.Join(fmt.Errorf("networkcorrelator: %w", err), src.Close())
	}
	p.eng = eng
	r.src = src

	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	signals := make(chan signal.Signal, signalQueue)
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		defer close(signals)
		err := src.Run(ctx, func(s signal.Signal) {
			select {
			case signals <- s:
			case <-ctx.Done():
			}
		})
		if err != nil && ctx.Err() == nil {
			// Without its source the receiver is useless: say so loudly.
			err = fmt.Errorf("networkcorrelator: %s source stopped: %w", r.cfg.Source, err)
			r.set.Logger.Error("Signal source failed", zap.Error(err))
			componentstatus.ReportStatus(host, componentstatus.NewFatalErrorEvent(err))
		}
	}()
	go func() {
		defer r.wg.Done()
		p.loop(ctx, signals)
	}()
	return nil
}

// Shutdown stops the pipeline and closes the source (detaching the probes).
// It is safe without a Start and after a failed one.
func (r *networkReceiver) Shutdown(ctx context.Context) error {
	r.telemetry.Shutdown()
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	var waitErr error
	select {
	case <-done:
	case <-ctx.Done():
		waitErr = fmt.Errorf("networkcorrelator: shutdown: %w", ctx.Err())
	}
	r.shutdownCluster()
	return errors.Join(waitErr, r.src.Close())
}

// shutdownCluster stops the Kubernetes informers, if they were started.
func (r *networkReceiver) shutdownCluster() {
	if r.stopCluster != nil {
		r.stopCluster()
		r.stopCluster = nil
	}
}

// pipeline is the state of the goroutine that owns the correlator: the
// engine is single-goroutine, so signals, ticks and metric collection are
// all serialised here.
type pipeline struct {
	r        *networkReceiver
	src      signalSource
	eng      correlator
	recorded bool // replay: the engine's clock is the recording's

	nextTick time.Time // replay: when the recording's clock next ticks
	last     time.Time // replay: latest signal time

	pending []diagnosis.Diagnosis
	// isUpdate[i]: pending[i] is a window update of a cause already reported.
	isUpdate    []bool
	seenUpdates uint64

	received  [256]int64                  // by signal.Kind
	diagnoses map[diagnosis.Pattern]int64 // log records
	// failures: occurrences, each counted once (the New of each record).
	failures map[diagnosis.Pattern]int64
	mb       *metadata.MetricsBuilder
}

// emit is called by the engine, synchronously, for each diagnosis.
func (p *pipeline) emit(d diagnosis.Diagnosis) {
	p.pending = append(p.pending, d)
	// The engine counts an update before emitting it.
	updates := p.eng.Stats().AggregateUpdates
	p.isUpdate = append(p.isUpdate, updates > p.seenUpdates)
	p.seenUpdates = updates
}

func (p *pipeline) loop(ctx context.Context, signals <-chan signal.Signal) {
	var tick <-chan time.Time
	if !p.recorded {
		t := time.NewTicker(tickInterval)
		defer t.Stop()
		tick = t.C
	}
	collect := time.NewTicker(p.r.cfg.CollectionInterval)
	defer collect.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case s, ok := <-signals:
			// Correlate what is queued, then hand over its diagnoses at once.
			for n := 1; ok; n++ {
				p.observe(s)
				if n >= maxBatch {
					break
				}
				select {
				case s, ok = <-signals:
					continue
				default:
				}
				break
			}
			if !ok {
				signals = nil
				p.sourceDone(ctx)
			}
			p.flush(ctx)
		case now := <-tick:
			p.eng.Tick(now)
			p.flush(ctx)
		case <-collect.C:
			p.emitMetrics(ctx)
		}
	}
}

func (p *pipeline) observe(s signal.Signal) {
	p.received[s.Kind]++
	if p.recorded {
		// Tick on the recording's clock as the live source does on the
		// wall clock (same rule as correlate.Replay).
		if p.nextTick.IsZero() {
			p.nextTick = s.Time.Add(tickInterval)
		}
		if !s.Time.Before(p.nextTick) {
			p.eng.Tick(s.Time)
			p.nextTick = s.Time.Add(tickInterval)
		}
		if s.Time.After(p.last) {
			p.last = s.Time
		}
	}
	p.eng.Observe(s)
}

// sourceDone: the source has no more signals. For a recording, move its
// clock past everything still open and report at once.
func (p *pipeline) sourceDone(ctx context.Context) {
	if !p.recorded {
		return
	}
	if !p.last.IsZero() {
		p.eng.Tick(p.last.Add(p.r.cfg.CorrelationWindow + replayHorizon))
	}
	p.flush(ctx)
	p.emitMetrics(ctx)
}

// flush hands the diagnoses produced so far to the logs pipeline, in one
// plog.Logs.
func (p *pipeline) flush(ctx context.Context) {
	if len(p.pending) == 0 {
		return
	}
	now := time.Now()
	for i := range p.pending {
		d := &p.pending[i]
		p.diagnoses[d.Pattern]++
		p.failures[d.Pattern] += int64(d.New)
	}
	if !p.recorded {
		p.recordDelays(ctx, now)
	}
	if next := p.r.nextLogs; next != nil {
		logs := diagnosesToLogs(p.pending, logsMeta{
			HostName: p.r.hostName,
			Version:  p.r.set.BuildInfo.Version,
			Observed: now,
		})
		if err := next.ConsumeLogs(ctx, logs); err != nil {
			p.r.set.Logger.Error("The logs pipeline refused diagnoses; they are dropped",
				zap.Int("diagnoses", len(p.pending)), zap.Error(err))
		}
	}
	clear(p.pending)
	p.pending = p.pending[:0]
	p.isUpdate = p.isUpdate[:0]
}

// recordDelays feeds the latency histograms with the first reports of the
// batch (updates are emitted when a window closes, by design late).
func (p *pipeline) recordDelays(ctx context.Context, now time.Time) {
	for i := range p.pending {
		if p.isUpdate[i] {
			continue
		}
		d := &p.pending[i]
		p.r.telemetry.NetworkcorrelatorDiagnosisDelay.Record(ctx, max(now.Sub(d.LastSeen), 0).Seconds())
		p.r.telemetry.NetworkcorrelatorTimeToDiagnosis.Record(ctx, max(now.Sub(d.FirstSeen), 0).Seconds())
	}
}

// emitMetrics reports the cumulative counters and the engine's gauges.
func (p *pipeline) emitMetrics(ctx context.Context) {
	next := p.r.nextMetrics
	if next == nil {
		return
	}
	now := pcommon.NewTimestampFromTime(time.Now())
	patterns := make([]diagnosis.Pattern, 0, len(p.diagnoses))
	for pat := range p.diagnoses {
		patterns = append(patterns, pat)
	}
	slices.Sort(patterns)
	for _, pat := range patterns {
		p.mb.RecordNetworkcorrelatorDiagnosesDataPoint(now, p.diagnoses[pat], string(pat))
		p.mb.RecordNetworkcorrelatorFailuresDataPoint(now, p.failures[pat], string(pat))
	}
	for kind, n := range p.received {
		if n > 0 {
			p.mb.RecordNetworkcorrelatorSignalsReceivedDataPoint(now, n, signal.Kind(kind).String())
		}
	}
	p.mb.RecordNetworkcorrelatorSignalsLostDataPoint(now, int64(p.src.Lost()))
	st := p.eng.Stats()
	p.mb.RecordNetworkcorrelatorFlowsTrackedDataPoint(now, int64(st.FlowsTracked))
	p.mb.RecordNetworkcorrelatorFlowsEvictedDataPoint(now, int64(st.Evicted))

	rb := p.mb.NewResourceBuilder()
	if p.r.hostName != "" {
		rb.SetHostName(p.r.hostName)
	}
	if err := next.ConsumeMetrics(ctx, p.mb.Emit(metadata.WithResource(rb.Emit()))); err != nil {
		p.r.set.Logger.Error("The metrics pipeline refused the receiver's metrics", zap.Error(err))
	}
}
