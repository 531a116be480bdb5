package netpol

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// parseLabels reads k=v,k=v and keeps only labels the API server would
// accept: pods and namespaces never carry others.
func parseLabels(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && len(validation.IsQualifiedName(k)) == 0 && len(validation.IsValidLabelValue(v)) == 0 {
			m[k] = v
		}
	}
	return m
}

// FuzzEvaluate feeds arbitrary policies, labels, addresses, protocols and
// ports to the evaluator. It must never panic; a policy that does not compile
// must be reported and must not stop the other policies from being enforced;
// every verdict must be self-consistent, and every resolution offered for a
// denied direction must, once applied, admit the flow. `go test` runs the
// seeds; `go test -fuzz FuzzEvaluate ./internal/netpol/` explores.
func FuzzEvaluate(f *testing.F) {
	seeds := []string{
		"metadata: {name: p}\nspec: {podSelector: {}}",
		"metadata: {name: p}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: api}}}]\n  - ports: [{port: 9090}]",
		"metadata: {name: p}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]\n    ports: [{port: 8000, endPort: 8100}, {port: dns, protocol: UDP}]",
		"metadata: {name: p}\nspec:\n  podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [db]}]}\n  ingress:\n  - from: [{namespaceSelector: {matchExpressions: [{key: env, operator: Exists}]}, podSelector: {matchExpressions: [{key: role, operator: DoesNotExist}]}}]\n    ports: [{port: http}]",
		"metadata: {name: p}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 'fd00::/8', except: ['fd00:1::/32']}}]}]",
		"metadata: {name: p}\nspec: {podSelector: {matchExpressions: [{key: a, operator: Bogus}]}}",
		"metadata: {name: p}\nspec: {podSelector: {}, egress: [{to: [{ipBlock: {cidr: 300.0.0.0/8}}]}]}",
		"metadata: {name: p}\nspec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}",
		"metadata: {name: p}\nspec: {podSelector: {}, ingress: [{from: [], ports: []}], egress: []}",
	}
	for i, s := range seeds {
		f.Add(s, "app=web,role=api", "role=api", "env=prod", "10.1.2.3", "fd00:1::5", uint8(i), int32(8080+i))
	}
	f.Add(seeds[1], "", "", "", "", "", uint8(3), int32(70000))
	f.Fuzz(func(t *testing.T, doc, dstLabels, srcLabels, nsLabels, dstIP, srcIP string, proto uint8, port int32) {
		var pol networkingv1.NetworkPolicy
		if yaml.Unmarshal([]byte(doc), &pol) != nil {
			return
		}
		pol.Namespace = "x"
		if pol.Name == "" || pol.Name == "guard" {
			pol.Name = "fuzzed"
		}
		addr := func(s, def string) netip.Addr {
			if a, err := netip.ParseAddr(s); err == nil {
				return a
			}
			return netip.MustParseAddr(def)
		}
		dstLabelMap := parseLabels(dstLabels)
		pods := []Pod{
			{Namespace: "x", Name: "a", Labels: dstLabelMap, IPs: []netip.Addr{addr(dstIP, "10.0.0.1")},
				Ports: []ContainerPort{{Name: "http", Port: 8080}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}},
			{Namespace: "y", Name: "b", Labels: parseLabels(srcLabels), IPs: []netip.Addr{addr(srcIP, "10.0.0.2")}},
			{Namespace: "z", Name: "c", Labels: map[string]string{"app": "guarded"}, IPs: []netip.Addr{netip.MustParseAddr("10.9.9.9")}},
		}
		if pods[0].IPs[0].Unmap() == pods[1].IPs[0].Unmap() {
			pods[1].IPs[0] = netip.MustParseAddr("10.0.0.2")
			if pods[0].IPs[0].Unmap() == pods[1].IPs[0] {
				pods[0].IPs[0] = netip.MustParseAddr("10.0.0.1")
			}
		}
		guard := policyYAML(t, "metadata: {name: guard, namespace: z}\nspec: {podSelector: {}}")
		nss := []Namespace{{Name: "x"}, {Name: "y", Labels: parseLabels(nsLabels)}, {Name: "z"}}
		w := &world{t: t, x: NewIndex(DefaultOptions()), pols: map[string]*networkingv1.NetworkPolicy{}, pods: map[string]Pod{}, nss: map[string]Namespace{}}
		for _, n := range nss {
			w.nss[n.Name] = n
			w.x.SetNamespace(n)
		}
		for _, p := range pods {
			w.pods[p.Namespace+"/"+p.Name] = p
			w.x.SetPod(p)
		}
		w.x.SetPolicy(guard)
		w.pols["z/guard"] = guard
		if perr := w.x.SetPolicy(&pol); perr != nil {
			if perr.Name != pol.Name || perr.Field == "" || perr.Error() == "" {
				t.Fatalf("unclear policy error: %+v", perr)
			}
		} else {
			w.pols["x/"+pol.Name] = &pol
		}
		protos := []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP, "", "ICMP"}
		pr := protos[int(proto)%len(protos)]
		flows := []Flow{
			{Src: podEP("y", "b"), Dst: podEP("x", "a"), Protocol: pr, Port: port},
			{Src: podEP("x", "a"), Dst: podEP("y", "b"), Protocol: pr, Port: port},
			{Src: Endpoint{IP: addr(srcIP, "192.0.2.1")}, Dst: Endpoint{IP: pods[0].IPs[0]}, Protocol: pr, Port: port},
			{Src: podEP("x", "a"), Dst: podEP("z", "c"), Protocol: pr, Port: port},
		}
		for i, fl := range flows {
			v, err := w.x.Evaluate(fl)
			badInput := pr == "ICMP" || port < 1 || port > 65535
			if (err != nil) != badInput {
				t.Fatalf("flow %d: err=%v, bad input=%v", i, err, badInput)
			}
			if err != nil {
				continue
			}
			checkConsistent(t, v)
			if v.Explain() == "" {
				t.Fatalf("empty explanation")
			}
			if i == 3 && (v.Ingress.Allowed || len(v.Ingress.Selecting) != 1 || v.Ingress.Selecting[0].Name != "guard") {
				t.Fatalf("guard policy not enforced next to the fuzzed one: %s", v.Explain())
			}
			if ok, _ := w.x.Allowed(fl); ok != v.Allowed {
				t.Fatalf("Allowed() = %v, Evaluate = %v", ok, v.Allowed)
			}
			if !v.Allowed {
				w.checkResolutions(fl, v)
			}
		}
	})
}
