package pattern_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// serviceCluster knows Services by address; full lookups add the details a
// diagnosis quotes. available=false is an API server outage.
type serviceCluster struct {
	fakeCluster
	services    map[netip.Addr]pattern.ServiceFact
	unavailable string
	brief, full int
}

func (c *serviceCluster) Available() (bool, string) { return c.unavailable == "", c.unavailable }

func (c *serviceCluster) ServiceInfo(addr netip.Addr, port uint16, at time.Time, full bool) (pattern.ServiceFact, bool) {
	f, ok := c.services[addr]
	if !full {
		c.brief++
		f.Slices, f.Ports, f.Changes, f.SelectorSample, f.Port, f.Selector, f.Known = nil, nil, nil, nil, "", "", false
	} else {
		c.full++
	}
	return f, ok
}

var fixtureT0 = time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC) // refused_* fixtures

func clusterIP(ready int) pattern.ServiceFact {
	return pattern.ServiceFact{Namespace: "prod", Name: "backend", Ready: ready, NotReady: 1, Known: true,
		Slices: []string{"backend-x7k2p"}, Port: "http 8080/TCP", Ports: []string{"http 8080/TCP"},
		Selector: "app=backend", SelectorPods: 1, SelectorRunning: 1, SelectorSample: []string{"backend-0"},
		Changes: []diagnosis.Evidence{{Time: fixtureT0.Add(-time.Minute), Source: "k8s:endpointslice",
			Fact: "10.0.0.2 (pod backend-0) went ready -> not ready in EndpointSlice backend-x7k2p"}},
		LostReadyAt: fixtureT0.Add(-time.Minute)}
}

func backend(state string, since time.Time, ready int) pattern.ServiceFact {
	f := clusterIP(ready)
	f.Backend, f.State, f.Since, f.Pod, f.Slice = true, state, since, "backend-0", "backend-x7k2p"
	return f
}

var (
	vip   = netip.MustParseAddr("10.96.0.10")
	podIP = netip.MustParseAddr("10.0.0.2")
)

func TestServiceNoEndpoints(t *testing.T) {
	tests := []struct {
		name, fixture string
		cluster       *serviceCluster // nil: no cluster context
		key           string          // prefix of the first diagnosis' key
		rival         string          // "pattern/cause" named as also matched
		plus          float64         // confidence over the rival's
		details       []string
	}{
		{"ClusterIP rejected on the node (kube-proxy REJECT)", "service_reject_node.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{vip: clusterIP(0)}},
			"service_no_endpoints/no_ready_endpoints/10.96.0.10:8080/", "icmp_error/port_unreachable", 0.1,
			[]string{"10.96.0.10 is the ClusterIP of Service prod/backend, port http 8080/TCP",
				"Its EndpointSlices (backend-x7k2p) list 0 ready, 1 not ready and 0 terminating endpoints",
				"Its last ready endpoint went away at 2026-11-26T00:59:00Z",
				"selector app=backend matches 1 pod(s) in namespace prod (backend-0), 1 Running",
				"The kernel confirms it: ", "kube-proxy does for such a Service"}},
		{"ClusterIP rejected in the client's own output path", "service_reject_own_output.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{vip: clusterIP(0)}},
			"service_no_endpoints/no_ready_endpoints/10.96.0.10:8080/netns:4097", "icmp_error/local_reject", 0.1,
			[]string{"The kernel confirms it: tcp 10.96.0.10:8080 rejected by a firewall REJECT in netns client"}},
		{"ClusterIP SYNs dropped on the node", "service_syn_dropped_node.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{vip: clusterIP(0)}},
			"service_no_endpoints/no_ready_endpoints/10.96.0.10:8080/", "syn_dropped/netfilter_drop", 0.05,
			[]string{"only unanswered SYNs seen", "only the cluster state says why"}},
		{"ClusterIP refused by a REJECT with tcp-reset", "refused_reject.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{podIP: clusterIP(0)}},
			"service_no_endpoints/no_ready_endpoints/10.0.0.2:8080/", "connection_refused/firewall_reject", 0.1,
			[]string{"The kernel confirms it: connection to 10.0.0.2:8080 refused: a firewall REJECT (tcp-reset) in netns server"}},
		{"backend not ready since a minute", "refused_closed_port.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{podIP: backend(pattern.EndpointNotReady, fixtureT0.Add(-time.Minute), 0)}},
			"service_no_endpoints/endpoint_not_ready/10.0.0.2:8080/netns:4098", "connection_refused/no_listener", 0.1,
			[]string{"10.0.0.2 (pod prod/backend-0) is not ready in EndpointSlice backend-x7k2p of Service prod/backend since 2026-11-26T00:59:00Z, port http 8080/TCP",
				"Kernel view: connection to 10.0.0.2:8080 refused: no process listens"}},
		{"backend removed long ago, other endpoints ready", "refused_closed_port.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{podIP: backend(pattern.EndpointRemoved, fixtureT0.Add(-time.Hour), 2)}},
			"service_no_endpoints/endpoint_removed/10.0.0.2:8080/", "connection_refused/no_listener", 0.05,
			[]string{"10.0.0.2 (pod prod/backend-0) was removed from EndpointSlice backend-x7k2p of Service prod/backend (removed at 2026-11-26T00:00:00Z)",
				"this client dials the backend's own address"}},
		{"backend terminating, first seen so", "refused_closed_port.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{podIP: backend(pattern.EndpointTerminating, time.Time{}, 0)}},
			"service_no_endpoints/endpoint_terminating/10.0.0.2:8080/", "connection_refused/no_listener", 0.05, nil},

		// Near misses: the kernel pattern keeps the connection.
		{"ClusterIP with ready endpoints whose backend refuses", "refused_client_only.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{netip.MustParseAddr("192.0.2.10"): clusterIP(2)}},
			"connection_refused/remote/", "", 0, nil},
		{"ready backend refuses", "refused_closed_port.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{podIP: backend(pattern.EndpointReady, time.Time{}, 1)}},
			"connection_refused/no_listener/", "", 0, nil},
		{"not a Service address", "refused_closed_port.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{vip: clusterIP(0)}},
			"connection_refused/no_listener/", "", 0, nil},
		{"no cluster context", "service_reject_own_output.jsonl", nil, "icmp_error/local_reject/", "", 0, nil},
		{"removed backend whose address no longer answers ARP", "arp_unused_ip.jsonl",
			&serviceCluster{services: map[netip.Addr]pattern.ServiceFact{netip.MustParseAddr("10.0.0.99"): backend(pattern.EndpointRemoved, fixtureT0, 0)}},
			"arp_failure/never_resolved/", "", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mods []func(*correlate.Config)
			if tt.cluster != nil {
				mods = append(mods, func(c *correlate.Config) { c.Cluster = tt.cluster })
			}
			ds, _ := replayFixture(t, tt.fixture, nil, mods...)
			if len(ds) == 0 {
				t.Fatal("no diagnosis")
			}
			d := ds[0]
			t.Logf("%s (%.2f): %s\n  %s\n  %s", d.Key, d.Confidence, d.Summary, d.Details, d.Resolution)
			if !strings.HasPrefix(d.Key, tt.key) {
				t.Fatalf("key %s, want %s...", d.Key, tt.key)
			}
			for _, x := range ds {
				if x.Pattern == diagnosis.PatternServiceNoEndpoints && d.Pattern != diagnosis.PatternServiceNoEndpoints {
					t.Errorf("a second diagnosis claims the service: %s", x.Key)
				}
			}
			if d.Pattern != diagnosis.PatternServiceNoEndpoints {
				return
			}
			if tt.rival != "" {
				mustContain(t, "details", d.Details, "also matched: "+tt.rival+" (confidence ")
			}
			mustContain(t, "details", d.Details, "Ranked first of 2 matching patterns (service_no_endpoints")
			for _, s := range tt.details {
				mustContain(t, "details", d.Details, s)
			}
			rc := rivalConfidence(t, d.Details, tt.rival)
			if want := min(rc+tt.plus, 0.98); d.Confidence < want-0.001 || d.Confidence > want+0.001 {
				t.Errorf("confidence %.2f, want the rival's %.2f + %.2f", d.Confidence, rc, tt.plus)
			}
			if !hasSource(d, "k8s:endpointslice") || d.Layer != diagnosis.LayerL4 {
				t.Errorf("layer %s, evidence %+v", d.Layer, d.Evidence)
			}
			if strings.Contains(d.Details, "is a Service address:") {
				t.Errorf("the generic Service sentence repeats what the pattern says: %s", d.Details)
			}
			if tt.cluster.full != 1 {
				t.Errorf("%d full Service lookups, want 1 (when the diagnosis is built)", tt.cluster.full)
			}
		})
	}
}

// rivalConfidence reads "also matched: p/c (confidence 0.85" from details.
func rivalConfidence(t *testing.T, details, rival string) float64 {
	t.Helper()
	_, rest, ok := strings.Cut(details, "also matched: "+rival+" (confidence ")
	if !ok || len(rest) < 4 {
		t.Fatalf("details do not name the rival %s: %s", rival, details)
	}
	var c float64
	for i, ch := range rest[:4] {
		switch {
		case ch == '.':
		case ch >= '0' && ch <= '9':
			c = c*10 + float64(ch-'0')
		default:
			t.Fatalf("bad confidence %q at %d", rest[:4], i)
		}
	}
	return c / 100
}

// Degraded mode: with the API server unreachable the last known state still
// names the Service, and the diagnosis says the context is stale and
// lowers the confidence.
func TestServiceNoEndpointsClusterUnavailable(t *testing.T) {
	ok := &serviceCluster{services: map[netip.Addr]pattern.ServiceFact{vip: clusterIP(0)}}
	down := &serviceCluster{services: ok.services, unavailable: "API server unreachable"}
	var got [2]diagnosis.Diagnosis
	for i, c := range []*serviceCluster{ok, down} {
		ds, _ := replayFixture(t, "service_reject_node.jsonl", nil, func(cfg *correlate.Config) { cfg.Cluster = c })
		if len(ds) == 0 || ds[0].Pattern != diagnosis.PatternServiceNoEndpoints {
			t.Fatalf("diagnoses %v, want service_no_endpoints", keysOf(ds))
		}
		got[i] = ds[0]
	}
	if got[1].Confidence >= got[0].Confidence {
		t.Errorf("confidence %.2f with the API down, %.2f with it up: want it lowered", got[1].Confidence, got[0].Confidence)
	}
	mustContain(t, "details", got[1].Details, "Kubernetes context is unavailable (API server unreachable)")
}

// A Cluster that does not know Services (an older provider) makes no claim.
func TestServiceNoEndpointsWithoutServiceIndex(t *testing.T) {
	ds, _ := replayFixture(t, "service_reject_node.jsonl", nil, func(c *correlate.Config) { c.Cluster = &fakeCluster{} })
	if len(ds) == 0 || !strings.HasPrefix(ds[0].Key, "icmp_error/port_unreachable/") {
		t.Fatalf("diagnoses %v, want icmp_error/port_unreachable", keysOf(ds))
	}
}

// Matching asks the cluster only once a kernel pattern sees a failure, and
// never allocates when it does not match.
func TestServiceNoEndpointsMatchCost(t *testing.T) {
	c := &serviceCluster{services: map[netip.Addr]pattern.ServiceFact{vip: clusterIP(2)}}
	fl := signal.Flow{Proto: signal.ProtoTCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: vip, SrcPort: 40000, DstPort: 8080}
	ok := signal.Signal{Kind: signal.KindStateChange, Time: fixtureT0, Flow: fl, NetnsInode: clientInode,
		OldState: signal.StateSynSent, State: signal.StateEstablished}
	ev := &pattern.Evidence{Flow: fl, Oriented: true, Now: ok.Time, Trigger: &ok, Socket: []signal.Signal{ok}, Cluster: c}
	p := pattern.ServiceNoEndpoints{}
	if _, out := p.Match(ev); out != pattern.NoMatch || c.brief != 0 {
		t.Fatalf("a connection that did not fail: %v, %d lookups", out, c.brief)
	}
	refused := signal.Signal{Kind: signal.KindStateChange, Time: fixtureT0, Flow: fl, NetnsInode: clientInode,
		OldState: signal.StateSynSent, State: signal.StateClose, SkErr: pattern.ECONNREFUSED}
	ev.Trigger, ev.Socket = &refused, []signal.Signal{refused}
	if n := testing.AllocsPerRun(100, func() { p.Match(ev) }); n != 0 {
		t.Errorf("Match allocates %.0f times on a Service with ready endpoints", n)
	}
	if c.brief == 0 {
		t.Error("the refused connection to a Service address was not looked up")
	}
}
