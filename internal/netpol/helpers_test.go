package netpol

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// policyYAML parses one NetworkPolicy manifest; tests write policies the way
// users do.
func policyYAML(t testing.TB, doc string) *networkingv1.NetworkPolicy {
	t.Helper()
	var p networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
		t.Fatalf("policy yaml: %v\n%s", err, doc)
	}
	return &p
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func podEP(ns, name string) Endpoint { return Endpoint{Namespace: ns, Pod: name} }
func ipEP(s string) Endpoint         { return Endpoint{IP: mustAddr(s)} }

func tcp(src, dst Endpoint, port int32) Flow {
	return Flow{Src: src, Dst: dst, Protocol: corev1.ProtocolTCP, Port: port}
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func protoPtr(p corev1.Protocol) *corev1.Protocol { return &p }

func intPort(p int32) *intstr.IntOrString { v := intstr.FromInt32(p); return &v }

func namedPortRef(n string) *intstr.IntOrString { v := intstr.FromString(n); return &v }

func mustEval(t testing.TB, x *Index, f Flow) Verdict {
	t.Helper()
	v, err := x.Evaluate(f)
	if err != nil {
		t.Fatalf("Evaluate(%v): %v", f, err)
	}
	return v
}
