package pattern_test

import (
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

func TestHalfOpenFixtures(t *testing.T) {
	runStreamCases(t, pattern.HalfOpen{}, []streamCase{
		{
			fixture:    "halfopen_fin.jsonl",
			keys:       []string{"half_open/fin_unanswered/10.0.0.4:8080/"},
			summary:    []string{"connection to 10.0.0.4:8080 half-open: FIN never acknowledged"},
			details:    []string{"retransmits its FIN", "Diagnosed at 3 consecutive retransmission timeout(s)", "before the kernel gives up"},
			resolution: []string{"tcp_orphan_retries", "keepalives"},
			sources:    []string{"tcp:tcp_retransmit_skb"},
			layer:      diagnosis.LayerL4, errorType: "ETIMEDOUT",
			minConf: 0.45, maxConf: 0.55, at: 2400 * time.Millisecond,
		},
		{
			fixture: "halfopen_fin_orphan_retries.jsonl",
			keys:    []string{"half_open/fin_unanswered/10.0.0.4:8080/"},
			details: []string{"The kernel gave up: FIN_WAIT1 -> CLOSE with ETIMEDOUT", "No error reached the application"},
			sources: []string{"tcp:tcp_retransmit_skb", "sock:inet_sock_set_state"},
			minConf: 0.65, maxConf: 0.75, at: 1600 * time.Millisecond,
		},
		{
			// Recorded (e2e TestHalfOpenClientClose -record): the server's
			// ACKs of the FIN are dropped in its output; the kernel gives up
			// after two timeouts (tcp_orphan_retries=1).
			fixture: "kernel_half_open_fin.jsonl",
			keys:    []string{"half_open/fin_dropped/"},
			details: []string{"The peer's ACKs were dropped in netns:", "FIN_WAIT1 -> CLOSE with ETIMEDOUT"},
			sources: []string{"skb:kfree_skb", "tcp:tcp_retransmit_skb", "sock:inet_sock_set_state"},
			layer:   diagnosis.LayerPolicy, minConf: 0.8, maxConf: 0.9,
		},
		{
			fixture: "halfopen_fin_dropped.jsonl",
			keys:    []string{"half_open/fin_dropped/10.0.0.2:8080/netns:4098"},
			details: []string{"The FIN was dropped in netns server: reason NETFILTER_DROP at nft_do_chain"},
			sources: []string{"skb:kfree_skb"},
			layer:   diagnosis.LayerPolicy,
			minConf: 0.6, maxConf: 0.7, at: 2400 * time.Millisecond,
		},
	})
	// Alone, the data case is half_open's.
	ds, _ := replayFixture(t, "blackhole_no_local_drop.jsonl", []pattern.Pattern{pattern.HalfOpen{}})
	if f := firstEmissions(ds, streamPatterns); len(f) != 1 || f[0].Pattern != diagnosis.PatternHalfOpen ||
		f[0].Confidence >= 0.4 {
		t.Errorf("data case alone: %v", keysOf(ds))
	} else {
		mustContain(t, "summary", f[0].Summary, "data never acknowledged")
	}
}
