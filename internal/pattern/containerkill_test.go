package pattern_test

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/replay"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// podCluster knows which addresses are pods and their lifecycle events;
// hidden stands for the kubelet not having reported them yet.
type podCluster struct {
	pods   map[netip.Addr]bool
	events map[netip.Addr][]pattern.LifecycleEvent
	hidden bool
	asked  int // Lifecycle queries
}

func (*podCluster) Available() (bool, string) { return true, "" }
func (*podCluster) Annotate(*diagnosis.Endpoint, time.Time) ([]diagnosis.Evidence, bool) {
	return nil, false
}
func (*podCluster) PolicyCheck(signal.Flow, bool) (pattern.PolicyFact, bool) {
	return pattern.PolicyFact{}, false
}
func (c *podCluster) HoldsPod(a netip.Addr, _ time.Time) bool { return c.pods[a] }
func (c *podCluster) Lifecycle(a netip.Addr, since, at time.Time) []pattern.LifecycleEvent {
	c.asked++
	if c.hidden {
		return nil
	}
	var out []pattern.LifecycleEvent
	for _, e := range c.events[a] {
		if !e.Time.Before(since) && !e.Time.After(at) {
			out = append(out, e)
		}
	}
	return out
}

// lifecycleOnly answers Lifecycle but cannot say cheaply what is a pod.
type lifecycleOnly struct{ c *podCluster }

func (l lifecycleOnly) Available() (bool, string) { return l.c.Available() }
func (l lifecycleOnly) Annotate(e *diagnosis.Endpoint, at time.Time) ([]diagnosis.Evidence, bool) {
	return l.c.Annotate(e, at)
}
func (l lifecycleOnly) PolicyCheck(f signal.Flow, full bool) (pattern.PolicyFact, bool) {
	return l.c.PolicyCheck(f, full)
}
func (l lifecycleOnly) Lifecycle(a netip.Addr, since, at time.Time) []pattern.LifecycleEvent {
	return l.c.Lifecycle(a, since, at)
}

// The recorded kills (e2e TestContainerKillResetsConnections -record): the
// server at .3:8090, the reset's first signal at these times.
var (
	unreadServer = netip.MustParseAddr("10.209.1.3")
	unreadReset  = time.Date(2026, 11, 26, 4, 57, 25, 167115655, time.UTC)
	finServer    = netip.MustParseAddr("10.209.2.3")
	finReset     = time.Date(2026, 11, 26, 4, 57, 27, 296205340, time.UTC)
)

// oomKilled is the kubelet's report: finishedAt at second resolution.
func oomKilled(at time.Time) pattern.LifecycleEvent {
	return pattern.LifecycleEvent{Time: at.Truncate(time.Second), Kind: pattern.LifecycleRestarted, Namespace: "prod",
		Pod: "backend-x", Container: "app", Reason: "OOMKilled", ExitCode: 137, Restarts: 1}
}

func TestContainerKilledReplay(t *testing.T) {
	tests := []struct {
		name, fixture string
		pod           netip.Addr // the address the cluster knows as a pod
		events        []pattern.LifecycleEvent
		plain         bool // a cluster without PodLifecycle
		key           string
		summary       string
		details       string
		errorType     string
		minConf       float64
		notAsked      bool // the lifecycle is never asked
	}{
		{name: "killed with a request unread: RST", fixture: "kernel_container_kill_unread.jsonl",
			pod: unreadServer, events: []pattern.LifecycleEvent{oomKilled(unreadReset)},
			key:       "peer_lost_state/container_terminated/10.209.1.3:8090/",
			summary:   "connection to 10.209.1.3:8090 reset: container app of pod prod/backend-x was OOMKilled (exit 137) at 04:57:25 UTC and its connections were reset",
			details:   "its kernel closed its sockets with unread data: a RST",
			errorType: "ECONNRESET", minConf: 0.85},
		{name: "killed idle: FIN, then a RST to the next request", fixture: "kernel_container_kill_fin.jsonl",
			pod: finServer, events: []pattern.LifecycleEvent{oomKilled(finReset)},
			key:       "peer_lost_state/container_terminated/10.209.2.3:8090/",
			summary:   "connection to 10.209.2.3:8090 reset: container app of pod prod/backend-x was OOMKilled (exit 137) at 04:57:27 UTC",
			details:   "with a FIN, and the orphan socket answered the next data with a RST",
			errorType: "EPIPE", minConf: 0.85},
		{name: "the orphan lingered: killed 30s before the next request", fixture: "kernel_container_kill_fin.jsonl",
			pod: finServer, events: []pattern.LifecycleEvent{oomKilled(finReset.Add(-30 * time.Second))},
			key: "peer_lost_state/container_terminated/10.209.2.3:8090/", summary: "at 04:56:57 UTC",
			details: "30s before the reset", errorType: "EPIPE", minConf: 0.7},
		{name: "near miss: the termination long before the RST", fixture: "kernel_container_kill_unread.jsonl",
			pod: unreadServer, events: []pattern.LifecycleEvent{oomKilled(unreadReset.Add(-30 * time.Second))}},
		{name: "near miss: the termination after the reset's tolerance", fixture: "kernel_container_kill_unread.jsonl",
			pod: unreadServer, events: []pattern.LifecycleEvent{oomKilled(unreadReset.Add(4 * time.Second))}},
		{name: "near miss: no lifecycle event", fixture: "kernel_container_kill_unread.jsonl", pod: unreadServer},
		{name: "near miss: the peer is not a pod", fixture: "kernel_container_kill_unread.jsonl",
			pod: netip.MustParseAddr("10.209.1.9"), events: []pattern.LifecycleEvent{oomKilled(unreadReset)}, notAsked: true},
		{name: "near miss: a cluster that cannot say what is a pod", fixture: "kernel_container_kill_unread.jsonl",
			pod: unreadServer, events: []pattern.LifecycleEvent{oomKilled(unreadReset)}, plain: true, notAsked: true},
		{name: "near miss: an application's abort (SO_LINGER 0), no event", fixture: "reset_app_abort_linger.jsonl",
			pod: netip.MustParseAddr("10.0.0.2")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pc := &podCluster{pods: map[netip.Addr]bool{tc.pod: true}, events: map[netip.Addr][]pattern.LifecycleEvent{}}
			for _, e := range tc.events {
				pc.events[unreadServer] = append(pc.events[unreadServer], e)
				pc.events[finServer] = append(pc.events[finServer], e)
			}
			var c pattern.Cluster = pc
			if tc.plain {
				c = lifecycleOnly{pc}
			}
			all, _ := replayFixture(t, tc.fixture, nil, func(cfg *correlate.Config) { cfg.Cluster = c })
			var ds []diagnosis.Diagnosis // new occurrences, not the aggregate's update at the end
			for _, d := range all {
				if d.New > 0 {
					ds = append(ds, d)
				}
			}
			if tc.notAsked && pc.asked != 0 {
				t.Errorf("the lifecycle was asked %d times", pc.asked)
			}
			if tc.key == "" {
				if len(ds) != 0 {
					t.Fatalf("diagnosed: %v", keysOf(ds))
				}
				return
			}
			if len(ds) != 1 || !strings.HasPrefix(ds[0].Key, tc.key) {
				t.Fatalf("diagnoses %v, want one %s", keysOf(ds), tc.key)
			}
			d := ds[0]
			t.Logf("%s (%.2f)\n  details: %s\n  resolution: %s", d.Summary, d.Confidence, d.Details, d.Resolution)
			mustContain(t, "summary", d.Summary, tc.summary)
			mustContain(t, "summary", d.Summary, " and its connections were reset")
			mustContain(t, "details", d.Details, tc.details)
			for _, r := range []string{"Container app was killed for memory (OOM)", "preStop hook", "SIGTERM", "retry idempotent requests"} {
				mustContain(t, "resolution", d.Resolution, r)
			}
			if d.ErrorType != tc.errorType || d.Pattern != diagnosis.PatternPeerLostState || d.Layer != diagnosis.LayerL4 {
				t.Errorf("error type %s, pattern %s, layer %s", d.ErrorType, d.Pattern, d.Layer)
			}
			if d.Confidence < tc.minConf {
				t.Errorf("confidence %.2f, want >= %.2f", d.Confidence, tc.minConf)
			}
			// Both times: the kernel's reset and the cluster's termination.
			for _, src := range []string{"tcp:tcp_send_reset", "tcp:tcp_receive_reset", "k8s:lifecycle"} {
				if !hasSource(d, src) {
					t.Errorf("evidence lacks %s: %+v", src, d.Evidence)
				}
			}
			if d.Flow.Dst != tc.pod || d.Flow.DstPort != 8090 {
				t.Errorf("flow %s, want the killed server as its destination", d.Flow)
			}
		})
	}
}

// The engine waits for the kubelet's report up to the wait, asking the
// cluster a bounded number of times, and forgets the connection after.
func TestContainerKilledWait(t *testing.T) {
	for _, tc := range []struct {
		name     string
		reported time.Duration // after the reset; 0: never
		want     bool
	}{
		{name: "reported 1s after the reset", reported: time.Second, want: true},
		{name: "reported after the wait", reported: 6 * time.Second},
		{name: "never reported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := &podCluster{pods: map[netip.Addr]bool{unreadServer: true}, hidden: true,
				events: map[netip.Addr][]pattern.LifecycleEvent{unreadServer: {oomKilled(unreadReset)}}}
			cfg := correlate.DefaultConfig()
			cfg.Cluster = pc
			var got []time.Time
			var now time.Time
			e, err := correlate.New(cfg, func(d diagnosis.Diagnosis) {
				if strings.Contains(d.Key, pattern.CauseContainerTerminated) {
					got = append(got, now)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range fixtureSignals(t, "kernel_container_kill_unread.jsonl") {
				e.Observe(s)
			}
			for now = unreadReset; now.Before(unreadReset.Add(8 * time.Second)); now = now.Add(100 * time.Millisecond) {
				if tc.reported > 0 && !now.Before(unreadReset.Add(tc.reported)) {
					pc.hidden = false
				}
				e.Tick(now)
			}
			switch {
			case tc.want && (len(got) != 1 || got[0].Sub(unreadReset) > tc.reported+300*time.Millisecond):
				t.Errorf("diagnosed at %v, want once within 300ms of the report at +%s", got, tc.reported)
			case !tc.want && len(got) != 0:
				t.Errorf("diagnosed at %v, want nothing", got)
			}
			if max := int(pattern.DefaultLifecycleWait/(200*time.Millisecond)) + 4; pc.asked > max {
				t.Errorf("the lifecycle was asked %d times, want at most %d", pc.asked, max)
			}
			if st := e.Stats(); st.FlowsTracked != 0 {
				t.Errorf("%d connections still held after the wait", st.FlowsTracked)
			}
		})
	}
}

// A remote peer: only the client's kernel is seen (its RST received in
// ESTABLISHED and the close), a reset like any application's abort. With
// the cluster's report it is diagnosed on a Tick; without, never.
func TestContainerKilledRemotePeer(t *testing.T) {
	var client []signal.Signal
	for _, s := range fixtureSignals(t, "kernel_container_kill_unread.jsonl") {
		if s.Kind != signal.KindResetSent { // the server's kernel is elsewhere
			client = append(client, s)
		}
	}
	for _, reported := range []bool{true, false} {
		pc := &podCluster{pods: map[netip.Addr]bool{unreadServer: true}, events: map[netip.Addr][]pattern.LifecycleEvent{}}
		if reported {
			pc.events[unreadServer] = []pattern.LifecycleEvent{oomKilled(unreadReset)}
		}
		cfg := correlate.DefaultConfig()
		cfg.Cluster = pc
		var ds []diagnosis.Diagnosis
		e, err := correlate.New(cfg, func(d diagnosis.Diagnosis) { ds = append(ds, d) })
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range client {
			e.Observe(s)
		}
		for now := unreadReset; now.Before(unreadReset.Add(7 * time.Second)); now = now.Add(100 * time.Millisecond) {
			e.Tick(now)
		}
		switch {
		case reported && (len(ds) != 1 || !strings.Contains(ds[0].Key, "/container_terminated/10.209.1.3:8090/")):
			t.Fatalf("reported: diagnoses %v, want one container_terminated", keysOf(ds))
		case !reported && len(ds) != 0:
			t.Fatalf("not reported: diagnosed %v", keysOf(ds))
		case reported:
			d := ds[0]
			mustContain(t, "details", d.Details, "Confidence from: RST received in ESTABLISHED, close with ECONNRESET, the cluster's termination")
			if hasSource(d, "tcp:tcp_send_reset") || d.Destination.NetnsInode != 0 {
				t.Errorf("the remote peer's side is unseen: %+v", d)
			}
		}
	}
}

func fixtureSignals(t *testing.T, name string) []signal.Signal {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "replay", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []signal.Signal
	dec := replay.NewDecoder(f)
	for {
		var s signal.Signal
		if err := dec.Decode(&s); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatal(err)
		}
		out = append(out, s)
	}
}
