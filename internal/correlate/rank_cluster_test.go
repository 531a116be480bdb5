package correlate

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// rankCluster is a cluster context whose availability and lifecycle
// answers the test sets.
type rankCluster struct {
	available bool
	events    []pattern.LifecycleEvent
}

func (c *rankCluster) Available() (bool, string) { return c.available, "API server unreachable" }
func (*rankCluster) Annotate(*diagnosis.Endpoint, time.Time) ([]diagnosis.Evidence, bool) {
	return nil, false
}
func (*rankCluster) PolicyCheck(signal.Flow, bool) (pattern.PolicyFact, bool) {
	return pattern.PolicyFact{}, false
}
func (c *rankCluster) Lifecycle(netip.Addr, time.Time, time.Time) []pattern.LifecycleEvent {
	return c.events
}

// peerPattern is fakePattern naming the flow's destination, as the
// library's patterns do, so the lifecycle of the peer can be asked.
type peerPattern struct{ fakePattern }

func (p peerPattern) Diagnose(ev *pattern.Evidence, v pattern.Verdict) diagnosis.Diagnosis {
	d := p.fakePattern.Diagnose(ev, v)
	d.Flow = ev.Flow
	d.Destination = diagnosis.Endpoint{Addr: ev.Flow.Dst.String(), Port: ev.Flow.DstPort}
	return d
}

// The ranking sentence quotes the confidence the diagnosis carries, also
// when the cluster context moved it from the ranked verdict's: lowered
// (x0.8) when the context is unavailable, raised by the peer's lifecycle.
func TestRankNoteQuotesFinalConfidence(t *testing.T) {
	restart := pattern.LifecycleEvent{Time: t0.Add(-2 * time.Minute), Kind: pattern.LifecycleRestarted, Namespace: "prod",
		Pod: "backend-0", Container: "app", Reason: "Error", ExitCode: 1, Restarts: 1}
	tests := []struct {
		name    string
		cluster *rankCluster
		want    float64
		ranked  bool // the sentence also gives the ranked value
	}{
		{"no cluster context", nil, 0.8, false},
		{"cluster available", &rankCluster{available: true}, 0.8, false},
		{"cluster unavailable", &rankCluster{}, 0.64, true},
		{"restart raises it", &rankCluster{available: true, events: []pattern.LifecycleEvent{restart}}, 0.95, true},
		{"restart, then unavailable", &rankCluster{events: []pattern.LifecycleEvent{restart}}, 0.76, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, r := newEngine(t, func(c *Config) {
				c.Patterns = []pattern.Pattern{
					fakePattern{"a", "weak", 0.4, 9},
					peerPattern{fakePattern{diagnosis.PatternPeerLostState, pattern.CauseNoSocket, 0.8, 1}},
				}
				if tc.cluster != nil {
					c.Cluster = tc.cluster
				}
			})
			e.Observe(refusedClosedPort(t0, 30000, 8080)[0])
			if len(r.ds) != 1 {
				t.Fatalf("%d diagnoses, want 1", len(r.ds))
			}
			d := r.ds[0]
			if d.Confidence != tc.want {
				t.Errorf("confidence %.2f, want %.2f", d.Confidence, tc.want)
			}
			quoted := fmt.Sprintf("(%s, confidence %.2f", diagnosis.PatternPeerLostState, d.Confidence)
			if !strings.Contains(d.Details, quoted) {
				t.Errorf("the ranking sentence does not quote the field's %.2f: %s", d.Confidence, d.Details)
			}
			if got := strings.Contains(d.Details, "0.80 as ranked"); got != tc.ranked {
				t.Errorf("ranked value said: %v, want %v: %s", got, tc.ranked, d.Details)
			}
			if !strings.Contains(d.Details, "also matched: a/weak (confidence 0.40") {
				t.Errorf("the runner-up is not named: %s", d.Details)
			}
		})
	}
}
