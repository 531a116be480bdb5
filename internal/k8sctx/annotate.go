package k8sctx

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
)

// EvidenceSource names the cluster context in diagnosis evidence.
const EvidenceSource = "k8s"

// Resolver is the read side the correlator needs; *Provider and *Index
// implement it.
type Resolver interface {
	Lookup(ip netip.Addr, at time.Time) (Identity, History)
}

var (
	_ Resolver = (*Provider)(nil)
	_ Resolver = (*Index)(nil)
)

// Annotate fills the Kubernetes fields of a diagnosis endpoint from what its
// address belonged to at time at, and returns that address's history as
// evidence. Workload is written "Kind/name" (Deployment/web). A service
// address names no pod; it is described in the evidence. It returns false
// when the address is not an IP or unknown to the cluster (history may still
// name earlier owners).
func Annotate(r Resolver, e *diagnosis.Endpoint, at time.Time) ([]diagnosis.Evidence, bool) {
	ip, err := netip.ParseAddr(e.Addr)
	if err != nil {
		return nil, false
	}
	id, hist := r.Lookup(ip, at)
	var ev []diagnosis.Evidence
	switch id.Kind {
	case KindPod:
		e.K8sNamespace, e.K8sPod, e.K8sNode, e.K8sWorkload = id.Namespace, id.Name, id.Node, id.Workload.String()
	case KindNode:
		e.K8sNode = id.Name
	case KindService:
		e.K8sNamespace = id.Namespace
		ev = append(ev, diagnosis.Evidence{Time: at, Source: EvidenceSource, Fact: id.Service.describe(id.Namespace, id.Name)})
	}
	for _, h := range hist {
		ev = append(ev, diagnosis.Evidence{Time: h.Time, Source: EvidenceSource, Fact: h.String()})
	}
	return ev, id.Known()
}

func (s *ServiceState) describe(ns, name string) string {
	if s == nil {
		return fmt.Sprintf("service %s/%s", ns, name)
	}
	if len(s.Ready) == 0 {
		return fmt.Sprintf("service %s/%s has no ready endpoints (%d not ready, %d terminating, %d EndpointSlices)",
			ns, name, len(s.NotReady), len(s.Terminating), s.Slices)
	}
	return fmt.Sprintf("service %s/%s has %d ready endpoints (%d not ready, %d terminating)",
		ns, name, len(s.Ready), len(s.NotReady), len(s.Terminating))
}

// String is the event as a one-line fact.
func (e Event) String() string {
	pod := e.Namespace + "/" + e.Pod
	at := e.Time.UTC().Format(time.RFC3339Nano)
	switch e.Kind {
	case EventIPPreviousOwner:
		return fmt.Sprintf("address belonged to pod %s until %s", pod, at)
	case EventPodDeleted:
		return fmt.Sprintf("pod %s deleted at %s", pod, at)
	case EventContainerRestarted:
		return fmt.Sprintf("container %s of pod %s restarted (restart %d) after it stopped at %s: %s, exit code %d",
			e.Container, pod, e.RestartCount, at, reasonOr(e.Reason), e.ExitCode)
	case EventContainerTerminated:
		return fmt.Sprintf("container %s of pod %s stopped at %s: %s, exit code %d",
			e.Container, pod, at, reasonOr(e.Reason), e.ExitCode)
	}
	return fmt.Sprintf("%s %s at %s", e.Kind, pod, at)
}

func reasonOr(r string) string {
	if r == "" {
		return "no reason given"
	}
	return r
}

// Annotate is Annotate on the provider's index: what the correlator calls
// for each end of a flow.
func (p *Provider) Annotate(e *diagnosis.Endpoint, at time.Time) ([]diagnosis.Evidence, bool) {
	return Annotate(p.index, e, at)
}
