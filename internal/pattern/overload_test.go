package pattern_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// fakeOverload stands in for hostctx.Overload: listeners by destination,
// and conntrack readings of successive lookups (the first is the baseline
// taken at the first drop; later lookups see the last one, as the real
// context's short cache does within one decision).
type fakeOverload struct {
	queues  map[netip.AddrPort]pattern.AcceptQueueFact
	ct      []pattern.ConntrackFact
	aqCalls int
	ctCalls int
	ctNS    []pattern.Netns
}

func (f *fakeOverload) AcceptQueue(_ pattern.Netns, dst netip.AddrPort) (pattern.AcceptQueueFact, error) {
	f.aqCalls++
	q, ok := f.queues[dst]
	if !ok {
		return pattern.AcceptQueueFact{}, pattern.ErrNotLocal
	}
	return q, nil
}

func (f *fakeOverload) Conntrack(ns pattern.Netns) (pattern.ConntrackFact, error) {
	f.ctNS = append(f.ctNS, ns)
	if len(f.ct) == 0 {
		return pattern.ConntrackFact{}, errors.New("no conntrack in that namespace")
	}
	i := min(f.ctCalls, len(f.ct)-1)
	f.ctCalls++
	r := f.ct[i]
	if i > 0 {
		p := f.ct[i-1]
		r.PrevDrop, r.PrevEarlyDrop, r.PrevInsertFailed, r.PrevAt = p.Drop, p.EarlyDrop, p.InsertFailed, p.At
	}
	return r, nil
}

// noRule answers as the netfilter attribution does when no rule drops the packet.
type noRule struct{ calls int }

func (r *noRule) Attribute(*signal.Signal) (*pattern.RuleFact, error) {
	r.calls++
	return nil, errors.New("netns server: no rule or chain policy drops this packet in the current ruleset")
}

func withOverload(t *testing.T, o pattern.OverloadContext, rules correlate.RuleAttributor) func(*correlate.Config) {
	return func(c *correlate.Config) {
		if rules != nil {
			c.Rules = rules
		}
		correlate.WithOverload(c, o)
		for i, p := range c.Patterns {
			if g, ok := p.(pattern.Gated); ok {
				switch p.(type) {
				case pattern.AcceptQueueFull, pattern.ConntrackTableFull:
					c.Patterns[i] = gateChecked{Pattern: p, gate: g.Gate(), t: t}
				}
			}
		}
	}
}

// gateChecked asks its pattern at every signal (the correlator sees no
// Gate on it) and fails the test when it matches or defers at a trigger its
// Gate promised to skip.
type gateChecked struct {
	pattern.Pattern
	gate pattern.Gate
	t    *testing.T
}

func (g gateChecked) Match(ev *pattern.Evidence) (pattern.Verdict, pattern.Outcome) {
	v, out := g.Pattern.Match(ev)
	if t := ev.Trigger; out != pattern.NoMatch && t != nil &&
		(g.gate.Triggers != 0 && !g.gate.Triggers.Has(t.Kind) || g.gate.Decides != nil && !g.gate.Decides(t)) {
		g.t.Errorf("%s: outcome %d at a %s trigger its gate skips", g.ID(), out, t.Kind)
	}
	return v, out
}

var aqAt = time.Date(2026, 11, 26, 1, 0, 1, 0, time.UTC)

func TestAcceptQueueFull(t *testing.T) {
	ap := netip.MustParseAddrPort
	full := pattern.AcceptQueueFact{At: aqAt, Netns: pattern.Netns{Inode: serverInode},
		Listener: pattern.ListenerFact{Addr: ap("0.0.0.0:8080"), Backlog: 2, MaxBacklog: 1},
		Process:  "pid 42 (slowapp)", Somaxconn: 4096,
		Overflows: 7, Drops: 7, PrevOverflows: 5, PrevDrops: 5, PrevAt: aqAt.Add(-2 * time.Second)}
	slow := full
	slow.Listener.Backlog, slow.Listener.MaxBacklog = 3, 5
	tests := []struct {
		name    string
		fixture string
		queues  map[netip.AddrPort]pattern.AcceptQueueFact
		want    diagnosis.Pattern // the only pattern diagnosing the flow
		key     string
		asks    int // lookups at most (-1: exactly none)
	}{
		{"full accept queue", "syn_no_local_drop.jsonl", map[netip.AddrPort]pattern.AcceptQueueFact{ap("10.0.0.2:8080"): full},
			diagnosis.PatternListenOverflow, "listen_overflow/accept_queue_full/10.0.0.2:8080/netns:4026532302", 3},
		{"slow but not full", "syn_no_local_drop.jsonl", map[netip.AddrPort]pattern.AcceptQueueFact{ap("10.0.0.2:8080"): slow},
			diagnosis.PatternSYNDropped, "syn_dropped/no_local_drop/10.0.0.2:8080/netns:0", 6},
		{"full listener on another port", "syn_no_local_drop.jsonl", map[netip.AddrPort]pattern.AcceptQueueFact{ap("10.0.0.2:9090"): full},
			diagnosis.PatternSYNDropped, "syn_dropped/no_local_drop/", 6},
		{"destination not on this node", "syn_no_local_drop.jsonl", nil,
			diagnosis.PatternSYNDropped, "syn_dropped/no_local_drop/", 6},
		{"SYN dropped by a rule, queue full", "syn_nft_drop_timeout.jsonl", map[netip.AddrPort]pattern.AcceptQueueFact{ap("10.0.0.2:8080"): full},
			diagnosis.PatternSYNDropped, "syn_dropped/netfilter_drop/", -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := &fakeOverload{queues: tc.queues}
			ds, _ := replayFixture(t, tc.fixture, nil, withOverload(t, o, nil))
			for _, d := range ds {
				if d.Pattern != tc.want || !strings.HasPrefix(d.Key, tc.key) {
					t.Errorf("diagnosis %s (%s), want only %s...", d.Key, d.Summary, tc.key)
				}
			}
			if len(ds) == 0 {
				t.Fatal("no diagnosis")
			}
			if o.aqCalls > max(tc.asks, 0) {
				t.Errorf("%d listener lookups, want at most %d (never per signal)", o.aqCalls, max(tc.asks, 0))
			}
			if tc.want != diagnosis.PatternListenOverflow {
				return
			}
			d, last := ds[0], ds[len(ds)-1]
			if d.Summary != "SYN to 10.0.0.2:8080 dropped: the listener 0.0.0.0:8080 in netns server has a full accept queue (2/1)" ||
				d.Layer != diagnosis.LayerL4 || d.Confidence != 0.9 || d.Destination.NetnsName != "server" {
				t.Errorf("got %q %s %.2f dst %+v", d.Summary, d.Layer, d.Confidence, d.Destination)
			}
			for _, want := range []string{"owned by pid 42 (slowapp)", "TcpExtListenOverflows 7, TcpExtListenDrops 7 (+2 and +2 in the 2s before)",
				"Ranked first of 2 matching patterns (listen_overflow", "also matched: syn_dropped/no_local_drop",
				"1 SYN retransmit(s) seen"} {
				mustContain(t, "details", d.Details, want)
			}
			mustContain(t, "resolution", d.Resolution, "backlog (now 1) together with net.core.somaxconn (now 4096")
			if !hasSource(d, "hostctx:sock_diag") || !hasSource(d, "tcp:tcp_retransmit_skb") {
				t.Errorf("evidence %+v", d.Evidence)
			}
			// Every later retransmit and the final timeout fold into it.
			if last.Count != 1 || !last.LastSeen.Equal(time.Date(2026, 11, 26, 1, 2, 15, 0, time.UTC)) {
				t.Errorf("aggregate count %d, last seen %s: %s", last.Count, last.LastSeen, last.Details)
			}
		})
	}
}

func TestConntrackTableFull(t *testing.T) {
	at := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	reading := func(d time.Duration, entries, max uint32, drop uint64) pattern.ConntrackFact {
		return pattern.ConntrackFact{At: at.Add(d), Entries: entries, Max: max, Drop: drop}
	}
	rule := &fakeRules{rule: pattern.RuleFact{Netns: "server", Family: "inet", Table: "filter", Chain: "input",
		Handle: 4, Text: "tcp dport 8080 drop", Verdict: "drop", Exact: true}}
	tests := []struct {
		name    string
		fixture string
		ct      []pattern.ConntrackFact
		rules   correlate.RuleAttributor
		want    diagnosis.Pattern
		summary string
		conf    float64
	}{
		{"full and dropping", "conntrack_table_full.jsonl",
			[]pattern.ConntrackFact{reading(0, 16, 16, 1), reading(time.Second, 16, 16, 2)}, &noRule{},
			diagnosis.PatternConntrackTableFull, "SYN to 10.0.0.2:8080 dropped in netns server: conntrack table full (16/16 entries)", 0.95},
		{"full, no reading before", "conntrack_table_full.jsonl",
			[]pattern.ConntrackFact{reading(time.Second, 16, 16, 2)}, &noRule{},
			diagnosis.PatternConntrackTableFull, "conntrack table full (16/16 entries)", 0.85},
		{"dropping, full moments ago", "conntrack_table_full.jsonl",
			[]pattern.ConntrackFact{reading(0, 16, 16, 1), reading(time.Second, 12, 16, 3)}, &noRule{},
			diagnosis.PatternConntrackTableFull, "conntrack table overflowing (full moments ago) (12/16 entries)", 0.85},
		{"a rule's DROP, table with room", "syn_nft_drop_timeout.jsonl",
			[]pattern.ConntrackFact{reading(0, 100, 262144, 0), reading(time.Second, 101, 262144, 0)}, rule,
			diagnosis.PatternSYNDropped, "SYN to 10.0.0.2:8080 dropped by rule `tcp dport 8080 drop` (inet filter input, handle 4) in netns server", 0.7},
		{"no conntrack in the namespace", "conntrack_table_full.jsonl", nil, &noRule{},
			diagnosis.PatternSYNDropped, "SYN to 10.0.0.2:8080 dropped by a netfilter rule in netns server (nf_hook_slow)", 0.7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := &fakeOverload{ct: tc.ct}
			ds, _ := replayFixture(t, tc.fixture, nil, withOverload(t, o, tc.rules))
			if len(ds) == 0 {
				t.Fatal("no diagnosis")
			}
			for _, d := range ds {
				if d.Pattern != tc.want {
					t.Errorf("diagnosis %s (%s), want only %s", d.Key, d.Summary, tc.want)
				}
			}
			for _, ns := range o.ctNS {
				if ns.Inode != serverInode {
					t.Errorf("conntrack asked of netns %+v, want the drop's", ns)
				}
			}
			// the first drop, the first three retransmits, the ranking of the winner
			if len(o.ctNS) > 1+3+1 {
				t.Errorf("%d conntrack readings for one connection, want the first drop's and the decision's", len(o.ctNS))
			}
			d := ds[0]
			if !strings.Contains(d.Summary, tc.summary) || d.Confidence != tc.conf {
				t.Errorf("got %q %.2f, want %q %.2f", d.Summary, d.Confidence, tc.summary, tc.conf)
			}
			if tc.want != diagnosis.PatternConntrackTableFull {
				return
			}
			if d.Key != "conntrack_table_full/table_full/0.0.0.0:0/netns:4098" || d.Layer != diagnosis.LayerL3 ||
				d.Destination.NetnsName != "server" {
				t.Errorf("key %s layer %s dst %+v", d.Key, d.Layer, d.Destination)
			}
			for _, want := range []string{"at nf_hook_slow", "No netfilter rule explains the drop (netns server: no rule",
				"also matched: syn_dropped/netfilter_drop"} {
				mustContain(t, "details", d.Details, want)
			}
			if len(tc.ct) > 1 {
				mustContain(t, "details", d.Details, "counters drop ")
				mustContain(t, "details", d.Details, "in the 1s before)")
			}
			mustContain(t, "resolution", d.Resolution, "nf_conntrack_max")
			mustContain(t, "resolution", d.Resolution, "nf_conntrack_buckets")
			if !hasSource(d, "hostctx:ctnetlink") || !hasSource(d, "skb:kfree_skb") {
				t.Errorf("evidence %+v", d.Evidence)
			}
			if last := ds[len(ds)-1]; last.Count != 1 {
				t.Errorf("aggregate count %d, want 1 connection", last.Count)
			}
		})
	}
}

// A client on another host: only the drops of its SYN are seen here.
func TestConntrackTableFullRemoteClient(t *testing.T) {
	at := time.Date(2026, 11, 26, 2, 10, 0, 0, time.UTC)
	tests := []struct {
		name string
		ct   []pattern.ConntrackFact
		want int // conntrack_table_full causes
	}{
		{"full", []pattern.ConntrackFact{{At: at, Entries: 16, Max: 16, Drop: 1}, {At: at.Add(time.Second), Entries: 16, Max: 16, Drop: 2}}, 1},
		{"room in the table", []pattern.ConntrackFact{{At: at, Entries: 3, Max: 16}, {At: at.Add(time.Second), Entries: 3, Max: 16}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := &fakeOverload{ct: tc.ct}
			ds, _ := replayFixture(t, "conntrack_table_full_remote_client.jsonl", nil, withOverload(t, o, &noRule{}))
			keys := map[string]bool{}
			for _, d := range ds {
				keys[d.Key] = true // the first emission and its window's update
			}
			if len(keys) != tc.want {
				t.Fatalf("got %v, want %d conntrack_table_full", keysOf(ds), tc.want)
			}
			if len(o.ctNS) > 1+maxAsks {
				t.Errorf("%d conntrack readings for one connection", len(o.ctNS))
			}
			if tc.want == 0 {
				return
			}
			d := ds[0]
			if d.Pattern != diagnosis.PatternConntrackTableFull || d.Confidence != 0.95 ||
				!d.FirstSeen.Equal(at) || !d.LastSeen.Equal(at.Add(1010*time.Millisecond)) {
				t.Errorf("got %s %.2f %s..%s", d.Key, d.Confidence, d.FirstSeen, d.LastSeen)
			}
			mustContain(t, "details", d.Details, "the client is not on this node: 2 drops of its SYN seen")
			if n := len(d.Evidence); n < 3 || d.Evidence[0].Source != "skb:kfree_skb" || d.Evidence[1].Source != "skb:kfree_skb" {
				t.Errorf("evidence %+v, want both drops first", d.Evidence)
			}
		})
	}
}

// maxAsks mirrors the patterns' limit of decisions per connection.
const maxAsks = 3

// Without host context (replays, non-Linux) the library has neither
// pattern and the evidence stays syn_dropped's.
func TestOverloadNeedsHostContext(t *testing.T) {
	for _, p := range pattern.Library(pattern.Options{SYNTimeout: time.Second}) {
		switch p.(type) {
		case pattern.AcceptQueueFull, pattern.ConntrackTableFull:
			t.Errorf("%T in the library without an OverloadContext", p)
		}
	}
	ds, _ := replayFixture(t, "conntrack_table_full.jsonl", nil)
	if len(ds) == 0 || ds[0].Pattern != diagnosis.PatternSYNDropped {
		t.Errorf("got %v, want syn_dropped", keysOf(ds))
	}
}
