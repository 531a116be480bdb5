package netpol

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// benchCluster builds nsCount namespaces of podsPerNS pods and
// policiesPerNS policies each: one default deny, allow rules per app (pods
// carry app-0..app-<apps-1>) with pod, namespace and ipBlock peers, named and
// numbered ports, and egress policies with set-based selectors (In on
// version, or on app when perApp, plus NotIn).
func benchCluster(tb testing.TB, nsCount, podsPerNS, policiesPerNS, apps int, perApp bool) (*Index, []Pod) {
	var nss []Namespace
	var pods []Pod
	var pols []*networkingv1.NetworkPolicy
	for n := 0; n < nsCount; n++ {
		ns := fmt.Sprintf("ns-%d", n)
		nss = append(nss, Namespace{Name: ns, Labels: map[string]string{"team": fmt.Sprintf("team-%d", n%10), "env": []string{"prod", "dev"}[n%2]}})
		for p := 0; p < podsPerNS; p++ {
			id := n*podsPerNS + p
			pods = append(pods, Pod{
				Namespace: ns,
				Name:      fmt.Sprintf("pod-%d", p),
				Labels: map[string]string{
					"app":               fmt.Sprintf("app-%d", p%apps),
					"role":              []string{"api", "web", "db", "worker"}[p%4],
					"version":           fmt.Sprintf("v%d", p%3),
					"pod-template-hash": fmt.Sprintf("h%d", p%7),
				},
				IPs:   []netip.Addr{netip.AddrFrom4([4]byte{10, byte(id >> 16), byte(id >> 8), byte(id)})},
				Ports: []ContainerPort{{Name: "http", Port: 8080}, {Name: "metrics", Port: 9090}},
			})
		}
		for k := 0; k < policiesPerNS; k++ {
			p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pol-%d", k)}}
			switch {
			case k == 0:
				p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
			case k%5 == 4:
				in := metav1.LabelSelectorRequirement{Key: "version", Operator: metav1.LabelSelectorOpIn, Values: []string{"v1", "v2"}}
				if perApp {
					in = metav1.LabelSelectorRequirement{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{fmt.Sprintf("app-%d", k%apps)}}
				}
				p.Spec.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in, {Key: "role", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"db"}}}}
				p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{
					{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("env", "prod"), PodSelector: sel("role", "api")}}, Ports: []networkingv1.NetworkPolicyPort{{Port: intPort(8080)}}},
					{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}}}},
					{Ports: []networkingv1.NetworkPolicyPort{{Port: intPort(53), Protocol: protoPtr(corev1.ProtocolUDP)}}},
				}
				p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			default:
				p.Spec.PodSelector = *sel("app", fmt.Sprintf("app-%d", k%apps))
				p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{
					{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("role", "web")}}, Ports: []networkingv1.NetworkPolicyPort{{Port: namedPortRef("http")}}},
					{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", fmt.Sprintf("team-%d", k%10)), PodSelector: sel("role", "api")}, {IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16"}}}, Ports: []networkingv1.NetworkPolicyPort{{Port: intPort(8000), EndPort: ptr32(8100)}}},
					{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "env", Operator: metav1.LabelSelectorOpIn, Values: []string{"prod"}}}}}}, Ports: []networkingv1.NetworkPolicyPort{{Port: namedPortRef("metrics")}}},
				}
			}
			pols = append(pols, p)
		}
	}
	x, errs := Build(DefaultOptions(), nss, pods, pols)
	if len(errs) > 0 {
		tb.Fatal(errs)
	}
	return x, pods
}

func ptr32(v int32) *int32 { return &v }

// benchFlows picks random pod pairs and keeps those with the wanted verdict.
func benchFlows(tb testing.TB, x *Index, pods []Pod, allowed bool, n int) []Flow {
	r := rand.New(rand.NewPCG(1, 2))
	ports := []int32{8080, 9090, 8050, 53, 443}
	var out []Flow
	for tries := 0; len(out) < n && tries < 100*n; tries++ {
		s, d := pods[r.IntN(len(pods))], pods[r.IntN(len(pods))]
		f := Flow{Src: Endpoint{IP: s.IPs[0]}, Dst: Endpoint{IP: d.IPs[0]}, Protocol: corev1.ProtocolTCP, Port: ports[r.IntN(len(ports))]}
		if r.IntN(4) == 0 {
			f.Src = Endpoint{IP: netip.AddrFrom4([4]byte{192, 168, byte(r.IntN(256)), 1})}
		}
		if ok, err := x.Allowed(f); err == nil && ok == allowed {
			out = append(out, f)
		}
	}
	if len(out) < n {
		tb.Fatalf("found %d flows with allowed=%v", len(out), allowed)
	}
	return out
}

var benchSink Verdict

// loop runs body in b.Loop and reports CPU nanoseconds per operation.
func loop(b *testing.B, body func(i int)) {
	b.ReportAllocs()
	i := 0
	var start time.Duration
	for b.Loop() {
		if i == 0 {
			start = processCPU()
		}
		body(i)
		i++
	}
	if start >= 0 && i > 1 {
		b.ReportMetric(float64(processCPU()-start)/float64(i), "cpu-ns/op")
	}
}

// BenchmarkEvaluate measures one attributed verdict at 10k policies / 50k
// pods (500 namespaces x 100 pods x 20 policies), flows given by IP as the
// correlator sees them.
func BenchmarkEvaluate(b *testing.B) {
	x, pods := benchCluster(b, 500, 100, 20, 20, false)
	for _, c := range []struct {
		name    string
		allowed bool
	}{{"allowed", true}, {"denied", false}} {
		flows := benchFlows(b, x, pods, c.allowed, 1024)
		b.Run(c.name, func(b *testing.B) {
			loop(b, func(i int) {
				v, err := x.Evaluate(flows[i%len(flows)])
				if err != nil || v.Allowed != c.allowed {
					b.Fatalf("unexpected verdict %v %v", v.Allowed, err)
				}
				benchSink = v
			})
		})
	}
	flows := benchFlows(b, x, pods, false, 1024)
	b.Run("attribute-denied", func(b *testing.B) {
		loop(b, func(i int) {
			v, err := x.Attribute(flows[i%len(flows)])
			if err != nil || v.Allowed || len(v.Ingress.Misses)+len(v.Egress.Misses) == 0 {
				b.Fatalf("unexpected verdict %v %v", v.Allowed, err)
			}
			benchSink = v
		})
	})
	b.Run("verdict-only", func(b *testing.B) {
		loop(b, func(i int) {
			if _, err := x.Allowed(flows[i%len(flows)]); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("explain-denied", func(b *testing.B) {
		loop(b, func(i int) {
			v, _ := x.Evaluate(flows[i%len(flows)])
			_ = v.Explain()
		})
	})
}

// BenchmarkEvaluateOneNamespace puts all 10k policies in one namespace of
// 50k pods (2500 apps of 20 pods, 4 policies per app): the podSelector index
// must keep a query from scanning them.
func BenchmarkEvaluateOneNamespace(b *testing.B) {
	x, pods := benchCluster(b, 1, 50000, 10000, 2500, true)
	flows := benchFlows(b, x, pods, true, 256)
	loop(b, func(i int) { benchSink, _ = x.Evaluate(flows[i%len(flows)]) })
}

// BenchmarkUpdate measures incremental informer-style updates.
func BenchmarkUpdate(b *testing.B) {
	x, pods := benchCluster(b, 500, 100, 20, 20, false)
	p := policyYAML(b, `
metadata: {name: extra, namespace: ns-7}
spec:
  podSelector: {matchLabels: {app: app-3}}
  ingress: [{from: [{podSelector: {matchLabels: {role: web}}}]}]
`)
	b.Run("policy", func(b *testing.B) {
		loop(b, func(int) { x.SetPolicy(p) })
	})
	b.Run("pod", func(b *testing.B) {
		loop(b, func(i int) { x.SetPod(pods[i%len(pods)]) })
	})
}
