// Package diagnosis defines the Diagnosis: the project's core vocabulary. Every
// pattern produces one, the correlator aggregates them, and the receiver maps
// them to OTel log records.
package diagnosis

import (
	"fmt"
	"time"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// Pattern is a stable, low-cardinality identifier of a failure pattern. It is
// exported as an attribute and as a metric dimension, so never rename one.
type Pattern string

const (
	PatternConnectionRefused Pattern = "connection_refused"
	PatternSYNDropped        Pattern = "syn_dropped"
	// Established connections: data unanswered, FIN unanswered, peer lost the connection.
	PatternBlackhole     Pattern = "blackhole"
	PatternHalfOpen      Pattern = "half_open"
	PatternPeerLostState Pattern = "peer_lost_state"
	// Beyond TCP's own signals: neighbours, ICMP errors, routing, listeners.
	PatternARPFailure     Pattern = "arp_failure" // ARP and IPv6 NDP
	PatternICMPError      Pattern = "icmp_error"
	PatternRouteFailure   Pattern = "route_failure"
	PatternListenOverflow Pattern = "listen_overflow"
	// A namespace's conntrack table had no room for a new flow.
	PatternConntrackTableFull Pattern = "conntrack_table_full"
	// A NetworkPolicy denies a failing connection (outranks syn_dropped and connection_refused).
	PatternNetworkPolicyBlock Pattern = "network_policy_block"
	// A connection to a Service address (or to a backend that is no longer
	// a ready endpoint) fails because the Service has no ready endpoints.
	PatternServiceNoEndpoints Pattern = "service_no_endpoints"
)

// Severity of the failure for the user.
type Severity uint8

const (
	SeverityInfo Severity = iota + 1
	SeverityWarn
	SeverityError
)

func (s Severity) String() string {
	switch s {
	case SeverityInfo:
		return "INFO"
	case SeverityWarn:
		return "WARN"
	case SeverityError:
		return "ERROR"
	}
	return fmt.Sprintf("SEVERITY(%d)", uint8(s))
}

// Layer is where the root cause sits.
type Layer string

const (
	LayerL2     Layer = "L2"
	LayerL3     Layer = "L3"
	LayerL4     Layer = "L4"
	LayerPolicy Layer = "policy"
)

// Evidence is one timestamped fact that supports a diagnosis.
type Evidence struct {
	Time time.Time
	// Source names the kernel hook or context provider the fact came from
	// (e.g. "tcp:tcp_receive_reset", "skb:kfree_skb").
	Source string
	Fact   string
}

// Endpoint is one end of the flow with whatever identity is known.
type Endpoint struct {
	Addr string // IP literal
	Port uint16
	// NetnsInode/NetnsName identify the network namespace on this host when known.
	NetnsInode uint32
	NetnsName  string
	// Kubernetes identity, filled by the cluster context provider.
	K8sNamespace string
	K8sPod       string
	K8sNode      string
	K8sWorkload  string
}

// PolicyRef names the NetworkPolicy and rule behind a policy diagnosis.
type PolicyRef struct {
	Namespace string
	Name      string
	Direction string // "Ingress" or "Egress"
	Rule      string // e.g. "spec.ingress[0]"; empty for a default-deny
}

// Diagnosis is one explained failure, aggregated over repeats of the same cause.
type Diagnosis struct {
	Pattern    Pattern
	Summary    string // one line; the log body
	Details    string
	Evidence   []Evidence
	Confidence float64 // 0..1, computed from the evidence seen
	Severity   Severity
	Impact     string
	Resolution string
	Layer      Layer
	// ErrorType is the low-cardinality error.type (e.g. "ECONNREFUSED", "ETIMEDOUT").
	ErrorType string

	Flow        signal.Flow
	Source      Endpoint
	Destination Endpoint
	Policy      *PolicyRef

	// Key identifies the cause for aggregation: two failures with the same
	// Key within the correlation window are counted, not re-emitted.
	Key       string
	FirstSeen time.Time
	LastSeen  time.Time
	// Count is the occurrences of the cause from FirstSeen to LastSeen, as
	// of this record (a window update carries it on).
	Count int
	// New is how many of Count this record adds to the previous record of
	// the same cause (1 for a first report; 0 for an update that only
	// added evidence): summed over records it counts each occurrence once.
	New int
}

// Validate reports the first missing mandatory field. Patterns are tested
// against it so no half-filled diagnosis reaches a pipeline.
func (d *Diagnosis) Validate() error {
	switch {
	case d.Pattern == "":
		return fmt.Errorf("diagnosis: pattern is empty")
	case d.Summary == "":
		return fmt.Errorf("diagnosis %s: summary is empty", d.Pattern)
	case len(d.Evidence) == 0:
		return fmt.Errorf("diagnosis %s: no evidence", d.Pattern)
	case d.Confidence <= 0 || d.Confidence > 1:
		return fmt.Errorf("diagnosis %s: confidence %v outside (0,1]", d.Pattern, d.Confidence)
	case d.Severity == 0:
		return fmt.Errorf("diagnosis %s: severity unset", d.Pattern)
	case d.Resolution == "":
		return fmt.Errorf("diagnosis %s: resolution is empty", d.Pattern)
	case d.Layer == "":
		return fmt.Errorf("diagnosis %s: layer unset", d.Pattern)
	case d.Key == "":
		return fmt.Errorf("diagnosis %s: aggregation key is empty", d.Pattern)
	case d.Count < 1:
		return fmt.Errorf("diagnosis %s: count %d < 1", d.Pattern, d.Count)
	case d.New < 0 || d.New > d.Count:
		return fmt.Errorf("diagnosis %s: new occurrences %d outside [0, count %d]", d.Pattern, d.New, d.Count)
	case d.FirstSeen.IsZero() || d.LastSeen.Before(d.FirstSeen):
		return fmt.Errorf("diagnosis %s: first/last seen inconsistent", d.Pattern)
	}
	return nil
}
