package pattern

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// lifecycleCluster answers Lifecycle from a fixed list per address.
type lifecycleCluster struct {
	events  map[netip.Addr][]LifecycleEvent
	history []diagnosis.Evidence // Annotate's, for every address
	asked   []netip.Addr
}

func (*lifecycleCluster) Available() (bool, string) { return true, "" }
func (c *lifecycleCluster) Annotate(*diagnosis.Endpoint, time.Time) ([]diagnosis.Evidence, bool) {
	return c.history, false
}
func (*lifecycleCluster) PolicyCheck(signal.Flow, bool) (PolicyFact, bool) {
	return PolicyFact{}, false
}
func (c *lifecycleCluster) Lifecycle(a netip.Addr, _, _ time.Time) []LifecycleEvent {
	c.asked = append(c.asked, a)
	return c.events[a]
}

// noLifecycle is a Cluster without the Lifecycle query.
type noLifecycle struct{ lifecycleCluster }

func (noLifecycle) Lifecycle() {}

func TestAnnotateLifecycle(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	peer := netip.MustParseAddr("10.244.1.7")
	node := netip.MustParseAddr("10.0.0.12")
	restart := LifecycleEvent{Time: at.Add(-2 * time.Minute), Kind: LifecycleRestarted, Namespace: "prod", Pod: "backend-x",
		Container: "app", Reason: "OOMKilled", ExitCode: 137, Restarts: 3}
	deleted := LifecycleEvent{Time: at.Add(-3 * time.Minute), Kind: LifecycleDeleted, Namespace: "prod", Pod: "cache-0"}
	reused := LifecycleEvent{Time: at.Add(-90 * time.Second), Kind: LifecycleIPReleased, Namespace: "prod", Pod: "cache-0",
		Next: "prod/cache-1"}
	notReady := LifecycleEvent{Time: at.Add(-5 * time.Minute), Kind: LifecycleNodeNotReady, Node: "node-2", Reason: "NodeStatusUnknown"}
	flow := signal.Flow{Proto: 6, Src: netip.MustParseAddr("10.244.0.5"), Dst: peer, SrcPort: 40000, DstPort: 8080}
	base := func(p diagnosis.Pattern) diagnosis.Diagnosis {
		return diagnosis.Diagnosis{Pattern: p, Flow: flow, Summary: "kernel summary", Details: "Kernel details.",
			Resolution: "Generic fix.", Confidence: 0.6, Destination: diagnosis.Endpoint{Addr: peer.String(), Port: 8080}}
	}
	tests := []struct {
		name    string
		d       diagnosis.Diagnosis
		v       Verdict
		events  map[netip.Addr][]LifecycleEvent
		bare    bool // a cluster without Lifecycle
		summary string
		details string
		resolve string // the resolution's beginning
		fact    string // the evidence added
		conf    float64
	}{
		{name: "restart explains a reset", d: base(diagnosis.PatternPeerLostState), v: Verdict{Cause: CauseNoSocket},
			events:  map[netip.Addr][]LifecycleEvent{peer: {deleted, restart}},
			summary: "connection to 10.244.1.7:8080 reset: pod prod/backend-x restarted 2m ago (container app, OOMKilled, exit 137) and lost this connection",
			details: "The peer's cluster lifecycle explains it: pod prod/backend-x restarted 2m ago",
			resolve: "Container app was killed for memory (OOM): raise its memory limit",
			fact:    "pod prod/backend-x (10.244.1.7) restarted (restart 3): container app, OOMKilled, exit 137 stopped at 2026-01-02T03:02:05Z",
			conf:    0.75},
		{name: "a remote peer came back without the connection", d: base(diagnosis.PatternPeerLostState), v: Verdict{Cause: CauseResetAfterOutage},
			events:  map[netip.Addr][]LifecycleEvent{peer: {reused}},
			summary: "connection to 10.244.1.7:8080 reset: 10.244.1.7 belonged to pod prod/cache-0 until 1m30s ago; pod prod/cache-1 holds it now, without this connection",
			resolve: "The pod prod/cache-0 is gone: clients must stop using its IP",
			fact:    "10.244.1.7 released by pod prod/cache-0 at 2026-01-02T03:02:35Z, now held by pod prod/cache-1", conf: 0.75},
		{name: "a deleted pod explains a reset", d: base(diagnosis.PatternPeerLostState), v: Verdict{Cause: CauseNoSocket},
			events:  map[netip.Addr][]LifecycleEvent{peer: {deleted}},
			summary: "connection to 10.244.1.7:8080 reset: 10.244.1.7 belonged to pod prod/cache-0, deleted 3m ago, and the connection went with it",
			fact:    "pod prod/cache-0, which held 10.244.1.7, deleted at 2026-01-02T03:01:05Z", conf: 0.75},
		{name: "a deleted pod's address reused", d: base(diagnosis.PatternPeerLostState), v: Verdict{Cause: CauseNewListener},
			events: map[netip.Addr][]LifecycleEvent{peer: {{Time: deleted.Time, Kind: LifecycleDeleted, Namespace: "prod", Pod: "cache-0",
				Next: "prod/cache-1"}}},
			summary: "connection to 10.244.1.7:8080 reset: 10.244.1.7 belonged to pod prod/cache-0, deleted 3m ago; pod prod/cache-1 holds it now, without this connection",
			fact:    "pod prod/cache-0, which held 10.244.1.7, deleted at 2026-01-02T03:01:05Z, now held by pod prod/cache-1", conf: 0.75},
		{name: "a container stopped, not restarted yet (back-off)", d: base(diagnosis.PatternPeerLostState), v: Verdict{Cause: CauseNoSocket},
			events: map[netip.Addr][]LifecycleEvent{peer: {{Time: at.Add(-30 * time.Second), Kind: LifecycleTerminated, Namespace: "prod",
				Pod: "backend-x", Container: "app", Reason: "Error", ExitCode: 2}}},
			summary: "connection to 10.244.1.7:8080 reset: pod prod/backend-x stopped 30s ago (container app, Error, exit 2) and lost this connection",
			resolve: "Find why container app exited", fact: "pod prod/backend-x (10.244.1.7): container app, Error, exit 2 stopped at", conf: 0.75},
		{name: "the latest event explains, not a NotReady state after it", d: base(diagnosis.PatternPeerLostState), v: Verdict{Cause: CauseNoSocket},
			events:  map[netip.Addr][]LifecycleEvent{peer: {restart, {Time: at.Add(-time.Minute), Kind: LifecycleNodeNotReady, Node: "node-2"}}},
			summary: "connection to 10.244.1.7:8080 reset: pod prod/backend-x restarted 2m ago (container app, OOMKilled, exit 137) and lost this connection",
			fact:    "restarted (restart 3)", conf: 0.75},
		{name: "a NotReady node does not explain a RST", d: base(diagnosis.PatternPeerLostState), v: Verdict{Cause: CauseNoSocket},
			events: map[netip.Addr][]LifecycleEvent{peer: {notReady}}, summary: "kernel summary", conf: 0.6},
		{name: "silence after a deletion", d: base(diagnosis.PatternBlackhole), v: Verdict{Cause: CauseNoLocalDrop},
			events:  map[netip.Addr][]LifecycleEvent{peer: {deleted}},
			summary: "kernel summary; 10.244.1.7 belonged to pod prod/cache-0, deleted 3m ago",
			details: "Kernel details. The peer's cluster lifecycle explains why nothing answers: 10.244.1.7 belonged to pod prod/cache-0, deleted 3m ago (2026-01-02T03:01:05Z).",
			resolve: "The pod prod/cache-0 is gone", fact: "deleted at", conf: 0.7},
		{name: "half-open peer on a NotReady node", d: base(diagnosis.PatternHalfOpen), v: Verdict{Cause: CauseFINUnanswered},
			events: map[netip.Addr][]LifecycleEvent{peer: {{Time: notReady.Time, Kind: LifecycleNodeNotReady, Node: "node-2",
				Namespace: "prod", Pod: "backend-x", Reason: "NodeStatusUnknown"}}},
			summary: "kernel summary; pod prod/backend-x runs on node node-2, NotReady for 5m (NodeStatusUnknown)",
			resolve: "Node node-2 is NotReady", fact: "node node-2 NotReady since 2026-01-02T02:59:05Z", conf: 0.7},
		{name: "an unanswered SYN to a deleted pod's address", d: base(diagnosis.PatternSYNDropped), v: Verdict{Cause: CauseNoLocalDrop},
			events:  map[netip.Addr][]LifecycleEvent{peer: {deleted}},
			summary: "kernel summary; 10.244.1.7 belonged to pod prod/cache-0, deleted 3m ago", fact: "deleted at", conf: 0.7},
		{name: "a SYN dropped by a rule is not about the peer", d: base(diagnosis.PatternSYNDropped), v: Verdict{Cause: CauseNetfilterDrop},
			events: map[netip.Addr][]LifecycleEvent{peer: {deleted}}, summary: "kernel summary", conf: 0.6},
		{name: "a local drop is the cause, not the restart", d: base(diagnosis.PatternBlackhole), v: Verdict{Cause: CauseNetfilterDrop},
			events: map[netip.Addr][]LifecycleEvent{peer: {restart}}, summary: "kernel summary", conf: 0.6},
		{name: "a policy block is not about the peer's lifecycle", d: base(diagnosis.PatternNetworkPolicyBlock), v: Verdict{Cause: "denied"},
			events: map[netip.Addr][]LifecycleEvent{peer: {deleted}}, summary: "kernel summary", conf: 0.6},
		{name: "arp failure of a NotReady node's address (next hop)", d: base(diagnosis.PatternARPFailure),
			v:       Verdict{Cause: CauseNeighGone, Subject: netip.AddrPortFrom(node, 0)},
			events:  map[netip.Addr][]LifecycleEvent{peer: {deleted}, node: {notReady}},
			summary: "kernel summary; 10.0.0.12 is node node-2, NotReady for 5m (NodeStatusUnknown)",
			fact:    "node node-2 NotReady since", conf: 0.7},
		{name: "no event: unchanged", d: base(diagnosis.PatternPeerLostState), v: Verdict{Cause: CauseNoSocket},
			summary: "kernel summary", conf: 0.6},
		{name: "a cluster without the lifecycle query", d: base(diagnosis.PatternPeerLostState), v: Verdict{Cause: CauseNoSocket},
			events: map[netip.Addr][]LifecycleEvent{peer: {restart}}, bare: true, summary: "kernel summary", conf: 0.6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lc := &lifecycleCluster{events: tc.events}
			var c Cluster = lc
			if tc.bare {
				c = &noLifecycle{*lc}
			}
			d := tc.d
			AnnotateLifecycle(c, tc.v, &d, at)
			if d.Summary != tc.summary {
				t.Errorf("summary\n got %q\nwant %q", d.Summary, tc.summary)
			}
			if tc.details != "" && !strings.Contains(d.Details, tc.details) {
				t.Errorf("details lack %q: %s", tc.details, d.Details)
			}
			if tc.resolve != "" && !strings.HasPrefix(d.Resolution, tc.resolve) {
				t.Errorf("resolution does not start with %q: %s", tc.resolve, d.Resolution)
			}
			if !strings.HasSuffix(d.Resolution, "Generic fix.") {
				t.Errorf("the pattern's own resolution is lost: %s", d.Resolution)
			}
			if d.Confidence != tc.conf {
				t.Errorf("confidence %.2f, want %.2f", d.Confidence, tc.conf)
			}
			n := 0
			for _, e := range d.Evidence {
				if e.Source == lifecycleSource {
					n++
					if !strings.Contains(e.Fact, tc.fact) || tc.fact == "" {
						t.Errorf("evidence %q, want it to contain %q", e.Fact, tc.fact)
					}
					if e.Time.IsZero() || e.Time.After(at) {
						t.Errorf("evidence time %v: want the event's time", e.Time)
					}
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.fact != ""]; n != want {
				t.Errorf("%d lifecycle evidence entries, want %d: %+v", n, want, d.Evidence)
			}
			if tc.d.Pattern == diagnosis.PatternARPFailure && !tc.bare && (len(lc.asked) != 1 || lc.asked[0] != node) {
				t.Errorf("asked about %v, want the failed neighbour %s", lc.asked, node)
			}
		})
	}
}

// An event the destination's history already has (AnnotateCluster adds
// it) is not added again; at another time, or for another address (an ARP
// next hop), it is.
func TestAnnotateLifecycleOnce(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	peer := netip.MustParseAddr("10.244.1.7")
	hop := netip.MustParseAddr("10.0.0.12")
	e := LifecycleEvent{Time: at.Add(-time.Minute), Kind: LifecycleDeleted, Namespace: "prod", Pod: "cache-0"}
	for _, tc := range []struct {
		name    string
		histAt  time.Time
		subject netip.Addr
		want    int
	}{
		{"in the history", e.Time, netip.Addr{}, 0},
		{"history at another time", e.Time.Add(-time.Second), netip.Addr{}, 1},
		{"the next hop, not the destination", e.Time, hop, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &lifecycleCluster{events: map[netip.Addr][]LifecycleEvent{peer: {e}, hop: {e}},
				history: []diagnosis.Evidence{{Time: tc.histAt, Source: "k8s", Fact: "pod prod/cache-0 deleted"}}}
			d := diagnosis.Diagnosis{Pattern: diagnosis.PatternARPFailure, Destination: diagnosis.Endpoint{Addr: peer.String()}}
			v := Verdict{Cause: CauseNeighGone}
			if tc.subject.IsValid() {
				v.Subject = netip.AddrPortFrom(tc.subject, 0)
			}
			AnnotateLifecycle(c, v, &d, at)
			if !strings.Contains(d.Summary, "deleted 1m ago") {
				t.Errorf("summary %q does not name the deletion", d.Summary)
			}
			if len(d.Evidence) != tc.want {
				t.Errorf("%d evidence entries, want %d: %+v", len(d.Evidence), tc.want, d.Evidence)
			}
		})
	}
}

func TestAgoText(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"}, {1500 * time.Millisecond, "2s"}, {45 * time.Second, "45s"}, {130 * time.Second, "2m10s"},
		{2 * time.Minute, "2m"}, {12*time.Minute + 20*time.Second, "12m"}, {2 * time.Hour, "2h"}, {65 * time.Minute, "1h5m"}, {300 * time.Millisecond, "300ms"},
	} {
		if got := agoText(tc.d); got != tc.want {
			t.Errorf("agoText(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestKilledPhrase(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	base := LifecycleEvent{Time: at, Kind: LifecycleRestarted, Namespace: "prod", Pod: "backend-x", Container: "app"}
	for _, tc := range []struct {
		reason  string
		exit    int32
		phrase  string
		resolve string
	}{
		{"OOMKilled", 137, "container app of pod prod/backend-x was OOMKilled (exit 137) at 03:04:05 UTC",
			"Container app was killed for memory (OOM)"},
		{"Error", 2, "container app of pod prod/backend-x stopped (Error, exit 2) at 03:04:05 UTC", "Find why container app exited"},
		{"", 139, "container app of pod prod/backend-x stopped (exit 139) at 03:04:05 UTC", "Find why container app exited"},
		{"Completed", 0, "container app of pod prod/backend-x stopped (Completed, exit 0) at 03:04:05 UTC",
			"Container app exited normally"},
	} {
		e := base
		e.Reason, e.ExitCode = tc.reason, tc.exit
		if got := e.killedPhrase(); got != tc.phrase {
			t.Errorf("killedPhrase = %q, want %q", got, tc.phrase)
		}
		r := e.killedResolution()
		if !strings.HasPrefix(r, tc.resolve) || !strings.Contains(r, "preStop hook") || !strings.Contains(r, "retry idempotent requests") {
			t.Errorf("killedResolution = %q, want it to start with %q and say how to stop and retry", r, tc.resolve)
		}
	}
}
