package pattern_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

func TestConnectionRefusedFixtures(t *testing.T) {
	tests := []struct {
		fixture    string
		cause      string
		summary    string
		layer      diagnosis.Layer
		dstNetns   string
		resolution string
		sources    []string
		minConf    float64
		maxConf    float64
	}{
		{
			fixture: "refused_closed_port.jsonl", cause: pattern.CauseNoListener,
			summary:    "connection to 10.0.0.2:8080 refused: no process listens on port 8080 in netns server",
			layer:      diagnosis.LayerL4,
			dstNetns:   "server",
			resolution: "Start the service that should listen on port 8080 in netns server",
			sources:    []string{"skb:kfree_skb", "tcp:tcp_send_reset", "tcp:tcp_receive_reset", "sock:inet_sock_set_state"},
			minConf:    0.9, maxConf: 0.98,
		},
		{
			fixture: "refused_reject.jsonl", cause: pattern.CauseFirewallReject,
			summary:    "connection to 10.0.0.2:8080 refused: a firewall REJECT (tcp-reset) in netns server refused it",
			layer:      diagnosis.LayerPolicy,
			dstNetns:   "server",
			resolution: "`nft list ruleset`",
			sources:    []string{"skb:kfree_skb", "tcp:tcp_receive_reset", "sock:inet_sock_set_state"},
			minConf:    0.85, maxConf: 0.95,
		},
		{
			fixture: "refused_client_only.jsonl", cause: pattern.CauseRemote,
			summary:    "connection to 192.0.2.10:443 refused by the remote host: no listener or a firewall REJECT",
			layer:      diagnosis.LayerL4,
			resolution: "On 192.0.2.10 check that a process listens on port 443",
			sources:    []string{"tcp:tcp_receive_reset", "sock:inet_sock_set_state"},
			minConf:    0.4, maxConf: 0.6,
		},
		{
			// RST without the close: decided on a Tick after the grace period.
			fixture: "refused_reset_no_close.jsonl", cause: pattern.CauseRemote,
			summary:    "connection to 192.0.2.10:443 refused by the remote host",
			layer:      diagnosis.LayerL4,
			resolution: "`ss -ltnp`",
			sources:    []string{"tcp:tcp_receive_reset"},
			minConf:    0.2, maxConf: 0.4,
		},
	}
	for _, tc := range tests {
		for _, lib := range []struct {
			name string
			ps   []pattern.Pattern
		}{{"alone", []pattern.Pattern{pattern.ConnectionRefused{}}}, {"library", nil}} {
			t.Run(tc.fixture+"/"+lib.name, func(t *testing.T) {
				ds, _ := replayFixture(t, tc.fixture, lib.ps)
				if len(ds) != 1 {
					t.Fatalf("got %d diagnoses, want 1: %+v", len(ds), ds)
				}
				d := ds[0]
				if d.Pattern != diagnosis.PatternConnectionRefused || d.ErrorType != "ECONNREFUSED" || d.Count != 1 {
					t.Errorf("pattern %s error %s count %d", d.Pattern, d.ErrorType, d.Count)
				}
				if d.Summary != tc.summary && !(len(tc.summary) < len(d.Summary) && d.Summary[:len(tc.summary)] == tc.summary) {
					t.Errorf("summary = %q, want %q", d.Summary, tc.summary)
				}
				mustContain(t, "key", d.Key, "connection_refused/"+tc.cause+"/")
				if d.Layer != tc.layer {
					t.Errorf("layer = %s, want %s", d.Layer, tc.layer)
				}
				if d.Destination.NetnsName != tc.dstNetns {
					t.Errorf("destination netns = %q, want %q", d.Destination.NetnsName, tc.dstNetns)
				}
				if d.Source.NetnsName != "client" || d.Source.NetnsInode != clientInode {
					t.Errorf("source endpoint = %+v, want netns client", d.Source)
				}
				mustContain(t, "resolution", d.Resolution, tc.resolution)
				for _, src := range tc.sources {
					if !hasSource(d, src) {
						t.Errorf("no evidence from %s: %+v", src, d.Evidence)
					}
				}
				if d.Confidence != float64(int(d.Confidence*100+0.5))/100 {
					t.Errorf("confidence %v not rounded to hundredths", d.Confidence)
				}
				if d.Confidence < tc.minConf || d.Confidence > tc.maxConf {
					t.Errorf("confidence %.2f outside [%.2f, %.2f]", d.Confidence, tc.minConf, tc.maxConf)
				}
			})
		}
	}
}

var (
	cli  = netip.MustParseAddr("10.0.0.1")
	srv  = netip.MustParseAddr("10.0.0.2")
	flow = signal.Flow{Proto: signal.ProtoTCP, Src: cli, Dst: srv, SrcPort: 40000, DstPort: 8080}
	t0   = time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
)

func sig(k signal.Kind, at time.Duration, mod func(*signal.Signal)) signal.Signal {
	s := signal.Signal{Kind: k, Time: t0.Add(at), Flow: flow, NetnsCookie: 4097, NetnsInode: clientInode}
	if mod != nil {
		mod(&s)
	}
	return s
}

func rstRecv(at time.Duration) signal.Signal {
	return sig(signal.KindResetReceived, at, func(s *signal.Signal) { s.State = signal.StateSynSent })
}

func closeErr(at time.Duration, from signal.TCPState, skErr int32) signal.Signal {
	return sig(signal.KindStateChange, at, func(s *signal.Signal) {
		s.OldState, s.State, s.SkErr = from, signal.StateClose, skErr
	})
}

func serverDrop(at time.Duration, reason string) signal.Signal {
	return sig(signal.KindDrop, at, func(s *signal.Signal) {
		s.NetnsCookie, s.NetnsInode, s.TCPFlags, s.DropReason = 4098, serverInode, signal.TCPFlagSYN, reason
	})
}

// evidence builds what the correlator would hold after seeing sigs, with the
// last one as the trigger.
func evidence(sigs ...signal.Signal) *pattern.Evidence {
	ev := &pattern.Evidence{Flow: flow, Oriented: true, Client: pattern.Netns{Cookie: 4097, Inode: clientInode},
		SynRetrans: &pattern.Retransmits{}}
	for i := range sigs {
		s := sigs[i]
		switch {
		case s.Kind == signal.KindRetransmit && s.State == signal.StateSynSent:
			if ev.SynRetrans.Count == 0 {
				ev.SynRetrans.First = s
			}
			ev.SynRetrans.Last = s
			ev.SynRetrans.Count++
			switch s.Err {
			case -1:
				ev.SynRetrans.EPERM++
			case -16:
				ev.SynRetrans.EBUSY++
			}
		case s.Kind == signal.KindDrop || s.Kind == signal.KindResetSent:
			ev.Packet = append(ev.Packet, s)
		default:
			ev.Socket = append(ev.Socket, s)
		}
	}
	last := sigs[len(sigs)-1]
	ev.Trigger, ev.Now = &last, last.Time
	return ev
}

func TestConnectionRefusedMatch(t *testing.T) {
	p := pattern.ConnectionRefused{}
	tests := []struct {
		name  string
		sigs  []signal.Signal
		tick  bool // evaluate as a Tick (no trigger)
		out   pattern.Outcome
		cause string
	}{
		{"close 111 alone", []signal.Signal{closeErr(0, signal.StateSynSent, 111)}, false, pattern.Match, pattern.CauseRemote},
		{"rst waits for the close", []signal.Signal{rstRecv(0)}, false, pattern.Defer, ""},
		{"rst then tick", []signal.Signal{rstRecv(0)}, true, pattern.Match, pattern.CauseRemote},
		{"rst and close then tick", []signal.Signal{rstRecv(0), closeErr(1, signal.StateSynSent, 111)}, true, pattern.NoMatch, ""},
		{"no socket only", []signal.Signal{serverDrop(0, "NO_SOCKET"), closeErr(1, signal.StateSynSent, 111)}, false, pattern.Match, pattern.CauseNoListener},
		{"netfilter", []signal.Signal{serverDrop(0, "NETFILTER_DROP"), rstRecv(1), closeErr(2, signal.StateSynSent, 111)}, false, pattern.Match, pattern.CauseFirewallReject},
		{"timeout close is not refused", []signal.Signal{closeErr(0, signal.StateSynSent, 110)}, false, pattern.NoMatch, ""},
		{"EPIPE teardown", []signal.Signal{closeErr(0, signal.StateCloseWait, 32)}, false, pattern.NoMatch, ""},
		{"ECONNRESET teardown", []signal.Signal{closeErr(0, signal.StateEstablished, 104)}, false, pattern.NoMatch, ""},
		{"111 outside SYN_SENT", []signal.Signal{closeErr(0, signal.StateEstablished, 111)}, false, pattern.NoMatch, ""},
		{"rst on established", []signal.Signal{sig(signal.KindResetReceived, 0, func(s *signal.Signal) { s.State = signal.StateEstablished })}, false, pattern.NoMatch, ""},
		{"ICMP during connect (sk_err 0)", []signal.Signal{closeErr(0, signal.StateSynSent, 0)}, false, pattern.NoMatch, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := evidence(tc.sigs...)
			if tc.tick {
				ev.Trigger = nil
			}
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

// Confidence comes from the evidence: each side seen adds to it.
func TestConnectionRefusedConfidenceGrowsWithEvidence(t *testing.T) {
	p := pattern.ConnectionRefused{}
	steps := [][]signal.Signal{
		{closeErr(2, signal.StateSynSent, 111)},
		{rstRecv(1), closeErr(2, signal.StateSynSent, 111)},
		{serverDrop(0, "NO_SOCKET"), rstRecv(1), closeErr(2, signal.StateSynSent, 111)},
		{serverDrop(0, "NO_SOCKET"), sig(signal.KindResetSent, 0, func(s *signal.Signal) { s.Flow = flow.Reverse(); s.NetnsInode = serverInode }),
			rstRecv(1), closeErr(2, signal.StateSynSent, 111)},
	}
	prev := 0.0
	for i, sigs := range steps {
		v, out := p.Match(evidence(sigs...))
		if out != pattern.Match || v.Confidence <= prev {
			t.Fatalf("step %d: outcome %v confidence %.2f, want a match above %.2f", i, out, v.Confidence, prev)
		}
		prev = v.Confidence
	}
}

func TestConnectionRefusedWants(t *testing.T) {
	p := pattern.ConnectionRefused{}
	tests := []struct {
		name string
		s    signal.Signal
		want bool
	}{
		{"close 111 from SYN_SENT", closeErr(0, signal.StateSynSent, 111), true},
		{"rst in SYN_SENT", rstRecv(0), true},
		{"SYN drop", serverDrop(0, "NO_SOCKET"), true},
		{"data drop", sig(signal.KindDrop, 0, func(s *signal.Signal) { s.TCPFlags = signal.TCPFlagPSH | signal.TCPFlagACK }), false},
		{"SYN-ACK drop", sig(signal.KindDrop, 0, func(s *signal.Signal) { s.TCPFlags = signal.TCPFlagSYN | signal.TCPFlagACK }), false},
		{"EPIPE close", closeErr(0, signal.StateCloseWait, 32), false},
		{"RST sent for a SYN", sig(signal.KindResetSent, 0, func(s *signal.Signal) { s.TCPFlags = signal.TCPFlagSYN }), true},
		{"RST sent, trigger unknown", sig(signal.KindResetSent, 0, nil), true},
		{"RST sent for a data segment", sig(signal.KindResetSent, 0, func(s *signal.Signal) { s.TCPFlags = signal.TCPFlagPSH | signal.TCPFlagACK }), false},
		{"retransmit", sig(signal.KindRetransmit, 0, func(s *signal.Signal) { s.State = signal.StateSynSent }), false},
	}
	for _, tc := range tests {
		if got := p.Wants(&tc.s); got != tc.want {
			t.Errorf("%s: Wants = %v, want %v", tc.name, got, tc.want)
		}
	}
}
