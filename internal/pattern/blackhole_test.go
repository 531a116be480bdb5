package pattern_test

import (
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

func TestBlackholeFixtures(t *testing.T) {
	runStreamCases(t, pattern.Blackhole{}, []streamCase{
		{
			fixture: "blackhole_nft_input.jsonl",
			keys:    []string{"blackhole/netfilter_drop/10.0.0.2:8080/netns:4098"},
			summary: []string{"established flow to 10.0.0.2:8080 stalled", "netfilter rule in netns server (nft_do_chain)"},
			details: []string{"on dev eth0", "Diagnosed at 3 consecutive retransmission timeout(s), the first seen 800ms before"},
			sources: []string{"skb:kfree_skb", "tcp:tcp_retransmit_skb"},
			layer:   diagnosis.LayerPolicy, errorType: "ETIMEDOUT",
			minConf: 0.65, maxConf: 0.75, at: 2400 * time.Millisecond,
		},
		{
			fixture: "blackhole_ack_dropped.jsonl",
			keys:    []string{"blackhole/ack_dropped/10.0.0.2:8080/netns:4097"},
			summary: []string{"the peer's ACKs dropped by a netfilter rule in netns client"},
			layer:   diagnosis.LayerPolicy,
			minConf: 0.65, maxConf: 0.8, at: 2400 * time.Millisecond,
		},
		{
			// Decided on the Tick after the third retransmit's grace.
			fixture:    "blackhole_no_local_drop.jsonl",
			keys:       []string{"blackhole/no_local_drop/192.0.2.10:443/"},
			summary:    []string{"black-holed", "no local drop seen"},
			libDetails: []string{"Ranked first of 2 matching patterns", "half_open/data_unanswered"},
			resolution: []string{"traceroute -T -p 443 192.0.2.10", "keepalives"},
			sources:    []string{"tcp:tcp_retransmit_skb"},
			layer:      diagnosis.LayerL3,
			minConf:    0.35, maxConf: 0.45, at: 2400 * time.Millisecond,
		},
		{
			fixture:    "blackhole_otherhost.jsonl",
			keys:       []string{"blackhole/kernel_drop/10.0.0.2:8080/netns:4098"},
			summary:    []string{"the packet reached a host it was not addressed to (in netns server)"},
			details:    []string{"OTHERHOST at ip_rcv_core", "stale ARP/neighbour entry"},
			resolution: []string{"ip neigh flush to 10.0.0.2"},
			layer:      diagnosis.LayerL3,
			minConf:    0.6, maxConf: 0.7, at: 2400 * time.Millisecond,
		},
		// Recorded from the real probes (e2e TestEstablishedBlackhole -record):
		// a tail loss probe (count 0) first, then timeouts 1, 2, 3, 4.
		{
			fixture: "kernel_blackhole_input.jsonl",
			keys:    []string{"blackhole/netfilter_drop/"},
			details: []string{"Diagnosed at 3 consecutive retransmission timeout(s)"},
			sources: []string{"skb:kfree_skb", "tcp:tcp_retransmit_skb"},
			layer:   diagnosis.LayerPolicy, minConf: 0.65, maxConf: 0.75,
		},
		{
			fixture: "kernel_blackhole_acks.jsonl",
			keys:    []string{"blackhole/ack_dropped/"},
			summary: []string{"the peer's ACKs dropped by a netfilter rule"},
			layer:   diagnosis.LayerPolicy, minConf: 0.65, maxConf: 0.75,
		},
		{
			// The server's link went down: no drop anywhere on the node.
			fixture:    "kernel_blackhole_vanished.jsonl",
			keys:       []string{"blackhole/no_local_drop/"},
			libDetails: []string{"half_open/data_unanswered"},
			details:    []string{"Diagnosed at 3 consecutive retransmission timeout(s)"},
			layer:      diagnosis.LayerL3, minConf: 0.35, maxConf: 0.45,
		},
		{
			fixture: "blackhole_keepalive_timeout.jsonl",
			keys:    []string{"blackhole/no_local_drop/192.0.2.10:5432/"},
			summary: []string{"timed out: the peer stopped answering"},
			details: []string{"Diagnosed when the kernel gave up (ESTABLISHED -> CLOSE with ETIMEDOUT); no retransmit seen"},
			sources: []string{"sock:inet_sock_set_state"},
			minConf: 0.5, maxConf: 0.6, at: 9 * time.Second,
		},
		{
			fixture: "blackhole_own_output_eperm.jsonl",
			keys:    []string{"blackhole/local_output_firewall/10.0.0.2:8080/netns:4097"},
			summary: []string{"sender's own firewall in netns client"},
			details: []string{"2 retransmit(s) failed with EPERM"}, // the first is not kept (see wantRetransmit)
			layer:   diagnosis.LayerPolicy,
			minConf: 0.65, maxConf: 0.75, at: 2400 * time.Millisecond,
		},
		{
			fixture: "peer_lost_after_outage.jsonl",
			keys:    []string{"blackhole/no_local_drop/192.0.2.10:443/", "peer_lost_state/reset_after_outage/192.0.2.10:443/"},
		},
	})
}

// The final close folds into the early diagnosis: one occurrence, the
// close in the aggregate's evidence, its errno in the re-emission.
func TestBlackholeCloseFolds(t *testing.T) {
	ds, st := replayFixture(t, "blackhole_nft_input.jsonl", []pattern.Pattern{pattern.Blackhole{}})
	if len(ds) != 2 {
		t.Fatalf("got %v, want the first emission and one aggregate update", keysOf(ds))
	}
	upd := ds[1]
	if upd.Count != 1 || st.FollowUps < 2 {
		t.Errorf("count %d, follow-ups %d: the later retransmits and the close are one occurrence", upd.Count, st.FollowUps)
	}
	if !hasSource(upd, "sock:inet_sock_set_state") {
		t.Errorf("the close is not in the aggregate's evidence: %+v", upd.Evidence)
	}
}

// A close with ETIMEDOUT alone (the retransmits lost by the ring buffer)
// still matches; MinRetransmits moves the early decision.
func TestBlackholeThreshold(t *testing.T) {
	for _, tc := range []struct {
		min  int
		want time.Duration // decision offset in blackhole_no_local_drop.jsonl
	}{{0, 2400 * time.Millisecond}, {2, 1600 * time.Millisecond}, {5, 7200 * time.Millisecond}} {
		ds, _ := replayFixture(t, "blackhole_no_local_drop.jsonl", []pattern.Pattern{pattern.Blackhole{MinRetransmits: tc.min}})
		if len(ds) == 0 {
			t.Fatalf("min %d: no diagnosis", tc.min)
		}
		if got := ds[0].LastSeen.Sub(fixtureDay); got < tc.want || got > tc.want+300*time.Millisecond {
			t.Errorf("min %d: decided at +%s, want +%s", tc.min, got, tc.want)
		}
	}
}
