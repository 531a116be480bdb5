package correlate

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

var (
	t0       = time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	clientIP = netip.MustParseAddr("10.0.0.1")
	serverIP = netip.MustParseAddr("10.0.0.2")
)

const (
	clientCookie, clientInode = 4097, 4026532301
	serverCookie, serverInode = 4098, 4026532302
)

func tcpFlow(sport, dport uint16) signal.Flow {
	return signal.Flow{Proto: signal.ProtoTCP, Src: clientIP, Dst: serverIP, SrcPort: sport, DstPort: dport}
}

// refusedClosedPort is KERNEL.md's closed-port sequence for one connect.
func refusedClosedPort(at time.Time, sport, dport uint16) []signal.Signal {
	f := tcpFlow(sport, dport)
	return []signal.Signal{
		{Kind: signal.KindDrop, Time: at, Flow: f, NetnsCookie: serverCookie, NetnsInode: serverInode,
			TCPFlags: signal.TCPFlagSYN, DropReason: "NO_SOCKET", DropLocation: "tcp_v4_rcv", Dev: "eth0"},
		{Kind: signal.KindResetSent, Time: at.Add(10 * time.Microsecond), Flow: f.Reverse(), NetnsCookie: serverCookie,
			NetnsInode: serverInode, TCPFlags: signal.TCPFlagSYN, ResetReason: "NO_SOCKET"},
		{Kind: signal.KindResetReceived, Time: at.Add(80 * time.Microsecond), Flow: f, NetnsCookie: clientCookie,
			NetnsInode: clientInode, State: signal.StateSynSent},
		{Kind: signal.KindStateChange, Time: at.Add(90 * time.Microsecond), Flow: f, NetnsCookie: clientCookie,
			NetnsInode: clientInode, OldState: signal.StateSynSent, State: signal.StateClose, SkErr: 111},
	}
}

type recorder struct {
	t  testing.TB
	ds []diagnosis.Diagnosis
}

func (r *recorder) emit(d diagnosis.Diagnosis) {
	if err := d.Validate(); err != nil {
		r.t.Errorf("emitted invalid diagnosis: %v", err)
	}
	r.ds = append(r.ds, d)
}

func newEngine(t testing.TB, mod func(*Config)) (*Engine, *recorder) {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	r := &recorder{t: t}
	e, err := New(cfg, r.emit)
	if err != nil {
		t.Fatal(err)
	}
	return e, r
}

func observeAll(e *Engine, sigs []signal.Signal) {
	for _, s := range sigs {
		e.Observe(s)
	}
}

func TestAggregation(t *testing.T) {
	e, r := newEngine(t, nil)
	for i := range 100 {
		observeAll(e, refusedClosedPort(t0.Add(time.Duration(i)*10*time.Millisecond), uint16(30000+i), 8080))
	}
	if len(r.ds) != 1 {
		t.Fatalf("%d emitted during the window, want 1", len(r.ds))
	}
	first := r.ds[0]
	if first.Count != 1 || first.Pattern != diagnosis.PatternConnectionRefused {
		t.Fatalf("first emission %s count %d", first.Pattern, first.Count)
	}
	if strings.Contains(first.Key, "30000") {
		t.Errorf("key %q contains the client's ephemeral port", first.Key)
	}
	e.Tick(t0.Add(29 * time.Second))
	if len(r.ds) != 1 {
		t.Fatalf("re-emitted before the window closed")
	}
	e.Tick(t0.Add(31 * time.Second))
	if len(r.ds) != 2 {
		t.Fatalf("%d emitted after the window, want 2 (first + aggregate)", len(r.ds))
	}
	agg := r.ds[1]
	if agg.Count != 100 || agg.Key != first.Key || !agg.FirstSeen.Equal(first.FirstSeen) ||
		!agg.LastSeen.Equal(t0.Add(990*time.Millisecond+90*time.Microsecond)) {
		t.Errorf("aggregate count %d key %q first %v last %v", agg.Count, agg.Key, agg.FirstSeen, agg.LastSeen)
	}
	if len(agg.Evidence) != 16 || !strings.Contains(agg.Details, "100 occurrence(s)") || !strings.Contains(agg.Details, "omitted") {
		t.Errorf("aggregate evidence %d (want the cap of 16), details %q", len(agg.Evidence), agg.Details)
	}
	if lastEv := agg.Evidence[len(agg.Evidence)-1]; !lastEv.Time.Equal(agg.LastSeen) {
		t.Errorf("last evidence at %v, want the latest refusal (%v): a full list keeps its tail current", lastEv.Time, agg.LastSeen)
	}
	if len(first.Evidence) >= len(agg.Evidence) {
		t.Errorf("the first emission's evidence grew with the aggregate (shared slice): %d", len(first.Evidence))
	}
	st := e.Stats()
	if st.Diagnoses != 2 || st.AggregateUpdates != 1 || st.Aggregated != 99 || st.Signals != 400 || st.FlowsTracked != 0 {
		t.Errorf("stats %+v", st)
	}
	// The window closed: the next refusal is a new first occurrence.
	e.Tick(t0.Add(40 * time.Second))
	observeAll(e, refusedClosedPort(t0.Add(41*time.Second), 40000, 8080))
	if len(r.ds) != 3 || r.ds[2].Count != 1 {
		t.Fatalf("after the window: %d emitted, want a new first occurrence", len(r.ds))
	}
	// Nothing grew: no aggregate update when its window closes.
	e.Tick(t0.Add(100 * time.Second))
	if len(r.ds) != 3 {
		t.Fatalf("an unchanged aggregate was re-emitted")
	}
}

func TestAggregationKeySeparatesCauses(t *testing.T) {
	e, r := newEngine(t, nil)
	observeAll(e, refusedClosedPort(t0, 30000, 8080))
	observeAll(e, refusedClosedPort(t0, 30001, 8081)) // other port
	// Same port, but refused by a REJECT rule: another cause.
	rej := refusedClosedPort(t0, 30002, 8080)
	rej[0].DropReason, rej[0].DropLocation = "NETFILTER_DROP", "nft_do_chain"
	observeAll(e, []signal.Signal{rej[0], rej[2], rej[3]})
	if len(r.ds) != 3 {
		t.Fatalf("%d diagnoses, want 3 distinct keys", len(r.ds))
	}
	keys := map[string]bool{}
	for _, d := range r.ds {
		keys[d.Key] = true
	}
	if len(keys) != 3 {
		t.Fatalf("keys not distinct: %v", keys)
	}
}

func TestMaxFlowsEviction(t *testing.T) {
	e, r := newEngine(t, func(c *Config) { c.MaxFlows = 10; c.SYNTimeout = 3 * time.Second })
	// Five connections retrying their SYN (first retransmit, below SYNTimeout).
	for i := range 5 {
		f := tcpFlow(uint16(50000+i), 9000)
		e.Observe(signal.Signal{Kind: signal.KindRetransmit, Time: t0.Add(time.Second), Flow: f, NetnsCookie: clientCookie,
			NetnsInode: clientInode, State: signal.StateSynSent, TCPFlags: signal.TCPFlagSYN, Retransmits: 1})
	}
	// A storm of SYN drops for other 5-tuples (packet evidence only).
	for i := range 1000 {
		f := tcpFlow(uint16(1000+i), 22)
		e.Observe(signal.Signal{Kind: signal.KindDrop, Time: t0.Add(time.Second + time.Duration(i)*time.Microsecond), Flow: f,
			NetnsCookie: serverCookie, TCPFlags: signal.TCPFlagSYN, DropReason: "NO_SOCKET"})
	}
	st := e.Stats()
	if st.FlowsTracked > 10 || st.Evicted != 1000-5 {
		t.Fatalf("tracked %d evicted %d, want <= 10 and 995", st.FlowsTracked, st.Evicted)
	}
	// Connections outlive packet-only evidence: their third retry is still
	// known to be the third, so it reaches SYNTimeout.
	for i := range 5 {
		f := tcpFlow(uint16(50000+i), 9000)
		for n, at := range []time.Duration{2 * time.Second, 3 * time.Second} {
			e.Observe(signal.Signal{Kind: signal.KindRetransmit, Time: t0.Add(at), Flow: f, NetnsCookie: clientCookie,
				NetnsInode: clientInode, State: signal.StateSynSent, TCPFlags: signal.TCPFlagSYN, Retransmits: uint32(n + 2)})
		}
	}
	e.Tick(t0.Add(4 * time.Second)) // no drop seen: decided after the grace period
	if len(r.ds) != 1 || r.ds[0].Pattern != diagnosis.PatternSYNDropped || !strings.Contains(r.ds[0].Details, "Diagnosed at SYN retransmit 3") {
		t.Fatalf("got %d diagnoses: %+v", len(r.ds), r.ds)
	}
	if e.Stats().Aggregated != 4 {
		t.Errorf("aggregated %d, want the other 4 connections counted", e.Stats().Aggregated)
	}
}

func TestEvictionDecidesDeferred(t *testing.T) {
	e, r := newEngine(t, func(c *Config) { c.MaxFlows = 1 })
	seq := refusedClosedPort(t0, 30000, 8080)
	e.Observe(seq[2]) // RST in SYN_SENT: deferred until the close or the grace
	e.Observe(refusedClosedPort(t0.Add(time.Millisecond), 30001, 8081)[0])
	if len(r.ds) != 1 || r.ds[0].Pattern != diagnosis.PatternConnectionRefused {
		t.Fatalf("evicted deferred connection not decided: %+v", r.ds)
	}
	e.Tick(t0.Add(time.Hour))
	if len(r.ds) != 1 {
		t.Fatalf("decided twice")
	}
}

func TestAggregateBound(t *testing.T) {
	e, r := newEngine(t, func(c *Config) { c.MaxFlows = 5 })
	for i := range 20 {
		observeAll(e, refusedClosedPort(t0.Add(time.Duration(i)*time.Millisecond), 30000, uint16(8000+i)))
	}
	st := e.Stats()
	if st.OpenAggregates > 5 || st.AggregatesEvicted != 15 || len(r.ds) != 20 {
		t.Fatalf("open %d evicted %d emitted %d", st.OpenAggregates, st.AggregatesEvicted, len(r.ds))
	}
}

func TestExpiry(t *testing.T) {
	e, r := newEngine(t, nil)
	// Packet-only evidence lives for Window, a connecting socket for FlowTTL.
	e.Observe(refusedClosedPort(t0, 30000, 8080)[0])
	e.Observe(signal.Signal{Kind: signal.KindRetransmit, Time: t0, Flow: tcpFlow(30001, 8080), NetnsInode: clientInode,
		State: signal.StateSynSent, Retransmits: 1, TCPFlags: signal.TCPFlagSYN})
	e.Tick(t0.Add(31 * time.Second))
	if st := e.Stats(); st.FlowsTracked != 1 || st.Expired != 1 {
		t.Fatalf("after Window: %+v", st)
	}
	e.Tick(t0.Add(151 * time.Second))
	if st := e.Stats(); st.FlowsTracked != 0 || st.Expired != 2 {
		t.Fatalf("after FlowTTL: %+v", st)
	}
	// Server evidence that expired is not used: the late close is client-only.
	observeAll(e, refusedClosedPort(t0.Add(200*time.Second), 30002, 8080)[2:])
	last := r.ds[len(r.ds)-1]
	if !strings.Contains(last.Key, "/remote/") {
		t.Fatalf("key %s, want a client-only diagnosis", last.Key)
	}
}

// The server's evidence may arrive after the client's RST (another CPU):
// it is still used while the decision waits for the close.
func TestServerEvidenceAfterClientReset(t *testing.T) {
	e, r := newEngine(t, nil)
	seq := refusedClosedPort(t0, 30000, 8080)
	observeAll(e, []signal.Signal{seq[2], seq[0], seq[1], seq[3]})
	if len(r.ds) != 1 || !strings.Contains(r.ds[0].Key, "/no_listener/") {
		t.Fatalf("got %+v", r.ds)
	}
}

type fakePattern struct {
	id    diagnosis.Pattern
	cause string
	conf  float64
	spec  int
}

func (p fakePattern) ID() diagnosis.Pattern       { return p.id }
func (p fakePattern) Wants(s *signal.Signal) bool { return s.Kind == signal.KindDrop }
func (p fakePattern) Match(ev *pattern.Evidence) (pattern.Verdict, pattern.Outcome) {
	if ev.Trigger == nil {
		return pattern.Verdict{}, pattern.NoMatch
	}
	return pattern.Verdict{Cause: p.cause, Confidence: p.conf, Specificity: p.spec, Why: "because " + p.cause}, pattern.Match
}
func (p fakePattern) Diagnose(ev *pattern.Evidence, v pattern.Verdict) diagnosis.Diagnosis {
	return diagnosis.Diagnosis{Pattern: p.id, Summary: string(p.id) + " " + v.Cause, Confidence: v.Confidence,
		Severity: diagnosis.SeverityWarn, Resolution: "fix it", Layer: diagnosis.LayerL3,
		Evidence: []diagnosis.Evidence{pattern.Describe(ev, ev.Trigger)}}
}

func TestRanking(t *testing.T) {
	tests := []struct {
		name     string
		ps       []pattern.Pattern
		winner   diagnosis.Pattern
		also     string
		wantNote bool
	}{
		{"confidence wins", []pattern.Pattern{fakePattern{"a", "weak", 0.4, 9}, fakePattern{"b", "strong", 0.8, 1}}, "b", "a/weak (confidence 0.40", true},
		{"specificity breaks a tie", []pattern.Pattern{fakePattern{"a", "vague", 0.6, 1}, fakePattern{"b", "precise", 0.6, 3}}, "b", "a/vague", true},
		{"full tie keeps library order", []pattern.Pattern{fakePattern{"a", "x", 0.6, 1}, fakePattern{"b", "y", 0.6, 1}}, "a", "b/y", true},
		{"single match has no note", []pattern.Pattern{fakePattern{"a", "x", 0.6, 1}}, "a", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, r := newEngine(t, func(c *Config) { c.Patterns = tc.ps })
			e.Observe(refusedClosedPort(t0, 30000, 8080)[0])
			if len(r.ds) != 1 {
				t.Fatalf("%d diagnoses, want 1", len(r.ds))
			}
			d := r.ds[0]
			if d.Pattern != tc.winner {
				t.Fatalf("winner %s, want %s", d.Pattern, tc.winner)
			}
			hasNote := strings.Contains(d.Details, "Ranked first of")
			if hasNote != tc.wantNote || !strings.Contains(d.Details, tc.also) {
				t.Fatalf("details %q: want note=%v mentioning %q", d.Details, tc.wantNote, tc.also)
			}
			if tc.wantNote && !strings.Contains(d.Details, "because") {
				t.Errorf("details %q do not say why the winner won", d.Details)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"defaults", func(*Config) {}, ""},
		{"syn timeout", func(c *Config) { c.SYNTimeout = 0 }, "syn_timeout"},
		{"window", func(c *Config) { c.Window = -time.Second }, "window"},
		{"max flows", func(c *Config) { c.MaxFlows = 0 }, "max_flows"},
		{"grace", func(c *Config) { c.Grace = -1 }, "grace"},
		{"flow ttl", func(c *Config) { c.FlowTTL = -1 }, "flow_ttl"},
		{"max evidence", func(c *Config) { c.MaxEvidence = -1 }, "max_evidence"},
		{"nil pattern", func(c *Config) { c.Patterns = []pattern.Pattern{nil} }, "patterns[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mod(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error naming %q", err, tc.want)
			}
			if _, err := New(cfg, func(diagnosis.Diagnosis) {}); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	if _, err := New(DefaultConfig(), nil); err == nil {
		t.Fatal("New accepted a nil emit func")
	}
}

// Every fixture through the whole library: which patterns, causes and how many.
func TestFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		keys    []string // first emissions, in order (prefix pattern/cause)
	}{
		{"refused_closed_port.jsonl", []string{"connection_refused/no_listener/10.0.0.2:8080/netns:4098"}},
		{"refused_reject.jsonl", []string{"connection_refused/firewall_reject/10.0.0.2:8080/netns:4098"}},
		{"refused_client_only.jsonl", []string{"connection_refused/remote/192.0.2.10:443/"}},
		{"refused_reset_no_close.jsonl", []string{"connection_refused/remote/192.0.2.10:443/"}},
		{"syn_nft_drop_timeout.jsonl", []string{"syn_dropped/netfilter_drop/10.0.0.2:8080/netns:4098"}},
		{"syn_host_forward_drop.jsonl", []string{"syn_dropped/netfilter_drop/10.0.0.2:8080/netns:1"}},
		{"syn_no_local_drop.jsonl", []string{"syn_dropped/no_local_drop/10.0.0.2:8080/"}},
		{"syn_own_output_eperm.jsonl", []string{"syn_dropped/local_output_firewall/10.0.0.2:8080/netns:4097"}},
		// arp_failure outranks syn_dropped's neighbour_unresolved.
		{"syn_arp_ebusy.jsonl", []string{"arp_failure/unresolved/10.0.0.99:0/netns:4097"}},
		// Recorded from the real probes by TestKernelScenarios -record.
		{"kernel_refused_closed_port.jsonl", []string{"connection_refused/no_listener/10.218.1.3:8080/netns:4530"}},
		{"kernel_refused_reject.jsonl", []string{"connection_refused/firewall_reject/10.218.2.3:8081/netns:4551"}},
		{"kernel_syn_dropped_input.jsonl", []string{"syn_dropped/netfilter_drop/10.218.3.3:8082/netns:4570"}},
		{"kernel_syn_dropped_own_output.jsonl", []string{"syn_dropped/local_output_firewall/10.218.4.3:8083/netns:466"}},
		{"noise_teardown.jsonl", nil},
		{"success.jsonl", nil},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			f, err := os.Open(filepath.Join("..", "..", "testdata", "replay", tc.fixture))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			e, r := newEngine(t, nil)
			if err := Replay(f, e, 100*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			var firsts []string
			for _, d := range r.ds {
				if d.Count == 1 && !strings.Contains(d.Details, "Aggregated:") {
					firsts = append(firsts, d.Key)
				}
			}
			if len(firsts) != len(tc.keys) {
				t.Fatalf("first emissions %v, want %v", firsts, tc.keys)
			}
			for i, k := range tc.keys {
				if !strings.HasPrefix(firsts[i], k) {
					t.Errorf("key %q, want prefix %q", firsts[i], k)
				}
			}
			if st := e.Stats(); st.FlowsTracked != 0 || st.OpenAggregates != 0 {
				t.Errorf("state left after the final tick: %+v", st)
			}
		})
	}
}

func TestReplayErrors(t *testing.T) {
	e, _ := newEngine(t, nil)
	in := `{"time":"2026-11-26T00:00:00Z","kind":"drop"}` + "\n" + `{"time":"2026-11-26T00:00:00Z","kind":"drop","dst":"x"}`
	err := Replay(strings.NewReader(in), e, time.Second)
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), `"dst"`) {
		t.Fatalf("Replay error = %v, want line 2 field dst", err)
	}
	if err := Replay(strings.NewReader(""), e, 0); err == nil {
		t.Fatal("tick 0 accepted")
	}
}

// Signals out of time order (several CPUs, a merged recording) must not break
// anything: no panic, state still bounded and drained.
func TestOutOfOrderTimes(t *testing.T) {
	e, r := newEngine(t, nil)
	for i := range 50 {
		seq := refusedClosedPort(t0.Add(time.Duration(50-i)*time.Second), uint16(30000+i), 8080)
		observeAll(e, []signal.Signal{seq[3], seq[0], seq[2], seq[1]})
		e.Tick(t0.Add(time.Duration(i) * time.Second))
	}
	e.Tick(t0.Add(time.Hour))
	if st := e.Stats(); st.FlowsTracked != 0 || st.OpenAggregates != 0 || len(r.ds) == 0 {
		t.Fatalf("stats %+v, %d diagnoses", st, len(r.ds))
	}
	for _, d := range r.ds {
		if d.LastSeen.Before(d.FirstSeen) {
			t.Fatalf("first %v after last %v", d.FirstSeen, d.LastSeen)
		}
	}
}

// The first SYN's drop was missed (probe loaded mid-connect): the drop of the
// first retransmit arrives just after the retransmit itself and still names
// the rule, because a "no local drop" verdict waits the grace period.
func TestSYNDropArrivesAfterRetransmit(t *testing.T) {
	e, r := newEngine(t, nil)
	f := tcpFlow(40000, 8080)
	e.Observe(signal.Signal{Kind: signal.KindRetransmit, Time: t0.Add(time.Second), Flow: f, NetnsCookie: clientCookie,
		NetnsInode: clientInode, State: signal.StateSynSent, TCPFlags: signal.TCPFlagSYN, Retransmits: 1})
	e.Observe(signal.Signal{Kind: signal.KindDrop, Time: t0.Add(time.Second + 200*time.Microsecond), Flow: f,
		NetnsCookie: serverCookie, NetnsInode: serverInode, TCPFlags: signal.TCPFlagSYN, DropReason: "NETFILTER_DROP",
		DropLocation: "nft_do_chain"})
	e.Tick(t0.Add(time.Second + 100*time.Millisecond))
	if len(r.ds) != 0 {
		t.Fatalf("decided before the grace period: %+v", r.ds)
	}
	e.Tick(t0.Add(time.Second + 300*time.Millisecond))
	if len(r.ds) != 1 || !strings.Contains(r.ds[0].Key, "syn_dropped/netfilter_drop/") {
		t.Fatalf("got %+v", r.ds)
	}
	if !r.ds[0].LastSeen.Equal(t0.Add(time.Second + 200*time.Microsecond)) {
		t.Errorf("LastSeen %v, want the drop's time, not the tick's", r.ds[0].LastSeen)
	}
}

// A storm of RSTs without closes and no Tick: the deferred list stays bounded.
func TestPendingBoundedWithoutTick(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) { c.MaxFlows = 100 })
	for i := range 10000 {
		e.Observe(refusedClosedPort(t0.Add(time.Duration(i)*time.Microsecond), uint16(1024+i), 8080)[2])
	}
	if len(e.pending) > 2*100 || e.Stats().FlowsTracked > 100 {
		t.Fatalf("pending %d, flows %d", len(e.pending), e.Stats().FlowsTracked)
	}
}

func TestKeyOf(t *testing.T) {
	f := tcpFlow(40000, 8080)
	v6 := signal.Flow{Proto: signal.ProtoTCP, Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddr("fd00::2"), SrcPort: 40000, DstPort: 8080}
	same := signal.Flow{Proto: signal.ProtoTCP, Src: serverIP, Dst: serverIP, SrcPort: 8080, DstPort: 40000}
	tests := []struct {
		name string
		a, b signal.Flow
		eq   bool
	}{
		{"reverse", f, f.Reverse(), true},
		{"same address both ends, reverse", same, same.Reverse(), true},
		{"other client port", f, tcpFlow(40001, 8080), false},
		{"other protocol", f, signal.Flow{Proto: signal.ProtoUDP, Src: f.Src, Dst: f.Dst, SrcPort: f.SrcPort, DstPort: f.DstPort}, false},
		{"ipv6", v6, v6.Reverse(), true},
		{"ipv4 vs ipv6", f, v6, false},
	}
	for _, tc := range tests {
		if got := keyOf(tc.a) == keyOf(tc.b); got != tc.eq {
			t.Errorf("%s: equal = %v, want %v", tc.name, got, tc.eq)
		}
	}
}

func synRetransmit(f signal.Flow, at time.Duration, n uint32) signal.Signal {
	return signal.Signal{Kind: signal.KindRetransmit, Time: t0.Add(at), Flow: f, NetnsCookie: clientCookie,
		NetnsInode: clientInode, State: signal.StateSynSent, TCPFlags: signal.TCPFlagSYN, Retransmits: n}
}

// A connection still failing after its cause's window closed reopens a
// window: its later signals are reported once more when that one closes, and
// new connections with the same cause are counted into it.
func TestReopenAfterWindow(t *testing.T) {
	e, r := newEngine(t, func(c *Config) { c.Window = 10 * time.Second })
	drop := func(f signal.Flow, at time.Duration) signal.Signal {
		return signal.Signal{Kind: signal.KindDrop, Time: t0.Add(at), Flow: f, NetnsCookie: serverCookie,
			NetnsInode: serverInode, TCPFlags: signal.TCPFlagSYN, DropReason: "NETFILTER_DROP", DropLocation: "nft_do_chain"}
	}
	a := tcpFlow(40000, 5432)
	observeAll(e, []signal.Signal{drop(a, 0), synRetransmit(a, time.Second, 1)})
	e.Tick(t0.Add(11 * time.Second)) // window closes: nothing grew
	if len(r.ds) != 1 {
		t.Fatalf("%d emitted, want only the first", len(r.ds))
	}
	e.Observe(synRetransmit(a, 19*time.Second, 8)) // still failing: reopens
	b := tcpFlow(40001, 5432)
	observeAll(e, []signal.Signal{drop(b, 20*time.Second), synRetransmit(b, 21*time.Second, 1)})
	if len(r.ds) != 1 {
		t.Fatalf("a new connection with an already reported, still open cause was emitted at once")
	}
	e.Tick(t0.Add(30 * time.Second))
	if len(r.ds) != 2 {
		t.Fatalf("%d emitted, want the reopened window's update", len(r.ds))
	}
	upd := r.ds[1]
	if upd.Count != 2 || !upd.FirstSeen.Equal(r.ds[0].FirstSeen) || !upd.LastSeen.Equal(t0.Add(21*time.Second)) {
		t.Errorf("update count %d first %v last %v", upd.Count, upd.FirstSeen, upd.LastSeen)
	}
	if st := e.Stats(); st.AggregatesReopened != 1 || st.FollowUps != 1 || st.Aggregated != 1 {
		t.Errorf("stats %+v", st)
	}
}

// Storms are cheap: once a cause's evidence list is full, a repeat (four
// signals of a refused connect) allocates nothing, nor does noise.
func TestRepeatsDoNotAllocate(t *testing.T) {
	e, _ := newEngine(t, nil)
	var seqs [][]signal.Signal
	for i := range 400 {
		seqs = append(seqs, refusedClosedPort(t0.Add(time.Duration(i)*time.Millisecond), uint16(20000+i), 8080))
	}
	for _, seq := range seqs[:100] {
		observeAll(e, seq)
	}
	i := 100
	allocs := testing.AllocsPerRun(200, func() {
		observeAll(e, seqs[i])
		i++
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per aggregated refusal, want 0", allocs)
	}
	noise := signal.Signal{Kind: signal.KindStateChange, Time: t0, Flow: tcpFlow(1, 2), OldState: signal.StateCloseWait,
		State: signal.StateClose, SkErr: 32}
	if a := testing.AllocsPerRun(100, func() { e.Observe(noise) }); a != 0 {
		t.Errorf("%.1f allocations per noise signal, want 0", a)
	}
}

func TestFlush(t *testing.T) {
	e, r := newEngine(t, nil)
	for i := range 3 {
		observeAll(e, refusedClosedPort(t0.Add(time.Duration(i)*time.Millisecond), uint16(30000+i), 8080))
	}
	e.Observe(refusedClosedPort(t0, 31000, 9090)[2]) // a RST still waiting for its close
	e.Observe(refusedClosedPort(t0, 31001, 9091)[0]) // packet evidence only
	e.Flush()
	// The deferred RST is decided first, then the open aggregate is reported.
	if len(r.ds) != 3 || !strings.Contains(r.ds[1].Key, ":9090/") || r.ds[2].Count != 3 {
		t.Fatalf("got %v", keys(r.ds))
	}
	if st := e.Stats(); st.FlowsTracked != 0 || st.OpenAggregates != 0 {
		t.Fatalf("state left: %+v", st)
	}
	e.Flush() // idempotent
	if len(r.ds) != 3 {
		t.Fatal("second Flush emitted again")
	}
}

func keys(ds []diagnosis.Diagnosis) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s count %d", d.Key, d.Count))
	}
	return out
}

func TestIPv6Refused(t *testing.T) {
	e, r := newEngine(t, nil)
	seq := refusedClosedPort(t0, 40000, 8080)
	for i := range seq {
		f := &seq[i].Flow
		c, s := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
		if f.Src == clientIP {
			f.Src, f.Dst = c, s
		} else {
			f.Src, f.Dst = s, c
		}
	}
	observeAll(e, seq)
	if len(r.ds) != 1 || r.ds[0].Key != "connection_refused/no_listener/[fd00::2]:8080/netns:4098" ||
		!strings.Contains(r.ds[0].Summary, "connection to [fd00::2]:8080 refused") {
		t.Fatalf("got %v", keys(r.ds))
	}
}
