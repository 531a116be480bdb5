// Package clusterctx joins the cluster edge (internal/k8sctx) and the
// NetworkPolicy evaluator (internal/netpol) into the correlator's
// pattern.Cluster: pod identities and history for both ends of a
// diagnosis, and the policy verdict of a failing flow.
package clusterctx

import (
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/k8sctx"
	"github.com/network-correlator/network-correlator/internal/netpol"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Availability says whether the cluster state is current, and why not
// (k8sctx.Provider.Available).
type Availability func() (bool, string)

// Context implements pattern.Cluster.
type Context struct {
	resolver  k8sctx.Resolver
	available Availability
	policies  *netpol.Index // nil: policy check off
}

var _ pattern.Cluster = (*Context)(nil)

// New builds the context on a resolver (a *k8sctx.Provider or a
// *k8sctx.Index), its availability and, when policies is not nil, the
// policy index.
func New(r k8sctx.Resolver, available Availability, policies *netpol.Index) *Context {
	return &Context{resolver: r, available: available, policies: policies}
}

// ForProvider builds the context of a provider that has not started yet;
// with policyCheck, a netpol.Index is fed from the provider's informers
// (namespaces, pods, NetworkPolicies) through an Observer.
func ForProvider(p *k8sctx.Provider, policyCheck bool, log *zap.Logger) *Context {
	var x *netpol.Index
	if policyCheck {
		x = netpol.NewIndex(netpol.DefaultOptions())
		p.SetPolicyObserver(&Observer{Index: x, Log: log})
	}
	return New(p, p.Available, x)
}

// Policies is the policy index, nil when the policy check is off.
func (c *Context) Policies() *netpol.Index { return c.policies }

func (c *Context) Available() (bool, string) { return c.available() }

func (c *Context) Annotate(e *diagnosis.Endpoint, at time.Time) ([]diagnosis.Evidence, bool) {
	return k8sctx.Annotate(c.resolver, e, at)
}

// PolicyCheck evaluates the flow by its addresses; ok is false without a
// policy index, for a protocol NetworkPolicy does not cover, or when
// neither end is a pod policies can select.
func (c *Context) PolicyCheck(f signal.Flow, full bool) (pattern.PolicyFact, bool) {
	if c.policies == nil {
		return pattern.PolicyFact{}, false
	}
	proto, ok := protocol(f.Proto)
	if !ok || f.DstPort == 0 {
		return pattern.PolicyFact{}, false
	}
	nf := netpol.Flow{Src: netpol.Endpoint{IP: f.Src}, Dst: netpol.Endpoint{IP: f.Dst}, Protocol: proto, Port: int32(f.DstPort)}
	var (
		v   netpol.Verdict
		err error
	)
	if full {
		v, err = c.policies.Evaluate(nf)
	} else {
		v, err = c.policies.Attribute(nf)
	}
	if err != nil || !v.Egress.Applicable && !v.Ingress.Applicable {
		return pattern.PolicyFact{}, false
	}
	pf := pattern.PolicyFact{Denied: !v.Allowed}
	if ref, ok := v.Blame(); ok {
		pf.Policy = diagnosis.PolicyRef{Namespace: ref.Namespace, Name: ref.Name, Direction: string(ref.Direction), Rule: ref.Rule}
		pf.DefaultDeny = ref.Rule == ""
	}
	if full {
		pf.Explain = v.Explain()
		if pf.Denied {
			pf.Fix = fix(&v)
		}
	}
	return pf, true
}

// fix renders the smallest resolution of the denied direction (egress
// first, as the packet meets it first), with its patch when it has one.
func fix(v *netpol.Verdict) string {
	d := &v.Egress
	if d.Allowed {
		d = &v.Ingress
	}
	if len(d.Resolution) == 0 {
		return ""
	}
	r := d.Resolution[0]
	s := strings.ToUpper(r.Summary[:1]) + r.Summary[1:] + "."
	if r.YAML != "" {
		where := "as a new object"
		if r.Path != "" {
			where = "under " + r.Path
		}
		s += " Patch (" + where + "):\n" + r.YAML
	}
	if len(d.Resolution) > 1 {
		s += "\nOr: " + d.Resolution[1].Summary + "."
	}
	return s
}

func protocol(p uint8) (corev1.Protocol, bool) {
	switch p {
	case 6:
		return corev1.ProtocolTCP, true
	case 17:
		return corev1.ProtocolUDP, true
	case 132:
		return corev1.ProtocolSCTP, true
	}
	return "", false
}

// Observer feeds a netpol.Index from the provider's informers
// (k8sctx.PolicyObserver). A policy that does not compile is logged; the
// index leaves it out and reports it in verdicts (Verdict.Skipped).
type Observer struct {
	Index *netpol.Index
	Log   *zap.Logger
}

var _ k8sctx.PolicyObserver = (*Observer)(nil)

func (o *Observer) SetNamespace(n k8sctx.NamespaceInfo) {
	o.Index.SetNamespace(netpol.Namespace{Name: n.Name, Labels: n.Labels})
}

func (o *Observer) DeleteNamespace(name string) { o.Index.DeleteNamespace(name) }

func (o *Observer) SetPod(p k8sctx.PodInfo) {
	np := netpol.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, HostNetwork: p.HostNetwork,
		IPs: append([]netip.Addr(nil), p.IPs...)}
	for _, cp := range p.Ports {
		np.Ports = append(np.Ports, netpol.ContainerPort{Name: cp.Name, Port: cp.Port, Protocol: cp.Protocol})
	}
	o.Index.SetPod(np)
}

func (o *Observer) DeletePod(namespace, name string) { o.Index.DeletePod(namespace, name) }

func (o *Observer) SetPolicy(p *networkingv1.NetworkPolicy) {
	if err := o.Index.SetPolicy(p); err != nil && o.Log != nil {
		o.Log.Warn("NetworkPolicy not evaluated", zap.Error(err))
	}
}

func (o *Observer) DeletePolicy(namespace, name string) { o.Index.DeletePolicy(namespace, name) }
