package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import (
	"math"
	"net/netip"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/metadata"
)

// EventName is the EventName of every diagnosis log record: one fixed,
// low-cardinality name under the project's namespace (the pattern says which
// failure it is).
const EventName = "networkcorrelator.diagnosis"

// attrPrefix is the namespace of the project's own attributes.
const attrPrefix = "networkcorrelator."

// Semantic-convention attribute keys (kept here, not imported, so the
// mapping does not move when a semconv package version changes).
const (
	attrNetworkTransport   = "network.transport"
	attrNetworkType        = "network.type"
	attrSourceAddress      = "source.address"
	attrSourcePort         = "source.port"
	attrDestinationAddress = "destination.address"
	attrDestinationPort    = "destination.port"
	attrServerAddress      = "server.address"
	attrServerPort         = "server.port"
	attrErrorType          = "error.type"

	attrHostName     = "host.name"
	attrK8sNamespace = "k8s.namespace.name"
	attrK8sPod       = "k8s.pod.name"
	attrK8sNode      = "k8s.node.name"
)

// logsMeta is what the conversion needs besides the diagnoses.
type logsMeta struct {
	// HostName is the resource of diagnoses whose ends are not pods.
	HostName string
	// Version is the scope version (the collector's build version).
	Version string
	// Observed is the ObservedTimestamp of every record of the batch.
	Observed time.Time
}

// diagnosesToLogs is the one place a Diagnosis becomes OTel: one LogRecord
// per diagnosis, grouped under one ResourceLogs per affected pod (or the
// host), in the order the diagnoses came.
func diagnosesToLogs(ds []diagnosis.Diagnosis, meta logsMeta) plog.Logs {
	logs := plog.NewLogs()
	byResource := make(map[resourceKey]plog.LogRecordSlice)
	for i := range ds {
		d := &ds[i]
		key := affected(d, meta.HostName)
		records, ok := byResource[key]
		if !ok {
			rl := logs.ResourceLogs().AppendEmpty()
			key.fill(rl.Resource().Attributes())
			sl := rl.ScopeLogs().AppendEmpty()
			sl.Scope().SetName(metadata.ScopeName)
			sl.Scope().SetVersion(meta.Version)
			records = sl.LogRecords()
			byResource[key] = records
		}
		fillRecord(records.AppendEmpty(), d, meta.Observed)
	}
	return logs
}

// resourceKey identifies the resource a diagnosis is reported under.
type resourceKey struct {
	namespace, pod, node string
	host                 string
}

// affected picks the resource: the source pod (the end whose connection
// failed), else the destination pod (an outside client failing to reach a
// pod), else the host the receiver runs on.
func affected(d *diagnosis.Diagnosis, hostName string) resourceKey {
	for _, ep := range []*diagnosis.Endpoint{&d.Source, &d.Destination} {
		if ep.K8sPod != "" {
			return resourceKey{namespace: ep.K8sNamespace, pod: ep.K8sPod, node: ep.K8sNode}
		}
	}
	return resourceKey{host: hostName}
}

func (k resourceKey) fill(attrs pcommon.Map) {
	if k.pod == "" {
		if k.host != "" {
			attrs.PutStr(attrHostName, k.host)
		}
		return
	}
	putNonEmpty(attrs, attrK8sNamespace, k.namespace)
	attrs.PutStr(attrK8sPod, k.pod)
	putNonEmpty(attrs, attrK8sNode, k.node)
}

func fillRecord(lr plog.LogRecord, d *diagnosis.Diagnosis, observed time.Time) {
	lr.SetEventName(EventName)
	lr.SetTimestamp(pcommon.NewTimestampFromTime(d.LastSeen))
	lr.SetObservedTimestamp(pcommon.NewTimestampFromTime(observed))
	num, text := severity(d.Severity)
	lr.SetSeverityNumber(num)
	lr.SetSeverityText(text)
	lr.Body().SetStr(d.Summary)

	a := lr.Attributes()
	src := endpointAddr(d.Flow.Src, d.Source.Addr)
	dst := endpointAddr(d.Flow.Dst, d.Destination.Addr)
	srcPort := firstNonZero(d.Flow.SrcPort, d.Source.Port)
	dstPort := firstNonZero(d.Flow.DstPort, d.Destination.Port)

	transport := transportName(d.Flow.Proto)
	putNonEmpty(a, attrNetworkTransport, transport)
	putNonEmpty(a, attrNetworkType, networkType(src, dst))
	putAddrPort(a, attrSourceAddress, attrSourcePort, src, srcPort)
	putAddrPort(a, attrDestinationAddress, attrDestinationPort, dst, dstPort)
	// The destination is the end the failed connection was aimed at.
	if transport != "" && dstPort != 0 {
		putAddrPort(a, attrServerAddress, attrServerPort, dst, dstPort)
	}
	putNonEmpty(a, attrErrorType, d.ErrorType)

	a.PutStr(attrPrefix+"pattern", string(d.Pattern))
	a.PutDouble(attrPrefix+"confidence", roundConfidence(d.Confidence))
	putNonEmpty(a, attrPrefix+"layer", string(d.Layer))
	putNonEmpty(a, attrPrefix+"details", d.Details)
	putNonEmpty(a, attrPrefix+"impact", d.Impact)
	putNonEmpty(a, attrPrefix+"resolution", d.Resolution)
	// Count is what a reader of one record wants (occurrences so far).
	// d.New is left out: summing records is the failures metric's job,
	// and a log store summing New would depend on every update arriving.
	a.PutInt(attrPrefix+"count", int64(d.Count))
	putTime(a, attrPrefix+"first_seen", d.FirstSeen)
	putTime(a, attrPrefix+"last_seen", d.LastSeen)
	putNonEmpty(a, attrPrefix+"aggregation_key", d.Key)
	if len(d.Evidence) > 0 {
		ev := a.PutEmptySlice(attrPrefix + "evidence")
		ev.EnsureCapacity(len(d.Evidence))
		for _, e := range d.Evidence {
			m := ev.AppendEmpty().SetEmptyMap()
			putTime(m, "time", e.Time)
			m.PutStr("source", e.Source)
			m.PutStr("fact", e.Fact)
		}
	}
	if p := d.Policy; p != nil {
		putNonEmpty(a, attrPrefix+"policy.namespace", p.Namespace)
		putNonEmpty(a, attrPrefix+"policy.name", p.Name)
		putNonEmpty(a, attrPrefix+"policy.direction", p.Direction)
		putNonEmpty(a, attrPrefix+"policy.rule", p.Rule)
	}
	putEndpoint(a, attrPrefix+"source.", &d.Source)
	putEndpoint(a, attrPrefix+"destination.", &d.Destination)
}

// putEndpoint adds what is known of one end beyond its address: its network
// namespace and its Kubernetes identity (the resource carries only the
// affected end, so both ends are named here).
func putEndpoint(a pcommon.Map, prefix string, ep *diagnosis.Endpoint) {
	if ep.NetnsInode != 0 {
		a.PutInt(prefix+"netns.inode", int64(ep.NetnsInode))
	}
	putNonEmpty(a, prefix+"netns.name", ep.NetnsName)
	putNonEmpty(a, prefix+"k8s.namespace.name", ep.K8sNamespace)
	putNonEmpty(a, prefix+"k8s.pod.name", ep.K8sPod)
	putNonEmpty(a, prefix+"k8s.node.name", ep.K8sNode)
	putNonEmpty(a, prefix+"k8s.workload", ep.K8sWorkload)
}

// roundConfidence drops floating-point noise (0.9500000000000001 -> 0.95)
// that products of evidence weights leave, so backends show what was meant.
func roundConfidence(c float64) float64 {
	return math.Round(c*1e9) / 1e9
}

func severity(s diagnosis.Severity) (plog.SeverityNumber, string) {
	switch s {
	case diagnosis.SeverityInfo:
		return plog.SeverityNumberInfo, "INFO"
	case diagnosis.SeverityWarn:
		return plog.SeverityNumberWarn, "WARN"
	case diagnosis.SeverityError:
		return plog.SeverityNumberError, "ERROR"
	}
	return plog.SeverityNumberUnspecified, s.String()
}

// transportName gives network.transport's well-known values; ICMP is not a
// transport and gets none.
func transportName(proto uint8) string {
	switch proto {
	case signal.ProtoTCP:
		return "tcp"
	case signal.ProtoUDP:
		return "udp"
	case signal.ProtoSCTP:
		return "sctp"
	}
	return ""
}

// endpointAddr prefers the flow's parsed address and falls back to the
// endpoint's literal; IPv4-mapped IPv6 addresses are reported as IPv4.
func endpointAddr(flow netip.Addr, literal string) netip.Addr {
	if flow.IsValid() {
		return flow.Unmap()
	}
	if a, err := netip.ParseAddr(literal); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}

func networkType(addrs ...netip.Addr) string {
	for _, a := range addrs {
		switch {
		case a.Is4():
			return "ipv4"
		case a.Is6():
			return "ipv6"
		}
	}
	return ""
}

func putAddrPort(a pcommon.Map, addrKey, portKey string, addr netip.Addr, port uint16) {
	if addr.IsValid() {
		a.PutStr(addrKey, addr.String())
	}
	if port != 0 {
		a.PutInt(portKey, int64(port))
	}
}

func firstNonZero(a, b uint16) uint16 {
	if a != 0 {
		return a
	}
	return b
}

func putNonEmpty(a pcommon.Map, key, val string) {
	if val != "" {
		a.PutStr(key, val)
	}
}

// putTime writes times as RFC 3339 UTC strings: readable in every backend,
// unlike raw nanoseconds.
func putTime(a pcommon.Map, key string, t time.Time) {
	if !t.IsZero() {
		a.PutStr(key, t.UTC().Format(time.RFC3339Nano))
	}
}
