package pattern

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Causes of a NetworkPolicy block: the kernel confirms the drop where the
// policy is enforced, or only the policy says so.
const (
	CausePolicyEnforced   = "policy_enforced"
	CausePolicyOnly       = "policy_only"
	CausePolicyContradict = "policy_contradicted"
)

// NetworkPolicyBlock: a connection whose SYN goes unanswered (the
// syn_dropped evidence) or is refused (connection_refused) while the
// NetworkPolicies deny the flow. It names the policy and rule, the rule
// analysis and the smallest fix. It outranks syn_dropped and
// connection_refused on the same evidence because it names the object to
// change, not only the netns where packets die:
//   - the kernel shows the drop (NETFILTER_DROP or a REJECT) on the side the
//     denying direction is enforced (ingress: the server's side; egress: the
//     client's own netns): confidence of the kernel pattern + 0.1;
//   - nothing was seen on this node: + 0.05, and the diagnosis says that only
//     the policy supports it (enforced on another node, or by a dataplane the
//     probes do not see);
//   - the kernel shows another cause (no listener, a neighbour or routing
//     drop, a drop on the wrong side): - 0.15, so the kernel pattern wins and
//     names this one as the rival.
type NetworkPolicyBlock struct {
	SYN     SYNDropped
	Refused ConnectionRefused
}

func (NetworkPolicyBlock) ID() diagnosis.Pattern { return diagnosis.PatternNetworkPolicyBlock }

func (p NetworkPolicyBlock) Wants(s *signal.Signal) bool {
	return p.SYN.Wants(s) || p.Refused.Wants(s)
}

// base is the kernel pattern's own decision on the evidence.
func (p NetworkPolicyBlock) base(ev *Evidence) (Verdict, bool, bool) {
	if v, out := p.SYN.Match(ev); out == Match {
		return v, false, true
	}
	if v, out := p.Refused.Match(ev); out == Match {
		return v, true, true
	}
	return Verdict{}, false, false
}

func (p NetworkPolicyBlock) Match(ev *Evidence) (Verdict, Outcome) {
	if ev.Policy == nil {
		return Verdict{}, NoMatch
	}
	b, refused, ok := p.base(ev)
	if !ok {
		return Verdict{}, NoMatch
	}
	pf, ok := ev.Policy.Policy(false)
	if !ok || !pf.Denied {
		return Verdict{}, NoMatch
	}
	v := Verdict{Where: b.Where, Need: b.Need, Specificity: 4}
	switch enforcement(b, refused, pf.Policy.Direction) {
	case CausePolicyEnforced:
		v.Cause, v.Confidence = CausePolicyEnforced, clamp(b.Confidence+0.1)
		v.Why = "a NetworkPolicy denies the flow and the kernel shows the drop where it is enforced"
	case CausePolicyOnly:
		v.Cause, v.Confidence = CausePolicyOnly, clamp(b.Confidence+0.05)
		v.Why = "a NetworkPolicy denies the flow (no drop seen on this node)"
	default:
		v.Cause, v.Confidence = CausePolicyContradict, clamp(b.Confidence-0.15)
		v.Why = "a NetworkPolicy denies the flow, but the kernel shows another cause"
	}
	return v, Match
}

// enforcement tells whether the kernel pattern's cause is what enforcing
// the denying direction looks like.
func enforcement(b Verdict, refused bool, dir string) string {
	switch {
	case refused && b.Cause == CauseFirewallReject,
		!refused && dir == "Ingress" && b.Cause == CauseNetfilterDrop,
		!refused && dir == "Egress" && b.Cause == CauseLocalOutputFirewall:
		return CausePolicyEnforced
	case b.Cause == CauseNoLocalDrop || b.Cause == CauseRemote:
		return CausePolicyOnly
	}
	return CausePolicyContradict
}

func (p NetworkPolicyBlock) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	b, refused, _ := p.base(ev)
	var d diagnosis.Diagnosis
	if refused {
		d = p.Refused.Diagnose(ev, b)
	} else {
		d = p.SYN.Diagnose(ev, b)
	}
	kernel := d.Summary
	pf, _ := ev.Policy.Policy(true)
	ref := pf.Policy
	dst := netip.AddrPortFrom(ev.Flow.Dst, ev.Flow.DstPort).String()
	d.Pattern = diagnosis.PatternNetworkPolicyBlock
	d.Layer = diagnosis.LayerPolicy
	d.Confidence = v.Confidence
	d.Policy = &ref
	rule := ref.Rule
	if pf.DefaultDeny || rule == "" {
		rule = "default deny: no " + ref.Direction + " rules"
	}
	d.Summary = fmt.Sprintf("connection to %s blocked by NetworkPolicy %s/%s (%s, %s)",
		dst, ref.Namespace, ref.Name, ref.Direction, rule)
	d.Details = "Connection " + pf.Explain + "."
	switch v.Cause {
	case CausePolicyEnforced:
		d.Details += " The kernel confirms it: " + kernel + "."
	case CausePolicyOnly:
		d.Details += " Only the policy says so: no drop of this connection was seen on this node (the policy may be " +
			"enforced on another node or by a dataplane the probes do not see), so the confidence is lower. Kernel view: " + kernel + "."
	default:
		d.Details += " The kernel shows another cause, so the policy may not be what breaks the connection: " + kernel + "."
	}
	d.Evidence = append(d.Evidence, diagnosis.Evidence{Time: evTime(ev), Source: "k8s:networkpolicy",
		Fact: fmt.Sprintf("%s denies %s: %s/%s %s", ref.Direction, flowText(ev.Flow), ref.Namespace, ref.Name, orDefault(ref.Rule))})
	if pf.Fix != "" {
		d.Resolution = pf.Fix
	}
	return d
}

func evTime(ev *Evidence) (t time.Time) {
	if ev.Trigger != nil {
		return ev.Trigger.Time
	}
	return ev.Now
}

func orDefault(rule string) string {
	if rule == "" {
		return "(default deny)"
	}
	return rule
}
