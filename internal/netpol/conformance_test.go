package netpol

// Truth tables of the upstream Kubernetes e2e NetworkPolicy suite
// (test/e2e/network/netpol/network_policy.go): three namespaces x, y, z with
// pods a, b, c labelled pod=<name>, each serving ports 80 and 81 over TCP,
// UDP and SCTP on container ports named serve-<port>-<proto>. Each case
// states its policies, optional updates, and the expected reachability of
// every ordered pod pair; loopback pairs are not judged, as upstream.
// The tables are re-stated here in our own form, not copied. Upstream builds
// policies in Go with explicit policyTypes (SetSpecIngressRules adds Ingress,
// SetSpecEgressRules adds Egress), so egress-only policies here say
// policyTypes: [Egress]; the namespace name 'y' is quoted because YAML 1.1
// reads a bare y as true.

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

type confStep struct {
	do     []string // mutations: "policy <ns> <yaml>", "delete <ns>/<name>", "label-ns <ns> k=v", "label-pod <ns>/<pod> k=v"
	proto  corev1.Protocol
	port   int32
	expect []string // "<from> -> <to> <bool>" applied in order over an all-true table; from/to: "*", "x/*", "x/a"
}

type confCase struct {
	name  string
	pods  string // "x/a x/b y/a"
	steps []confStep
}

// confPolicy renders a policy; {{ip x/b}} and {{wide x/b}} are replaced by
// the pod's host prefix and a /8 (/64 for IPv6) around it.
func confPolicy(ns, doc string) string { return "policy " + ns + " " + doc }

var confCases = []confCase{
	{"default-deny-ingress", "x/a x/b y/a y/b", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: deny-ingress}\nspec: {podSelector: {}, policyTypes: [Ingress]}")},
		expect: []string{"* -> x/* false"},
	}}},
	{"default-deny-all", "x/a x/b y/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: deny-all}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}")},
		expect: []string{"* -> x/* false", "x/* -> * false"},
	}}},
	{"allow from pods within server namespace by podSelector", "x/a x/b x/c y/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: x-a-allows-x-b}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}")},
		expect: []string{"* -> x/a false", "x/b -> x/a true"},
	}}},
	{"allow ingress traffic for a target", "x/a x/b y/a", []confStep{{
		do: []string{
			confPolicy("x", "metadata: {name: deny-all}\nspec: {podSelector: {}, policyTypes: [Ingress]}"),
			confPolicy("x", "metadata: {name: allow-all-to-a}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {}, namespaceSelector: {}}]}]}"),
		},
		expect: []string{"* -> x/a true", "* -> x/b false"},
	}}},
	{"allow ingress from pods in all namespaces", "x/a x/b y/a z/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: allow-from-another-ns}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {}}}]}]}")},
		expect: nil,
	}}},
	{"allow only from a different namespace by namespaceSelector", "x/a x/b y/a z/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: allow-client-a-via-ns-selector}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}}]}]}")},
		expect: []string{"x/* -> x/a false", "z/* -> x/a false"},
	}}},
	{"podSelector with matchExpressions", "x/a x/b y/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: x-a-allows-x-b}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}}]}]}")},
		expect: []string{"* -> x/a false", "x/b -> x/a true"},
	}}},
	{"namespaceSelector with matchExpressions", "x/a x/b y/a z/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: allow-ns-y-match-selector}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: ['y']}]}}]}]}")},
		expect: []string{"x/* -> x/a false", "z/* -> x/a false"},
	}}},
	{"podSelector or namespaceSelector", "x/a x/b x/c y/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}}, {podSelector: {matchLabels: {pod: b}}}]}]}")},
		expect: []string{"x/a -> x/a false", "x/c -> x/a false"},
	}}},
	{"podSelector and namespaceSelector", "x/a x/b y/a y/b z/b", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}, podSelector: {matchLabels: {pod: b}}}]}]}")},
		expect: []string{"* -> x/a false", "y/b -> x/a true", "z/b -> x/a true"},
	}}},
	{"multiple podSelectors and namespaceSelectors", "x/a x/b y/a y/b y/c", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]}")},
		expect: []string{"x/* -> x/a false", "y/a -> x/a false"},
	}}},
	{"any podSelectors", "x/a x/b x/c", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}, {podSelector: {matchLabels: {pod: c}}}]}]}")},
		expect: []string{"* -> x/a false", "x/b -> x/a true", "x/c -> x/a true"},
	}}},
	{"only from a pod in a different namespace (pod and namespace selector)", "x/a x/b y/a y/b z/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}, podSelector: {matchLabels: {pod: a}}}]}]}")},
		expect: []string{"* -> x/a false", "y/a -> x/a true"},
	}}},
	{"ports", "x/a x/b y/a y/b z/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}}], ports: [{port: 81, protocol: TCP}]}]}")},
		port:   81,
		expect: []string{"x/* -> x/a false", "y/* -> x/a true", "z/* -> x/a false"},
	}}},
	{"stacked policies with overlapping podSelectors", "x/a x/b y/a y/b z/a", []confStep{
		{
			do:     []string{confPolicy("x", "metadata: {name: allow-81}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}}], ports: [{port: 81, protocol: TCP}]}]}")},
			port:   81,
			expect: []string{"x/* -> x/a false", "y/* -> x/a true", "z/* -> x/a false"},
		},
		{port: 80, expect: []string{"* -> x/a false"}},
		{
			do:     []string{confPolicy("x", "metadata: {name: allow-80}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}}], ports: [{port: 80, protocol: TCP}]}]}")},
			port:   80,
			expect: []string{"x/* -> x/a false", "y/* -> x/a true", "z/* -> x/a false"},
		},
	}},
	{"allow-all", "x/a x/b y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: allow-all}\nspec: {podSelector: {}, ingress: [{}]}")}, port: 80},
		{port: 81},
	}},
	{"ingress on one named port", "x/a x/b y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: allow-all}\nspec: {podSelector: {}, ingress: [{ports: [{port: serve-81-tcp}]}]}")}, port: 81},
		{port: 80, expect: []string{"* -> x/* false"}},
	}},
	{"ingress from namespace on one named port", "x/a x/b y/a z/a", []confStep{
		{
			do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}}], ports: [{port: serve-80-tcp, protocol: TCP}]}]}")},
			port:   80,
			expect: []string{"x/* -> x/a false", "z/* -> x/a false"},
		},
		{port: 81, expect: []string{"* -> x/a false"}},
	}},
	{"egress on one named port", "x/a y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: allow-egress}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: serve-80-tcp}]}]}")}, port: 80},
		{port: 81, expect: []string{"x/* -> * false"}},
	}},
	{"updated policy", "x/a y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: mutate}\nspec: {podSelector: {}, ingress: [{}]}")}, port: 81},
		{do: []string{confPolicy("x", "metadata: {name: mutate}\nspec: {podSelector: {}, ingress: []}")}, port: 81, expect: []string{"* -> x/* false"}},
	}},
	{"ingress from updated namespace", "x/a y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns2: updated}}}]}]}")}, expect: []string{"* -> x/a false"}},
		{do: []string{"label-ns y ns2=updated"}, expect: []string{"* -> x/a false", "y/* -> * true"}},
	}},
	{"ingress from updated pod", "x/a x/b", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b, pod2: updated}}}]}]}")}, expect: []string{"* -> x/a false"}},
		{do: []string{"label-pod x/b pod2=updated"}, expect: []string{"* -> x/a false", "x/b -> x/a true"}},
	}},
	{"deny ingress from pods in other namespaces", "x/a x/b y/a z/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: deny-empty-policy}\nspec: {podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {}}}]}]}")},
		expect: []string{"y/* -> x/* false", "z/* -> x/* false"},
	}}},
	{"deny ingress to updated pod", "x/a y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {target: isolated}}, policyTypes: [Ingress]}")}},
		{do: []string{"label-pod x/a target=isolated"}, expect: []string{"* -> x/a false"}},
	}},
	{"deny egress by podSelector", "x/a x/b y/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress]}")},
		expect: []string{"x/a -> * false"},
	}}},
	{"deny egress from all pods of a namespace", "x/a x/b y/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {}, policyTypes: [Egress]}")},
		expect: []string{"x/* -> * false"},
	}}},
	{"ingress and egress together", "x/a x/b x/c y/a", []confStep{
		{
			do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress, Ingress], ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}], egress: [{ports: [{port: 80}]}]}")},
			port:   80,
			expect: []string{"* -> x/a false", "x/b -> x/a true"},
		},
		{port: 81, expect: []string{"* -> x/a false", "x/a -> * false", "x/b -> x/a true"}},
	}},
	{"egress denied on the client side although the server allows it", "x/a y/a y/b", []confStep{{
		do: []string{
			confPolicy("x", "metadata: {name: allow-to-ns-y-pod-a}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}, podSelector: {matchLabels: {pod: a}}}]}]}"),
			confPolicy("y", "metadata: {name: allow-from-xa-on-ya}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}, podSelector: {matchLabels: {pod: a}}}]}]}"),
			confPolicy("y", "metadata: {name: allow-from-xa-on-yb}\nspec: {podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}, podSelector: {matchLabels: {pod: a}}}]}]}"),
		},
		expect: []string{"x/a -> * false", "* -> y/a false", "x/a -> y/a true", "* -> y/b false"},
	}}},
	{"egress to a server in another namespace by pod and namespace selector", "x/a y/a y/b", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}, podSelector: {matchLabels: {pod: a}}}]}]}")},
		expect: []string{"x/a -> * false", "x/a -> y/a true"},
	}}},
	{"ingress any port on one protocol", "x/a y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: TCP}]}]}")}},
		{proto: corev1.ProtocolUDP, expect: []string{"* -> x/a false"}},
	}},
	{"ingress allow-all takes precedence", "x/a y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: allow-ingress-port-80}\nspec: {podSelector: {}, ingress: [{ports: [{port: 80}]}]}")}, port: 81, expect: []string{"* -> x/* false"}},
		{do: []string{confPolicy("x", "metadata: {name: allow-ingress}\nspec: {podSelector: {}, ingress: [{}]}")}, port: 81},
	}},
	{"egress allow-all takes precedence", "x/a y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: allow-egress-port-80}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: 80}]}]}")}, port: 81, expect: []string{"x/* -> * false"}},
		{do: []string{confPolicy("x", "metadata: {name: allow-egress}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{}]}")}, port: 81},
	}},
	{"policies stop applying once deleted", "x/a y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: deny-all}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}")}, expect: []string{"x/* -> * false", "* -> x/* false"}},
		{do: []string{"delete x/deny-all"}},
	}},
	{"egress to a server in a CIDR block", "x/a y/a y/b", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: '{{ip y/b}}'}}]}]}")},
		expect: []string{"x/a -> * false", "x/a -> y/b true"},
	}}},
	{"except clause of an egress CIDR block", "x/a x/b x/c", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: '{{wide x/b}}', except: ['{{ip x/b}}']}}]}]}")},
		expect: []string{"x/a -> x/b false"},
	}}},
	{"an IP in both CIDR and except is allowed by another policy", "x/a x/b x/c", []confStep{
		{
			do:     []string{confPolicy("x", "metadata: {name: allow-client-a-via-cidr-egress-rule}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: '{{wide x/b}}', except: ['{{ip x/b}}']}}]}]}")},
			expect: []string{"x/a -> x/b false"},
		},
		{
			do:     []string{confPolicy("x", "metadata: {name: allow-client-a-via-cidr-egress-rule}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: '{{ip x/b}}'}}]}]}")},
			expect: []string{"x/a -> * false", "x/a -> x/b true"},
		},
	}},
	{"ingress and egress controlled independently", "x/a x/b y/a", []confStep{
		{do: []string{confPolicy("x", "metadata: {name: allow-egress-for-target}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{}]}")}},
		{do: []string{confPolicy("x", "metadata: {name: deny-ingress-via-label-selector}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress]}")}, expect: []string{"* -> x/a false"}},
	}},
	{"SCTP is not TCP", "x/a y/a", []confStep{{
		do: []string{
			confPolicy("x", "metadata: {name: deny-ingress}\nspec: {podSelector: {}, policyTypes: [Ingress]}"),
			confPolicy("x", "metadata: {name: allow-only-sctp-ingress-on-port-81}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 81, protocol: SCTP}]}]}"),
		},
		port:   81,
		expect: []string{"* -> x/* false"},
	}}},
	{"a policy allowing only SCTP isolates the pod", "x/a y/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 80, protocol: SCTP}]}]}")},
		port:   81,
		expect: []string{"* -> x/a false"},
	}}},
	{"UDP-only policy does not admit TCP", "x/a y/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 81, protocol: UDP}]}]}")},
		port:   81,
		expect: []string{"* -> x/a false"},
	}}},
	{"namespaceSelector on the default namespace label", "x/a x/b y/a z/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}}]}]}")},
		expect: []string{"x/* -> x/a false", "z/* -> x/a false"},
	}}},
	{"egress NotIn on the default namespace label", "x/a x/b y/a z/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ['y']}]}}]}]}")},
		expect: []string{"x/a -> y/* false"},
	}}},
	// The UDP and SCTP variants of the suite.
	{"UDP default-deny-ingress", "x/a x/b y/a y/b", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: deny-all}\nspec: {podSelector: {}, policyTypes: [Ingress]}")},
		proto:  corev1.ProtocolUDP,
		expect: []string{"* -> x/* false"},
	}}},
	{"UDP ports", "x/a x/b y/a z/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}}], ports: [{port: 81, protocol: UDP}]}]}")},
		proto:  corev1.ProtocolUDP,
		port:   81,
		expect: []string{"x/* -> x/a false", "z/* -> x/a false"},
	}}},
	{"UDP pod and namespace selector", "x/a x/b y/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}, podSelector: {matchLabels: {pod: a}}}]}]}")},
		proto:  corev1.ProtocolUDP,
		expect: []string{"* -> x/a false", "y/a -> x/a true"},
	}}},
	{"SCTP default-deny-ingress", "x/a x/b y/a y/b", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: deny-all}\nspec: {podSelector: {}, policyTypes: [Ingress]}")},
		proto:  corev1.ProtocolSCTP,
		expect: []string{"* -> x/* false"},
	}}},
	{"SCTP ports", "x/a x/b y/a z/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}}], ports: [{port: 81, protocol: SCTP}]}]}")},
		proto:  corev1.ProtocolSCTP,
		port:   81,
		expect: []string{"x/* -> x/a false", "z/* -> x/a false"},
	}}},
	{"SCTP pod and namespace selector", "x/a x/b y/a", []confStep{{
		do:     []string{confPolicy("x", "metadata: {name: p}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}, podSelector: {matchLabels: {pod: a}}}]}]}")},
		proto:  corev1.ProtocolSCTP,
		expect: []string{"* -> x/a false", "y/a -> x/a true"},
	}}},
}

// confPodIP gives every model pod one IPv4 and one IPv6 address.
func confPodIP(ns, pod string, v6 bool) netip.Addr {
	n := int(ns[0]-'x') + 1
	p := int(pod[0]-'a') + 1
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00:10:%d::%d", n, p))
	}
	return netip.MustParseAddr(fmt.Sprintf("10.%d.0.%d", n, p))
}

func confPods(spec string) []Pod {
	var pods []Pod
	for _, s := range strings.Fields(spec) {
		ns, name, _ := strings.Cut(s, "/")
		p := Pod{Namespace: ns, Name: name, Labels: map[string]string{"pod": name},
			IPs: []netip.Addr{confPodIP(ns, name, false), confPodIP(ns, name, true)}}
		for _, port := range []int32{80, 81} {
			for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
				p.Ports = append(p.Ports, ContainerPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))), Port: port, Protocol: proto})
			}
		}
		pods = append(pods, p)
	}
	return pods
}

var confTemplate = regexp.MustCompile(`\{\{(ip|wide) (\w)/(\w)\}\}`)

func confExpand(doc string, v6 bool) string {
	return confTemplate.ReplaceAllStringFunc(doc, func(m string) string {
		g := confTemplate.FindStringSubmatch(m)
		ip := confPodIP(g[2], g[3], v6)
		if g[1] == "ip" {
			return netip.PrefixFrom(ip, ip.BitLen()).String()
		}
		bits := 8
		if v6 {
			bits = 16
		}
		return netip.PrefixFrom(ip, bits).Masked().String()
	})
}

func matchPeer(pat, ns, pod string) bool {
	if pat == "*" {
		return true
	}
	pns, ppod, _ := strings.Cut(pat, "/")
	return pns == ns && (ppod == "*" || ppod == pod)
}

func TestUpstreamConformance(t *testing.T) {
	for _, fam := range []string{"IPv4", "IPv6"} {
		v6 := fam == "IPv6"
		for _, tc := range confCases {
			t.Run(fam+"/"+tc.name, func(t *testing.T) {
				pods := confPods(tc.pods)
				w := newWorld(t, DefaultOptions(), []Namespace{{Name: "x"}, {Name: "y"}, {Name: "z"}}, pods)
				for si, st := range tc.steps {
					for _, m := range st.do {
						w.mutate(confExpand(m, v6))
					}
					proto, port := st.proto, st.port
					if proto == "" {
						proto = corev1.ProtocolTCP
					}
					if port == 0 {
						port = 80
					}
					var wrong []string
					for _, src := range pods {
						for _, dst := range pods {
							if src.Namespace == dst.Namespace && src.Name == dst.Name {
								continue // loopback is implementation-defined upstream
							}
							want := true
							for _, e := range st.expect {
								f := strings.Fields(e)
								if matchPeer(f[0], src.Namespace, src.Name) && matchPeer(f[2], dst.Namespace, dst.Name) {
									want = f[3] == "true"
								}
							}
							fl := Flow{
								Src:      Endpoint{Namespace: src.Namespace, Pod: src.Name, IP: confPodIP(src.Namespace, src.Name, v6)},
								Dst:      Endpoint{Namespace: dst.Namespace, Pod: dst.Name, IP: confPodIP(dst.Namespace, dst.Name, v6)},
								Protocol: proto, Port: port,
							}
							v := mustEval(t, w.x, fl)
							if v.Allowed != want {
								wrong = append(wrong, fmt.Sprintf("%s/%s -> %s/%s: got %v want %v: %s", src.Namespace, src.Name, dst.Namespace, dst.Name, v.Allowed, want, v.Explain()))
							}
							checkConsistent(t, v)
							// The correlator sees addresses only: the same
							// flow by bare IPs must get the same answer.
							byIP := Flow{Src: Endpoint{IP: fl.Src.IP}, Dst: Endpoint{IP: fl.Dst.IP}, Protocol: proto, Port: port}
							if ok, err := w.x.Allowed(byIP); err != nil || ok != v.Allowed {
								t.Errorf("%s/%s -> %s/%s by IP: allowed=%v err=%v, by name %v", src.Namespace, src.Name, dst.Namespace, dst.Name, ok, err, v.Allowed)
							}
							if !v.Allowed {
								w.checkResolutions(fl, v)
							}
						}
					}
					if len(wrong) > 0 {
						t.Errorf("step %d (%s %d):\n%s", si, proto, port, strings.Join(wrong, "\n"))
					}
				}
			})
		}
	}
}

// checkConsistent asserts the invariants between verdict fields that every
// answer must keep, whatever the scenario.
func checkConsistent(t *testing.T, v Verdict) {
	t.Helper()
	if v.Allowed != (v.Egress.Allowed && v.Ingress.Allowed) {
		t.Errorf("overall verdict inconsistent")
	}
	for _, d := range []DirectionVerdict{v.Egress, v.Ingress} {
		switch {
		case d.Allowed && d.Isolated && d.AllowedBy == nil:
			t.Errorf("%s allowed under isolation without a rule", d.Direction)
		case !d.Allowed && (!d.Isolated || len(d.Selecting) == 0 || len(d.Misses) == 0 || len(d.Resolution) == 0):
			t.Errorf("%s denied without selecting policies, misses and resolutions: %+v", d.Direction, d)
		case !d.Isolated && (len(d.Selecting) > 0 || !d.Allowed):
			t.Errorf("%s not isolated but has selecting policies or is denied", d.Direction)
		}
		if d.AllowedBy != nil && d.AllowedBy.Rule != ruleName(d.Direction, d.AllowedBy.Index) {
			t.Errorf("rule string %q", d.AllowedBy.Rule)
		}
		for _, m := range d.Misses {
			if m.Kind != MissNoRules && m.Peer == nil && m.Port == nil {
				t.Errorf("miss without a reason: %+v", m)
			}
			if (m.Peer != nil && m.Peer.Detail() == "") || (m.Port != nil && m.Port.Detail() == "") {
				t.Errorf("miss without a detail: %+v", m)
			}
		}
	}
}

// mutate applies one conformance step mutation to the world.
func (w *world) mutate(m string) {
	t := w.t
	t.Helper()
	verb, rest, _ := strings.Cut(m, " ")
	switch verb {
	case "policy":
		ns, doc, _ := strings.Cut(rest, " ")
		p := policyYAML(t, doc)
		p.Namespace = ns
		w.pols[ns+"/"+p.Name] = p
		if err := w.x.SetPolicy(p); err != nil {
			t.Fatal(err)
		}
	case "delete":
		ns, name, _ := strings.Cut(rest, "/")
		delete(w.pols, rest)
		w.x.DeletePolicy(ns, name)
	case "label-ns":
		ns, kv, _ := strings.Cut(rest, " ")
		k, v, _ := strings.Cut(kv, "=")
		n := w.nss[ns]
		n.Labels = applyChange(n.Labels, LabelChange{Set: map[string]string{k: v}})
		w.nss[ns] = n
		w.x.SetNamespace(n)
	case "label-pod":
		key, kv, _ := strings.Cut(rest, " ")
		k, v, _ := strings.Cut(kv, "=")
		p := w.pods[key]
		p.Labels = applyChange(p.Labels, LabelChange{Set: map[string]string{k: v}})
		w.pods[key] = p
		w.x.SetPod(p)
	default:
		t.Fatalf("unknown mutation %q", m)
	}
}
