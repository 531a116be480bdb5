package pattern_test

import (
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

func TestNetnsNames(t *testing.T) {
	tests := []struct {
		name   string
		namer  pattern.NetnsNamer
		ns     pattern.Netns
		raw    string
		phrase string
	}{
		{"no namer", nil, pattern.Netns{Cookie: 4098, Inode: serverInode}, "netns:4026532302", "netns:4026532302"},
		{"named", fixtureNames, pattern.Netns{Cookie: 4098, Inode: serverInode}, "server", "netns server"},
		{"namer does not know it", fixtureNames, pattern.Netns{Cookie: 9, Inode: 77}, "netns:77", "netns:77"},
		{"cookie only", nil, pattern.Netns{Cookie: 9}, "netns:cookie:9", "netns:cookie:9"},
	}
	for _, tc := range tests {
		if got := pattern.NetnsName(tc.namer, tc.ns); got != tc.raw {
			t.Errorf("%s: NetnsName = %q, want %q", tc.name, got, tc.raw)
		}
		if got := pattern.NetnsPhrase(tc.namer, tc.ns); got != tc.phrase {
			t.Errorf("%s: NetnsPhrase = %q, want %q", tc.name, got, tc.phrase)
		}
	}
}

func TestDescribe(t *testing.T) {
	ev := evidence(serverDrop(0, "NETFILTER_DROP"), retrans(time.Second, 1, -1))
	ev.Namer = fixtureNames
	tests := []struct {
		s      signal.Signal
		source string
		fact   string
	}{
		{ev.Packet[0], "skb:kfree_skb", "SYN packet 10.0.0.1:40000 -> 10.0.0.2:8080 dropped in netns server (dev none (local output or socket-level)): reason NETFILTER_DROP at an unknown location"},
		{ev.SynRetrans.First, "tcp:tcp_retransmit_skb", "SYN retransmit in SYN_SENT (icsk_retransmits=1), send failed err=-1 (EPERM), 1s after the connect started"},
		{closeErr(135*time.Second, signal.StateSynSent, 110), "sock:inet_sock_set_state", "socket in netns client went SYN_SENT -> CLOSE with sk_err=110 (ETIMEDOUT), 2m15s after the connect started"},
		{rstRecv(0), "tcp:tcp_receive_reset", "RST received by the socket in netns client in state SYN_SENT on 10.0.0.1:40000 -> 10.0.0.2:8080"},
	}
	for _, tc := range tests {
		got := pattern.Describe(ev, &tc.s)
		if got.Source != tc.source || got.Fact != tc.fact || !got.Time.Equal(tc.s.Time) {
			t.Errorf("Describe(%s) =\n  %s %q\nwant\n  %s %q", tc.s.Kind, got.Source, got.Fact, tc.source, tc.fact)
		}
	}
}
