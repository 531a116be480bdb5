// Package netpol is a pure NetworkPolicy (networking.k8s.io/v1) evaluator
// that explains its answers.
//
// An Index holds namespaces (labels), pods (namespace, labels, IPs, container
// ports, host-network flag) and policies, built at once with Build or kept up
// to date one object at a time (SetNamespace, SetPod, SetPolicy and the
// Delete methods), as informer events arrive. Evaluate judges a Flow — source
// and destination each a pod or a bare IP, protocol, port — and returns a
// Verdict: the source's egress and the destination's ingress separately and
// overall; for each side the policies that select the pod (isolation); when
// allowed, the exact rule, peer and port entry that admit the flow
// (spec.ingress[i] / spec.egress[i]); when denied, the nearest miss of every
// selecting rule and verified resolutions. Explain renders a diagnosis
// sentence, Blame the policy and rule to report. Attribute is Evaluate
// without resolutions (the per-flow hot path; resolutions are computed once
// per diagnosis), Allowed the bare verdict.
//
// The package calls no API server: inputs are plain values and
// k8s.io/api/networking/v1 objects.
//
// # Semantics
//
// The evaluator follows the v1 API and the upstream e2e truth tables:
//
//   - policyTypes defaulting as the API server does it: Ingress always,
//     Egress when spec.egress has at least one rule; so `egress: []` without
//     policyTypes does not isolate egress.
//   - A rule without from/to (absent or `[]`) admits every peer, including
//     addresses outside the cluster; without ports (absent or `[]`) every
//     port. A selected pod with no rules for a direction is denied in that
//     direction (default deny), and the policy is named as the cause.
//   - Peers: podSelector and namespaceSelector in one peer are ANDed; peers
//     of a rule, rules of a policy and policies selecting a pod are ORed. A
//     podSelector without namespaceSelector means the policy's namespace;
//     an empty selector means all. Every namespace carries the
//     kubernetes.io/metadata.name label, as the API server sets it.
//   - Ports: protocol defaults to TCP; TCP, UDP and SCTP are distinct; a
//     named port resolves on the destination pod (container port of that
//     name and protocol), so it never matches a destination that is not a
//     pod; endPort makes an inclusive range.
//   - ipBlock: cidr minus except, IPv4 and IPv6. Whether an ipBlock matches
//     a peer that is a pod (by its pod IP) is left to the implementation by
//     Kubernetes; Options.IPBlockMatchesPods chooses (default true, which
//     the upstream "egress access to server in CIDR block" tests require;
//     false reproduces plugins and analysers that treat ipBlock as
//     cluster-external only).
//   - Host-network pods are never selected by policies (they are not
//     isolated), and as peers they are matched only by ipBlock on their
//     (node) address, as the Kubernetes documentation describes.
//   - An IP that belongs to no pod is outside the pod network: it has no
//     egress or ingress of its own to judge, and only ipBlock peers (or
//     rules without peers) match it.
//   - Traffic from a pod to itself and node-local traffic are evaluated like
//     any other flow; implementations differ there, and the index does not
//     know nodes.
//   - A policy that does not compile (bad selector operator or label, invalid
//     CIDR or except, port or endPort out of range, unknown protocol or
//     policy type, malformed peer) is left out of every verdict, as if the
//     API server had refused it, and reported as a PolicyError naming the
//     field (Build, SetPolicy, Errors, and Verdict.Skipped for the
//     namespaces of a flow's pods); the other policies are unaffected.
//
// # Misses and resolutions
//
// For each rule of each selecting policy the nearest peer and the nearest
// port entry are reported with what did not match: namespace labels (or
// the implicit own namespace), pod labels, a peer that is not a pod,
// ipBlock range or except entry, protocol, port, port range, a named port
// the destination does not declare. Resolutions, smallest first: label
// edits of the peer pod and/or its namespace (each verified by evaluating
// the flow again; edits that would newly isolate the peer in the other
// direction are dropped), a YAML patch adding a peer or a port to the
// nearest rule of each policy, a new rule, or for a default deny a new
// policy admitting exactly this flow. The tests apply every resolution and
// check that it admits the flow.
package netpol
