package pattern_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

func TestListenOverflowFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		key     string // "" = no listen_overflow
		summary string
		count   int
		details string
		minConf float64
	}{
		{"listen_overflow.jsonl", "listen_overflow/accept_queue_full/10.0.0.2:8080/netns:4098",
			"Listener on port 8080 in netns server dropped a connection: accept queue full (129/128)", 5,
			"had 129/128 connections waiting", 0.9},
		{"listen_overflow_ack.jsonl", "listen_overflow/accept_queue_full/10.0.0.2:8080/netns:4098",
			"Listener on port 8080 in netns server dropped a connection: accept queue full (full)", 1,
			"a ACK segment from 10.0.0.1", 0.8},
		{"listen_overflow_cookie.jsonl", "listen_overflow/accept_queue_full/10.0.0.2:8080/netns:4098",
			"Listener on port 8080 in netns server dropped a connection: accept queue full (2/1)", 2,
			"(NO_SOCKET at cookie_v4_check)", 0.9},
		{fixture: "listen_backlog_other.jsonl"},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			ds, _ := replayFixture(t, tc.fixture, nil, func(c *correlate.Config) { c.Window = 10 * time.Minute })
			var got []diagnosis.Diagnosis
			for _, d := range ds {
				if d.Pattern == diagnosis.PatternListenOverflow {
					got = append(got, d)
				} else if tc.key != "" {
					t.Errorf("other diagnosis %s: %s", d.Key, d.Summary)
				}
			}
			if tc.key == "" {
				if len(got) != 0 {
					t.Errorf("listen_overflow on a near miss: %v", keysOf(got))
				}
				return
			}
			if len(got) == 0 {
				t.Fatalf("no listen_overflow; got %v", keysOf(ds))
			}
			d, last := got[0], got[len(got)-1]
			if d.Key != tc.key || d.Summary != tc.summary || d.Layer != diagnosis.LayerL4 || d.Confidence < tc.minConf {
				t.Errorf("got %s %q %s %.2f\nwant %s %q L4 >= %.2f", d.Key, d.Summary, d.Layer, d.Confidence, tc.key, tc.summary, tc.minConf)
			}
			if last.Count != tc.count {
				t.Errorf("count %d, want %d", last.Count, tc.count)
			}
			mustContain(t, "details", d.Details, tc.details)
			mustContain(t, "resolution", d.Resolution, "ss -ltn 'sport = :8080'")
		})
	}
}

// With a host context the listener's current queue is named; looked up once.
func TestListenOverflowNamesTheListener(t *testing.T) {
	host := &fakeHost{listeners: []pattern.ListenerFact{{Addr: netip.MustParseAddrPort("0.0.0.0:8080"), Backlog: 128, MaxBacklog: 128}}}
	ds, _ := replayFixture(t, "listen_overflow.jsonl", nil, func(c *correlate.Config) { c.Host = host })
	if len(ds) == 0 {
		t.Fatal("no diagnosis")
	}
	mustContain(t, "details", ds[0].Details, "Listener 0.0.0.0:8080 now: accept queue 128/128.")
	if host.listenersCalls != 1 {
		t.Errorf("%d listener lookups for one diagnosis and its repeats, want 1", host.listenersCalls)
	}
}
