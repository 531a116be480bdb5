package pattern

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Causes of service_no_endpoints: a ClusterIP whose Service has no ready
// endpoint, or a backend address that is no longer a ready endpoint.
const (
	CauseNoReadyEndpoints    = "no_ready_endpoints"
	CauseEndpointNotReady    = "endpoint_not_ready"
	CauseEndpointTerminating = "endpoint_terminating"
	CauseEndpointRemoved     = "endpoint_removed"
)

// Endpoint conditions in ServiceFact.State.
const (
	EndpointReady       = "ready"
	EndpointNotReady    = "not ready"
	EndpointTerminating = "terminating"
	EndpointRemoved     = "removed"
)

// ServiceFact is what the cluster knows of an address as a Service's: its
// ClusterIP, or one of its endpoint addresses (listed now, or removed
// within the cluster context's history window).
type ServiceFact struct {
	Namespace, Name string
	// Backend: the address is an endpoint of the service, not its ClusterIP.
	Backend bool
	// Backend only: the address's endpoint condition (Endpoint*), since
	// when (zero: it already was so when first seen), its pod and slice.
	State      string
	Since      time.Time
	Pod, Slice string
	// The service's endpoints by condition.
	Ready, NotReady, Terminating, TerminatingServing int
	// LostReadyAt: when its last ready endpoint went away (zero: unknown).
	LostReadyAt time.Time

	// Full lookups only.
	Known   bool     // the Service object itself is known (not only slices)
	Slices  []string // its EndpointSlices' names
	Port    string   // the service port the flow reaches, "" if none
	Ports   []string // every port of the service
	Created time.Time
	// Selector `k=v,...` ("" when the endpoints are managed by hand), the
	// live pods of the namespace it matches, those Running, and a sample.
	Selector                      string
	SelectorPods, SelectorRunning int
	SelectorSample                []string
	// Changes: recent endpoint changes of the service, oldest first.
	Changes []diagnosis.Evidence
}

func (f *ServiceFact) name() string { return f.Namespace + "/" + f.Name }

// ServiceCluster is the optional part of a Cluster that knows Services and
// their EndpointSlices. Without full it must not allocate: it is asked
// while matching, full only when a diagnosis is built.
type ServiceCluster interface {
	ServiceInfo(addr netip.Addr, port uint16, at time.Time, full bool) (ServiceFact, bool)
}

// ServiceNoEndpoints: a connection to a Service address fails and the
// Service has no ready endpoint, or a connection straight to a backend
// address fails and that address is no longer a ready endpoint (not
// ready, terminating, removed from the EndpointSlices). The failure itself
// comes from a kernel pattern (icmp_error, connection_refused,
// syn_dropped); the cluster says why nothing answers. It outranks them
// (specificity 4, higher confidence) because it names the object to fix:
//   - ClusterIP rejected on this node (a local REJECT's ICMP error or a
//     REJECT with tcp-reset: what kube-proxy installs for a Service without
//     endpoints): the kernel pattern's confidence + 0.1;
//   - ClusterIP refused otherwise or timing out: + 0.05 (only the cluster
//     says why);
//   - backend no longer ready: + 0.05, + 0.05 more when the change was seen
//     within the last ten minutes before the failure.
//
// A Service with ready endpoints, a ready backend, or an address the
// cluster does not know are near misses: the kernel pattern keeps them.
// While the cluster context is unavailable the last known state decides;
// AnnotateCluster then says so and lowers the confidence.
type ServiceNoEndpoints struct {
	SYN     SYNDropped
	Refused ConnectionRefused
	ICMP    ICMPError
}

func (ServiceNoEndpoints) ID() diagnosis.Pattern { return diagnosis.PatternServiceNoEndpoints }

func (p ServiceNoEndpoints) Wants(s *signal.Signal) bool {
	return p.ICMP.Wants(s) || p.Refused.Wants(s) || p.SYN.Wants(s)
}

// Gate: matches only where icmp_error, connection_refused or syn_dropped
// does, and only with a cluster context (Evidence.Policy and Cluster are
// set together).
func (p ServiceNoEndpoints) Gate() Gate {
	return Gate{Triggers: p.ICMP.Gate().Triggers | p.Refused.Gate().Triggers | p.SYN.Gate().Triggers, Evidenced: true,
		Policy: true}
}

type serviceBase uint8

const (
	baseICMP serviceBase = iota + 1
	baseRefused
	baseSYN
)

// base is the kernel pattern's decision on the evidence, among the
// failures a missing endpoint explains.
func (p ServiceNoEndpoints) base(ev *Evidence) (Verdict, serviceBase, bool) {
	if v, out := p.ICMP.Match(ev); out == Match {
		switch v.Cause {
		case CauseLocalReject, CausePortUnreachable, CauseAdminProhibited, CauseHostUnreachable, CauseNetUnreachable:
			return v, baseICMP, true
		}
		return Verdict{}, 0, false
	}
	if v, out := p.Refused.Match(ev); out == Match {
		return v, baseRefused, true
	}
	if v, out := p.SYN.Match(ev); out == Match {
		return v, baseSYN, true
	}
	return Verdict{}, 0, false
}

// rejected: the kernel on this node answered the connection itself, as
// kube-proxy's rule for a Service without endpoints does.
func rejected(b Verdict, kind serviceBase) bool {
	switch kind {
	case baseICMP:
		return b.Cause == CauseLocalReject || b.Cause == CausePortUnreachable || b.Cause == CauseAdminProhibited
	case baseRefused:
		return b.Cause == CauseFirewallReject
	}
	return false
}

// recentChange is how close before the failure an endpoint change counts
// as its likely cause.
const recentChange = 10 * time.Minute

func (p ServiceNoEndpoints) Match(ev *Evidence) (Verdict, Outcome) {
	sc, ok := ev.Cluster.(ServiceCluster)
	if !ok || !ev.Flow.Dst.IsValid() {
		return Verdict{}, NoMatch
	}
	b, kind, ok := p.base(ev)
	if !ok {
		return Verdict{}, NoMatch
	}
	at := evTime(ev)
	sf, ok := sc.ServiceInfo(ev.Flow.Dst, ev.Flow.DstPort, at, false)
	if !ok {
		return Verdict{}, NoMatch
	}
	v := Verdict{Where: b.Where, Need: b.Need, Specificity: 4}
	c := b.Confidence + 0.05
	if !sf.Backend {
		if sf.Ready > 0 {
			return Verdict{}, NoMatch
		}
		v.Cause = CauseNoReadyEndpoints
		switch {
		case rejected(b, kind):
			c += 0.05
			v.Why = "the address is a Service with no ready endpoints, and the kernel rejected the connection here as kube-proxy does for such a Service"
		case kind == baseSYN:
			v.Why = "the address is a Service with no ready endpoints (only unanswered SYNs seen)"
		default:
			v.Why = "the address is a Service with no ready endpoints"
		}
	} else {
		if b.Cause == CauseNeighbourUnresolved || b.Cause == CauseLocalUnreach {
			return Verdict{}, NoMatch // the address is gone from the link: the neighbour patterns say so
		}
		switch sf.State {
		case EndpointNotReady:
			v.Cause = CauseEndpointNotReady
		case EndpointTerminating:
			v.Cause = CauseEndpointTerminating
		case EndpointRemoved:
			v.Cause = CauseEndpointRemoved
		default:
			return Verdict{}, NoMatch
		}
		if !sf.Since.IsZero() && !sf.Since.After(at.Add(time.Second)) && at.Sub(sf.Since) <= recentChange {
			c += 0.05
		}
		v.Why = fmt.Sprintf("the address is no longer a ready endpoint of Service %s (%s)", sf.name(), sf.State)
	}
	v.Confidence = clamp(c)
	return v, Match
}

func (p ServiceNoEndpoints) Diagnose(ev *Evidence, v Verdict) diagnosis.Diagnosis {
	b, kind, _ := p.base(ev)
	var d diagnosis.Diagnosis
	switch kind {
	case baseICMP:
		d = p.ICMP.Diagnose(ev, b)
	case baseRefused:
		d = p.Refused.Diagnose(ev, b)
	default:
		d = p.SYN.Diagnose(ev, b)
	}
	kernel := strings.TrimSuffix(d.Summary, ".")
	at := evTime(ev)
	sc, _ := ev.Cluster.(ServiceCluster)
	var sf ServiceFact
	ok := false
	if sc != nil {
		sf, ok = sc.ServiceInfo(ev.Flow.Dst, ev.Flow.DstPort, at, true)
	}
	d.Pattern = diagnosis.PatternServiceNoEndpoints
	d.Confidence = v.Confidence
	d.Layer = diagnosis.LayerL4
	dst := netip.AddrPortFrom(ev.Flow.Dst, ev.Flow.DstPort).String()
	if !ok {
		// The service went away between the match and now.
		d.Details += " The address was a Service's (or one of its endpoints) when the failure was matched, but the cluster " +
			"context no longer knows it."
		return d
	}
	svc := sf.name()
	state := stateText(&sf)
	if !sf.Backend {
		d.Summary = fmt.Sprintf("connection to Service %s (%s) failed: the Service has no ready endpoints", svc, dst)
		d.Details = fmt.Sprintf("%s is the ClusterIP of Service %s%s. %s.", addrText(ev.Flow.Dst), svc, portText(&sf, ev.Flow.DstPort), state)
		if !sf.LostReadyAt.IsZero() {
			d.Details += fmt.Sprintf(" Its last ready endpoint went away at %s.", stamp(sf.LostReadyAt))
		} else if !sf.Created.IsZero() {
			d.Details += fmt.Sprintf(" No endpoint of it was seen ready while watched (the Service exists since %s).", stamp(sf.Created))
		}
		d.Details += selectorText(&sf)
		if rejected(b, kind) {
			d.Details += " The kernel confirms it: " + kernel + "."
		} else {
			d.Details += " Kernel view: " + kernel + "; nothing on this node rejected it, so only the cluster state says why."
		}
		d.Impact = fmt.Sprintf("every connection to Service %s fails (%s) until it has a ready endpoint", svc, d.ErrorType)
		d.Resolution = clusterIPFix(&sf, ev.Flow.DstPort)
	} else {
		who := addrText(ev.Flow.Dst)
		if sf.Pod != "" {
			who += " (pod " + sf.Namespace + "/" + sf.Pod + ")"
		}
		since := ""
		if !sf.Since.IsZero() {
			since = " since " + stamp(sf.Since)
		}
		inSlice := fmt.Sprintf("is %s in EndpointSlice %s of Service %s%s", sf.State, orUnknown(sf.Slice), svc, since)
		if sf.State == EndpointRemoved {
			since = ""
			if !sf.Since.IsZero() {
				since = " (removed at " + stamp(sf.Since) + ")"
			}
			inSlice = fmt.Sprintf("was removed from EndpointSlice %s of Service %s%s", orUnknown(sf.Slice), svc, since)
		}
		d.Summary = fmt.Sprintf("connection to %s failed: %s %s of Service %s%s", dst, who, endpointPhrase(sf.State), svc, since)
		d.Details = fmt.Sprintf("%s %s%s. %s.", who, inSlice, portText(&sf, ev.Flow.DstPort), state)
		if sf.Ready > 0 {
			d.Details += " Clients that use the Service address are served by its other endpoints; this client dials the " +
				"backend's own address (a cached DNS answer of a headless Service, a client-side endpoint list)."
		}
		d.Details += selectorText(&sf)
		d.Details += " Kernel view: " + kernel + "."
		d.Impact = fmt.Sprintf("connections straight to %s fail (%s) while it is not a ready endpoint", dst, d.ErrorType)
		d.Resolution = backendFix(&sf)
	}
	d.Evidence = append(d.Evidence, diagnosis.Evidence{Time: at, Source: "k8s:endpointslice",
		Fact: fmt.Sprintf("Service %s: %s", svc, state)})
	d.Evidence = append(d.Evidence, sf.Changes...)
	return d
}

func endpointPhrase(state string) string {
	switch state {
	case EndpointRemoved:
		return "is no longer an endpoint"
	case EndpointTerminating:
		return "is a terminating endpoint"
	}
	return "is a not-ready endpoint"
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// stateText: "EndpointSlices backend-abc list 0 ready, 1 not ready, 0
// terminating endpoints" or "no EndpointSlice lists any endpoint".
func stateText(f *ServiceFact) string {
	if len(f.Slices) == 0 {
		return "No EndpointSlice exists for it (0 endpoints)"
	}
	s := fmt.Sprintf("Its EndpointSlices (%s) list %d ready, %d not ready and %d terminating endpoints",
		strings.Join(f.Slices, ", "), f.Ready, f.NotReady, f.Terminating)
	if f.Terminating > 0 {
		s += fmt.Sprintf(" (%d of them still serving)", f.TerminatingServing)
	}
	return s
}

func portText(f *ServiceFact, port uint16) string {
	switch {
	case f.Port != "":
		return ", port " + f.Port
	case len(f.Ports) > 0 && !f.Backend:
		return fmt.Sprintf(", which does not expose port %d (its ports: %s)", port, strings.Join(f.Ports, "; "))
	}
	return ""
}

func selectorText(f *ServiceFact) string {
	switch {
	case !f.Known:
		return " The Service object itself is not known to the cluster context."
	case f.Selector == "":
		return " The Service has no selector: its endpoints are managed by hand."
	case f.SelectorPods == 0:
		return fmt.Sprintf(" Its selector %s matches no pod in namespace %s.", f.Selector, f.Namespace)
	}
	return fmt.Sprintf(" Its selector %s matches %d pod(s) in namespace %s (%s), %d Running.", f.Selector, f.SelectorPods,
		f.Namespace, strings.Join(f.SelectorSample, ", "), f.SelectorRunning)
}

func clusterIPFix(f *ServiceFact, port uint16) string {
	svc := f.name()
	list := fmt.Sprintf("`kubectl get endpointslices -n %s -l kubernetes.io/service-name=%s -o wide`", f.Namespace, f.Name)
	var s string
	switch {
	case f.Port == "" && len(f.Ports) > 0:
		s = fmt.Sprintf("Service %s does not expose port %d: fix the client's port or add it to the Service. ", svc, port)
	}
	switch {
	case !f.Known || f.Selector == "":
		s += fmt.Sprintf("Add the backend addresses to the EndpointSlices of %s (it has no selector), check them with %s.", svc, list)
	case f.SelectorPods == 0:
		s += fmt.Sprintf("No pod matches the selector %s in namespace %s: fix the Service's selector or the pods' labels "+
			"(`kubectl get pods -n %s -l %s`), or deploy/scale up the backend.", f.Selector, f.Namespace, f.Namespace, f.Selector)
	case f.SelectorRunning == 0:
		s += fmt.Sprintf("%d pod(s) match %s but none is Running: find why they do not start (`kubectl describe pod -n %s %s`).",
			f.SelectorPods, f.Selector, f.Namespace, f.SelectorSample[0])
	default:
		s += fmt.Sprintf("%d pod(s) match %s but none is a ready endpoint: their readiness probe fails (`kubectl describe pod -n %s %s`, "+
			"the container logs), or scale the workload up; watch %s.", f.SelectorPods, f.Selector, f.Namespace, f.SelectorSample[0], list)
	}
	return s
}

func backendFix(f *ServiceFact) string {
	pod := "the pod"
	if f.Pod != "" {
		pod = "pod " + f.Namespace + "/" + f.Pod
	}
	var s string
	switch f.State {
	case EndpointNotReady:
		s = fmt.Sprintf("%s fails its readiness probe: check `kubectl describe pod -n %s %s` and its logs.", pod, f.Namespace, f.Pod)
	case EndpointTerminating:
		s = fmt.Sprintf("%s is shutting down: clients must stop using its address.", pod)
	default:
		s = fmt.Sprintf("%s left the endpoints of Service %s (deleted, or no longer matching its selector): clients that "+
			"cached its address must resolve the Service again.", pod, f.name())
	}
	if f.Ready > 0 {
		s += fmt.Sprintf(" Connect through Service %s (its ClusterIP or DNS name) instead of a pod address.", f.name())
	} else {
		s += fmt.Sprintf(" Service %s has no ready endpoint at all: scale the workload up or fix the readiness of its pods.", f.name())
	}
	return s
}
