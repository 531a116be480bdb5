package pattern_test

import (
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

func TestSYNDroppedFixtures(t *testing.T) {
	tests := []struct {
		fixture    string
		cause      string
		summary    string
		layer      diagnosis.Layer
		errType    string
		dstNetns   string
		details    string
		resolution string
		firstAt    time.Duration // diagnosis time after the first SYN
		// signals of the same connection folded into the aggregate over a
		// window long enough to hold the whole ~135 s connect
		followUps int
		// emissions at the default 30 s window: the first, then one update
		// per window in which the connection still failed
		emits   int
		minConf float64
	}{
		{
			fixture: "syn_nft_drop_timeout.jsonl", cause: pattern.CauseNetfilterDrop,
			summary: "SYN to 10.0.0.2:8080 dropped by a netfilter rule in netns server (nft_do_chain)",
			layer:   diagnosis.LayerPolicy, errType: "ETIMEDOUT", dstNetns: "server",
			details:    "on dev eth0",
			resolution: "Remove or narrow the DROP rule matching tcp dport 8080",
			firstAt:    time.Second, followUps: 10, emits: 5, minConf: 0.6,
		},
		{
			fixture: "syn_host_forward_drop.jsonl", cause: pattern.CauseNetfilterDrop,
			summary: "SYN to 10.0.0.2:8080 dropped by a netfilter rule in netns host (nft_do_chain)",
			layer:   diagnosis.LayerPolicy, errType: "ETIMEDOUT", dstNetns: "host",
			details:    "on dev veth-srv",
			resolution: "`nft list ruleset`",
			firstAt:    time.Second, followUps: 10, emits: 5, minConf: 0.6,
		},
		{
			fixture: "syn_no_local_drop.jsonl", cause: pattern.CauseNoLocalDrop,
			summary: "SYN to 10.0.0.2:8080 unanswered: no local drop seen, the path or the remote host drops it",
			layer:   diagnosis.LayerL3, errType: "ETIMEDOUT",
			details:    "No drop of this SYN was seen on this node",
			resolution: "traceroute -T -p 8080 10.0.0.2",
			firstAt:    time.Second, followUps: 10, emits: 5, minConf: 0.3,
		},
		{
			fixture: "syn_own_output_eperm.jsonl", cause: pattern.CauseLocalOutputFirewall,
			summary: "SYN to 10.0.0.2:8080 refused by the client's own OUTPUT firewall in netns client",
			layer:   diagnosis.LayerPolicy, errType: "ETIMEDOUT",
			details:    "failed with EPERM",
			resolution: "output path of netns client",
			firstAt:    time.Second, followUps: 10, emits: 5, minConf: 0.7,
		},
		{
			fixture: "syn_arp_ebusy.jsonl", cause: pattern.CauseNeighbourUnresolved,
			summary: "SYN to 10.0.0.99:8080 never sent: queued behind ARP/NDP, the neighbour does not resolve (in netns client)",
			layer:   diagnosis.LayerL2, errType: "EHOSTUNREACH",
			details:    "1 SYN retransmit(s) returned EBUSY",
			resolution: "ip neigh show",
			firstAt:    time.Second, followUps: 2, emits: 2, minConf: 0.5,
		},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			// Default window (30 s): the first retransmit is diagnosed at once;
			// the retries come back as one update per window while they last,
			// the last one carrying the final close.
			// In the whole library arp_failure outranks neighbour_unresolved
			// (arp_test.go): test syn_dropped's own view of it alone.
			var ps []pattern.Pattern
			if tc.cause == pattern.CauseNeighbourUnresolved {
				ps = []pattern.Pattern{pattern.ConnectionRefused{}, pattern.SYNDropped{}}
			}
			ds, st := replayFixture(t, tc.fixture, ps)
			if len(ds) != tc.emits {
				t.Fatalf("got %d diagnoses, want %d: %v", len(ds), tc.emits, keysOf(ds))
			}
			d := ds[0]
			if d.Pattern != diagnosis.PatternSYNDropped || d.Summary != tc.summary {
				t.Errorf("%s: %q\nwant %q", d.Pattern, d.Summary, tc.summary)
			}
			mustContain(t, "key", d.Key, "syn_dropped/"+tc.cause+"/")
			if d.Layer != tc.layer || d.ErrorType != tc.errType {
				t.Errorf("layer %s error %s, want %s %s", d.Layer, d.ErrorType, tc.layer, tc.errType)
			}
			if d.Destination.NetnsName != tc.dstNetns || d.Source.NetnsName != "client" {
				t.Errorf("endpoints %+v -> %+v, want netns client -> %q", d.Source, d.Destination, tc.dstNetns)
			}
			mustContain(t, "details", d.Details, tc.details)
			mustContain(t, "details", d.Details, "Diagnosed at SYN retransmit 1, about 1s after the connect started")
			mustContain(t, "resolution", d.Resolution, tc.resolution)
			if d.Confidence < tc.minConf {
				t.Errorf("confidence %.2f < %.2f", d.Confidence, tc.minConf)
			}
			start := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
			if got := d.LastSeen.Sub(start); got != tc.firstAt {
				t.Errorf("diagnosed %v after the connect, want %v (first retransmit)", got, tc.firstAt)
			}
			if !hasSource(d, "tcp:tcp_retransmit_skb") {
				t.Errorf("no retransmit evidence: %+v", d.Evidence)
			}
			for i, upd := range ds[1:] {
				if upd.Key != d.Key || upd.Count != 1 || !upd.LastSeen.After(ds[i].LastSeen) ||
					!upd.FirstSeen.Equal(d.FirstSeen) || len(upd.Evidence) < len(ds[i].Evidence) {
					t.Errorf("update %d: key %s count %d first %v last %v evidence %d, want the same key, count 1, "+
						"the same first seen, later, no less evidence", i+1, upd.Key, upd.Count, upd.FirstSeen, upd.LastSeen, len(upd.Evidence))
				}
			}
			last := ds[len(ds)-1].Evidence[len(ds[len(ds)-1].Evidence)-1]
			if last.Source != "sock:inet_sock_set_state" || !strings.Contains(last.Fact, "SYN_SENT -> CLOSE") {
				t.Errorf("last evidence of the last update %+v, want the final close", last)
			}
			if st.FollowUps == 0 {
				t.Error("no follow-ups counted")
			}

			// A window longer than the whole connect: every retry and the final
			// close fold into the one diagnosis.
			ds, st = replayFixture(t, tc.fixture, ps, func(c *correlate.Config) { c.Window = 10 * time.Minute })
			if len(ds) != 2 || int(st.FollowUps) != tc.followUps {
				t.Fatalf("long window: %d diagnoses, %d follow-ups; want 2 and %d", len(ds), st.FollowUps, tc.followUps)
			}
			last = ds[1].Evidence[len(ds[1].Evidence)-1]
			if last.Source != "sock:inet_sock_set_state" || !strings.Contains(last.Fact, "SYN_SENT -> CLOSE") {
				t.Errorf("last evidence %+v, want the final close", last)
			}
			mustContain(t, "aggregate details", ds[1].Details, "later signal(s) of already diagnosed connections")
		})
	}
}

func retrans(at time.Duration, n uint32, errno int32) signal.Signal {
	return sig(signal.KindRetransmit, at, func(s *signal.Signal) {
		s.State, s.TCPFlags, s.Retransmits, s.Err = signal.StateSynSent, signal.TCPFlagSYN, n, errno
	})
}

// tick marks, at the end of a sequence, an evaluation on a Tick (no trigger).
var tick = signal.Signal{Kind: signal.KindUnknown}

func evidenceOrTick(sigs []signal.Signal) *pattern.Evidence {
	if n := len(sigs); n > 0 && sigs[n-1].Kind == signal.KindUnknown {
		ev := evidence(sigs[:n-1]...)
		ev.Trigger = nil
		return ev
	}
	return evidence(sigs...)
}

func TestSYNDroppedFollowUpNeedsNoGrace(t *testing.T) {
	p := pattern.SYNDropped{Timeout: time.Second}
	ev := evidence(retrans(time.Second, 1, 0), retrans(2*time.Second, 2, 0))
	ev.Diagnosed = true
	if v, out := p.Match(ev); out != pattern.Match || v.Cause != pattern.CauseNoLocalDrop {
		t.Fatalf("follow-up: %v %q", out, v.Cause)
	}
}

func TestSYNDroppedMatch(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		sigs    []signal.Signal
		out     pattern.Outcome
		cause   string
	}{
		// Nothing dropped it here yet: wait the grace period for the drop of
		// this very retransmit, then decide on a Tick.
		{"first retransmit at 1s", time.Second, []signal.Signal{retrans(time.Second, 1, 0)}, pattern.Defer, ""},
		{"first retransmit at 1s, then tick", time.Second, []signal.Signal{retrans(time.Second, 1, 0), tick}, pattern.Match, pattern.CauseNoLocalDrop},
		{"drop arrives in the grace period", time.Second, []signal.Signal{retrans(time.Second, 1, 0), serverDrop(time.Second+200*time.Microsecond, "NETFILTER_DROP"), tick}, pattern.Match, pattern.CauseNetfilterDrop},
		{"tick before the timeout", 3 * time.Second, []signal.Signal{retrans(time.Second, 1, 0), tick}, pattern.NoMatch, ""},
		{"3s timeout: not at the first", 3 * time.Second, []signal.Signal{retrans(time.Second, 1, 0)}, pattern.NoMatch, ""},
		{"3s timeout: not at the second", 3 * time.Second, []signal.Signal{retrans(time.Second, 1, 0), retrans(2*time.Second, 2, 0)}, pattern.NoMatch, ""},
		{"3s timeout: at the third", 3 * time.Second, []signal.Signal{retrans(time.Second, 1, 0), retrans(2*time.Second, 2, 0), retrans(3*time.Second, 3, 0)}, pattern.Defer, ""},
		{"3s timeout: at the third, then tick", 3 * time.Second, []signal.Signal{retrans(time.Second, 1, 0), retrans(2*time.Second, 2, 0), retrans(3*time.Second, 3, 0), tick}, pattern.Match, pattern.CauseNoLocalDrop},
		{"3s timeout: measured from the SYN drop", 3 * time.Second, []signal.Signal{serverDrop(0, "NETFILTER_DROP"), retrans(3*time.Second, 1, 0)}, pattern.Match, pattern.CauseNetfilterDrop},
		{"EPERM", time.Second, []signal.Signal{retrans(time.Second, 1, -1)}, pattern.Match, pattern.CauseLocalOutputFirewall},
		{"EBUSY", time.Second, []signal.Signal{retrans(time.Second, 1, -16)}, pattern.Match, pattern.CauseNeighbourUnresolved},
		{"other drop reason", time.Second, []signal.Signal{serverDrop(0, "IP_NOROUTE"), retrans(time.Second, 1, 0)}, pattern.Match, pattern.CauseKernelDrop},
		{"final close alone", time.Second, []signal.Signal{closeErr(135*time.Second, signal.StateSynSent, 110)}, pattern.Match, pattern.CauseNoLocalDrop},
		{"EHOSTUNREACH without EBUSY is ICMP's", time.Second, []signal.Signal{closeErr(3*time.Second, signal.StateSynSent, 113)}, pattern.NoMatch, ""},
		{"EHOSTUNREACH after EBUSY", time.Second, []signal.Signal{retrans(time.Second, 1, -16), closeErr(3*time.Second, signal.StateSynSent, 113)}, pattern.Match, pattern.CauseNeighbourUnresolved},
		{"retransmit in ESTABLISHED", time.Second, []signal.Signal{sig(signal.KindRetransmit, time.Second, func(s *signal.Signal) { s.State = signal.StateEstablished })}, pattern.NoMatch, ""},
		{"half-open FIN_WAIT1 timeout", time.Second, []signal.Signal{closeErr(9*time.Second, signal.StateFinWait1, 110)}, pattern.NoMatch, ""},
		{"EPIPE teardown", time.Second, []signal.Signal{closeErr(0, signal.StateCloseWait, 32)}, pattern.NoMatch, ""},
		{"refused close", time.Second, []signal.Signal{closeErr(0, signal.StateSynSent, 111)}, pattern.NoMatch, ""},
		{"SYN drop alone is not yet a diagnosis", time.Second, []signal.Signal{serverDrop(0, "NETFILTER_DROP")}, pattern.NoMatch, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := pattern.SYNDropped{Timeout: tc.timeout}
			ev := evidenceOrTick(tc.sigs)
			v, out := p.Match(ev)
			if out != tc.out || v.Cause != tc.cause {
				t.Fatalf("Match = %v %q, want %v %q", out, v.Cause, tc.out, tc.cause)
			}
			if out == pattern.Match {
				d := p.Diagnose(ev, v)
				d.Key, d.Count, d.FirstSeen, d.LastSeen = "k", 1, t0, t0
				if err := d.Validate(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestSYNDroppedConfidenceGrowsWithEvidence(t *testing.T) {
	p := pattern.SYNDropped{Timeout: time.Second}
	steps := [][]signal.Signal{
		{retrans(time.Second, 1, 0)},
		{retrans(time.Second, 1, 0), retrans(2*time.Second, 2, 0)},
		{serverDrop(0, "NETFILTER_DROP"), retrans(time.Second, 1, 0), retrans(2*time.Second, 2, 0)},
		{serverDrop(0, "NETFILTER_DROP"), retrans(time.Second, 1, 0), retrans(2*time.Second, 2, 0), closeErr(135*time.Second, signal.StateSynSent, 110)},
	}
	prev := 0.0
	for i, sigs := range steps {
		ev := evidence(sigs...)
		v, out := p.Match(ev)
		if out == pattern.Defer {
			ev.Trigger = nil
			v, out = p.Match(ev)
		}
		if out != pattern.Match || v.Confidence <= prev {
			t.Fatalf("step %d: outcome %v confidence %.2f, want a match above %.2f", i, out, v.Confidence, prev)
		}
		prev = v.Confidence
	}
}

func TestSYNDroppedKernelDropHints(t *testing.T) {
	tests := []struct {
		reason, location string
		summary, fix     string
	}{
		{"NOT_SPECIFIED", "ip_error", "dropped in netns server: no route (a blackhole or unreachable route)", "ip route get 10.0.0.2"},
		{"IP_RPFILTER", "ip_rcv_finish_core", "reverse-path filter (rp_filter)", "route back to 10.0.0.1"},
		{"TCP_LISTEN_OVERFLOW", "tcp_conn_request", "the listener's accept queue is full", "sport = :8080"},
		{"OTHERHOST", "ip_rcv_core", "reached a host it was not addressed to", "ip neigh flush to 10.0.0.2"},
		{"SOMETHING_NEW", "f", "dropped by the kernel in netns server: SOMETHING_NEW at f", "dropreason-core.h"},
	}
	p := pattern.SYNDropped{Timeout: time.Second}
	for _, tc := range tests {
		drop := serverDrop(0, tc.reason)
		drop.DropLocation = tc.location
		ev := evidence(drop, retrans(time.Second, 1, 0))
		ev.Namer = fixtureNames
		v, out := p.Match(ev)
		if out != pattern.Match || v.Cause != pattern.CauseKernelDrop {
			t.Fatalf("%s: %v %q", tc.reason, out, v.Cause)
		}
		d := p.Diagnose(ev, v)
		mustContain(t, tc.reason+" summary", d.Summary, tc.summary)
		mustContain(t, tc.reason+" resolution", d.Resolution, tc.fix)
		if strings.Contains(d.Resolution, "%!") {
			t.Errorf("%s: bad format in %q", tc.reason, d.Resolution)
		}
	}
}
