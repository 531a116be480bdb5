package netpol

import (
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// Direction is the policy direction a verdict or rule refers to.
type Direction string

const (
	Ingress Direction = "Ingress"
	Egress  Direction = "Egress"
)

// field returns the spec field name of the direction ("ingress"/"egress").
func (d Direction) field() string {
	if d == Ingress {
		return "ingress"
	}
	return "egress"
}

// Namespace is the part of a namespace the evaluator needs.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// ContainerPort is a declared container port; only named ones matter for
// NetworkPolicy, but numbered ones are kept for explanations.
type ContainerPort struct {
	Name     string
	Port     int32
	Protocol corev1.Protocol // empty means TCP
}

// Pod is the part of a pod the evaluator needs.
type Pod struct {
	Namespace   string
	Name        string
	Labels      map[string]string
	IPs         []netip.Addr
	Ports       []ContainerPort
	HostNetwork bool
}

// PodFromAPI converts a core/v1 Pod. It reads status IPs and the named
// container ports of all (init and regular) containers.
func PodFromAPI(p *corev1.Pod) Pod {
	out := Pod{
		Namespace:   p.Namespace,
		Name:        p.Name,
		Labels:      p.Labels,
		HostNetwork: p.Spec.HostNetwork,
	}
	seen := map[netip.Addr]bool{}
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !seen[a.Unmap()] {
			seen[a.Unmap()] = true
			out.IPs = append(out.IPs, a.Unmap())
		}
	}
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	add(p.Status.PodIP)
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			for _, cp := range c.Ports {
				out.Ports = append(out.Ports, ContainerPort{Name: cp.Name, Port: cp.ContainerPort, Protocol: cp.Protocol})
			}
		}
	}
	return out
}

// Endpoint is one end of a flow: a pod by name, or an address. When Pod is
// empty the IP is looked up among the pods' IPs; an IP that belongs to no pod
// (or only to host-network pods) is treated as outside the pod network.
type Endpoint struct {
	Namespace string
	Pod       string
	IP        netip.Addr
}

func (e Endpoint) String() string {
	if e.Pod != "" {
		return e.Namespace + "/" + e.Pod
	}
	return e.IP.String()
}

// Flow is the connection to judge.
type Flow struct {
	Src, Dst Endpoint
	Protocol corev1.Protocol // TCP, UDP or SCTP; empty means TCP
	Port     int32           // destination port, 1..65535
}

// EndpointKind says how an endpoint was resolved.
type EndpointKind string

const (
	EndpointPod         EndpointKind = "pod"
	EndpointHostNetwork EndpointKind = "host-network-pod"
	EndpointExternal    EndpointKind = "ip"
)

// PolicyRef names a NetworkPolicy, and a rule when Rule is set. Its fields
// mirror diagnosis.PolicyRef so a caller can copy them one to one; Rule has
// the form "spec.ingress[0]" / "spec.egress[2]" and is empty for a policy
// reference or a default deny.
type PolicyRef struct {
	Namespace string
	Name      string
	Direction Direction
	Rule      string
}

func (p PolicyRef) String() string { return p.Namespace + "/" + p.Name }

// RuleRef is the exact place in a policy that admits a flow.
type RuleRef struct {
	PolicyRef
	Index int // rule index in spec.ingress / spec.egress
	// Peer is the index in from/to of the peer that matched, or -1 when the
	// rule has no peers (all sources/destinations).
	Peer int
	// Port is the index in ports of the entry that matched, or -1 when the
	// rule has no ports (all ports).
	Port int
}

func ruleName(d Direction, i int) string { return "spec." + d.field() + "[" + strconv.Itoa(i) + "]" }

// MissKind names the part of a rule that did not match.
type MissKind string

const (
	MissNoRules        MissKind = "no-rules"         // the policy has no rules for the direction
	MissNamespace      MissKind = "namespace-labels" // namespaceSelector, or the implicit same-namespace
	MissPodLabels      MissKind = "pod-labels"
	MissNotAPod        MissKind = "not-a-pod" // selector peer, but the peer is an IP or host-network pod
	MissIPBlock        MissKind = "ipblock"   // address outside the CIDR
	MissIPBlockExcept  MissKind = "ipblock-except"
	MissIPBlockPod     MissKind = "ipblock-pod" // ipBlock never matches pod IPs under the current setting
	MissProtocol       MissKind = "protocol"
	MissPort           MissKind = "port"
	MissPortRange      MissKind = "port-range" // port with endPort
	MissNamedPort      MissKind = "named-port" // named port not declared on the destination pod
	MissNamedPortValue MissKind = "named-port-value"
)

// PeerMiss is the nearest peer of a rule and why it did not match. It keeps
// the facts; the text is rendered on demand (Detail, NamespaceWant,
// PodWant), so that attributing a denied flow stays cheap.
type PeerMiss struct {
	Index int // index in from/to
	Kind  MissKind

	policyNS string        // for the implicit own-namespace requirement
	nsReqs   []requirement // failing namespaceSelector terms
	podReqs  []requirement // failing podSelector terms
	otherNS  bool          // no namespaceSelector and the peer is elsewhere
	ipb      *ipBlock
	except   netip.Prefix // the except entry that holds the address
	ip       netip.Addr
	peer     *Pod
	peerIPs  []netip.Addr
}

// PortMiss is the nearest ports entry of a rule and why it did not match.
type PortMiss struct {
	Index int
	Kind  MissKind

	port    compiledPort
	dst     *Pod
	dstIPs  []netip.Addr
	resolve int32 // the named port's number on the destination, for MissNamedPortValue
}

// RuleMiss explains why one rule (or a rule-less policy) did not admit the flow.
type RuleMiss struct {
	PolicyRef     // Rule is empty for MissNoRules
	Index     int // -1 for MissNoRules
	Kind      MissKind
	Peer      *PeerMiss // nil when some peer matched (or the rule has none)
	Port      *PortMiss // nil when some port matched (or the rule has none)
	// Distance ranks misses: roughly the number of terms to change for the
	// rule to admit the flow (a label counts 1, another namespace or
	// another kind of peer more, a rule-less policy most).
	Distance int
}

// ResolutionKind orders resolutions from the least to the most invasive.
type ResolutionKind string

const (
	ResolutionLabel     ResolutionKind = "label"      // change labels of the peer pod and/or its namespace
	ResolutionPatchRule ResolutionKind = "patch-rule" // add a peer or a port to an existing rule
	ResolutionAddRule   ResolutionKind = "add-rule"   // append a rule to a selecting policy
	ResolutionNewPolicy ResolutionKind = "new-policy" // a policy allowing exactly this flow
)

// Resolution is one concrete change that would admit the flow in this direction.
type Resolution struct {
	Kind   ResolutionKind
	Policy PolicyRef // the policy (and rule) the change satisfies or patches
	// Label changes, for ResolutionLabel.
	PodTarget       string // "ns/pod"
	Pod             LabelChange
	NamespaceTarget string
	Namespace       LabelChange
	// Path and YAML, for patches: Path names the list the YAML is appended to
	// (e.g. "spec.ingress[1].ports"); for a new policy YAML is the whole object.
	Path    string
	YAML    string
	Summary string
}

// DirectionVerdict is the verdict of one side: the source's egress or the
// destination's ingress.
type DirectionVerdict struct {
	Direction Direction
	// Applicable is false when the side is not a pod the policies can select
	// (an IP outside the pod network, or a host-network pod).
	Applicable bool
	Isolated   bool
	Allowed    bool
	Selecting  []PolicyRef // policies selecting the pod for this direction, by name
	AllowedBy  *RuleRef
	Misses     []RuleMiss   // only when denied
	Resolution []Resolution // only when denied; first is the smallest
}

// Verdict is the answer for a flow.
type Verdict struct {
	Flow     Flow
	SrcKind  EndpointKind
	DstKind  EndpointKind
	SrcPod   *Pod // resolved pods, nil for IPs
	DstPod   *Pod
	Egress   DirectionVerdict
	Ingress  DirectionVerdict
	Allowed  bool
	Protocol corev1.Protocol
	// Skipped lists the policies of the source's and the destination's
	// namespaces that did not compile and were left out: had one of them
	// been meant to apply, the verdict could differ. Not set by Allowed.
	Skipped []PolicyError
}
