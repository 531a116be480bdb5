package clusterctx_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/network-correlator/network-correlator/internal/clusterctx"
	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/k8sctx"
	"github.com/network-correlator/network-correlator/internal/netpol"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// The replay fixtures' client (10.0.0.1) and server (10.0.0.2:8080) as pods.
func pod(ns, name, ip string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: name + "-5d8f7", Controller: ptr(true)}}},
		Spec:   corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

func ptr[T any](v T) *T { return &v }

func ingressOnlyAPI(ns string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backend-allow-api"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "backend"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"role": "api"}},
				}},
			}},
		},
	}
}

func defaultDeny(ns string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default-deny"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}
}

// egressDNSOnly lets app=web pods of ns talk to port 53 only.
func egressDNSOnly(ns string) *networkingv1.NetworkPolicy {
	dns := intstr.FromInt32(53)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-egress-dns"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &dns}}}},
		},
	}
}

type world struct {
	clientLabels map[string]string
	policies     []*networkingv1.NetworkPolicy
	down         string // Available's reason; "" = available
}

func (w world) context(t *testing.T) *clusterctx.Context {
	t.Helper()
	// The index records changes at its clock: before the fixtures' time.
	setAt := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	ki := k8sctx.NewIndex(time.Hour, func() time.Time { return setAt })
	x := netpol.NewIndex(netpol.DefaultOptions())
	obs := &clusterctx.Observer{Index: x}
	for _, ns := range []string{"front", "prod"} {
		obs.SetNamespace(k8sctx.NamespaceInfo{Name: ns, Labels: map[string]string{"team": ns}})
	}
	for _, p := range []*corev1.Pod{
		pod("front", "web-7c9d-abcde", "10.0.0.1", w.clientLabels),
		pod("prod", "backend-6b7f-xyz12", "10.0.0.2", map[string]string{"app": "backend"}),
	} {
		ki.SetPod(p)
		x.SetPod(netpol.PodFromAPI(p))
	}
	for _, np := range w.policies {
		obs.SetPolicy(np)
	}
	return clusterctx.New(ki, func() (bool, string) { return w.down == "", w.down }, x)
}

// counting counts the full policy analyses the correlator asks for.
type counting struct {
	*clusterctx.Context
	full int
}

func (c *counting) PolicyCheck(f signal.Flow, full bool) (pattern.PolicyFact, bool) {
	if full {
		c.full++
	}
	return c.Context.PolicyCheck(f, full)
}

func replay(t *testing.T, fixture string, c *clusterctx.Context) ([]diagnosis.Diagnosis, correlate.Stats) {
	ds, st, _ := replayCounting(t, fixture, c)
	return ds, st
}

func replayCounting(t *testing.T, fixture string, ctx *clusterctx.Context) ([]diagnosis.Diagnosis, correlate.Stats, int) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "replay", fixture))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := &counting{Context: ctx}
	cfg := correlate.DefaultConfig()
	cfg.Cluster = c
	var out []diagnosis.Diagnosis
	e, err := correlate.New(cfg, func(d diagnosis.Diagnosis) {
		if err := d.Validate(); err != nil {
			t.Errorf("invalid diagnosis: %v", err)
		}
		out = append(out, d)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := correlate.Replay(f, e, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	return out, e.Stats(), c.full
}

func TestPolicyBlockReplay(t *testing.T) {
	tests := []struct {
		name, fixture string
		w             world
		pattern       diagnosis.Pattern
		policy        *diagnosis.PolicyRef
		// Substrings of the first diagnosis' fields.
		summary, details, resolution []string
		minConf, maxConf             float64
	}{
		{
			name: "ingress policy enforced by a netfilter drop", fixture: "syn_nft_drop_timeout.jsonl",
			w:       world{clientLabels: map[string]string{"app": "web"}, policies: []*networkingv1.NetworkPolicy{ingressOnlyAPI("prod")}},
			pattern: diagnosis.PatternNetworkPolicyBlock,
			policy:  &diagnosis.PolicyRef{Namespace: "prod", Name: "backend-allow-api", Direction: "Ingress", Rule: "spec.ingress[0]"},
			summary: []string{"connection to 10.0.0.2:8080 blocked by NetworkPolicy prod/backend-allow-api (Ingress, spec.ingress[0])"},
			details: []string{"`prod/backend-allow-api`", "`role=api`", "The kernel confirms it", "Ranked first of 2",
				"also matched: syn_dropped/netfilter_drop"},
			resolution: []string{"role=api"},
			minConf:    0.8, maxConf: 1,
		},
		{
			name: "only the policy says so", fixture: "syn_no_local_drop.jsonl",
			w:       world{clientLabels: map[string]string{"app": "web"}, policies: []*networkingv1.NetworkPolicy{ingressOnlyAPI("prod")}},
			pattern: diagnosis.PatternNetworkPolicyBlock,
			policy:  &diagnosis.PolicyRef{Namespace: "prod", Name: "backend-allow-api", Direction: "Ingress", Rule: "spec.ingress[0]"},
			details: []string{"Only the policy says so", "also matched: syn_dropped/no_local_drop"},
			minConf: 0.3, maxConf: 0.8,
		},
		{
			name: "default deny is named", fixture: "syn_nft_drop_timeout.jsonl",
			w:       world{clientLabels: map[string]string{"app": "web"}, policies: []*networkingv1.NetworkPolicy{defaultDeny("prod")}},
			pattern: diagnosis.PatternNetworkPolicyBlock,
			policy:  &diagnosis.PolicyRef{Namespace: "prod", Name: "default-deny", Direction: "Ingress"},
			summary: []string{"blocked by NetworkPolicy prod/default-deny (Ingress, default deny: no Ingress rules)"},
			details: []string{"default deny"},
			minConf: 0.8, maxConf: 1,
		},
		{
			name: "egress policy enforced by the client's own output firewall", fixture: "syn_own_output_eperm.jsonl",
			w:       world{clientLabels: map[string]string{"app": "web"}, policies: []*networkingv1.NetworkPolicy{egressDNSOnly("front")}},
			pattern: diagnosis.PatternNetworkPolicyBlock,
			policy:  &diagnosis.PolicyRef{Namespace: "front", Name: "web-egress-dns", Direction: "Egress", Rule: "spec.egress[0]"},
			summary: []string{"blocked by NetworkPolicy front/web-egress-dns (Egress, spec.egress[0])"},
			details: []string{"The kernel confirms it", "also matched: syn_dropped/local_output_firewall"},
			minConf: 0.8, maxConf: 1,
		},
		{
			name: "refused by a REJECT enforcing the policy", fixture: "refused_reject.jsonl",
			w:       world{clientLabels: map[string]string{"app": "web"}, policies: []*networkingv1.NetworkPolicy{ingressOnlyAPI("prod")}},
			pattern: diagnosis.PatternNetworkPolicyBlock,
			policy:  &diagnosis.PolicyRef{Namespace: "prod", Name: "backend-allow-api", Direction: "Ingress", Rule: "spec.ingress[0]"},
			details: []string{"The kernel confirms it", "also matched: connection_refused/firewall_reject"},
			minConf: 0.8, maxConf: 1,
		},
		{
			name: "policy denies but nobody listens: the kernel's cause wins", fixture: "refused_closed_port.jsonl",
			w:       world{clientLabels: map[string]string{"app": "web"}, policies: []*networkingv1.NetworkPolicy{ingressOnlyAPI("prod")}},
			pattern: diagnosis.PatternConnectionRefused,
			details: []string{"also matched: network_policy_block/policy_contradicted"},
			minConf: 0.5, maxConf: 1,
		},
		{
			name: "policies admit the flow: not NetworkPolicy", fixture: "syn_nft_drop_timeout.jsonl",
			w:       world{clientLabels: map[string]string{"role": "api"}, policies: []*networkingv1.NetworkPolicy{ingressOnlyAPI("prod")}},
			pattern: diagnosis.PatternSYNDropped,
			details: []string{"The cause is not NetworkPolicy", "allowed by NetworkPolicy `prod/backend-allow-api` rule `spec.ingress[0]`"},
			minConf: 0.6, maxConf: 1,
		},
		{
			name: "API server down: said, and the confidence lowered", fixture: "syn_nft_drop_timeout.jsonl",
			w: world{clientLabels: map[string]string{"app": "web"}, policies: []*networkingv1.NetworkPolicy{ingressOnlyAPI("prod")},
				down: "API server unreachable since 2026-11-26T00:59:00Z: connection refused"},
			pattern: diagnosis.PatternNetworkPolicyBlock,
			policy:  &diagnosis.PolicyRef{Namespace: "prod", Name: "backend-allow-api", Direction: "Ingress", Rule: "spec.ingress[0]"},
			details: []string{"Kubernetes context is unavailable (API server unreachable", "confidence is lowered"},
			minConf: 0.6, maxConf: 0.8,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds, st, full := replayCounting(t, tt.fixture, tt.w.context(t))
			if len(ds) == 0 {
				t.Fatal("no diagnosis")
			}
			d := ds[0]
			t.Logf("%s (%.2f): %s\n  details: %s\n  resolution: %s", d.Pattern, d.Confidence, d.Summary, d.Details, d.Resolution)
			if d.Pattern != tt.pattern {
				t.Fatalf("pattern = %s, want %s", d.Pattern, tt.pattern)
			}
			switch {
			case tt.policy == nil && d.Policy != nil:
				t.Errorf("policy = %+v, want none", *d.Policy)
			case tt.policy != nil && (d.Policy == nil || *d.Policy != *tt.policy):
				t.Errorf("policy = %+v, want %+v", d.Policy, *tt.policy)
			}
			if tt.pattern == diagnosis.PatternNetworkPolicyBlock && d.Layer != diagnosis.LayerPolicy {
				t.Errorf("layer = %s", d.Layer)
			}
			for _, s := range tt.summary {
				contains(t, "summary", d.Summary, s)
			}
			for _, s := range tt.details {
				contains(t, "details", d.Details, s)
			}
			for _, s := range tt.resolution {
				contains(t, "resolution", d.Resolution, s)
			}
			if d.Confidence < tt.minConf || d.Confidence > tt.maxConf {
				t.Errorf("confidence %.2f outside [%.2f, %.2f]", d.Confidence, tt.minConf, tt.maxConf)
			}
			// Both ends named, whatever the pattern.
			if d.Source.K8sPod != "web-7c9d-abcde" || d.Source.K8sNamespace != "front" || d.Source.K8sWorkload != "ReplicaSet/web-7c9d-abcde-5d8f7" {
				t.Errorf("source = %+v", d.Source)
			}
			if d.Destination.K8sPod != "backend-6b7f-xyz12" || d.Destination.K8sNamespace != "prod" || d.Destination.K8sNode != "node-1" {
				t.Errorf("destination = %+v", d.Destination)
			}
			// One attribution per connection, not per signal.
			if st.PolicyChecks != 1 {
				t.Errorf("policy checks = %d, want 1", st.PolicyChecks)
			}
			// The analysis with the fix: once for the diagnosis (not for
			// its aggregated repeats), none when the kernel's cause wins
			// against a denying policy.
			wantFull := 1
			if tt.pattern != diagnosis.PatternNetworkPolicyBlock && tt.policy == nil && !strings.Contains(d.Details, "not NetworkPolicy") {
				wantFull = 0
			}
			if full != wantFull {
				t.Errorf("full policy analyses = %d, want %d", full, wantFull)
			}
		})
	}
}

func contains(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Errorf("%s = %q, want it to contain %q", what, got, want)
	}
}

// An address whose pod was deleted: the arp_failure diagnosis cites the
// pod it belonged to and its deletion, in the evidence and the details.
func TestDeletedPodReplay(t *testing.T) {
	clock := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	ki := k8sctx.NewIndex(2*time.Hour, func() time.Time { return clock })
	ki.SetPod(pod("front", "web-7c9d-abcde", "10.0.0.1", map[string]string{"app": "web"}))
	ki.SetPod(pod("prod", "cache-0", "10.0.0.99", map[string]string{"app": "cache"}))
	clock = clock.Add(30 * time.Minute)
	ki.DeletePod("prod", "cache-0")
	c := clusterctx.New(ki, func() (bool, string) { return true, "" }, nil)

	ds, _ := replay(t, "arp_unused_ip.jsonl", c)
	if len(ds) == 0 || ds[0].Pattern != diagnosis.PatternARPFailure {
		t.Fatalf("diagnoses = %+v, want arp_failure first", ds)
	}
	d := ds[0]
	t.Logf("%s\n  details: %s", d.Summary, d.Details)
	contains(t, "details", d.Details, "10.0.0.99 belongs to no pod now: address belonged to pod prod/cache-0 until 2026-11-26T02:30:00Z; pod prod/cache-0 deleted at 2026-11-26T02:30:00Z.")
	var facts []string
	for _, e := range d.Evidence {
		if e.Source == k8sctx.EvidenceSource {
			facts = append(facts, e.Fact)
		}
	}
	if len(facts) != 2 {
		t.Errorf("k8s evidence = %q, want the previous owner and the deletion", facts)
	}
	if d.Destination.K8sPod != "" || d.Source.K8sPod != "web-7c9d-abcde" {
		t.Errorf("source %+v destination %+v", d.Source, d.Destination)
	}
}

// A SYN to a Service address whose service has no ready endpoints:
// service_no_endpoints says so, and that no pod matches its selector.
func TestServiceWithoutEndpointsReplay(t *testing.T) {
	ki := k8sctx.NewIndex(time.Hour, func() time.Time { return time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC) })
	ki.SetPod(pod("front", "web-7c9d-abcde", "10.0.0.1", map[string]string{"app": "web"}))
	ki.SetService(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "backend"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.2", ClusterIPs: []string{"10.0.0.2"},
			Selector: map[string]string{"app": "backend"}, Ports: []corev1.ServicePort{{Port: 8080}}},
	})
	c := clusterctx.New(ki, func() (bool, string) { return true, "" }, nil)
	ds, _ := replay(t, "syn_no_local_drop.jsonl", c)
	if len(ds) == 0 {
		t.Fatal("no diagnosis")
	}
	d := ds[0]
	t.Logf("%s\n  details: %s", d.Summary, d.Details)
	if d.Pattern != diagnosis.PatternServiceNoEndpoints {
		t.Fatalf("pattern %s, want service_no_endpoints: %s", d.Pattern, d.Summary)
	}
	contains(t, "details", d.Details, "10.0.0.2 is the ClusterIP of Service prod/backend, port 8080/TCP. No EndpointSlice exists for it")
	contains(t, "details", d.Details, "Its selector app=backend matches no pod in namespace prod")
	contains(t, "resolution", d.Resolution, "No pod matches the selector app=backend in namespace prod")
	if d.Destination.K8sNamespace != "prod" || d.Destination.K8sPod != "" {
		t.Errorf("destination = %+v, want the service's namespace and no pod", d.Destination)
	}
}
