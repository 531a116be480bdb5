package correlate

import (
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// waitTwice defers at its signal and again at the first Tick, holding the
// decision until `until`, then matches: a pattern that waits for evidence
// longer than one grace period.
type waitTwice struct{ until time.Time }

func (waitTwice) ID() diagnosis.Pattern       { return "wait_twice" }
func (waitTwice) Wants(s *signal.Signal) bool { return s.Kind == signal.KindDrop }
func (p waitTwice) Match(ev *pattern.Evidence) (pattern.Verdict, pattern.Outcome) {
	if ev.Trigger != nil {
		return pattern.Verdict{}, pattern.Defer // a plain grace period first
	}
	if ev.Now.Before(p.until) {
		return pattern.Verdict{Cause: "waiting", Confidence: 0.9, Specificity: 9, Until: p.until}, pattern.Defer
	}
	return pattern.Verdict{Cause: "decided", Confidence: 0.9, Specificity: 9}, pattern.Match
}
func (waitTwice) Diagnose(ev *pattern.Evidence, v pattern.Verdict) diagnosis.Diagnosis {
	return diagnosis.Diagnosis{Pattern: "wait_twice", Summary: "decided", Confidence: v.Confidence, Severity: diagnosis.SeverityWarn,
		Resolution: "none", Layer: diagnosis.LayerL4, Evidence: []diagnosis.Evidence{{Time: ev.Now, Source: "test", Fact: "decided"}}}
}

// A connection deferred again when a Tick re-asks it stays pending and is
// decided at a later Tick, never forgotten.
func TestDeferredAgainOnTick(t *testing.T) {
	// The grace period (200 ms) ends before Until (1 s): the first Tick
	// after it re-asks, the pattern defers again, a later Tick decides.
	p := waitTwice{until: t0.Add(time.Second)}
	e, r := newEngine(t, func(c *Config) { c.Patterns = []pattern.Pattern{p} })
	f := tcpFlow(40000, 8080)
	e.Observe(signal.Signal{Kind: signal.KindDrop, Time: t0, Flow: f, NetnsCookie: serverCookie, NetnsInode: serverInode,
		TCPFlags: signal.TCPFlagSYN, DropReason: "NO_SOCKET"})
	for now := t0; now.Before(t0.Add(3 * time.Second)); now = now.Add(100 * time.Millisecond) {
		e.Tick(now)
	}
	if len(r.ds) != 1 || r.ds[0].Summary != "decided" {
		t.Fatalf("diagnoses %v, want the one decided after Until", r.ds)
	}
}
