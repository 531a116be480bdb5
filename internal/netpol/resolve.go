package netpol

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// volatileLabels change on every rollout; a peer that names a workload
// exactly must not depend on them.
var volatileLabels = map[string]bool{
	"pod-template-hash":        true,
	"controller-revision-hash": true,
	"pod-template-generation":  true,
}

func (x *Index) resolutions(dir Direction, pols []*compiledPolicy, misses []RuleMiss, q *query) []Resolution {
	var out []Resolution
	out = append(out, x.labelResolutions(dir, pols, q)...)
	_, peer := q.selfPeer(dir)
	defaultDeny := false
	for _, cp := range pols {
		rules := cp.rules(dir)
		if len(rules) == 0 {
			defaultDeny = true
			continue
		}
		// Patch the nearest rule that misses on one part only (peer or port).
		var best *RuleMiss
		for i := range misses {
			m := &misses[i]
			if m.Namespace != cp.ns || m.Name != cp.name || m.Index < 0 || (m.Peer == nil) == (m.Port == nil) {
				continue
			}
			if best == nil || m.Distance < best.Distance {
				best = m
			}
		}
		patched := best != nil
		if m := best; m != nil {
			var w yamlWriter
			res := Resolution{Kind: ResolutionPatchRule, Policy: m.PolicyRef}
			if m.Port != nil {
				res.Path = m.Rule + ".ports"
				w.port(0, q)
				res.Summary = "add " + string(q.proto) + " " + strconv.Itoa(int(q.port)) + " to the ports of rule " + m.Rule + " of NetworkPolicy " + cp.ref(dir).String()
			} else {
				res.Path = m.Rule + "." + peerField(dir)
				w.peer(0, cp.ns, peer)
				res.Summary = "add " + peer.describe() + " to the " + peerField(dir) + " peers of rule " + m.Rule + " of NetworkPolicy " + cp.ref(dir).String()
			}
			res.YAML = w.String()
			out = append(out, res)
		}
		if !patched {
			var w yamlWriter
			w.rule(0, dir, cp.ns, peer, q)
			out = append(out, Resolution{
				Kind:    ResolutionAddRule,
				Policy:  cp.ref(dir),
				Path:    "spec." + dir.field(),
				YAML:    w.String(),
				Summary: "append a rule admitting " + peer.describe() + " on " + string(q.proto) + " " + strconv.Itoa(int(q.port)) + " to spec." + dir.field() + " of NetworkPolicy " + cp.ref(dir).String(),
			})
		}
	}
	if defaultDeny {
		out = append(out, newPolicyResolution(dir, q))
	}
	return out
}

// labelResolutions finds the smallest label edits of the peer pod (the
// client for Ingress, the server for Egress) and its namespace that make a
// rule admit the flow. Each candidate is checked by evaluating the flow again
// with the edited labels, so an edit that would also isolate the peer in the
// other direction is dropped.
func (x *Index) labelResolutions(dir Direction, pols []*compiledPolicy, q *query) []Resolution {
	_, peer := q.selfPeer(dir)
	if peer.kind != EndpointPod {
		return nil
	}
	other := Ingress
	if dir == Ingress {
		other = Egress
	}
	otherAllowed := x.allowed(other, q)
	type cand struct {
		res  Resolution
		cost int
	}
	var cands []cand
	seen := map[string]bool{}
	for _, cp := range pols {
		for _, r := range cp.rules(dir) {
			if len(r.ports) > 0 {
				ok := false
				for j := range r.ports {
					if portMatches(&r.ports[j], q) {
						ok = true
						break
					}
				}
				if !ok {
					continue
				}
			}
			for j := range r.peers {
				c := &r.peers[j]
				if c.ipb != nil || (c.nsSel == nil && peer.pod.Namespace != cp.ns) {
					continue
				}
				var podFix, nsFix LabelChange
				ok := true
				if c.podSel != nil {
					podFix, ok = c.podSel.labelFix(peer.pod.Labels)
				}
				if ok && c.nsSel != nil {
					nsFix, ok = c.nsSel.labelFix(peer.ns.labels)
					if _, touches := nsFix.Set[namespaceNameLabel]; touches || containsStr(nsFix.Remove, namespaceNameLabel) {
						ok = false // immutable, set by the API server
					}
				}
				if !ok || podFix.size()+nsFix.size() == 0 {
					continue
				}
				key := podFix.String() + "|" + nsFix.String()
				if seen[key] {
					continue
				}
				seen[key] = true
				q2 := *q
				_, p2 := q2.selfPeer(dir)
				p2.pod = clonePodLabels(peer.pod, podFix)
				if nsFix.size() > 0 {
					ns2 := *peer.ns
					ns2.labels = applyChange(peer.ns.labels, nsFix)
					p2.ns = &ns2
				}
				if !x.allowed(dir, &q2) || (otherAllowed && !x.allowed(other, &q2)) {
					continue
				}
				ref := cp.ref(dir)
				ref.Rule = r.name
				res := Resolution{Kind: ResolutionLabel, Policy: ref}
				role := "client"
				if dir == Egress {
					role = "server"
				}
				var what []string
				if podFix.size() > 0 {
					res.PodTarget, res.Pod = podName(peer.pod), podFix
					what = append(what, podFix.describe(peer.pod.Labels)+" the "+role+" pod "+res.PodTarget+" (kubectl label pod -n "+peer.pod.Namespace+" "+peer.pod.Name+" "+podFix.String()+overwrite(podFix, peer.pod.Labels)+")")
				}
				if nsFix.size() > 0 {
					res.NamespaceTarget, res.Namespace = peer.ns.name, nsFix
					what = append(what, nsFix.describe(peer.ns.labels)+" namespace "+peer.ns.name+" (kubectl label namespace "+peer.ns.name+" "+nsFix.String()+overwrite(nsFix, peer.ns.labels)+")")
				}
				res.Summary = strings.Join(what, " and ") + ", which rule " + ref.Rule + " of NetworkPolicy " + cp.ref(dir).String() + " admits"
				cands = append(cands, cand{res, podFix.size() + 2*nsFix.size()})
			}
		}
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].cost < cands[j].cost })
	out := make([]Resolution, len(cands))
	for i, c := range cands {
		out[i] = c.res
	}
	return out
}

// overwrite is the kubectl flag needed when the change replaces a value.
func overwrite(c LabelChange, current map[string]string) string {
	for k := range c.Set {
		if _, ok := current[k]; ok {
			return " --overwrite"
		}
	}
	return ""
}

func containsStr(l []string, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

func clonePodLabels(p *Pod, c LabelChange) *Pod {
	cp := *p
	cp.Labels = applyChange(p.Labels, c)
	return &cp
}

func peerField(dir Direction) string {
	if dir == Ingress {
		return "from"
	}
	return "to"
}

func identityLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if !volatileLabels[k] {
			out[k] = v
		}
	}
	return out
}

func newPolicyResolution(dir Direction, q *query) Resolution {
	self, peer := q.selfPeer(dir)
	name := "allow-" + dir.field() + "-" + dnsPart(endpointShort(peer)) + "-" + strings.ToLower(string(q.proto)) + "-" + strconv.Itoa(int(q.port))
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	var w yamlWriter
	w.line(0, "apiVersion: networking.k8s.io/v1")
	w.line(0, "kind: NetworkPolicy")
	w.line(0, "metadata:")
	w.line(2, "name: "+name)
	w.line(2, "namespace: "+self.pod.Namespace)
	w.line(0, "spec:")
	w.selector(2, "podSelector", self.identity())
	w.line(2, "policyTypes:")
	w.line(2, "- "+string(dir))
	w.line(2, dir.field()+":")
	w.rule(2, dir, self.pod.Namespace, peer, q)
	return Resolution{
		Kind:    ResolutionNewPolicy,
		Policy:  PolicyRef{Namespace: self.pod.Namespace, Name: name, Direction: dir, Rule: ruleName(dir, 0)},
		YAML:    w.String(),
		Summary: "create NetworkPolicy " + self.pod.Namespace + "/" + name + " admitting " + peer.describe() + " on " + string(q.proto) + " " + strconv.Itoa(int(q.port)) + " for " + podName(self.pod),
	}
}

func endpointShort(r *resolved) string {
	if r.pod != nil {
		return r.pod.Name
	}
	return joinAddrs(r.ips)
}

// dnsPart lowercases s and turns every run of other characters than
// [a-z0-9-] into one dash, for object names.
func dnsPart(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.Trim(b.String(), "-")
}

// yamlWriter emits the few NetworkPolicy fragments resolutions need, with
// stable key order, without a reflection-based encoder on the hot path.
type yamlWriter struct{ b strings.Builder }

func (w *yamlWriter) String() string { return w.b.String() }

const spaces = "                                "

func (w *yamlWriter) line(indent int, s string) {
	w.b.WriteString(spaces[:indent])
	w.b.WriteString(s)
	w.b.WriteByte('\n')
}

func (w *yamlWriter) selector(indent int, key string, labels []labelKV) {
	if len(labels) == 0 {
		w.line(indent, key+": {}")
		return
	}
	w.line(indent, key+":")
	w.line(indent+2, "matchLabels:")
	for _, kv := range labels {
		w.kv(indent+4, yamlScalar(kv.k), yamlScalar(kv.v))
	}
}

func (w *yamlWriter) kv(indent int, k, v string) {
	w.b.WriteString(spaces[:indent])
	w.b.WriteString(k)
	w.b.WriteString(": ")
	w.b.WriteString(v)
	w.b.WriteByte('\n')
}

// peer writes one list item selecting exactly the endpoint: a pod by its
// namespace name and identity labels, anything else by a host-length ipBlock.
func (w *yamlWriter) peer(indent int, policyNS string, r *resolved) {
	if r.kind == EndpointPod {
		first := true
		key := func(k string) string {
			if first {
				first = false
				return "- " + k
			}
			return "  " + k
		}
		if r.pod.Namespace != policyNS {
			w.line(indent, key("namespaceSelector:"))
			w.line(indent+4, "matchLabels:")
			w.line(indent+6, namespaceNameLabel+": "+yamlScalar(r.pod.Namespace))
		}
		labels := r.identity()
		if len(labels) == 0 {
			w.line(indent, key("podSelector: {}"))
			return
		}
		w.line(indent, key("podSelector:"))
		w.line(indent+4, "matchLabels:")
		for _, kv := range labels {
			w.kv(indent+6, yamlScalar(kv.k), yamlScalar(kv.v))
		}
		return
	}
	w.line(indent, "- ipBlock:")
	for i, ip := range r.ips {
		if i > 0 {
			w.line(indent, "- ipBlock:")
		}
		w.line(indent+4, "cidr: "+netip.PrefixFrom(ip, ip.BitLen()).String())
	}
}

func (w *yamlWriter) port(indent int, q *query) {
	w.line(indent, "- port: "+strconv.Itoa(int(q.port)))
	w.line(indent+2, "protocol: "+string(q.proto))
}

func (w *yamlWriter) rule(indent int, dir Direction, policyNS string, peer *resolved, q *query) {
	w.line(indent, "- "+peerField(dir)+":")
	w.peer(indent+2, policyNS, peer)
	w.line(indent+2, "ports:")
	w.port(indent+2, q)
}

// yamlScalar quotes s unless it is a plain word YAML 1.1 reads as a string
// (not y/n/yes/no/true/false/on/off/null, which it reads as other types).
func yamlScalar(s string) string {
	switch strings.ToLower(s) {
	case "y", "n", "yes", "no", "true", "false", "on", "off", "null", "~":
		return `"` + s + `"`
	}
	plain := s != ""
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '/' || c == '-'):
		default:
			plain = false
		}
	}
	if plain {
		return s
	}
	return strconv.Quote(s)
}
