package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/replay"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// signalSource is where signals come from: the kernel probes or a replayed
// recording. Run blocks, calling emit from one goroutine, until ctx is done
// or the source is exhausted; Lost counts signals the source had to drop.
type signalSource interface {
	Run(ctx context.Context, emit func(signal.Signal)) error
	Lost() uint64
	Close() error
}

// correlator is the engine seen from the receiver (package correlate).
// Observe and Tick are called from one goroutine.
type correlator interface {
	Observe(signal.Signal)
	Tick(now time.Time)
	Stats() correlatorStats
}

// correlatorStats are the engine counters the receiver exports as metrics.
type correlatorStats struct {
	FlowsTracked int
	Evicted      uint64
	// AggregateUpdates counts emitted window updates of an already reported
	// cause; it is incremented before the update is emitted.
	AggregateUpdates uint64
}

// deps are the receiver's edges to the kernel and the engine, swapped in
// tests (a fake source that needs no kernel, a failing open).
type deps struct {
	openSource    func(cfg *Config, logger *zap.Logger) (signalSource, error)
	newCorrelator func(cfg *Config, cluster pattern.Cluster, emit func(diagnosis.Diagnosis)) (correlator, error)
	// startCluster starts the Kubernetes context (kubernetes.enable_k8s_metadata);
	// stop ends its informers.
	startCluster func(ctx context.Context, cfg *Config, logger *zap.Logger) (c pattern.Cluster, stop func(), err error)
}

// openReplay opens a recording; a missing or unreadable file fails Start.
func openReplay(path string, logger *zap.Logger) (*replaySource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("replay_file: %w", err)
	}
	return &replaySource{f: f, path: path, logger: logger}, nil
}

// replaySource reads a JSON-lines recording (package replay's format).
type replaySource struct {
	f      *os.File
	path   string
	logger *zap.Logger
}

// maxLoggedBadLines bounds the warnings for a damaged recording.
const maxLoggedBadLines = 10

// Run emits every signal of the recording. A malformed line (a recording cut
// short mid-line, say) is skipped with a warning; an error that stops the
// reading itself ends Run with that error.
func (r *replaySource) Run(ctx context.Context, emit func(signal.Signal)) error {
	dec := replay.NewDecoder(r.f)
	var signals, bad int
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var s signal.Signal
		before := dec.Line()
		err := dec.Decode(&s)
		switch {
		case err == nil:
			signals++
			emit(s)
			continue
		case errors.Is(err, io.EOF):
			r.logger.Info("Replay finished", zap.String("replay_file", r.path),
				zap.Int("signals", signals), zap.Int("malformed_lines", bad))
			return nil
		}
		var lineErr *replay.Error
		if !errors.As(err, &lineErr) || dec.Line() == before {
			// No line was consumed: the reader itself failed (I/O, a line
			// over the length limit); retrying would repeat the error.
			return fmt.Errorf("replay_file %s: %w", r.path, err)
		}
		bad++
		if bad <= maxLoggedBadLines {
			r.logger.Warn("Skipping a malformed replay line", zap.String("replay_file", r.path), zap.Error(err))
		}
	}
}

// Lost is 0: a recording is read at the pace the correlator takes it.
func (*replaySource) Lost() uint64 { return 0 }

func (r *replaySource) Close() error { return r.f.Close() }
