package pattern_test

import (
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// fakeCluster gives one verdict to every flow.
type fakeCluster struct {
	fact    pattern.PolicyFact
	ok      bool
	checked int
}

func (*fakeCluster) Available() (bool, string) { return true, "" }

func (*fakeCluster) Annotate(*diagnosis.Endpoint, time.Time) ([]diagnosis.Evidence, bool) {
	return nil, false
}

func (c *fakeCluster) PolicyCheck(_ signal.Flow, full bool) (pattern.PolicyFact, bool) {
	c.checked++
	f := c.fact
	if !full {
		f.Explain, f.Fix = "", ""
	}
	return f, c.ok
}

func TestNetworkPolicyBlockRanking(t *testing.T) {
	deny := pattern.PolicyFact{Denied: true, Explain: "blocked by NetworkPolicy `prod/p`", Fix: "label it",
		Policy: diagnosis.PolicyRef{Namespace: "prod", Name: "p", Direction: "Ingress", Rule: "spec.ingress[1]"}}
	egress := deny
	egress.Policy.Direction, egress.Policy.Rule = "Egress", "spec.egress[0]"
	tests := []struct {
		name, fixture string
		cluster       *fakeCluster // nil: no cluster context
		pattern       diagnosis.Pattern
		cause         string // in the aggregation key
		rival         string // "pattern/cause" the details must name as also matched
	}{
		{"no cluster context", "syn_nft_drop_timeout.jsonl", nil, diagnosis.PatternSYNDropped, pattern.CauseNetfilterDrop, ""},
		{"no verdict (neither end a pod)", "syn_nft_drop_timeout.jsonl", &fakeCluster{fact: deny}, diagnosis.PatternSYNDropped, pattern.CauseNetfilterDrop, ""},
		{"ingress deny, server-side drop", "syn_nft_drop_timeout.jsonl", &fakeCluster{fact: deny, ok: true},
			diagnosis.PatternNetworkPolicyBlock, pattern.CausePolicyEnforced, "syn_dropped/netfilter_drop"},
		{"egress deny, but the drop is on the server's side", "syn_nft_drop_timeout.jsonl", &fakeCluster{fact: egress, ok: true},
			diagnosis.PatternSYNDropped, pattern.CauseNetfilterDrop, "network_policy_block/policy_contradicted"},
		{"egress deny, the client's own output firewall", "syn_own_output_eperm.jsonl", &fakeCluster{fact: egress, ok: true},
			diagnosis.PatternNetworkPolicyBlock, pattern.CausePolicyEnforced, "syn_dropped/local_output_firewall"},
		{"deny, nothing seen locally", "syn_no_local_drop.jsonl", &fakeCluster{fact: deny, ok: true},
			diagnosis.PatternNetworkPolicyBlock, pattern.CausePolicyOnly, "syn_dropped/no_local_drop"},
		{"deny, REJECT", "refused_reject.jsonl", &fakeCluster{fact: deny, ok: true},
			diagnosis.PatternNetworkPolicyBlock, pattern.CausePolicyEnforced, "connection_refused/firewall_reject"},
		{"deny, only the client's view of a RST", "refused_client_only.jsonl", &fakeCluster{fact: deny, ok: true},
			diagnosis.PatternNetworkPolicyBlock, pattern.CausePolicyOnly, "connection_refused/remote"},
		{"deny, but nobody listens", "refused_closed_port.jsonl", &fakeCluster{fact: deny, ok: true},
			diagnosis.PatternConnectionRefused, pattern.CauseNoListener, "network_policy_block/policy_contradicted"},
		{"allowed", "syn_nft_drop_timeout.jsonl", &fakeCluster{fact: pattern.PolicyFact{Explain: "allowed: ..."}, ok: true},
			diagnosis.PatternSYNDropped, pattern.CauseNetfilterDrop, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mods []func(*correlate.Config)
			if tt.cluster != nil {
				mods = append(mods, func(c *correlate.Config) { c.Cluster = tt.cluster })
			}
			ds, st := replayFixture(t, tt.fixture, nil, mods...)
			if len(ds) == 0 {
				t.Fatal("no diagnosis")
			}
			d := ds[0]
			t.Logf("%s (%.2f): %s | %s", d.Pattern, d.Confidence, d.Summary, d.Details)
			if d.Pattern != tt.pattern || !strings.Contains(d.Key, "/"+tt.cause+"/") && !strings.Contains(d.Key, tt.cause) {
				t.Fatalf("got %s key %s, want %s cause %s", d.Pattern, d.Key, tt.pattern, tt.cause)
			}
			if tt.rival != "" && !strings.Contains(d.Details, "also matched: "+tt.rival) {
				t.Errorf("details do not name the rival %s: %s", tt.rival, d.Details)
			}
			if tt.pattern == diagnosis.PatternNetworkPolicyBlock {
				if d.Policy == nil || *d.Policy != tt.cluster.fact.Policy || d.Layer != diagnosis.LayerPolicy || d.Resolution != "label it" {
					t.Errorf("policy %+v layer %s resolution %q", d.Policy, d.Layer, d.Resolution)
				}
			} else if d.Policy != nil {
				t.Errorf("policy = %+v on a %s diagnosis", *d.Policy, d.Pattern)
			}
			notPolicy := tt.cluster != nil && tt.cluster.ok && !tt.cluster.fact.Denied
			if got := strings.Contains(d.Details, "The cause is not NetworkPolicy"); got != notPolicy {
				t.Errorf("details say the cause is not NetworkPolicy: %v, want %v", got, notPolicy)
			}
			if tt.cluster != nil && st.PolicyChecks != 1 {
				t.Errorf("policy attributions = %d, want 1 per connection", st.PolicyChecks)
			}
		})
	}
}
