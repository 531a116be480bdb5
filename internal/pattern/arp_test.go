package pattern_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

func TestARPFailureFixtures(t *testing.T) {
	tests := []struct {
		fixture  string
		ps       []pattern.Pattern // nil: the whole library
		keys     []string          // first emissions, in order (prefixes)
		summary  string
		details  []string
		rankedBy string // the losing pattern the ranking note must name ("" = no ranking)
		minConf  float64
	}{
		{
			fixture: "arp_unused_ip.jsonl",
			keys:    []string{"arp_failure/never_resolved/10.0.0.99:0/netns:4097"},
			summary: "ARP for 10.0.0.99 on dev eth0 in netns client failed: no host answers, it never resolved",
			details: []string{"went FAILED from INCOMPLETE after trying for 3s (6 probes)", "never held a link-layer address",
				"2 SYN retransmit(s) returned EBUSY", "dropped with NEIGH_FAILED"},
			rankedBy: "syn_dropped/neighbour_unresolved", minConf: 0.9,
		},
		{
			fixture: "ndp_unused_ip.jsonl",
			keys:    []string{"arp_failure/never_resolved/[fd00::99]:0/netns:4097"},
			summary: "NDP for fd00::99 on dev eth0 in netns client failed: no host answers, it never resolved",
			details: []string{"neighbour (NDP) entry for fd00::99"}, rankedBy: "syn_dropped", minConf: 0.9,
		},
		{
			fixture: "arp_gateway_unresolved.jsonl",
			keys:    []string{"arp_failure/host_gone/10.0.0.254:0/netns:4097"},
			summary: "ARP for 10.0.0.254 on dev eth0 in netns client failed: the host answered before and went away (next hop towards 192.0.2.10)",
			details: []string{"from PROBE", "had a link-layer address before", "it is the next hop (gateway)"},
			minConf: 0.7,
		},
		{
			fixture: "arp_host_gone.jsonl",
			keys:    []string{"arp_failure/host_gone/10.0.0.7:0/netns:4097"},
			summary: "ARP for 10.0.0.7 on dev eth0 in netns client failed: the host answered before and went away",
			details: []string{"went FAILED from PROBE after trying for 3s"}, minConf: 0.7,
		},
		{
			// No FAILED signal seen: the queued SYN's drop still says ARP.
			fixture:  "syn_arp_ebusy.jsonl",
			keys:     []string{"arp_failure/unresolved/10.0.0.99:0/netns:4097"},
			summary:  "ARP for 10.0.0.99 in netns client did not resolve: packets waiting for it were not sent",
			details:  []string{"was not seen going FAILED"},
			rankedBy: "syn_dropped/neighbour_unresolved", minConf: 0.8,
		},
		// Near misses.
		{fixture: "arp_resolved_late.jsonl", ps: []pattern.Pattern{pattern.ARPFailure{}}},
		{
			fixture: "arp_other_netns.jsonl",
			keys:    []string{"arp_failure/never_resolved/10.0.0.99:0/netns:4098", "syn_dropped/netfilter_drop/10.0.0.2:8080/netns:4098"},
			summary: "ARP for 10.0.0.99 on dev eth0 in netns server failed: no host answers, it never resolved",
		},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			ds, _ := replayFixture(t, tc.fixture, tc.ps, func(c *correlate.Config) { c.Window = 10 * time.Minute })
			var first []diagnosis.Diagnosis
			for _, d := range ds {
				if d.Count == 1 && !strings.Contains(d.Details, "Aggregated:") {
					first = append(first, d)
				}
			}
			if len(first) != len(tc.keys) {
				t.Fatalf("first emissions %v, want %v", keysOf(first), tc.keys)
			}
			for i, k := range tc.keys {
				mustContain(t, "key", first[i].Key, k)
			}
			if len(tc.keys) == 0 {
				return
			}
			d := first[0]
			if d.Summary != tc.summary {
				t.Errorf("summary %q\nwant    %q", d.Summary, tc.summary)
			}
			for _, want := range tc.details {
				mustContain(t, "details", d.Details, want)
			}
			if tc.rankedBy != "" {
				mustContain(t, "details", d.Details, "Ranked first of")
				mustContain(t, "details", d.Details, tc.rankedBy)
			}
			if d.Pattern == diagnosis.PatternARPFailure {
				if d.Layer != diagnosis.LayerL2 || d.ErrorType != "EHOSTUNREACH" || d.Confidence < tc.minConf {
					t.Errorf("layer %s error %s confidence %.2f, want L2 EHOSTUNREACH >= %.2f", d.Layer, d.ErrorType, d.Confidence, tc.minConf)
				}
				if !hasSource(d, "neigh:neigh_timer_handler") && !strings.Contains(d.Key, "/unresolved/") {
					t.Errorf("no neighbour evidence: %+v", d.Evidence)
				}
			}
			// One failure, one diagnosis: nothing else emitted for it.
			for _, x := range ds {
				if x.Key != d.Key && !slicesHasPrefix(tc.keys, x.Key) {
					t.Errorf("unexpected diagnosis %s: %s", x.Key, x.Summary)
				}
			}
		})
	}
}

func slicesHasPrefix(prefixes []string, s string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// The neighbour failure's own pseudo-connection folds into the diagnosis of
// the connection that failed behind it: counted once.
func TestARPFailureCountedOnce(t *testing.T) {
	ds, st := replayFixture(t, "arp_unused_ip.jsonl", nil, func(c *correlate.Config) { c.Window = time.Second })
	n := 0
	for _, d := range ds {
		if d.Pattern == diagnosis.PatternARPFailure {
			n++
			if d.Count != 1 {
				t.Errorf("count %d, want 1: %s", d.Count, d.Details)
			}
		}
	}
	if n == 0 || st.Aggregated != 0 {
		t.Errorf("%d arp diagnoses, %d aggregated; want >= 1 and 0", n, st.Aggregated)
	}
}

// arp_timeout: a SYN queued behind ARP is held for the kernel's verdict
// until arp_timeout after the connect, then diagnosed without it.
func TestARPTimeoutHold(t *testing.T) {
	start := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	fl := signal.Flow{Proto: signal.ProtoTCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.99"), SrcPort: 41000, DstPort: 80}
	retr := func(n uint32) signal.Signal {
		return signal.Signal{Kind: signal.KindRetransmit, Time: start.Add(time.Duration(n) * time.Second), Flow: fl,
			NetnsCookie: 4097, NetnsInode: clientInode, State: signal.StateSynSent, TCPFlags: signal.TCPFlagSYN, Retransmits: n, Err: -pattern.EBUSY}
	}
	tests := []struct {
		name    string
		timeout time.Duration
		sigs    []signal.Signal
		want    string // key prefix of the first diagnosis, "" = none
		at      time.Duration
	}{
		// Retransmits keep failing with EBUSY past the timeout: ARP, not syn_dropped.
		{"queued past the timeout", 2 * time.Second, []signal.Signal{retr(1), retr(2), retr(3)}, "arp_failure/unresolved/", 2 * time.Second},
		// The default (4 s) waits longer than the third retransmit.
		{"within the default timeout", 0, []signal.Signal{retr(1), retr(2), retr(3)}, "syn_dropped/neighbour_unresolved/", 4 * time.Second},
		// Nothing after the first queued retransmit: ARP may have resolved; ARP stays silent.
		{"nothing after", 2 * time.Second, []signal.Signal{retr(1)}, "syn_dropped/neighbour_unresolved/", 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ds []diagnosis.Diagnosis
			var at []time.Time
			cfg := correlate.DefaultConfig()
			cfg.ARPTimeout = tc.timeout
			var now time.Time
			e, err := correlate.New(cfg, func(d diagnosis.Diagnosis) { ds = append(ds, d); at = append(at, now) })
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.sigs {
				now = s.Time
				e.Observe(s)
			}
			for now = start; now.Before(start.Add(10 * time.Second)); now = now.Add(100 * time.Millisecond) {
				e.Tick(now)
			}
			if len(ds) == 0 {
				t.Fatalf("no diagnosis, want %s", tc.want)
			}
			mustContain(t, "key", ds[0].Key, tc.want)
			if got := at[0].Sub(start); got != tc.at {
				t.Errorf("diagnosed at +%v, want +%v", got, tc.at)
			}
		})
	}
}

// With a host context the neighbour entry as it is now is named, looked up
// once for the failure (not for its pseudo-connection's repeat).
func TestARPFailureNamesTheEntry(t *testing.T) {
	host := &fakeHost{neigh: &pattern.NeighborFact{IP: netip.MustParseAddr("10.0.0.99"), State: signal.NUDFailed, Dev: "eth0"}}
	ds, _ := replayFixture(t, "arp_unused_ip.jsonl", nil, func(c *correlate.Config) { c.Host = host })
	if len(ds) == 0 {
		t.Fatal("no diagnosis")
	}
	mustContain(t, "details", ds[0].Details, "Neighbour table now: 10.0.0.99 FAILED.")
	if host.neighCalls != 1 {
		t.Errorf("%d neighbour lookups, want 1", host.neighCalls)
	}
	// Without it, the lookups that failed are said, not hidden.
	host = &fakeHost{}
	ds, _ = replayFixture(t, "arp_unused_ip.jsonl", nil, func(c *correlate.Config) { c.Host = host })
	mustContain(t, "details", ds[0].Details, "Host context not available: neighbour entry: not found.")
}
