package clusterctx

import (
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/k8sctx"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

var _ pattern.ServiceCluster = (*Context)(nil)

// serviceResolver is what *k8sctx.Provider and *k8sctx.Index add to a
// Resolver for Services.
type serviceResolver interface {
	Service(ip netip.Addr, port uint16, at time.Time, full bool) (k8sctx.ServiceView, bool)
}

// ServiceInfo answers pattern.ServiceCluster from the resolver's Service
// index; a resolver without one knows no Service.
func (c *Context) ServiceInfo(addr netip.Addr, port uint16, at time.Time, full bool) (pattern.ServiceFact, bool) {
	sr, ok := c.resolver.(serviceResolver)
	if !ok {
		return pattern.ServiceFact{}, false
	}
	v, ok := sr.Service(addr, port, at, full)
	if !ok {
		return pattern.ServiceFact{}, false
	}
	f := pattern.ServiceFact{Namespace: v.Namespace, Name: v.Name, Backend: v.Backend,
		Ready: v.Ready, NotReady: v.NotReady, Terminating: v.Terminating, TerminatingServing: v.TerminatingServing,
		LostReadyAt: v.LostReadyAt}
	if v.Backend {
		f.State, f.Since, f.Pod, f.Slice = string(v.Condition), v.Endpoint.Since, v.Endpoint.Pod, v.Endpoint.Slice
	}
	if !full {
		return f, true
	}
	f.Slices, f.Ports = v.Slices, v.Ports
	if v.Port != nil {
		f.Port = portText(v)
	}
	f.SelectorPods, f.SelectorRunning, f.SelectorSample = v.SelectorPods, v.SelectorRunning, v.SelectorSample
	if st := v.State; st != nil {
		f.Known, f.Created, f.Selector = true, st.Created, k8sctx.SelectorString(st.Selector)
	}
	for _, ch := range v.Changes {
		f.Changes = append(f.Changes, diagnosis.Evidence{Time: ch.Time, Source: "k8s:endpointslice", Fact: ch.String()})
	}
	return f, true
}

// portText: "http 80/TCP -> 8080" for the port the flow reaches.
func portText(v k8sctx.ServiceView) string {
	for i := range v.State.Ports {
		if &v.State.Ports[i] == v.Port && i < len(v.Ports) {
			return v.Ports[i]
		}
	}
	return ""
}
