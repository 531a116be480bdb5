package pattern

import (
	"fmt"
	"strings"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// Cluster is the Kubernetes context: pod identities and the NetworkPolicy
// verdict of a flow (k8sctx and netpol behind an adapter). The correlator
// asks it only for connections that fail and when it builds a diagnosis,
// never per signal.
type Cluster interface {
	// Available reports whether identities and policies reflect the
	// cluster's current state, and why not.
	Available() (bool, string)
	// Annotate fills the Kubernetes fields of e (by its Addr) as of at and
	// returns the address's recent history as evidence.
	Annotate(e *diagnosis.Endpoint, at time.Time) ([]diagnosis.Evidence, bool)
	// PolicyCheck judges the flow against the NetworkPolicies. Without
	// full it is the per-connection attribution (verdict and the policy to
	// blame); full adds the rule analysis and the fix (once per diagnosis).
	// ok is false when no verdict applies (policy check off, neither end
	// a pod, not TCP/UDP/SCTP).
	PolicyCheck(f signal.Flow, full bool) (PolicyFact, bool)
}

// PolicyFact is the NetworkPolicy verdict on a flow.
type PolicyFact struct {
	Denied bool
	// Policy is the policy to blame when Denied (Rule "" for a default deny).
	Policy diagnosis.PolicyRef
	// DefaultDeny: the blamed policy has no rules for the direction.
	DefaultDeny bool
	// Explain is the rule analysis (full only): which policies select the
	// pod, what each rule wants and the flow lacks, or which rule admits it.
	Explain string
	// Fix is the smallest change that admits the flow (full, denied only).
	Fix string
}

// PolicyChecker answers the policy verdict of the evidence's connection;
// the correlator caches the attribution per connection.
type PolicyChecker interface {
	Policy(full bool) (PolicyFact, bool)
}

// AnnotateCluster adds the cluster's view to a diagnosis built for ev: the
// Kubernetes identity of both ends with their addresses' history, a
// warning that lowers the confidence when the cluster context is stale or
// missing, and, for a connection that fails although NetworkPolicy admits
// it, that policy is not the cause.
func AnnotateCluster(c Cluster, ev *Evidence, d *diagnosis.Diagnosis, at time.Time) {
	for i, e := range []*diagnosis.Endpoint{&d.Source, &d.Destination} {
		if e.Addr == "" {
			continue
		}
		hist, known := c.Annotate(e, at)
		d.Evidence = append(d.Evidence, hist...)
		// A destination nobody holds any more: its last owner explains
		// why nothing answers (a deleted pod, a released address).
		if i == 1 && !known && len(hist) > 0 {
			facts := make([]string, 0, 2)
			for _, h := range hist[max(len(hist)-2, 0):] {
				facts = append(facts, h.Fact)
			}
			d.Details += fmt.Sprintf(" %s belongs to no pod now: %s.", e.Addr, strings.Join(facts, "; "))
		}
		// A Service address (no pod, a namespace): whether it has ready
		// endpoints is what decides if anything can answer (the service
		// pattern says it at length).
		if i == 1 && known && e.K8sPod == "" && e.K8sNamespace != "" && len(hist) > 0 && d.Pattern != diagnosis.PatternServiceNoEndpoints {
			d.Details += fmt.Sprintf(" %s is a Service address: %s.", e.Addr, hist[0].Fact)
		}
	}
	if ok, reason := c.Available(); !ok {
		d.Evidence = append(d.Evidence, diagnosis.Evidence{Time: at, Source: "k8s",
			Fact: "cluster context unavailable: " + reason})
		d.Confidence = clamp(d.Confidence * 0.8)
		d.Details += fmt.Sprintf(" Kubernetes context is unavailable (%s): pod identities and policies may be "+
			"missing or stale, so the confidence is lowered.", reason)
	}
	if ev.Policy == nil || (d.Pattern != diagnosis.PatternSYNDropped && d.Pattern != diagnosis.PatternConnectionRefused) {
		return
	}
	// The cached attribution decides; the analysis is asked only to quote
	// the admitting rule.
	if pf, ok := ev.Policy.Policy(false); !ok || pf.Denied {
		return
	}
	if pf, ok := ev.Policy.Policy(true); ok && !pf.Denied {
		d.Evidence = append(d.Evidence, diagnosis.Evidence{Time: at, Source: "k8s:networkpolicy", Fact: pf.Explain})
		d.Details += " The cause is not NetworkPolicy: the policies admit this flow (" + pf.Explain +
			"), so look at other netfilter rules, the CNI's own rules or the path."
	}
}
