package netpol

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// resolved is an endpoint after lookup in the index.
type resolved struct {
	kind EndpointKind
	pod  *Pod
	ns   *nsState
	ips  []netip.Addr // the addresses ipBlocks are matched against

	// Cached for explanations and resolutions, filled on first use.
	idLabels []labelKV
	idDone   bool
	desc     string
}

// identity returns the pod's labels that name its workload (volatile
// rollout labels left out), sorted by key.
func (r *resolved) identity() []labelKV {
	if !r.idDone {
		r.idDone = true
		if r.pod != nil {
			for k, v := range r.pod.Labels {
				if !volatileLabels[k] {
					r.idLabels = append(r.idLabels, labelKV{k, v})
				}
			}
			slices.SortFunc(r.idLabels, func(a, b labelKV) int { return strings.Compare(a.k, b.k) })
		}
	}
	return r.idLabels
}

func formatKV(l []labelKV) string {
	if len(l) == 0 {
		return "<none>"
	}
	var b strings.Builder
	for i, kv := range l {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv.k)
		b.WriteByte('=')
		b.WriteString(kv.v)
	}
	return b.String()
}

// describe names the endpoint in resolution summaries.
func (r *resolved) describe() string {
	if r.desc == "" {
		switch r.kind {
		case EndpointPod:
			r.desc = "pods labelled " + formatKV(r.identity()) + " in namespace " + r.pod.Namespace
		case EndpointHostNetwork:
			r.desc = "host-network pod " + podName(r.pod) + " (" + joinAddrs(r.ips) + ")"
		default:
			r.desc = joinAddrs(r.ips)
		}
	}
	return r.desc
}

func (x *Index) resolveLocked(e Endpoint) (resolved, error) {
	var r resolved
	if e.Pod != "" {
		s := x.ns[e.Namespace]
		if s == nil || s.pods[e.Pod] == nil {
			return r, fmt.Errorf("netpol: pod %s/%s is not in the index", e.Namespace, e.Pod)
		}
		r.pod, r.ns = s.pods[e.Pod], s
		r.kind = EndpointPod
		if r.pod.HostNetwork {
			r.kind = EndpointHostNetwork
		}
		if e.IP.IsValid() {
			r.ips = []netip.Addr{e.IP.Unmap()}
		} else {
			r.ips = r.pod.IPs
		}
		return r, nil
	}
	if !e.IP.IsValid() {
		return r, fmt.Errorf("netpol: endpoint has neither a pod nor an IP")
	}
	ip := e.IP.Unmap()
	if p := x.podsByIP[ip]; p != nil {
		// The pod's own address list holds ip: no allocation.
		r.kind, r.pod, r.ns = EndpointPod, p, x.ns[p.Namespace]
		r.ips = sameAddr(p.IPs, ip)
		return r, nil
	}
	if p := x.hostIPs[ip]; p != nil {
		r.kind, r.pod, r.ns = EndpointHostNetwork, p, x.ns[p.Namespace]
		r.ips = sameAddr(p.IPs, ip)
		return r, nil
	}
	r.kind = EndpointExternal
	r.ips = []netip.Addr{ip}
	return r, nil
}

// sameAddr returns the one-element subslice of ips holding ip.
func sameAddr(ips []netip.Addr, ip netip.Addr) []netip.Addr {
	for i := range ips {
		if ips[i] == ip {
			return ips[i : i+1 : i+1]
		}
	}
	return []netip.Addr{ip}
}

func normProto(p corev1.Protocol) (corev1.Protocol, error) {
	switch p {
	case "", corev1.ProtocolTCP:
		return corev1.ProtocolTCP, nil
	case corev1.ProtocolUDP, corev1.ProtocolSCTP:
		return p, nil
	}
	return "", fmt.Errorf("netpol: unsupported protocol %q", p)
}

// query is one flow being judged, with both ends resolved.
type query struct {
	src, dst resolved
	proto    corev1.Protocol
	port     int32
}

// Evaluate judges a flow: the source's egress, the destination's ingress and
// the overall verdict, with the admitting rule or, when denied, the misses of
// every selecting rule and the resolutions.
func (x *Index) Evaluate(f Flow) (Verdict, error) { return x.evaluate(f, explainResolve) }

// Attribute is Evaluate without resolutions: the attributed verdict
// (selecting policies, admitting rule, misses) for every flow of a hot path,
// leaving the costlier resolutions to Evaluate once per diagnosis.
func (x *Index) Attribute(f Flow) (Verdict, error) { return x.evaluate(f, explainMisses) }

// detail says how much of a verdict to compute.
type detail uint8

const (
	verdictOnly detail = iota
	explainMisses
	explainResolve
)

func (x *Index) evaluate(f Flow, level detail) (Verdict, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var v Verdict
	proto, err := normProto(f.Protocol)
	if err != nil {
		return v, err
	}
	if f.Port < 1 || f.Port > 65535 {
		return v, fmt.Errorf("netpol: port %d out of range 1-65535", f.Port)
	}
	q := query{proto: proto, port: f.Port}
	if q.src, err = x.resolveLocked(f.Src); err != nil {
		return v, err
	}
	if q.dst, err = x.resolveLocked(f.Dst); err != nil {
		return v, err
	}
	v = Verdict{Flow: f, Protocol: proto, SrcKind: q.src.kind, DstKind: q.dst.kind, SrcPod: q.src.pod, DstPod: q.dst.pod}
	v.Egress = x.judge(Egress, &q, level)
	v.Ingress = x.judge(Ingress, &q, level)
	v.Allowed = v.Egress.Allowed && v.Ingress.Allowed
	if q.src.ns != nil && len(q.src.ns.broken) > 0 {
		v.Skipped = q.src.ns.brokenIn(v.Skipped)
	}
	if q.dst.ns != nil && q.dst.ns != q.src.ns && len(q.dst.ns.broken) > 0 {
		v.Skipped = q.dst.ns.brokenIn(v.Skipped)
	}
	return v, nil
}

// Allowed answers only the overall verdict, without attribution: the fast
// path for callers that judge many flows and explain only the denied ones.
func (x *Index) Allowed(f Flow) (bool, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	proto, err := normProto(f.Protocol)
	if err != nil {
		return false, err
	}
	if f.Port < 1 || f.Port > 65535 {
		return false, fmt.Errorf("netpol: port %d out of range 1-65535", f.Port)
	}
	q := query{proto: proto, port: f.Port}
	if q.src, err = x.resolveLocked(f.Src); err != nil {
		return false, err
	}
	if q.dst, err = x.resolveLocked(f.Dst); err != nil {
		return false, err
	}
	return x.allowed(Egress, &q) && x.allowed(Ingress, &q), nil
}

// allowed is the verdict without explanation, for verifying resolutions.
func (x *Index) allowed(dir Direction, q *query) bool {
	return x.judge(dir, q, verdictOnly).Allowed
}

func (q *query) selfPeer(dir Direction) (self, peer *resolved) {
	if dir == Egress {
		return &q.src, &q.dst
	}
	return &q.dst, &q.src
}

func (cp *compiledPolicy) rules(dir Direction) []compiledRule {
	if dir == Ingress {
		return cp.ingressRules
	}
	return cp.egressRules
}

func (cp *compiledPolicy) ref(dir Direction) PolicyRef {
	return PolicyRef{Namespace: cp.ns, Name: cp.name, Direction: dir}
}

func (x *Index) judge(dir Direction, q *query, level detail) DirectionVerdict {
	explain := level >= explainMisses
	dv := DirectionVerdict{Direction: dir}
	self, peer := q.selfPeer(dir)
	if self.kind != EndpointPod {
		dv.Allowed = true
		return dv
	}
	dv.Applicable = true
	var buf [8]*compiledPolicy
	pols := self.ns.selecting(self.pod, dir, buf[:0])
	if len(pols) == 0 {
		dv.Allowed = true
		return dv
	}
	dv.Isolated = true
	if explain {
		dv.Selecting = make([]PolicyRef, len(pols))
		for i, cp := range pols {
			dv.Selecting[i] = cp.ref(dir)
		}
	}
	for _, cp := range pols {
		for i := range cp.rules(dir) {
			r := &cp.rules(dir)[i]
			if peerIdx, portIdx, ok := x.matchRule(cp, r, peer, q); ok {
				dv.Allowed = true
				if explain {
					ref := cp.ref(dir)
					ref.Rule = r.name
					dv.AllowedBy = &RuleRef{PolicyRef: ref, Index: i, Peer: peerIdx, Port: portIdx}
				}
				return dv
			}
		}
	}
	if explain {
		dv.Misses = x.misses(dir, pols, peer, q)
	}
	if level >= explainResolve {
		dv.Resolution = x.resolutions(dir, pols, dv.Misses, q)
	}
	return dv
}

func (x *Index) matchRule(cp *compiledPolicy, r *compiledRule, peer *resolved, q *query) (int, int, bool) {
	portIdx := -1
	if len(r.ports) > 0 {
		portIdx = -2
		for j := range r.ports {
			if portMatches(&r.ports[j], q) {
				portIdx = j
				break
			}
		}
		if portIdx == -2 {
			return 0, 0, false
		}
	}
	if len(r.peers) == 0 {
		return -1, portIdx, true
	}
	for j := range r.peers {
		if x.peerMatches(cp, &r.peers[j], peer) {
			return j, portIdx, true
		}
	}
	return 0, 0, false
}

func portMatches(c *compiledPort, q *query) bool {
	if c.proto != q.proto {
		return false
	}
	switch {
	case c.anyPort:
		return true
	case c.named != "":
		n, ok := namedPort(q.dst.pod, c.named, c.proto)
		return ok && n == q.port
	case c.endPort != 0:
		return q.port >= c.port && q.port <= c.endPort
	}
	return q.port == c.port
}

// namedPort resolves a named port on the destination pod, as the plugins do:
// the container port with that name and protocol.
func namedPort(p *Pod, name string, proto corev1.Protocol) (int32, bool) {
	if p == nil {
		return 0, false
	}
	for _, cp := range p.Ports {
		cpProto := cp.Protocol
		if cpProto == "" {
			cpProto = corev1.ProtocolTCP
		}
		if cp.Name == name && cpProto == proto {
			return cp.Port, true
		}
	}
	return 0, false
}

func (x *Index) peerMatches(cp *compiledPolicy, c *compiledPeer, peer *resolved) bool {
	if c.ipb != nil {
		if peer.kind == EndpointPod && !x.opts.IPBlockMatchesPods {
			return false
		}
		for _, ip := range peer.ips {
			if c.ipb.contains(ip) {
				return true
			}
		}
		return false
	}
	if peer.kind != EndpointPod {
		return false
	}
	if c.nsSel == nil {
		if peer.pod.Namespace != cp.ns {
			return false
		}
	} else if !c.nsSel.matches(peer.ns.labels) {
		return false
	}
	return c.podSel == nil || c.podSel.matches(peer.pod.Labels)
}

func (b *ipBlock) contains(ip netip.Addr) bool {
	if !b.cidr.Contains(ip) {
		return false
	}
	for _, e := range b.except {
		if e.Contains(ip) {
			return false
		}
	}
	return true
}

// noRulesDistance ranks a rule-less policy after any rule that needs a
// handful of changes: admitting through it needs a whole new rule.
const noRulesDistance = 10

// misses explains, for every selecting policy and rule, the nearest miss.
func (x *Index) misses(dir Direction, pols []*compiledPolicy, peer *resolved, q *query) []RuleMiss {
	// One backing array each for misses, peer misses and port misses: their
	// capacity is known, so the pointers into them stay valid.
	n := 0
	for _, cp := range pols {
		n += max(1, len(cp.rules(dir)))
	}
	out := make([]RuleMiss, 0, n)
	peerMisses := make([]PeerMiss, 0, n)
	portMisses := make([]PortMiss, 0, n)
	for _, cp := range pols {
		rules := cp.rules(dir)
		if len(rules) == 0 {
			out = append(out, RuleMiss{PolicyRef: cp.ref(dir), Index: -1, Kind: MissNoRules, Distance: noRulesDistance})
			continue
		}
		for i := range rules {
			r := &rules[i]
			m := RuleMiss{PolicyRef: cp.ref(dir), Index: i}
			m.Rule = r.name
			if len(r.peers) > 0 {
				matched := false
				best, bestD := PeerMiss{}, -1
				for j := range r.peers {
					if x.peerMatches(cp, &r.peers[j], peer) {
						matched = true
						break
					}
					pm, d := x.peerMiss(cp, j, &r.peers[j], peer)
					if bestD < 0 || d < bestD {
						best, bestD = pm, d
					}
				}
				if !matched {
					peerMisses = append(peerMisses, best)
					m.Peer = &peerMisses[len(peerMisses)-1]
					m.Distance += bestD
				}
			}
			if len(r.ports) > 0 {
				matched := false
				best, bestD := PortMiss{}, -1
				for j := range r.ports {
					if portMatches(&r.ports[j], q) {
						matched = true
						break
					}
					pm, d := portMiss(j, &r.ports[j], q)
					if bestD < 0 || d < bestD {
						best, bestD = pm, d
					}
				}
				if !matched {
					portMisses = append(portMisses, best)
					m.Port = &portMisses[len(portMisses)-1]
					m.Distance += bestD
				}
			}
			switch {
			case m.Peer != nil:
				m.Kind = m.Peer.Kind
			case m.Port != nil:
				m.Kind = m.Port.Kind
			}
			out = append(out, m)
		}
	}
	return out
}

func quoteReqs(rs []requirement) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

// peerMiss says why a peer did not match and how far it is from matching
// (the number of terms to change; moving to another namespace or another kind
// of endpoint counts more than a label).
func (x *Index) peerMiss(cp *compiledPolicy, j int, c *compiledPeer, peer *resolved) (PeerMiss, int) {
	pm := PeerMiss{Index: j, policyNS: cp.ns, peer: peer.pod, peerIPs: peer.ips, ipb: c.ipb}
	if c.ipb != nil {
		switch {
		case peer.kind == EndpointPod && !x.opts.IPBlockMatchesPods:
			pm.Kind = MissIPBlockPod
			return pm, 4
		case len(peer.ips) == 0:
			pm.Kind = MissIPBlock
			return pm, 4
		}
		for _, ip := range peer.ips {
			if c.ipb.cidr.Contains(ip) {
				for _, e := range c.ipb.except {
					if e.Contains(ip) {
						pm.Kind, pm.except, pm.ip = MissIPBlockExcept, e, ip
						return pm, 2
					}
				}
			}
		}
		pm.Kind = MissIPBlock
		return pm, 3
	}
	if peer.kind != EndpointPod {
		pm.Kind = MissNotAPod
		return pm, 4
	}
	d := 0
	if c.nsSel == nil {
		if peer.pod.Namespace != cp.ns {
			pm.otherNS = true
			d += 3
		}
	} else {
		pm.nsReqs = c.nsSel.failing(peer.ns.labels)
		d += len(pm.nsReqs)
	}
	if c.podSel != nil {
		pm.podReqs = c.podSel.failing(peer.pod.Labels)
		d += len(pm.podReqs)
	}
	pm.Kind = MissPodLabels
	if pm.otherNS || len(pm.nsReqs) > 0 {
		pm.Kind = MissNamespace
	}
	return pm, d
}

// NamespaceWant lists the namespace terms the peer fails: failing
// namespaceSelector terms, or "namespace <ns>" when the peer has no
// namespaceSelector and so wants the policy's own namespace.
func (pm *PeerMiss) NamespaceWant() []string {
	if pm.otherNS {
		return []string{"namespace " + pm.policyNS}
	}
	if len(pm.nsReqs) == 0 {
		return nil
	}
	return quoteReqs(pm.nsReqs)
}

// PodWant lists the failing podSelector terms.
func (pm *PeerMiss) PodWant() []string {
	if len(pm.podReqs) == 0 {
		return nil
	}
	return quoteReqs(pm.podReqs)
}

// Detail says in words why the peer did not match.
func (pm *PeerMiss) Detail() string {
	switch pm.Kind {
	case MissIPBlockPod:
		return "ipBlock " + pm.ipb.String() + " matches only addresses outside the pod network, and " + podName(pm.peer) + " is a pod"
	case MissIPBlockExcept:
		return "ipBlock " + pm.ipb.cidr.String() + " excepts " + pm.except.String() + " (" + pm.ip.String() + ")"
	case MissIPBlock:
		if len(pm.peerIPs) == 0 {
			return "ipBlock " + pm.ipb.String() + ", but " + podName(pm.peer) + " has no IP"
		}
		return "ipBlock " + pm.ipb.String() + " does not contain " + joinAddrs(pm.peerIPs)
	case MissNotAPod:
		if pm.peer != nil {
			return "selects pods, but " + podName(pm.peer) + " is a host-network pod (only ipBlock peers match its node address)"
		}
		return "selects pods, but " + joinAddrs(pm.peerIPs) + " is not a pod"
	}
	var parts []string
	if pm.otherNS {
		parts = append(parts, "wants pods of namespace "+pm.policyNS+" (the policy's own)")
	} else if len(pm.nsReqs) > 0 {
		parts = append(parts, "wants namespace labels "+strings.Join(quoteReqs(pm.nsReqs), ","))
	}
	if len(pm.podReqs) > 0 {
		parts = append(parts, "wants "+strings.Join(quoteReqs(pm.podReqs), ","))
	}
	return strings.Join(parts, " and ")
}

func portMiss(j int, c *compiledPort, q *query) (PortMiss, int) {
	pm := PortMiss{Index: j, port: *c, dst: q.dst.pod, dstIPs: q.dst.ips}
	if c.proto != q.proto {
		pm.Kind = MissProtocol
		return pm, 3
	}
	switch {
	case c.named != "":
		n, ok := namedPort(q.dst.pod, c.named, c.proto)
		if !ok {
			pm.Kind = MissNamedPort
			return pm, 2
		}
		pm.Kind, pm.resolve = MissNamedPortValue, n
		return pm, 1
	case c.endPort != 0:
		pm.Kind = MissPortRange
		return pm, 1
	}
	pm.Kind = MissPort
	return pm, 1
}

// Detail says in words why the ports entry did not match.
func (pm *PortMiss) Detail() string {
	c := &pm.port
	switch pm.Kind {
	case MissProtocol:
		return "allows " + c.String() + " only"
	case MissNamedPort:
		if pm.dst == nil {
			return "allows named port " + strconv.Quote(c.named) + ", which cannot be resolved: the destination " + joinAddrs(pm.dstIPs) + " is not a pod"
		}
		return "allows named port " + strconv.Quote(c.named) + ", but " + podName(pm.dst) + " declares no " + string(c.proto) + " container port of that name"
	case MissNamedPortValue:
		return "allows named port " + strconv.Quote(c.named) + ", which is " + string(c.proto) + " " + strconv.Itoa(int(pm.resolve)) + " on " + podName(pm.dst)
	case MissPortRange:
		return "allows ports " + strconv.Itoa(int(c.port)) + "-" + strconv.Itoa(int(c.endPort))
	}
	return "allows port " + strconv.Itoa(int(c.port))
}

func podName(p *Pod) string {
	if p == nil {
		return "<none>"
	}
	return p.Namespace + "/" + p.Name
}

func joinAddrs(ips []netip.Addr) string {
	if len(ips) == 0 {
		return "<no IP>"
	}
	s := make([]string, len(ips))
	for i, a := range ips {
		s[i] = a.String()
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}
