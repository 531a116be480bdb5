package correlate

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

type noOverload struct{}

func (noOverload) AcceptQueue(pattern.Netns, netip.AddrPort) (pattern.AcceptQueueFact, error) {
	return pattern.AcceptQueueFact{}, pattern.ErrNotLocal
}
func (noOverload) Conntrack(pattern.Netns) (pattern.ConntrackFact, error) {
	return pattern.ConntrackFact{}, pattern.ErrNotLocal
}

// retransmitThresholds returns the MinRetransmits of the blackhole and
// half_open patterns in ps (-1 if absent).
func retransmitThresholds(ps []pattern.Pattern) (blackhole, halfOpen int) {
	blackhole, halfOpen = -1, -1
	for _, p := range ps {
		switch q := p.(type) {
		case pattern.Blackhole:
			blackhole = q.MinRetransmits
		case pattern.HalfOpen:
			halfOpen = q.MinRetransmits
		}
	}
	return blackhole, halfOpen
}

// Config.MinRetransmits reaches the library the engine builds, with and
// without the host's overload context.
func TestMinRetransmitsReachesTheLibrary(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min      int
		overload bool
	}{
		{"default", 0, false},
		{"set", 5, false},
		{"set, with overload context", 7, true},
		{"default, with overload context", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MinRetransmits = tc.min
			if tc.overload {
				WithOverload(&cfg, noOverload{})
			}
			e, err := New(cfg, func(diagnosis.Diagnosis) {})
			if err != nil {
				t.Fatal(err)
			}
			hasOverload := false
			for _, p := range e.patterns {
				_, ok := p.(pattern.AcceptQueueFull)
				hasOverload = hasOverload || ok
			}
			if hasOverload != tc.overload {
				t.Fatalf("accept_queue_full in the library: %v, want %v", hasOverload, tc.overload)
			}
			if bh, ho := retransmitThresholds(e.patterns); bh != tc.min || ho != tc.min {
				t.Errorf("blackhole %d, half_open %d, want %d", bh, ho, tc.min)
			}
		})
	}
	cfg := DefaultConfig()
	cfg.MinRetransmits = -1
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "min_retransmits must be >= 0") {
		t.Errorf("Validate() = %v, want the min_retransmits error", err)
	}
}
