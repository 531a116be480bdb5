package pattern_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// streamPatterns are the patterns of established connections.
var streamPatterns = []diagnosis.Pattern{diagnosis.PatternBlackhole, diagnosis.PatternHalfOpen, diagnosis.PatternPeerLostState}

// withStream is the default library with the established-connection
// patterns, added if Default does not hold them yet.
func withStream() []pattern.Pattern {
	ps := pattern.Default(time.Second)
	for _, p := range []pattern.Pattern{pattern.Blackhole{}, pattern.HalfOpen{}, pattern.PeerLostState{}} {
		if !slices.ContainsFunc(ps, func(q pattern.Pattern) bool { return q.ID() == p.ID() }) {
			ps = append(ps, p)
		}
	}
	return ps
}

// streamCase is one fixture replayed through one pattern alone and through
// the library.
type streamCase struct {
	fixture string
	// keys: first emissions of the established-connection patterns, in
	// order (key prefixes); empty for near misses.
	keys []string
	// checks on the first diagnosis of the pattern under test
	summary, details, resolution []string
	libDetails                   []string // in the library only (ranking notes)
	sources                      []string
	layer                        diagnosis.Layer
	errorType                    string
	minConf, maxConf             float64
	// at: when the first diagnosis is decided (its LastSeen), offset from
	// 02:00:00 of the fixtures' day.
	at time.Duration
}

var fixtureDay = time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)

func firstEmissions(ds []diagnosis.Diagnosis, only []diagnosis.Pattern) []diagnosis.Diagnosis {
	var out []diagnosis.Diagnosis
	for _, d := range ds {
		if d.Count == 1 && !strings.Contains(d.Details, "Aggregated:") && slices.Contains(only, d.Pattern) {
			out = append(out, d)
		}
	}
	return out
}

func runStreamCases(t *testing.T, p pattern.Pattern, tests []streamCase) {
	t.Helper()
	for _, tc := range tests {
		for _, lib := range []struct {
			name string
			ps   []pattern.Pattern
		}{{"alone", []pattern.Pattern{p}}, {"library", withStream()}} {
			t.Run(tc.fixture+"/"+lib.name, func(t *testing.T) {
				ds, st := replayFixture(t, tc.fixture, lib.ps)
				firsts := firstEmissions(ds, streamPatterns)
				want := tc.keys
				if lib.name == "alone" {
					want = nil
					for _, k := range tc.keys {
						if strings.HasPrefix(k, string(p.ID())+"/") {
							want = append(want, k)
						}
					}
				}
				if len(firsts) != len(want) {
					t.Fatalf("first emissions %v, want %v", keysOf(firsts), want)
				}
				for i, k := range want {
					if !strings.HasPrefix(firsts[i].Key, k) {
						t.Errorf("emission %d key %q, want prefix %q", i, firsts[i].Key, k)
					}
				}
				if st.FlowsTracked != 0 || st.OpenAggregates != 0 {
					t.Errorf("state left after the recording: %+v", st)
				}
				var d *diagnosis.Diagnosis
				for i := range firsts {
					if firsts[i].Pattern == p.ID() {
						d = &firsts[i]
						break
					}
				}
				if d == nil {
					return
				}
				for _, s := range tc.summary {
					mustContain(t, "summary", d.Summary, s)
				}
				for _, s := range tc.details {
					mustContain(t, "details", d.Details, s)
				}
				if lib.name == "library" {
					for _, s := range tc.libDetails {
						mustContain(t, "details", d.Details, s)
					}
				}
				for _, s := range tc.resolution {
					mustContain(t, "resolution", d.Resolution, s)
				}
				for _, src := range tc.sources {
					if !hasSource(*d, src) {
						t.Errorf("no evidence from %s: %+v", src, d.Evidence)
					}
				}
				if tc.layer != "" && d.Layer != tc.layer {
					t.Errorf("layer = %s, want %s", d.Layer, tc.layer)
				}
				if tc.errorType != "" && d.ErrorType != tc.errorType {
					t.Errorf("error type = %s, want %s", d.ErrorType, tc.errorType)
				}
				if tc.maxConf > 0 && (d.Confidence < tc.minConf || d.Confidence > tc.maxConf) {
					t.Errorf("confidence %.2f outside [%.2f, %.2f]", d.Confidence, tc.minConf, tc.maxConf)
				}
				if tc.at != 0 {
					if got := d.LastSeen.Sub(fixtureDay); got < tc.at || got > tc.at+300*time.Millisecond {
						t.Errorf("decided at +%s, want +%s (within the grace and a tick)", got, tc.at)
					}
				}
			})
		}
	}
}

// Near misses: none of the established-connection patterns may match, alone
// or in the library.
func TestStreamNearMisses(t *testing.T) {
	for _, fx := range []string{"retrans_recovered.jsonl", "established_icmp_prohibited.jsonl", "reset_app_abort_linger.jsonl",
		"reset_unread_data.jsonl", "reset_teardown_noise.jsonl", "peer_lost_orphan_ack.jsonl", "reset_abort_traced_late.jsonl", "noise_teardown.jsonl", "success.jsonl"} {
		t.Run(fx, func(t *testing.T) {
			ds, st := replayFixture(t, fx, withStream())
			for _, d := range ds {
				if slices.Contains(streamPatterns, d.Pattern) {
					t.Errorf("near miss diagnosed: %s: %s", d.Key, d.Summary)
				}
			}
			if st.FlowsTracked != 0 {
				t.Errorf("state left: %+v", st)
			}
		})
	}
}

// Wants must not allocate, nor Match when it does not match: both run for
// every signal of a busy node.
func TestStreamPatternsDoNotAllocateOnNoise(t *testing.T) {
	c, s := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	f := signal.Flow{Proto: signal.ProtoTCP, Src: c, Dst: s, SrcPort: 40000, DstPort: 8080}
	at := fixtureDay
	noise := []signal.Signal{
		{Kind: signal.KindStateChange, Time: at, Flow: f.Reverse(), OldState: signal.StateCloseWait, State: signal.StateClose, SkErr: pattern.EPIPE},
		{Kind: signal.KindResetReceived, Time: at, Flow: f, State: signal.StateEstablished},
		{Kind: signal.KindStateChange, Time: at, Flow: f, OldState: signal.StateEstablished, State: signal.StateClose, SkErr: pattern.ECONNRESET},
		{Kind: signal.KindRetransmit, Time: at, Flow: f, State: signal.StateEstablished, Retransmits: 1},
		{Kind: signal.KindResetSent, Time: at, Flow: f.Reverse(), ResetReason: "TCP_ABORT_ON_CLOSE"},
		{Kind: signal.KindDrop, Time: at, Flow: f, TCPFlags: signal.TCPFlagRST | signal.TCPFlagACK, DropReason: "NO_SOCKET"},
	}
	for _, p := range []pattern.Pattern{pattern.Blackhole{}, pattern.HalfOpen{}, pattern.PeerLostState{}} {
		ev := &pattern.Evidence{Flow: f, Now: at, Socket: noise[:4], Packet: noise[4:]}
		allocs := testing.AllocsPerRun(100, func() {
			for i := range noise {
				p.Wants(&noise[i])
				ev.Trigger = &noise[i]
				if _, out := p.Match(ev); out == pattern.Match {
					t.Fatalf("%s matched noise %v", p.ID(), noise[i])
				}
			}
			ev.Trigger = nil
			p.Match(ev)
		})
		if allocs != 0 {
			t.Errorf("%s: %.0f allocations per noise run, want 0", p.ID(), allocs)
		}
	}
}

func TestLibraryPassesMinRetransmits(t *testing.T) {
	n := 0
	for _, p := range pattern.Library(pattern.Options{SYNTimeout: time.Second, MinRetransmits: 5}) {
		switch q := p.(type) {
		case pattern.Blackhole:
			n++
			if q.MinRetransmits != 5 {
				t.Errorf("blackhole MinRetransmits = %d", q.MinRetransmits)
			}
		case pattern.HalfOpen:
			n++
			if q.MinRetransmits != 5 {
				t.Errorf("half_open MinRetransmits = %d", q.MinRetransmits)
			}
		case pattern.PeerLostState:
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d established-connection patterns in the library, want 3", n)
	}
}
