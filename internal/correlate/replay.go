package correlate

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/network-correlator/network-correlator/internal/replay"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Replay feeds a JSON-lines recording (see package replay) through e. It
// calls Tick whenever the signals' clock has advanced by tick (as the live
// source does with its wall clock), and Flush at the end. It stops at the
// first malformed line and returns its error (line and field).
func Replay(r io.Reader, e *Engine, tick time.Duration) error {
	if tick <= 0 {
		return fmt.Errorf("replay: tick must be > 0, got %v", tick)
	}
	dec := replay.NewDecoder(r)
	var next time.Time
	for {
		var s signal.Signal
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if next.IsZero() {
			next = s.Time.Add(tick)
		}
		if !s.Time.Before(next) {
			e.Tick(s.Time)
			next = s.Time.Add(tick)
		}
		e.Observe(s)
	}
	e.Flush()
	return nil
}
