package netpol

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

// world is a small cluster used by the semantic tests: it keeps the source
// policies so resolutions can be applied to them.
type world struct {
	t    *testing.T
	x    *Index
	pols map[string]*networkingv1.NetworkPolicy
	pods map[string]Pod
	nss  map[string]Namespace
}

func newWorld(t *testing.T, opts Options, nss []Namespace, pods []Pod, policies ...string) *world {
	t.Helper()
	w := &world{t: t, x: NewIndex(opts), pols: map[string]*networkingv1.NetworkPolicy{}, pods: map[string]Pod{}, nss: map[string]Namespace{}}
	for _, n := range nss {
		w.nss[n.Name] = n
		w.x.SetNamespace(n)
	}
	for _, p := range pods {
		w.pods[p.Namespace+"/"+p.Name] = p
		w.x.SetPod(p)
	}
	for _, doc := range policies {
		p := policyYAML(t, doc)
		w.pols[p.Namespace+"/"+p.Name] = p
		if err := w.x.SetPolicy(p); err != nil {
			t.Fatalf("policy %s/%s: %v", p.Namespace, p.Name, err)
		}
	}
	return w
}

var rulePath = regexp.MustCompile(`^spec\.(ingress|egress)\[(\d+)\]\.(from|to|ports)$`)

// apply performs a resolution on a copy of the world, as a user would.
func (w *world) apply(r Resolution) *Index {
	t := w.t
	t.Helper()
	x := NewIndex(w.x.Options())
	for _, n := range w.nss {
		if n.Name == r.NamespaceTarget {
			n.Labels = applyChange(n.Labels, r.Namespace)
		}
		x.SetNamespace(n)
	}
	if r.NamespaceTarget != "" {
		if _, ok := w.nss[r.NamespaceTarget]; !ok {
			x.SetNamespace(Namespace{Name: r.NamespaceTarget, Labels: applyChange(map[string]string{namespaceNameLabel: r.NamespaceTarget}, r.Namespace)})
		}
	}
	for k, p := range w.pods {
		if k == r.PodTarget {
			p.Labels = applyChange(p.Labels, r.Pod)
		}
		x.SetPod(p)
	}
	for k, p := range w.pols {
		p = p.DeepCopy()
		if k == r.Policy.String() {
			switch r.Kind {
			case ResolutionPatchRule:
				m := rulePath.FindStringSubmatch(r.Path)
				if m == nil {
					t.Fatalf("unexpected patch path %q", r.Path)
				}
				i, _ := strconv.Atoi(m[2])
				switch {
				case m[3] == "ports":
					var ports []networkingv1.NetworkPolicyPort
					unmarshal(t, r.YAML, &ports)
					if m[1] == "ingress" {
						p.Spec.Ingress[i].Ports = append(p.Spec.Ingress[i].Ports, ports...)
					} else {
						p.Spec.Egress[i].Ports = append(p.Spec.Egress[i].Ports, ports...)
					}
				case m[1] == "ingress":
					var peers []networkingv1.NetworkPolicyPeer
					unmarshal(t, r.YAML, &peers)
					p.Spec.Ingress[i].From = append(p.Spec.Ingress[i].From, peers...)
				default:
					var peers []networkingv1.NetworkPolicyPeer
					unmarshal(t, r.YAML, &peers)
					p.Spec.Egress[i].To = append(p.Spec.Egress[i].To, peers...)
				}
			case ResolutionAddRule:
				if r.Path == "spec.ingress" {
					var rules []networkingv1.NetworkPolicyIngressRule
					unmarshal(t, r.YAML, &rules)
					p.Spec.Ingress = append(p.Spec.Ingress, rules...)
				} else {
					var rules []networkingv1.NetworkPolicyEgressRule
					unmarshal(t, r.YAML, &rules)
					p.Spec.Egress = append(p.Spec.Egress, rules...)
				}
			}
		}
		if err := x.SetPolicy(p); err != nil {
			t.Fatalf("patched policy does not compile: %v", err)
		}
	}
	if r.Kind == ResolutionNewPolicy {
		var p networkingv1.NetworkPolicy
		unmarshal(t, r.YAML, &p)
		if err := x.SetPolicy(&p); err != nil {
			t.Fatalf("new policy does not compile: %v\n%s", err, r.YAML)
		}
	}
	return x
}

func unmarshal(t *testing.T, doc string, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
		t.Fatalf("resolution YAML does not parse: %v\n%s", err, doc)
	}
}

// checkResolutions applies every resolution of every denied direction and
// requires that direction to become allowed.
func (w *world) checkResolutions(f Flow, v Verdict) {
	w.t.Helper()
	for _, d := range []DirectionVerdict{v.Egress, v.Ingress} {
		if d.Allowed {
			continue
		}
		if len(d.Resolution) == 0 {
			w.t.Errorf("%s denied without a resolution", d.Direction)
		}
		for _, r := range d.Resolution {
			x := w.apply(r)
			v2 := mustEval(w.t, x, f)
			d2 := v2.Ingress
			if d.Direction == Egress {
				d2 = v2.Egress
			}
			if !d2.Allowed {
				w.t.Errorf("resolution %q (%s %s) does not admit the flow:\n%s\nnow: %s", r.Summary, r.Path, r.Kind, r.YAML, v2.Explain())
			}
		}
	}
}

var (
	nsProd = Namespace{Name: "prod", Labels: map[string]string{"env": "prod"}}
	nsDev  = Namespace{Name: "dev", Labels: map[string]string{"env": "dev"}}
)

func basePods() []Pod {
	return []Pod{
		{Namespace: "prod", Name: "backend-7c9", Labels: map[string]string{"app": "backend", "pod-template-hash": "7c9"}, IPs: []netip.Addr{mustAddr("10.0.0.10"), mustAddr("fd00::10")},
			Ports: []ContainerPort{{Name: "http", Port: 8080}, {Name: "metrics", Port: 9090}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}},
		{Namespace: "prod", Name: "frontend-1", Labels: map[string]string{"tier": "frontend"}, IPs: []netip.Addr{mustAddr("10.0.0.11"), mustAddr("fd00::11")}},
		{Namespace: "dev", Name: "tester", Labels: map[string]string{"tier": "frontend"}, IPs: []netip.Addr{mustAddr("10.0.1.5")}},
		{Namespace: "dev", Name: "node-agent", Labels: map[string]string{"app": "agent"}, IPs: []netip.Addr{mustAddr("192.168.1.7")}, HostNetwork: true},
	}
}

func TestExplainAndResolve(t *testing.T) {
	cases := []struct {
		name      string
		opts      *Options
		policies  []string
		flow      Flow
		allowed   bool
		egress    bool // expected egress verdict
		ingress   bool
		explain   string // exact Explain()
		selecting []string
		allowedBy string // "ns/name spec.x[i] peer port"
		misses    []string
		resKinds  []ResolutionKind
		res0      string // first resolution: label change or YAML
	}{
		{
			name: "issue example: two rules, nearest misses and label fix",
			policies: []string{`
metadata: {name: backend-isolation, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: api}}}]
  - ports: [{port: 9090}]
`},
			flow:      tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			egress:    true,
			explain:   "blocked by NetworkPolicy `prod/backend-isolation`: it selects `backend-7c9` for Ingress and none of its 2 ingress rules admits pods labelled `tier=frontend` in namespace `prod` on TCP 8080 (rule `spec.ingress[0]` wants `role=api`; rule `spec.ingress[1]` allows port 9090) — fix: add label `role=api` to the client pod prod/frontend-1 (kubectl label pod -n prod frontend-1 role=api), which rule spec.ingress[0] of NetworkPolicy prod/backend-isolation admits; or add pods labelled tier=frontend in namespace prod to the from peers of rule spec.ingress[0] of NetworkPolicy prod/backend-isolation",
			selecting: []string{"prod/backend-isolation"},
			misses:    []string{"spec.ingress[0] pod-labels peer0 [role=api]", "spec.ingress[1] port port0 allows port 9090"},
			resKinds:  []ResolutionKind{ResolutionLabel, ResolutionPatchRule},
			res0:      "role=api",
		},
		{
			name: "default deny ingress attributed by name",
			policies: []string{`
metadata: {name: default-deny, namespace: prod}
spec: {podSelector: {}}
`},
			flow:      tcp(podEP("dev", "tester"), podEP("prod", "backend-7c9"), 8080),
			egress:    true,
			explain:   "blocked by NetworkPolicy `prod/default-deny`: it selects `backend-7c9` for Ingress and has no ingress rules (default deny) — fix: create NetworkPolicy prod/allow-ingress-tester-tcp-8080 admitting pods labelled tier=frontend in namespace dev on TCP 8080 for prod/backend-7c9",
			selecting: []string{"prod/default-deny"},
			misses:    []string{" no-rules"},
			resKinds:  []ResolutionKind{ResolutionNewPolicy},
			res0: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ingress-tester-tcp-8080
  namespace: prod
spec:
  podSelector:
    matchLabels:
      app: backend
  policyTypes:
  - Ingress
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: dev
      podSelector:
        matchLabels:
          tier: frontend
    ports:
    - port: 8080
      protocol: TCP
`,
		},
		{
			name: "default deny egress plus deny ingress: both sides named",
			policies: []string{`
metadata: {name: deny-egress, namespace: dev}
spec: {podSelector: {}, policyTypes: [Egress]}
`, `
metadata: {name: deny-all, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
`},
			flow:     tcp(podEP("dev", "tester"), podEP("prod", "backend-7c9"), 8080),
			explain:  "blocked by NetworkPolicy `dev/deny-egress`: it selects `tester` for Egress and has no egress rules (default deny) — fix: create NetworkPolicy dev/allow-egress-backend-7c9-tcp-8080 admitting pods labelled app=backend in namespace prod on TCP 8080 for dev/tester; and blocked by NetworkPolicy `prod/deny-all`: it selects `backend-7c9` for Ingress and has no ingress rules (default deny) — fix: create NetworkPolicy prod/allow-ingress-tester-tcp-8080 admitting pods labelled tier=frontend in namespace dev on TCP 8080 for prod/backend-7c9",
			resKinds: []ResolutionKind{ResolutionNewPolicy},
		},
		{
			name: "allowed: exact rule, peer and port index",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: api}}}]
  - from:
    - ipBlock: {cidr: 172.16.0.0/12}
    - namespaceSelector: {matchLabels: {env: dev}}
      podSelector: {matchExpressions: [{key: tier, operator: In, values: [frontend, web]}]}
    ports:
    - {port: 9090}
    - {port: http}
`},
			flow:      tcp(podEP("dev", "tester"), podEP("prod", "backend-7c9"), 8080),
			allowed:   true,
			egress:    true,
			ingress:   true,
			explain:   "allowed: egress of `dev/tester` is not isolated (no NetworkPolicy selects it for Egress); ingress to `prod/backend-7c9` allowed by NetworkPolicy `prod/backend` rule `spec.ingress[1]` (from[1], ports[1])",
			selecting: []string{"prod/backend"},
			allowedBy: "prod/backend spec.ingress[1] 1 1",
		},
		{
			name: "namespaceSelector AND podSelector: namespace label missing",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: web}}
      podSelector: {matchLabels: {tier: frontend}}
`},
			flow:     tcp(podEP("dev", "tester"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			explain:  "blocked by NetworkPolicy `prod/backend`: it selects `backend-7c9` for Ingress and none of its 1 ingress rule admits pods labelled `tier=frontend` in namespace `dev` on TCP 8080 (rule `spec.ingress[0]` wants namespace label `team=web`) — fix: add label `team=web` to namespace dev (kubectl label namespace dev team=web), which rule spec.ingress[0] of NetworkPolicy prod/backend admits; or add pods labelled tier=frontend in namespace dev to the from peers of rule spec.ingress[0] of NetworkPolicy prod/backend",
			misses:   []string{"spec.ingress[0] namespace-labels peer0 [] ns[team=web]"},
			resKinds: []ResolutionKind{ResolutionLabel, ResolutionPatchRule},
			res0:     "ns team=web",
		},
		{
			name: "peer without namespaceSelector means the policy namespace",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{podSelector: {matchLabels: {tier: frontend}}}]
`},
			flow:     tcp(podEP("dev", "tester"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			misses:   []string{"spec.ingress[0] namespace-labels peer0 [] ns[namespace prod]"},
			resKinds: []ResolutionKind{ResolutionPatchRule},
			res0: `- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: dev
  podSelector:
    matchLabels:
      tier: frontend
`,
		},
		{
			name: "matchExpressions NotIn and DoesNotExist: label removal",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from:
    - podSelector:
        matchExpressions:
        - {key: tier, operator: NotIn, values: [frontend]}
        - {key: quarantine, operator: DoesNotExist}
        - {key: tier, operator: Exists}
`},
			flow:   tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			egress: true,
			misses: []string{"spec.ingress[0] pod-labels peer0 [tier notin (frontend)]"},
			// Removing tier would break "tier Exists": no label-only fix.
			resKinds: []ResolutionKind{ResolutionPatchRule},
		},
		{
			name: "matchExpressions Exists: adds a label",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{podSelector: {matchExpressions: [{key: allowed-backend, operator: Exists}]}}]
`},
			flow:     tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			misses:   []string{"spec.ingress[0] pod-labels peer0 [allowed-backend]"},
			resKinds: []ResolutionKind{ResolutionLabel, ResolutionPatchRule},
			res0:     "allowed-backend=true",
		},
		{
			name: "named port resolved on the destination pod",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - ports: [{port: metrics}, {port: grpc}, {port: dns, protocol: UDP}]
`},
			flow:     tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			explain:  "blocked by NetworkPolicy `prod/backend`: it selects `backend-7c9` for Ingress and none of its 1 ingress rule admits pods labelled `tier=frontend` in namespace `prod` on TCP 8080 (rule `spec.ingress[0]` allows named port \"metrics\", which is TCP 9090 on prod/backend-7c9) — fix: add TCP 8080 to the ports of rule spec.ingress[0] of NetworkPolicy prod/backend",
			misses:   []string{"spec.ingress[0] named-port-value port0 allows named port \"metrics\", which is TCP 9090 on prod/backend-7c9"},
			resKinds: []ResolutionKind{ResolutionPatchRule},
			res0:     "- port: 8080\n  protocol: TCP\n",
		},
		{
			name: "named port missing on the pod",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - ports: [{port: grpc}]
`},
			flow:     tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			misses:   []string{"spec.ingress[0] named-port port0 allows named port \"grpc\", but prod/backend-7c9 declares no TCP container port of that name"},
			resKinds: []ResolutionKind{ResolutionPatchRule},
		},
		{
			name: "endPort range and protocol",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - ports: [{port: 8000, endPort: 8079}, {protocol: UDP, port: 8080}]
`},
			flow:     tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			misses:   []string{"spec.ingress[0] port-range port0 allows ports 8000-8079"},
			resKinds: []ResolutionKind{ResolutionPatchRule},
		},
		{
			name: "endPort range admits",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - ports: [{port: 8000, endPort: 8080}]
`},
			flow:      tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			allowed:   true,
			egress:    true,
			ingress:   true,
			allowedBy: "prod/backend spec.ingress[0] -1 0",
		},
		{
			name: "egress to an external IP: ipBlock except names the exception",
			policies: []string{`
metadata: {name: egress, namespace: prod}
spec:
  podSelector: {matchLabels: {tier: frontend}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}}]
`},
			flow:     tcp(podEP("prod", "frontend-1"), ipEP("203.0.113.200"), 443),
			ingress:  true,
			explain:  "blocked by NetworkPolicy `prod/egress`: it selects `frontend-1` for Egress and none of its 1 egress rule admits traffic to `203.0.113.200` on TCP 443 (rule `spec.egress[0]` ipBlock 203.0.113.0/24 excepts 203.0.113.128/25 (203.0.113.200)) — fix: add 203.0.113.200 to the to peers of rule spec.egress[0] of NetworkPolicy prod/egress",
			misses:   []string{"spec.egress[0] ipblock-except peer0 ipBlock 203.0.113.0/24 excepts 203.0.113.128/25 (203.0.113.200)"},
			resKinds: []ResolutionKind{ResolutionPatchRule},
			res0:     "- ipBlock:\n    cidr: 203.0.113.200/32\n",
		},
		{
			name: "IPv6 ipBlock admits an external IPv6 client",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{ipBlock: {cidr: "2001:db8::/32", except: ["2001:db8:bad::/48"]}}]
`},
			flow:      tcp(ipEP("2001:db8:1::5"), podEP("prod", "backend-7c9"), 8080),
			allowed:   true,
			egress:    true,
			ingress:   true,
			allowedBy: "prod/backend spec.ingress[0] 0 -1",
		},
		{
			name: "IPv6 except",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{ipBlock: {cidr: "2001:db8::/32", except: ["2001:db8:bad::/48"]}}]
`},
			flow:     tcp(ipEP("2001:db8:bad::5"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			misses:   []string{"spec.ingress[0] ipblock-except peer0 ipBlock 2001:db8::/32 excepts 2001:db8:bad::/48 (2001:db8:bad::5)"},
			resKinds: []ResolutionKind{ResolutionPatchRule},
			res0:     "- ipBlock:\n    cidr: 2001:db8:bad::5/128\n",
		},
		{
			name: "ipBlock covering a pod IP matches by default",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.1.0/24}}]
`},
			flow:      tcp(podEP("dev", "tester"), podEP("prod", "backend-7c9"), 8080),
			allowed:   true,
			egress:    true,
			ingress:   true,
			allowedBy: "prod/backend spec.ingress[0] 0 -1",
		},
		{
			name: "ipBlock covering a pod IP does not match when the setting is off",
			opts: &Options{IPBlockMatchesPods: false},
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.1.0/24}}]
`},
			flow:     tcp(podEP("dev", "tester"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			misses:   []string{"spec.ingress[0] ipblock-pod peer0 ipBlock 10.0.1.0/24 matches only addresses outside the pod network, and dev/tester is a pod"},
			resKinds: []ResolutionKind{ResolutionPatchRule},
		},
		{
			name: "selector peers never match an external client",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{namespaceSelector: {}}]
`},
			flow:     tcp(ipEP("198.51.100.9"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			misses:   []string{"spec.ingress[0] not-a-pod peer0 selects pods, but 198.51.100.9 is not a pod"},
			resKinds: []ResolutionKind{ResolutionPatchRule},
			res0:     "- ipBlock:\n    cidr: 198.51.100.9/32\n",
		},
		{
			name: "host-network client is matched only by ipBlock",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{namespaceSelector: {}}]
`},
			flow:     tcp(podEP("dev", "node-agent"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			misses:   []string{"spec.ingress[0] not-a-pod peer0 selects pods, but dev/node-agent is a host-network pod (only ipBlock peers match its node address)"},
			resKinds: []ResolutionKind{ResolutionPatchRule},
			res0:     "- ipBlock:\n    cidr: 192.168.1.7/32\n",
		},
		{
			name: "host-network server is never isolated",
			policies: []string{`
metadata: {name: deny, namespace: dev}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
`},
			flow:    tcp(podEP("prod", "frontend-1"), podEP("dev", "node-agent"), 10250),
			allowed: true, egress: true, ingress: true,
			explain: "allowed: egress of `prod/frontend-1` is not isolated (no NetworkPolicy selects it for Egress); ingress to host-network pod `dev/node-agent` is not subject to NetworkPolicy",
		},
		{
			name: "bare pod IP resolves to the pod",
			policies: []string{`
metadata: {name: deny, namespace: prod}
spec: {podSelector: {matchLabels: {app: backend}}}
`},
			flow:      tcp(ipEP("10.0.1.5"), ipEP("fd00::10"), 8080),
			egress:    true,
			selecting: []string{"prod/deny"},
			misses:    []string{" no-rules"},
			resKinds:  []ResolutionKind{ResolutionNewPolicy},
		},
		{
			name: "policyTypes defaulting: egress rules imply Egress",
			policies: []string{`
metadata: {name: only-dns, namespace: prod}
spec:
  podSelector: {matchLabels: {tier: frontend}}
  egress:
  - ports: [{port: 53, protocol: UDP}]
`},
			flow:      tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			ingress:   true,
			egress:    false,
			selecting: []string{"prod/only-dns"},
			misses:    []string{"spec.egress[0] protocol port0 allows UDP 53 only"},
			resKinds:  []ResolutionKind{ResolutionPatchRule},
		},
		{
			name: "policyTypes defaulting: Ingress is always implied (no ingress rules: default deny)",
			policies: []string{`
metadata: {name: only-dns, namespace: prod}
spec:
  podSelector: {matchLabels: {tier: frontend}}
  egress:
  - ports: [{port: 53, protocol: UDP}]
`},
			flow:      tcp(podEP("prod", "backend-7c9"), podEP("prod", "frontend-1"), 8080),
			egress:    true,
			selecting: []string{"prod/only-dns"},
			misses:    []string{" no-rules"},
			resKinds:  []ResolutionKind{ResolutionNewPolicy},
		},
		{
			name: "policyTypes defaulting: egress: [] does not imply Egress",
			policies: []string{`
metadata: {name: empty-egress, namespace: prod}
spec:
  podSelector: {}
  ingress: [{}]
  egress: []
`},
			flow:      tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			allowed:   true,
			egress:    true,
			ingress:   true,
			allowedBy: "prod/empty-egress spec.ingress[0] -1 -1",
		},
		{
			name: "policyTypes [Egress] ignores ingress rules",
			policies: []string{`
metadata: {name: egress-only, namespace: prod}
spec:
  podSelector: {}
  policyTypes: [Egress]
  ingress: [{from: [{podSelector: {matchLabels: {nobody: x}}}]}]
  egress: [{}]
`},
			flow:      tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			allowed:   true,
			egress:    true,
			ingress:   true,
			allowedBy: "prod/egress-only spec.egress[0] -1 -1",
		},
		{
			name: "empty from and empty ports admit everything",
			policies: []string{`
metadata: {name: open, namespace: prod}
spec:
  podSelector: {}
  ingress:
  - from: []
    ports: []
`},
			flow:      tcp(ipEP("198.51.100.9"), podEP("prod", "backend-7c9"), 1),
			allowed:   true,
			egress:    true,
			ingress:   true,
			allowedBy: "prod/open spec.ingress[0] -1 -1",
		},
		{
			name: "SCTP rule does not admit TCP",
			policies: []string{`
metadata: {name: sctp, namespace: prod}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 8080, protocol: SCTP}]
`},
			flow:     tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			misses:   []string{"spec.ingress[0] protocol port0 allows SCTP 8080 only"},
			resKinds: []ResolutionKind{ResolutionPatchRule},
		},
		{
			name: "two selecting policies: union of rules, misses of both",
			policies: []string{`
metadata: {name: a, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress: [{ports: [{port: 80}]}]
`, `
metadata: {name: b, namespace: prod}
spec:
  podSelector: {matchExpressions: [{key: app, operator: Exists}]}
  ingress: [{from: [{podSelector: {matchLabels: {tier: backend}}}]}]
`},
			flow:      tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			egress:    true,
			explain:   "blocked by NetworkPolicies `prod/a`, `prod/b`: `prod/a` selects `backend-7c9` for Ingress and none of its 1 ingress rule admits pods labelled `tier=frontend` in namespace `prod` on TCP 8080 (rule `spec.ingress[0]` allows port 80); `prod/b` selects `backend-7c9` for Ingress and none of its 1 ingress rule admits pods labelled `tier=frontend` in namespace `prod` on TCP 8080 (rule `spec.ingress[0]` wants `tier=backend`) — fix: set label `tier=backend` (now frontend) on the client pod prod/frontend-1 (kubectl label pod -n prod frontend-1 tier=backend --overwrite), which rule spec.ingress[0] of NetworkPolicy prod/b admits; or add TCP 8080 to the ports of rule spec.ingress[0] of NetworkPolicy prod/a (1 more resolution)",
			selecting: []string{"prod/a", "prod/b"},
			misses:    []string{"spec.ingress[0] port port0 allows port 80", "spec.ingress[0] pod-labels peer0 [tier=backend]"},
			resKinds:  []ResolutionKind{ResolutionLabel, ResolutionPatchRule, ResolutionPatchRule},
		},
		{
			name: "a label fix that would isolate the client's egress is not offered",
			policies: []string{`
metadata: {name: backend, namespace: prod}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress: [{from: [{podSelector: {matchLabels: {role: api}}}]}]
`, `
metadata: {name: api-egress-lockdown, namespace: prod}
spec:
  podSelector: {matchLabels: {role: api}}
  policyTypes: [Egress]
`},
			flow:     tcp(podEP("prod", "frontend-1"), podEP("prod", "backend-7c9"), 8080),
			egress:   true,
			resKinds: []ResolutionKind{ResolutionPatchRule},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultOptions()
			if tc.opts != nil {
				opts = *tc.opts
			}
			w := newWorld(t, opts, []Namespace{nsProd, nsDev}, basePods(), tc.policies...)
			v := mustEval(t, w.x, tc.flow)
			if v.Allowed != tc.allowed || v.Egress.Allowed != tc.egress || v.Ingress.Allowed != tc.ingress {
				t.Fatalf("allowed=%v egress=%v ingress=%v, want %v %v %v\n%s", v.Allowed, v.Egress.Allowed, v.Ingress.Allowed, tc.allowed, tc.egress, tc.ingress, v.Explain())
			}
			if tc.explain != "" && v.Explain() != tc.explain {
				t.Errorf("Explain:\n got %s\nwant %s", v.Explain(), tc.explain)
			}
			d := v.Ingress
			if !tc.egress || (tc.allowed && v.Egress.AllowedBy != nil) {
				d = v.Egress
			}
			if tc.selecting != nil {
				var got []string
				for _, p := range d.Selecting {
					got = append(got, p.String())
				}
				if strings.Join(got, ",") != strings.Join(tc.selecting, ",") {
					t.Errorf("selecting %v, want %v", got, tc.selecting)
				}
			}
			if tc.allowedBy != "" {
				a := d.AllowedBy
				if a == nil {
					t.Fatalf("no AllowedBy")
				}
				got := fmt.Sprintf("%s %s %d %d", a.PolicyRef, a.Rule, a.Peer, a.Port)
				if got != tc.allowedBy {
					t.Errorf("AllowedBy %q, want %q", got, tc.allowedBy)
				}
				if a.Rule != ruleName(d.Direction, a.Index) {
					t.Errorf("rule string %q does not match index %d", a.Rule, a.Index)
				}
			}
			if tc.misses != nil {
				var got []string
				for _, m := range d.Misses {
					got = append(got, missString(m))
				}
				if strings.Join(got, "|") != strings.Join(tc.misses, "|") {
					t.Errorf("misses:\n got %q\nwant %q", got, tc.misses)
				}
			}
			if tc.resKinds != nil {
				var got []ResolutionKind
				for _, r := range d.Resolution {
					got = append(got, r.Kind)
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.resKinds) {
					t.Errorf("resolution kinds %v, want %v", got, tc.resKinds)
				}
			}
			if tc.res0 != "" {
				r := d.Resolution[0]
				got := r.YAML
				if r.Kind == ResolutionLabel {
					got = r.Pod.String()
					if r.Namespace.size() > 0 {
						got = "ns " + r.Namespace.String()
					}
				}
				if got != tc.res0 {
					t.Errorf("first resolution:\n got %q\nwant %q", got, tc.res0)
				}
			}
			w.checkResolutions(tc.flow, v)

			// Attribute gives the same attribution without resolutions.
			a, err := w.x.Attribute(tc.flow)
			if err != nil {
				t.Fatal(err)
			}
			for i, pair := range [][2]DirectionVerdict{{v.Egress, a.Egress}, {v.Ingress, a.Ingress}} {
				full, attr := pair[0], pair[1]
				if attr.Allowed != full.Allowed || fmt.Sprint(attr.Selecting) != fmt.Sprint(full.Selecting) ||
					fmt.Sprint(attr.AllowedBy) != fmt.Sprint(full.AllowedBy) || len(attr.Misses) != len(full.Misses) || len(attr.Resolution) != 0 {
					t.Errorf("side %d: Attribute differs from Evaluate: %+v vs %+v", i, attr, full)
				}
			}
		})
	}
}

func missString(m RuleMiss) string {
	s := m.Rule + " " + string(m.Kind)
	if m.Peer != nil {
		s += fmt.Sprintf(" peer%d", m.Peer.Index)
		if (m.Peer.Kind == MissPodLabels || m.Peer.Kind == MissNamespace) && m.Peer.Detail() == "" {
			s += " <no detail>"
		}
		if m.Peer.Kind == MissPodLabels || m.Peer.Kind == MissNamespace {
			s += fmt.Sprintf(" %v", m.Peer.PodWant())
			if nw := m.Peer.NamespaceWant(); len(nw) > 0 {
				s += fmt.Sprintf(" ns%v", nw)
			}
		} else {
			s += " " + m.Peer.Detail()
		}
	}
	if m.Port != nil {
		s += fmt.Sprintf(" port%d %s", m.Port.Index, m.Port.Detail())
	}
	return s
}
