package netpol

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

func TestPolicyErrors(t *testing.T) {
	bad := []struct {
		doc   string
		field string
		msg   string
	}{
		{`
metadata: {name: bad-op, namespace: prod}
spec:
  podSelector: {matchExpressions: [{key: app, operator: Equals, values: [x]}]}
`, "spec.podSelector", `unsupported operator "Equals"`},
		{`
metadata: {name: bad-in, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {matchExpressions: [{key: app, operator: In}]}}]}]
`, "spec.ingress[0].from[0].podSelector", "needs at least one value"},
		{`
metadata: {name: bad-cidr, namespace: prod}
spec:
  podSelector: {}
  egress: [{to: [{ipBlock: {cidr: 10.0.0.300/8}}]}]
`, "spec.egress[0].to[0].ipBlock.cidr", "invalid CIDR"},
		{`
metadata: {name: bad-except, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]
`, "spec.ingress[0].from[0].ipBlock.except[0]", "not within cidr"},
		{`
metadata: {name: bad-port, namespace: prod}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 70000}]}]
`, "spec.ingress[0].ports[0]", "out of range"},
		{`
metadata: {name: bad-endport, namespace: prod}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 90, endPort: 80}]}]
`, "spec.ingress[0].ports[0]", "endPort 80"},
		{`
metadata: {name: named-endport, namespace: prod}
spec:
  podSelector: {}
  ingress: [{ports: [{port: http, endPort: 80}]}]
`, "spec.ingress[0].ports[0]", "named port"},
		{`
metadata: {name: bad-proto, namespace: prod}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 80, protocol: ICMP}]}]
`, "spec.ingress[0].ports[0]", `unsupported protocol "ICMP"`},
		{`
metadata: {name: mixed-peer, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]
`, "spec.ingress[0].from[0]", "cannot be combined"},
		{`
metadata: {name: empty-peer, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{}]}]
`, "spec.ingress[0].from[0]", "must set"},
		{`
metadata: {name: bad-type, namespace: prod}
spec:
  podSelector: {}
  policyTypes: [Sideways]
`, "spec.policyTypes[0]", "unsupported policy type"},
		{`
metadata: {name: bad-label, namespace: prod}
spec:
  podSelector: {matchLabels: {"bad key!": x}}
`, "spec.podSelector", "invalid key"},
	}
	var pols []*networkingv1.NetworkPolicy
	for _, b := range bad {
		pols = append(pols, policyYAML(t, b.doc))
	}
	// A valid default deny among the broken ones must still be enforced.
	pols = append(pols, policyYAML(t, `
metadata: {name: deny, namespace: prod}
spec: {podSelector: {matchLabels: {app: backend}}}
`))
	x, errs := Build(DefaultOptions(), []Namespace{nsProd, nsDev}, basePods(), pols)
	if len(errs) != len(bad) {
		t.Fatalf("got %d errors, want %d: %v", len(errs), len(bad), errs)
	}
	for i, b := range bad {
		e := errs[i]
		if e.Name != pols[i].Name || e.Field != b.field || !strings.Contains(e.Error(), b.msg) {
			t.Errorf("policy %s: got %q (field %q), want field %q containing %q", pols[i].Name, e.Error(), e.Field, b.field, b.msg)
		}
	}
	if got := len(x.Errors()); got != len(bad) {
		t.Errorf("Errors() has %d entries, want %d", got, len(bad))
	}
	v := mustEval(t, x, tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 80))
	if v.Allowed || len(v.Ingress.Selecting) != 1 || v.Ingress.Selecting[0].Name != "deny" {
		t.Errorf("valid policy not enforced next to broken ones: %s", v.Explain())
	}
	// The verdict names the policies it had to leave out, sorted by name.
	if len(v.Skipped) != len(bad) || v.Skipped[0].Name != "bad-cidr" {
		t.Errorf("Skipped = %v", v.Skipped)
	}
	if want := "(not evaluated: NetworkPolicy prod/bad-cidr: spec.egress[0].to[0].ipBlock.cidr: invalid CIDR"; !strings.Contains(v.Explain(), want) {
		t.Errorf("Explain does not report the broken policy: %s", v.Explain())
	}
	if v2 := mustEval(t, x, tcp(podEP("dev", "tester"), podEP("dev", "node-agent"), 80)); len(v2.Skipped) != 0 {
		t.Errorf("broken policies of another namespace reported: %v", v2.Skipped)
	}
	// Fixing a broken policy clears its error.
	x.SetPolicy(policyYAML(t, `
metadata: {name: bad-op, namespace: prod}
spec: {podSelector: {}}
`))
	if got := len(x.Errors()); got != len(bad)-1 {
		t.Errorf("after fix Errors() has %d entries, want %d", got, len(bad)-1)
	}
	x.DeletePolicy("prod", "bad-cidr")
	if got := len(mustEval(t, x, tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 80)).Skipped); got != len(bad)-2 {
		t.Errorf("after delete %d skipped, want %d", got, len(bad)-2)
	}
}

func TestIncrementalUpdates(t *testing.T) {
	x, _ := Build(DefaultOptions(), []Namespace{nsProd, nsDev}, basePods(), []*networkingv1.NetworkPolicy{policyYAML(t, `
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: web}}, podSelector: {matchLabels: {role: api}}}]}]
`)})
	f := tcp(podEP("dev", "tester"), podEP("prod", "backend-7c9"), 8080)
	steps := []struct {
		name    string
		do      func()
		allowed bool
	}{
		{"initial", func() {}, false},
		{"label pod", func() {
			p := basePods()[2]
			p.Labels = map[string]string{"tier": "frontend", "role": "api"}
			x.SetPod(p)
		}, false},
		{"label namespace", func() { x.SetNamespace(Namespace{Name: "dev", Labels: map[string]string{"team": "web"}}) }, true},
		{"server relabelled out of the policy", func() {
			p := basePods()[0]
			p.Labels = map[string]string{"app": "other"}
			x.SetNamespace(Namespace{Name: "dev"})
			x.SetPod(p)
		}, true},
		{"server back in", func() { x.SetPod(basePods()[0]) }, false},
		{"policy deleted", func() { x.DeletePolicy("prod", "backend") }, true},
		{"default deny added", func() { x.SetPolicy(policyYAML(t, "metadata: {name: d, namespace: prod}\nspec: {podSelector: {}}")) }, false},
		{"namespace deleted", func() { x.DeleteNamespace("prod"); x.SetPod(basePods()[0]) }, true},
	}
	for _, s := range steps {
		s.do()
		v := mustEval(t, x, f)
		if v.Allowed != s.allowed {
			t.Errorf("%s: allowed=%v, want %v: %s", s.name, v.Allowed, s.allowed, v.Explain())
		}
	}
	// The pod IP index follows pod updates and deletes.
	x.DeletePod("prod", "backend-7c9")
	v, err := x.Evaluate(tcp(ipEP("10.0.1.5"), ipEP("10.0.0.10"), 80))
	if err != nil || v.DstKind != EndpointExternal {
		t.Errorf("deleted pod's IP still resolves: %v %v", v.DstKind, err)
	}
	if _, err := x.Evaluate(tcp(podEP("prod", "backend-7c9"), ipEP("10.0.0.10"), 80)); err == nil {
		t.Errorf("unknown pod endpoint accepted")
	}
	if _, err := x.Evaluate(Flow{Src: ipEP("10.0.0.1"), Dst: ipEP("10.0.0.2"), Protocol: "ICMP", Port: 1}); err == nil {
		t.Errorf("ICMP accepted")
	}
	if _, err := x.Evaluate(tcp(ipEP("10.0.0.1"), ipEP("10.0.0.2"), 0)); err == nil {
		t.Errorf("port 0 accepted")
	}
}

func TestSelectorLabelFix(t *testing.T) {
	t.Parallel()
	cases := []struct {
		doc    string
		labels map[string]string
		fix    string
		ok     bool
	}{
		{"matchLabels: {a: x, b: w}", map[string]string{"a": "x"}, "b=w", true},
		{"matchLabels: {a: x}", map[string]string{"a": "z"}, "a=x", true},
		{"matchExpressions: [{key: a, operator: In, values: [q, p]}]", nil, "a=p", true},
		{"matchExpressions: [{key: a, operator: NotIn, values: [x]}]", map[string]string{"a": "x"}, "a-", true},
		{"matchExpressions: [{key: a, operator: DoesNotExist}]", map[string]string{"a": "x"}, "a-", true},
		{"matchExpressions: [{key: a, operator: Exists}]", nil, "a=true", true},
		{"{matchLabels: {a: x}, matchExpressions: [{key: a, operator: NotIn, values: [x]}]}", nil, "", false},
	}
	for _, c := range cases {
		var ls struct {
			S networkingv1.NetworkPolicyPeer `json:"s"`
		}
		doc := "s: {podSelector: {" + c.doc + "}}"
		if strings.HasPrefix(c.doc, "{") {
			doc = "s: {podSelector: " + c.doc + "}"
		}
		unmarshal(t, doc, &ls)
		s, err := compileSelector(ls.S.PodSelector, "x")
		if err != nil {
			t.Fatalf("%s: %v", c.doc, err)
		}
		fix, ok := s.labelFix(c.labels)
		if ok != c.ok || (ok && fix.String() != c.fix) {
			t.Errorf("%s on %v: fix %q ok=%v, want %q ok=%v", c.doc, c.labels, fix.String(), ok, c.fix, c.ok)
		}
	}
}

func TestBlame(t *testing.T) {
	cases := []struct {
		name     string
		policies []string
		flow     Flow
		want     string // "ns/name Direction rule" or "" when allowed
	}{
		{"nearest rule across policies", []string{`
metadata: {name: a, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: x}}, podSelector: {matchLabels: {a: b, c: d}}}]}]
`, `
metadata: {name: b, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress: [{ports: [{port: 1}]}, {from: [{podSelector: {matchLabels: {tier: frontend}}}], ports: [{port: 9090}]}]
`}, tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080), "prod/b Ingress spec.ingress[0]"},
		{"default deny has no rule", []string{`
metadata: {name: deny, namespace: prod}
spec: {podSelector: {}}
`}, tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080), "prod/deny Ingress "},
		{"egress blamed first", []string{`
metadata: {name: deny, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
`}, tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080), "prod/deny Egress "},
		{"allowed", nil, tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080), ""},
	}
	for _, c := range cases {
		w := newWorld(t, DefaultOptions(), []Namespace{nsProd, nsDev}, basePods(), c.policies...)
		v := mustEval(t, w.x, c.flow)
		ref, ok := v.Blame()
		got := ""
		if ok {
			got = ref.String() + " " + string(ref.Direction) + " " + ref.Rule
		}
		if got != c.want {
			t.Errorf("%s: Blame() = %q, want %q", c.name, got, c.want)
		}
	}
}

// TestConcurrentUpdates evaluates while informer-style updates run; with
// -race it checks the locking, and every verdict must stay consistent.
func TestConcurrentUpdates(t *testing.T) {
	x, _ := Build(DefaultOptions(), []Namespace{nsProd, nsDev}, basePods(), nil)
	deny := policyYAML(t, "metadata: {name: d, namespace: prod}\nspec: {podSelector: {}}")
	allow := policyYAML(t, "metadata: {name: a, namespace: prod}\nspec: {podSelector: {}, ingress: [{}]}")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			x.SetPolicy(deny)
			x.SetPolicy(allow)
			p := basePods()[1]
			p.Labels = map[string]string{"tier": "frontend", "n": strconv.Itoa(i)}
			x.SetPod(p)
			x.DeletePolicy("prod", "a")
			x.SetNamespace(Namespace{Name: "dev", Labels: map[string]string{"i": strconv.Itoa(i)}})
		}
	}()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		v := mustEval(t, x, tcp(podEP("dev", "tester"), ipEP("10.0.0.10"), 8080))
		checkConsistent(t, v)
		if _, err := x.Attribute(tcp(ipEP("10.0.0.11"), podEP("prod", "backend-7c9"), 80)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPodFromAPI(t *testing.T) {
	var p corev1.Pod
	unmarshal(t, `
metadata: {name: web-1, namespace: prod, labels: {app: web}}
spec:
  hostNetwork: false
  initContainers: [{name: init, ports: [{name: warm, containerPort: 7000}]}]
  containers:
  - name: app
    ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}, {containerPort: 9000}]
status:
  podIP: 10.0.0.5
  podIPs: [{ip: 10.0.0.5}, {ip: "fd00::5"}]
`, &p)
	got := PodFromAPI(&p)
	want := Pod{Namespace: "prod", Name: "web-1", Labels: map[string]string{"app": "web"},
		IPs:   []netip.Addr{mustAddr("10.0.0.5"), mustAddr("fd00::5")},
		Ports: []ContainerPort{{Name: "warm", Port: 7000}, {Name: "http", Port: 8080}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Port: 9000}}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("PodFromAPI:\n got %+v\nwant %+v", got, want)
	}
}
