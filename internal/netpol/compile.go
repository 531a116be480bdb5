package netpol

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// PolicyError is a policy the evaluator could not compile. Such a policy is
// left out of every verdict (as if the API server had refused it); the other
// policies are unaffected.
type PolicyError struct {
	Namespace, Name string
	Field           string // e.g. "spec.ingress[0].from[1].ipBlock.cidr"
	Err             error
}

func (e PolicyError) Error() string {
	return fmt.Sprintf("NetworkPolicy %s/%s: %s: %v", e.Namespace, e.Name, e.Field, e.Err)
}

func (e PolicyError) Unwrap() error { return e.Err }

type compiledPolicy struct {
	ns, name     string
	podSel       *selector
	ingress      bool // affects Ingress after policyTypes defaulting
	egress       bool
	ingressRules []compiledRule
	egressRules  []compiledRule
	anchorKey    string // podSelector index key, "" when unanchored
	anchorVals   []string
}

type compiledRule struct {
	name  string         // "spec.ingress[i]", built once
	peers []compiledPeer // empty: every peer
	ports []compiledPort // empty: every port
}

type compiledPeer struct {
	podSel *selector // nil: absent
	nsSel  *selector // nil: absent (the policy's own namespace)
	ipb    *ipBlock
}

type ipBlock struct {
	cidr   netip.Prefix
	except []netip.Prefix
}

type compiledPort struct {
	proto   corev1.Protocol
	anyPort bool
	port    int32
	endPort int32 // 0: single port
	named   string
}

func (p compiledPort) String() string {
	switch {
	case p.anyPort:
		return string(p.proto) + " (any port)"
	case p.named != "":
		return string(p.proto) + " port " + strconv.Quote(p.named)
	case p.endPort != 0:
		return string(p.proto) + " " + strconv.Itoa(int(p.port)) + "-" + strconv.Itoa(int(p.endPort))
	}
	return string(p.proto) + " " + strconv.Itoa(int(p.port))
}

func (b *ipBlock) String() string {
	s := b.cidr.String()
	if len(b.except) > 0 {
		ex := make([]string, len(b.except))
		for i, e := range b.except {
			ex[i] = e.String()
		}
		s += " except " + strings.Join(ex, ",")
	}
	return s
}

func compilePolicy(p *networkingv1.NetworkPolicy) (*compiledPolicy, *PolicyError) {
	fail := func(field string, err error) (*compiledPolicy, *PolicyError) {
		return nil, &PolicyError{Namespace: p.Namespace, Name: p.Name, Field: field, Err: err}
	}
	if p.Name == "" {
		return fail("metadata.name", errors.New("empty name"))
	}
	if p.Namespace == "" {
		return fail("metadata.namespace", errors.New("empty namespace"))
	}
	cp := &compiledPolicy{ns: p.Namespace, name: p.Name}
	sel, err := compileSelector(&p.Spec.PodSelector, "spec.podSelector")
	if err != nil {
		return fail("spec.podSelector", err)
	}
	cp.podSel = sel
	cp.anchorKey, cp.anchorVals = anchorOf(sel)

	// policyTypes defaulting, as the API server does: Ingress always,
	// Egress when spec.egress has at least one rule.
	if len(p.Spec.PolicyTypes) == 0 {
		cp.ingress = true
		cp.egress = len(p.Spec.Egress) > 0
	}
	for i, t := range p.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			cp.ingress = true
		case networkingv1.PolicyTypeEgress:
			cp.egress = true
		default:
			return fail(fmt.Sprintf("spec.policyTypes[%d]", i), fmt.Errorf("unsupported policy type %q", t))
		}
	}
	for i, r := range p.Spec.Ingress {
		f := ruleName(Ingress, i)
		cr, field, err := compileRule(r.From, r.Ports, f, "from")
		if err != nil {
			return fail(field, err)
		}
		cr.name = f
		cp.ingressRules = append(cp.ingressRules, cr)
	}
	for i, r := range p.Spec.Egress {
		f := ruleName(Egress, i)
		cr, field, err := compileRule(r.To, r.Ports, f, "to")
		if err != nil {
			return fail(field, err)
		}
		cr.name = f
		cp.egressRules = append(cp.egressRules, cr)
	}
	return cp, nil
}

func compileRule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, f, peerField string) (compiledRule, string, error) {
	var cr compiledRule
	for j, pe := range peers {
		pf := fmt.Sprintf("%s.%s[%d]", f, peerField, j)
		var c compiledPeer
		if pe.IPBlock != nil {
			if pe.PodSelector != nil || pe.NamespaceSelector != nil {
				return cr, pf, errors.New("ipBlock cannot be combined with podSelector or namespaceSelector")
			}
			b, field, err := compileIPBlock(pe.IPBlock, pf+".ipBlock")
			if err != nil {
				return cr, field, err
			}
			c.ipb = b
		} else {
			if pe.PodSelector == nil && pe.NamespaceSelector == nil {
				return cr, pf, errors.New("peer must set podSelector, namespaceSelector or ipBlock")
			}
			if pe.PodSelector != nil {
				s, err := compileSelector(pe.PodSelector, pf+".podSelector")
				if err != nil {
					return cr, pf + ".podSelector", err
				}
				c.podSel = s
			}
			if pe.NamespaceSelector != nil {
				s, err := compileSelector(pe.NamespaceSelector, pf+".namespaceSelector")
				if err != nil {
					return cr, pf + ".namespaceSelector", err
				}
				c.nsSel = s
			}
		}
		cr.peers = append(cr.peers, c)
	}
	for j, po := range ports {
		pf := fmt.Sprintf("%s.ports[%d]", f, j)
		c, err := compilePort(po)
		if err != nil {
			return cr, pf, err
		}
		cr.ports = append(cr.ports, c)
	}
	return cr, "", nil
}

func compilePort(po networkingv1.NetworkPolicyPort) (compiledPort, error) {
	c := compiledPort{proto: corev1.ProtocolTCP}
	if po.Protocol != nil {
		switch *po.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			c.proto = *po.Protocol
		default:
			return c, fmt.Errorf("unsupported protocol %q (want TCP, UDP or SCTP)", *po.Protocol)
		}
	}
	if po.Port == nil {
		if po.EndPort != nil {
			return c, errors.New("endPort needs port")
		}
		c.anyPort = true
		return c, nil
	}
	switch po.Port.Type {
	case intstr.Int:
		if po.Port.IntVal < 1 || po.Port.IntVal > 65535 {
			return c, fmt.Errorf("port %d out of range 1-65535", po.Port.IntVal)
		}
		c.port = po.Port.IntVal
		if po.EndPort != nil {
			if *po.EndPort < c.port || *po.EndPort > 65535 {
				return c, fmt.Errorf("endPort %d must be between port %d and 65535", *po.EndPort, c.port)
			}
			if *po.EndPort > c.port {
				c.endPort = *po.EndPort
			}
		}
	case intstr.String:
		if errs := validation.IsValidPortName(po.Port.StrVal); len(errs) > 0 {
			return c, fmt.Errorf("invalid named port %q: %s", po.Port.StrVal, strings.Join(errs, "; "))
		}
		if po.EndPort != nil {
			return c, fmt.Errorf("endPort cannot be used with named port %q", po.Port.StrVal)
		}
		c.named = po.Port.StrVal
	default:
		return c, fmt.Errorf("port has unknown type %d", po.Port.Type)
	}
	return c, nil
}

func compileIPBlock(b *networkingv1.IPBlock, f string) (*ipBlock, string, error) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, f + ".cidr", fmt.Errorf("invalid CIDR %q: %v", b.CIDR, err)
	}
	out := &ipBlock{cidr: cidr.Masked()}
	for i, e := range b.Except {
		ef := fmt.Sprintf("%s.except[%d]", f, i)
		ex, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, ef, fmt.Errorf("invalid CIDR %q: %v", e, err)
		}
		ex = ex.Masked()
		if ex.Addr().Is4() != out.cidr.Addr().Is4() || ex.Bits() < out.cidr.Bits() || !out.cidr.Contains(ex.Addr()) {
			return nil, ef, fmt.Errorf("except %s is not within cidr %s", ex, out.cidr)
		}
		out.except = append(out.except, ex)
	}
	return out, "", nil
}

// anchorOf picks the podSelector term used to index the policy: an equality
// (or single-value In) term narrows candidates to pods carrying that label.
// Selectors without one are kept in a per-namespace list that every lookup scans.
func anchorOf(s *selector) (string, []string) {
	for _, r := range s.reqs {
		if r.op == opEquals || r.op == metav1.LabelSelectorOpIn {
			return r.key, r.values
		}
	}
	return "", nil
}
