package pattern_test

import (
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

func TestPeerLostStateFixtures(t *testing.T) {
	runStreamCases(t, pattern.PeerLostState{}, []streamCase{
		{
			fixture: "peer_lost_no_socket.jsonl",
			keys:    []string{"peer_lost_state/no_socket/10.0.0.2:8080/netns:4098"},
			summary: []string{"connection to 10.0.0.2:8080 reset: the peer in netns server has no socket for it"},
			details: []string{"received the RST in ESTABLISHED", "How long the connection had been up is unknown",
				"NO_SOCKET drop of a PSH|ACK segment, RST sent by the peer's stack (reason NO_SOCKET), RST received in ESTABLISHED, close with ECONNRESET"},
			resolution: []string{"retry on ECONNRESET", "preStop"},
			sources:    []string{"skb:kfree_skb", "tcp:tcp_send_reset", "tcp:tcp_receive_reset", "sock:inet_sock_set_state"},
			layer:      diagnosis.LayerL4, errorType: "ECONNRESET",
			minConf: 0.85, maxConf: 0.95, at: 1000 * time.Millisecond,
		},
		{
			fixture: "peer_lost_new_listener.jsonl",
			keys:    []string{"peer_lost_state/new_listener/10.0.0.2:8080/netns:4098"},
			summary: []string{"the peer restarted and listens again in netns server"},
			details: []string{"drop reason TCP_FLAGS"},
			sources: []string{"skb:kfree_skb", "tcp:tcp_receive_reset"},
			minConf: 0.65, maxConf: 0.75, at: 1000 * time.Millisecond,
		},
		// Recorded from the real probes (e2e TestPeerRestarted -record).
		{
			fixture: "kernel_peer_lost_no_socket.jsonl",
			keys:    []string{"peer_lost_state/no_socket/"},
			sources: []string{"skb:kfree_skb", "tcp:tcp_send_reset", "tcp:tcp_receive_reset", "sock:inet_sock_set_state"},
			minConf: 0.85, maxConf: 0.95,
		},
		{
			fixture: "kernel_peer_lost_new_listener.jsonl",
			keys:    []string{"peer_lost_state/new_listener/"},
			details: []string{"RST sent by the peer's stack (reason TCP_FLAGS)"},
			minConf: 0.85, maxConf: 0.95,
		},
		{
			// Only the side without the socket is on this node: on a Tick.
			fixture: "peer_lost_orphan_data.jsonl",
			keys:    []string{"peer_lost_state/no_socket/10.0.0.2:8080/netns:4098"},
			summary: []string{"connection to 10.0.0.2:8080 reset"},
			details: []string{"NO_SOCKET drop of a PSH|ACK segment"},
			minConf: 0.5, maxConf: 0.6, at: 1000 * time.Millisecond,
		},
		{
			fixture: "peer_lost_after_outage.jsonl",
			keys:    []string{"blackhole/no_local_drop/192.0.2.10:443/", "peer_lost_state/reset_after_outage/192.0.2.10:443/"},
			summary: []string{"reset after its data went unanswered"},
			details: []string{"at least 3 consecutive retransmission timeout(s)", "had been up at least"},
			sources: []string{"tcp:tcp_retransmit_skb", "sock:inet_sock_set_state"},
			minConf: 0.5, maxConf: 0.7, at: 5000 * time.Millisecond,
		},
	})
}
