package pattern_test

import (
	"testing"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

// A NETFILTER_DROP diagnosis names the rule the attributor found, in the
// summary, the evidence and the fix; the attributor is asked once per new
// diagnosis, with the drop in the namespace of the cause.
func TestNetfilterRuleNamed(t *testing.T) {
	rule := pattern.RuleFact{Netns: "server", Family: "inet", Table: "filter", Chain: "input", Handle: 4,
		Text: "tcp dport 8080 drop", Iptables: "", Verdict: "drop", Exact: true}
	tests := []struct {
		fixture, summary, resolution, evidence string
		dropNetns                              uint32
	}{
		{"syn_nft_drop_timeout.jsonl",
			"SYN to 10.0.0.2:8080 dropped by rule `tcp dport 8080 drop` (inet filter input, handle 4) in netns server",
			"In netns server delete or narrow it (`nft delete rule inet filter input handle 4`), or allow 10.0.0.2:8080.",
			"netfilter rule `tcp dport 8080 drop` (inet filter input, handle 4) in server: drop", serverInode},
		{"refused_reject.jsonl",
			"connection to 10.0.0.2:8080 refused by rule `tcp dport 8080 drop` (inet filter input, handle 4) in netns server",
			"`nft delete rule inet filter input handle 4`",
			"netfilter rule `tcp dport 8080 drop`", serverInode},
		{"icmp_reject_prohibited.jsonl",
			"tcp 10.0.0.2:8080 rejected by a firewall: 10.0.0.2 sent ICMP administratively prohibited (rule `tcp dport 8080 drop` (inet filter input, handle 4))",
			"nft -a list chain inet filter input", "netfilter rule", serverInode},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			rules := &fakeRules{rule: rule}
			ds, _ := replayFixture(t, tc.fixture, nil, func(c *correlate.Config) { c.Rules = rules })
			if len(ds) == 0 {
				t.Fatal("no diagnosis")
			}
			d := ds[0]
			if d.Summary != tc.summary {
				t.Errorf("summary %q\nwant    %q", d.Summary, tc.summary)
			}
			mustContain(t, "resolution", d.Resolution, tc.resolution)
			found := false
			for _, e := range d.Evidence {
				if e.Source == "hostctx:netfilter" {
					mustContain(t, "rule evidence", e.Fact, tc.evidence)
					found = true
				}
			}
			if !found {
				t.Errorf("no rule evidence: %+v", d.Evidence)
			}
			if rules.calls != 1 || rules.last.DropReason != "NETFILTER_DROP" || rules.last.NetnsInode != tc.dropNetns {
				t.Errorf("%d attributions, last %v; want 1 of the NETFILTER_DROP in netns %d", rules.calls, rules.last, tc.dropNetns)
			}
		})
	}
	// No drop to attribute, no attributor call.
	rules := &fakeRules{rule: rule}
	replayFixture(t, "refused_closed_port.jsonl", nil, func(c *correlate.Config) { c.Rules = rules })
	if rules.calls != 0 {
		t.Errorf("%d attributions for a closed port", rules.calls)
	}
}
