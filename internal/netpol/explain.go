package netpol

import (
	"fmt"
	"strings"
)

// Explain renders the verdict as one diagnosis paragraph, e.g.
//
//	blocked by NetworkPolicy `prod/backend-isolation`: it selects `backend-7c9` for Ingress and none of
//	its 2 ingress rules admits pods labelled `tier=frontend` in namespace `prod` on TCP 8080 (rule
//	`spec.ingress[0]` wants `role=api`; rule `spec.ingress[1]` allows port 9090) — fix: label the client ...
func (v *Verdict) Explain() string {
	var s string
	if v.Allowed {
		s = "allowed: " + v.Egress.explainAllowed(v, true) + "; " + v.Ingress.explainAllowed(v, false)
	} else {
		var parts []string
		if !v.Egress.Allowed {
			parts = append(parts, v.Egress.explainDenied(v))
		}
		if !v.Ingress.Allowed {
			parts = append(parts, v.Ingress.explainDenied(v))
		}
		s = strings.Join(parts, "; and ")
	}
	for _, e := range v.Skipped {
		s += " (not evaluated: " + e.Error() + ")"
	}
	return s
}

func (v *Verdict) side(egress bool) (self *Pod, selfKind EndpointKind, peer *Pod, peerKind EndpointKind, peerEP Endpoint) {
	if egress {
		return v.SrcPod, v.SrcKind, v.DstPod, v.DstKind, v.Flow.Dst
	}
	return v.DstPod, v.DstKind, v.SrcPod, v.SrcKind, v.Flow.Src
}

func (d *DirectionVerdict) explainAllowed(v *Verdict, egress bool) string {
	self, kind, _, _, _ := v.side(egress)
	what := "egress of"
	if !egress {
		what = "ingress to"
	}
	switch {
	case !d.Applicable && kind == EndpointHostNetwork:
		return fmt.Sprintf("%s host-network pod `%s` is not subject to NetworkPolicy", what, podName(self))
	case !d.Applicable:
		ep := v.Flow.Src
		if !egress {
			ep = v.Flow.Dst
		}
		return fmt.Sprintf("%s `%s` is outside the pod network", what, ep.IP)
	case !d.Isolated:
		return fmt.Sprintf("%s `%s` is not isolated (no NetworkPolicy selects it for %s)", what, podName(self), d.Direction)
	}
	a := d.AllowedBy
	s := fmt.Sprintf("%s `%s` allowed by NetworkPolicy `%s` rule `%s`", what, podName(self), a.PolicyRef, a.Rule)
	var at []string
	if a.Peer >= 0 {
		at = append(at, fmt.Sprintf("%s[%d]", peerField(d.Direction), a.Peer))
	}
	if a.Port >= 0 {
		at = append(at, fmt.Sprintf("ports[%d]", a.Port))
	}
	if len(at) > 0 {
		s += " (" + strings.Join(at, ", ") + ")"
	}
	return s
}

func (d *DirectionVerdict) explainDenied(v *Verdict) string {
	egress := d.Direction == Egress
	self, _, peerPod, peerKind, peerEP := v.side(egress)
	peerDesc := ""
	switch peerKind {
	case EndpointPod:
		peerDesc = fmt.Sprintf("pods labelled `%s` in namespace `%s`", formatLabels(identityLabels(peerPod.Labels)), peerPod.Namespace)
	case EndpointHostNetwork:
		peerDesc = fmt.Sprintf("host-network pod `%s`", podName(peerPod))
	default:
		peerDesc = fmt.Sprintf("`%s`", peerEP.IP)
	}
	if egress {
		peerDesc = "traffic to " + peerDesc
	}
	flow := fmt.Sprintf("%s %d", v.Protocol, v.Flow.Port)

	noun := "NetworkPolicy"
	if len(d.Selecting) > 1 {
		noun = "NetworkPolicies"
	}
	names := make([]string, len(d.Selecting))
	for i, p := range d.Selecting {
		names[i] = "`" + p.String() + "`"
	}
	var clauses []string
	for _, p := range d.Selecting {
		var ms []RuleMiss
		for _, m := range d.Misses {
			if m.Namespace == p.Namespace && m.Name == p.Name {
				ms = append(ms, m)
			}
		}
		prefix := "it"
		if len(d.Selecting) > 1 {
			prefix = "`" + p.String() + "`"
		}
		if len(ms) == 1 && ms[0].Kind == MissNoRules {
			clauses = append(clauses, fmt.Sprintf("%s selects `%s` for %s and has no %s rules (default deny)", prefix, self.Name, d.Direction, d.Direction.field()))
			continue
		}
		var rs []string
		for _, m := range ms {
			rs = append(rs, fmt.Sprintf("rule `%s` %s", m.Rule, m.describe()))
		}
		rulesWord := "rules"
		if len(ms) == 1 {
			rulesWord = "rule"
		}
		clauses = append(clauses, fmt.Sprintf("%s selects `%s` for %s and none of its %d %s %s admits %s on %s (%s)",
			prefix, self.Name, d.Direction, len(ms), d.Direction.field(), rulesWord, peerDesc, flow, strings.Join(rs, "; ")))
	}
	s := fmt.Sprintf("blocked by %s %s: %s", noun, strings.Join(names, ", "), strings.Join(clauses, "; "))
	switch n := len(d.Resolution); {
	case n == 1:
		s += " — fix: " + d.Resolution[0].Summary
	case n == 2:
		s += " — fix: " + d.Resolution[0].Summary + "; or " + d.Resolution[1].Summary
	case n > 2:
		s += fmt.Sprintf(" — fix: %s; or %s (%d more resolution%s)", d.Resolution[0].Summary, d.Resolution[1].Summary, n-2, plural(n-2))
	}
	return s
}

// Blame names the policy and rule to report for a denied flow: the denied
// direction (egress first, as the packet meets it first), the selecting
// policy whose rule came nearest to admitting it, and that rule (empty Rule
// for a default deny). ok is false when the flow is allowed.
func (v *Verdict) Blame() (ref PolicyRef, ok bool) {
	d := &v.Egress
	if d.Allowed {
		d = &v.Ingress
	}
	if d.Allowed || len(d.Misses) == 0 {
		return PolicyRef{}, false
	}
	best := d.Misses[0]
	for _, m := range d.Misses[1:] {
		if m.Distance < best.Distance {
			best = m
		}
	}
	return best.PolicyRef, true
}

// describe renders what the rule wants and the flow lacks.
func (m *RuleMiss) describe() string {
	var parts []string
	if m.Peer != nil {
		if m.Peer.Kind == MissPodLabels || m.Peer.Kind == MissNamespace {
			var w []string
			for _, n := range m.Peer.NamespaceWant() {
				if strings.HasPrefix(n, "namespace ") {
					w = append(w, "`"+n+"`")
				} else {
					w = append(w, "namespace label `"+n+"`")
				}
			}
			if pw := m.Peer.PodWant(); len(pw) > 0 {
				w = append(w, "`"+strings.Join(pw, ",")+"`")
			}
			parts = append(parts, "wants "+strings.Join(w, " and "))
		} else {
			parts = append(parts, m.Peer.Detail())
		}
	}
	if m.Port != nil {
		parts = append(parts, m.Port.Detail())
	}
	return strings.Join(parts, " and ")
}
