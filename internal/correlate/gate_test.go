package correlate

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// ungated hides a pattern's type and gate, so the engine asks it at every
// signal through the interface. It checks what of the gate it can on the
// way: asked at a trigger its gate excludes, or without the policy checker
// its gate requires, it must not decide.
type ungated struct {
	p pattern.Pattern
	t testing.TB
}

func (u ungated) ID() diagnosis.Pattern { return u.p.ID() }
func (u ungated) Wants(s *signal.Signal) bool {
	w := u.p.Wants(s)
	if g, ok := u.p.(pattern.Gated); ok && w {
		if k := g.Gate().Wanted; k != 0 && !k.Has(s.Kind) {
			u.t.Errorf("%s wants a %s signal, outside its gate", u.p.ID(), s.Kind)
		}
	}
	return w
}
func (u ungated) Diagnose(ev *pattern.Evidence, v pattern.Verdict) diagnosis.Diagnosis {
	return u.p.Diagnose(ev, v)
}

func (u ungated) Match(ev *pattern.Evidence) (pattern.Verdict, pattern.Outcome) {
	v, out := u.p.Match(ev)
	g, ok := u.p.(pattern.Gated)
	if !ok || out == pattern.NoMatch {
		return v, out
	}
	gate := g.Gate()
	if gate.Policy && ev.Policy == nil {
		u.t.Errorf("%s: outcome %d without a policy checker", u.p.ID(), out)
	}
	if t := ev.Trigger; t != nil {
		if gate.Triggers != 0 && !gate.Triggers.Has(t.Kind) || gate.Decides != nil && !gate.Decides(t) {
			u.t.Errorf("%s: outcome %d at a trigger its gate excludes: %+v", u.p.ID(), out, *t)
		}
	}
	return v, out
}

func ungatedLibrary(t testing.TB, cfg Config) []pattern.Pattern {
	var ps []pattern.Pattern
	for _, p := range pattern.Library(pattern.Options{SYNTimeout: cfg.SYNTimeout, ARPTimeout: 4 * time.Second, Cluster: cfg.Cluster}) {
		ps = append(ps, ungated{p, t})
	}
	return ps
}

// run feeds sigs through an engine with cfg and returns what it emitted
// and its counters, with a Tick every 100 ms of signal time and a Flush.
func runEngine(t testing.TB, cfg Config, sigs []signal.Signal) ([]diagnosis.Diagnosis, Stats) {
	t.Helper()
	var ds []diagnosis.Diagnosis
	e, err := New(cfg, func(d diagnosis.Diagnosis) { ds = append(ds, d) })
	if err != nil {
		t.Fatal(err)
	}
	var next time.Time
	for _, s := range sigs {
		if next.IsZero() {
			next = s.Time.Add(100 * time.Millisecond)
		}
		if !s.Time.Before(next) {
			e.Tick(s.Time)
			next = s.Time.Add(100 * time.Millisecond)
		}
		e.Observe(s)
	}
	st := e.Stats()
	e.Flush()
	return ds, st
}

// The gates change which patterns are asked, never what the engine
// concludes: every replay fixture, the benchmark workloads and a storm,
// with and without a cluster context, give the same diagnoses and counters
// as the library asked at every signal.
func TestGatesChangeNothing(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "replay", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	corpora := map[string][]signal.Signal{
		"mixed":   mixedWorkload(20*time.Second, 4000),
		"fixture": fixtureWorkload(20*time.Second, 3000),
	}
	for _, f := range files {
		corpora[filepath.Base(f)] = decodeFixture(f)
	}
	for name, sigs := range corpora {
		for _, cluster := range []string{"", "policy", "lifecycle"} {
			newCluster := func() pattern.Cluster {
				switch cluster {
				case "policy":
					return &benchCluster{}
				case "lifecycle":
					return &killCluster{}
				}
				return nil
			}
			cfg := DefaultConfig()
			cfg.Cluster = newCluster()
			got, gst := runEngine(t, cfg, sigs)
			cfg.Cluster = newCluster()
			cfg.Patterns = ungatedLibrary(t, cfg)
			want, wst := runEngine(t, cfg, sigs)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s (cluster %v): %d diagnoses with gates, %d without, or they differ", name, cluster, len(got), len(want))
			}
			if gst != wst {
				t.Errorf("%s (cluster %v): stats\n  gated   %+v\n  ungated %+v", name, cluster, gst, wst)
			}
		}
	}
}

// killCluster: every address is a pod whose container stopped at the time
// asked about (the middle of the queried span), so that peer_lost_state
// decides every reset it may wait for.
type killCluster struct{ benchCluster }

func (*killCluster) HoldsPod(netip.Addr, time.Time) bool { return true }

func (*killCluster) Lifecycle(_ netip.Addr, since, at time.Time) []pattern.LifecycleEvent {
	if since.IsZero() {
		return nil
	}
	return []pattern.LifecycleEvent{{Time: since.Add(at.Sub(since) / 2), Kind: pattern.LifecycleRestarted,
		Namespace: "prod", Pod: "backend", Container: "app", Reason: "Error", ExitCode: 1, Restarts: 1}}
}
