//go:build linux

// Package livetest runs the real kernel probes into a correlation engine for
// a root lab test, as the receiver does (one goroutine observes and ticks the
// engine on the wall clock), and records the signals and diagnoses the test
// asks for so it can wait on them, inspect them and print them on failure.
package livetest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/probe"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// DefaultTick is how often the engine is ticked when Options.Tick is 0.
const DefaultTick = 50 * time.Millisecond

// Options configure Start. The zero value runs the default probes in the
// test's own namespace into an engine with a zero Config, feeding and
// recording everything.
type Options struct {
	Probe probe.Config
	// OpenIn opens the probes inside that namespace (nil: the test's own).
	// A lab's node stands for a node's host namespace: the ICMP parser
	// then watches the lab hosts' veth ports.
	OpenIn *lab.Host
	Engine correlate.Config
	// Feed selects the signals the engine observes; nil: all. Several
	// tests run probes at the same time and the probes see every
	// namespace of the host, so a test usually keeps its lab's.
	Feed func(*signal.Signal) bool
	// Record selects, among the fed signals, those Snapshot and Dump
	// return; nil: all fed.
	Record func(*signal.Signal) bool
	// Keep selects the diagnoses recorded; nil: all.
	Keep func(diagnosis.Diagnosis) bool
	// Tick is the engine's tick interval; 0: DefaultTick.
	Tick time.Duration
}

// Run is a started probe -> engine loop. Start stops it when the test ends.
type Run struct {
	mu      sync.Mutex
	signals []signal.Signal
	diags   []diagnosis.Diagnosis
	changed chan struct{} // a diagnosis was recorded
}

// Start opens the probes and runs them into a new engine until the test
// ends; every diagnosis must validate. It skips the test, naming what is
// missing, where the kernel probes cannot run.
func Start(t testing.TB, o Options) *Run {
	t.Helper()
	if err := probe.Check(); err != nil {
		t.Skipf("skipping: kernel probes unavailable: %v", err)
	}
	var pr *probe.Probe
	open := func() (err error) {
		pr, err = probe.Open(o.Probe)
		return err
	}
	var err error
	if o.OpenIn != nil {
		err = o.OpenIn.Do(open)
	} else {
		err = open()
	}
	if err != nil {
		t.Fatalf("open probes: %v", err)
	}
	for _, e := range pr.Unavailable() {
		t.Logf("probe unavailable: %v", e)
	}
	r := &Run{changed: make(chan struct{}, 1)}
	eng, err := correlate.New(o.Engine, func(d diagnosis.Diagnosis) {
		if err := d.Validate(); err != nil {
			t.Errorf("invalid diagnosis emitted: %v", err)
		}
		if o.Keep != nil && !o.Keep(d) {
			return
		}
		r.mu.Lock()
		r.diags = append(r.diags, d)
		r.mu.Unlock()
		select {
		case r.changed <- struct{}{}:
		default:
		}
	})
	if err != nil {
		pr.Close()
		t.Fatalf("correlate.New: %v", err)
	}
	every := o.Tick
	if every == 0 {
		every = DefaultTick
	}

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan signal.Signal, 4096)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(sigs) // ends the loop once Run has returned
		err := pr.Run(ctx, func(s signal.Signal) {
			if o.Feed == nil || o.Feed(&s) {
				sigs <- s
			}
		})
		if err != nil && ctx.Err() == nil {
			t.Errorf("probe run: %v", err)
		}
	}()
	go func() { // the engine is single-goroutine: signals and ticks both go through here
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case s, ok := <-sigs:
				if !ok {
					return
				}
				if o.Record == nil || o.Record(&s) {
					r.mu.Lock()
					r.signals = append(r.signals, s)
					r.mu.Unlock()
				}
				eng.Observe(s)
			case now := <-tick.C:
				eng.Tick(now)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err := pr.Close(); err != nil {
			t.Errorf("close probes: %v", err)
		}
		if lost := pr.Lost(); lost > 0 {
			t.Logf("probe lost %d records", lost)
		}
	})
	return r
}

// WaitFor returns the first recorded diagnosis matching pred, or fails the
// test after within, printing what was recorded; what names the awaited
// diagnosis in that message.
func (r *Run) WaitFor(t testing.TB, within time.Duration, what string, pred func(diagnosis.Diagnosis) bool) diagnosis.Diagnosis {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for _, d := range r.diags {
			if pred(d) {
				r.mu.Unlock()
				return d
			}
		}
		r.mu.Unlock()
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("no %s diagnosis within %s; got:\n%s", what, within, r.Dump())
			return diagnosis.Diagnosis{}
		}
	}
}

// Snapshot copies the signals and diagnoses recorded so far.
func (r *Run) Snapshot() ([]signal.Signal, []diagnosis.Diagnosis) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]signal.Signal(nil), r.signals...), append([]diagnosis.Diagnosis(nil), r.diags...)
}

// Dump prints the recorded diagnoses and signals, one a line.
func (r *Run) Dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, d := range r.diags {
		fmt.Fprintf(&b, "  diagnosis %s: %s\n", d.Key, d.Summary)
	}
	for _, s := range r.signals {
		fmt.Fprintf(&b, "  signal %s %s %s %s %s err=%d neigh=%s/%s netns=%d\n", s.Time.Format("15:04:05.000"), s.Kind, s.Flow, s.DropReason, s.DropLocation, s.Err, s.NeighAddr, s.NeighState, s.NetnsInode)
	}
	return b.String()
}

// InLab reports whether a is on one of l's subnets (IPv4 or IPv6).
func InLab(l *lab.Lab, a netip.Addr) bool {
	return l.Subnet().Contains(a) || l.Subnet6().Contains(a)
}

// Names names a lab's namespaces in diagnoses by their host's name.
type Names struct{ Lab *lab.Lab }

// Name implements correlate.NetnsNamer.
func (n Names) Name(inode uint32, _ uint64) string {
	if h := n.Lab.HostByInode(inode); h != nil {
		return h.Name
	}
	return ""
}
