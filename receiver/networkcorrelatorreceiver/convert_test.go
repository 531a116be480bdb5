package networkcorrelatorreceiver

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

var t0 = time.Date(2026, 11, 26, 1, 2, 3, 456789000, time.UTC)

func refusedOnHost() diagnosis.Diagnosis {
	return diagnosis.Diagnosis{
		Pattern:    diagnosis.PatternConnectionRefused,
		Summary:    "connection to 10.0.0.2:8080 refused: nothing listens on the port",
		Details:    "The server answered the SYN with a RST.",
		Evidence:   []diagnosis.Evidence{{Time: t0, Source: "tcp:tcp_receive_reset", Fact: "RST received in SYN_SENT"}},
		Confidence: 0.95,
		Severity:   diagnosis.SeverityError,
		Impact:     "connect() fails with ECONNREFUSED",
		Resolution: "Start the service or fix the port the client uses.",
		Layer:      diagnosis.LayerL4,
		ErrorType:  "ECONNREFUSED",
		Flow: signal.Flow{Proto: signal.ProtoTCP, Src: netip.MustParseAddr("10.0.0.1"), SrcPort: 40000,
			Dst: netip.MustParseAddr("10.0.0.2"), DstPort: 8080},
		Source:      diagnosis.Endpoint{Addr: "10.0.0.1", Port: 40000, NetnsInode: 4026532300, NetnsName: "client"},
		Destination: diagnosis.Endpoint{Addr: "10.0.0.2", Port: 8080, NetnsInode: 4026532400},
		Key:         "connection_refused|10.0.0.2:8080",
		FirstSeen:   t0,
		LastSeen:    t0.Add(2 * time.Second),
		Count:       3,
	}
}

func synDroppedBetweenPodsIPv6() diagnosis.Diagnosis {
	return diagnosis.Diagnosis{
		Pattern: diagnosis.PatternSYNDropped,
		Summary: "SYN to [fd00::2]:443 dropped by a netfilter rule on the destination",
		Evidence: []diagnosis.Evidence{
			{Time: t0, Source: "skb:kfree_skb", Fact: "NETFILTER_DROP in nft_do_chain"},
			{Time: t0.Add(time.Second), Source: "tcp:tcp_retransmit_skb", Fact: "SYN retransmitted in SYN_SENT"},
		},
		Confidence: 0.8,
		Severity:   diagnosis.SeverityWarn,
		Resolution: "Find the rule that drops port 443.",
		Layer:      diagnosis.LayerL3,
		Flow: signal.Flow{Proto: signal.ProtoTCP, Src: netip.MustParseAddr("fd00::1"), SrcPort: 51000,
			Dst: netip.MustParseAddr("fd00::2"), DstPort: 443},
		Source: diagnosis.Endpoint{Addr: "fd00::1", Port: 51000,
			K8sNamespace: "shop", K8sPod: "frontend-7d9f", K8sNode: "node-a", K8sWorkload: "Deployment/frontend"},
		Destination: diagnosis.Endpoint{Addr: "fd00::2", Port: 443,
			K8sNamespace: "pay", K8sPod: "api-0", K8sNode: "node-b", K8sWorkload: "StatefulSet/api"},
		Key:       "syn_dropped|[fd00::2]:443",
		FirstSeen: t0,
		LastSeen:  t0.Add(time.Second),
		Count:     1,
	}
}

// An outside client blocked by an ingress policy: only the destination is a pod.
func policyBlockIntoPod() diagnosis.Diagnosis {
	return diagnosis.Diagnosis{
		Pattern:    diagnosis.Pattern("network_policy_block"),
		Summary:    "ingress to pay/api-0:5432 denied by NetworkPolicy pay/db-only",
		Evidence:   []diagnosis.Evidence{{Time: t0, Source: "netpol", Fact: "no rule of pay/db-only admits 192.168.1.7"}},
		Confidence: 0.9,
		Severity:   diagnosis.SeverityError,
		Resolution: "Add the client to spec.ingress[0].from.",
		Layer:      diagnosis.LayerPolicy,
		ErrorType:  "ETIMEDOUT",
		// IPv4-mapped IPv6 addresses are reported as IPv4.
		Flow: signal.Flow{Proto: signal.ProtoTCP, Src: netip.MustParseAddr("::ffff:192.168.1.7"), SrcPort: 33000,
			Dst: netip.MustParseAddr("::ffff:10.244.1.5"), DstPort: 5432},
		Destination: diagnosis.Endpoint{K8sNamespace: "pay", K8sPod: "api-0"},
		Policy:      &diagnosis.PolicyRef{Namespace: "pay", Name: "db-only", Direction: "Ingress", Rule: "spec.ingress[0]"},
		Key:         "policy|pay/db-only|10.244.1.5:5432",
		FirstSeen:   t0,
		LastSeen:    t0,
		Count:       1,
	}
}

// A pod dialling a Service address: the destination is the Service's
// namespace without a pod, the resource the client pod.
func serviceWithoutEndpoints() diagnosis.Diagnosis {
	return diagnosis.Diagnosis{
		Pattern:    diagnosis.PatternServiceNoEndpoints,
		Summary:    "connection to Service prod/backend (10.96.77.77:8080) failed: the Service has no ready endpoints",
		Details:    "10.96.77.77 is the ClusterIP of Service prod/backend, port http 8080/TCP. Its EndpointSlices (backend-x7k2p) list 0 ready, 1 not ready and 0 terminating endpoints.",
		Evidence:   []diagnosis.Evidence{{Time: t0, Source: "icmp:icmp_send", Fact: "ICMP port unreachable (type 3 code 3) sent by the kernel in netns host"}, {Time: t0, Source: "k8s:endpointslice", Fact: "Service prod/backend: Its EndpointSlices (backend-x7k2p) list 0 ready, 1 not ready and 0 terminating endpoints"}},
		Confidence: 0.95,
		Severity:   diagnosis.SeverityError,
		Impact:     "every connection to Service prod/backend fails (ECONNREFUSED) until it has a ready endpoint",
		Resolution: "1 pod(s) match app=backend but none is a ready endpoint: their readiness probe fails.",
		Layer:      diagnosis.LayerL4,
		ErrorType:  "ECONNREFUSED",
		Flow: signal.Flow{Proto: signal.ProtoTCP, Src: netip.MustParseAddr("10.244.1.7"), SrcPort: 41000,
			Dst: netip.MustParseAddr("10.96.77.77"), DstPort: 8080},
		Source: diagnosis.Endpoint{Addr: "10.244.1.7", Port: 41000,
			K8sNamespace: "front", K8sPod: "web-5d8f7c9b4-x2x7k", K8sNode: "node-a", K8sWorkload: "Deployment/web"},
		Destination: diagnosis.Endpoint{Addr: "10.96.77.77", Port: 8080, K8sNamespace: "prod"},
		Key:         "service_no_endpoints/no_ready_endpoints/10.96.77.77:8080/netns:1",
		FirstSeen:   t0,
		LastSeen:    t0,
		Count:       1,
	}
}

// Only literal addresses, no transport, unknown severity: nothing invented.
func sparse() diagnosis.Diagnosis {
	return diagnosis.Diagnosis{
		Pattern:     diagnosis.Pattern("arp_failure"),
		Summary:     "10.0.0.9 does not answer ARP",
		Evidence:    []diagnosis.Evidence{{Time: t0, Source: "neigh:neigh_timer_handler", Fact: "nud_state FAILED"}},
		Confidence:  0.1 * 3, // 0.30000000000000004: reported as 0.3
		Severity:    diagnosis.Severity(9),
		Resolution:  "Check that 10.0.0.9 is up.",
		Layer:       diagnosis.LayerL2,
		Source:      diagnosis.Endpoint{Addr: "10.0.0.1"},
		Destination: diagnosis.Endpoint{Addr: "10.0.0.9"},
		Key:         "arp|10.0.0.9",
		FirstSeen:   t0,
		LastSeen:    t0,
		Count:       1,
	}
}

func TestDiagnosesToLogsGolden(t *testing.T) {
	meta := logsMeta{HostName: "node-a", Version: "1.2.3", Observed: t0.Add(5 * time.Second)}
	other := synDroppedBetweenPodsIPv6()
	other.Pattern = diagnosis.PatternConnectionRefused
	other.Summary = "second diagnosis for the same pod"
	tests := []struct {
		name string
		in   []diagnosis.Diagnosis
	}{
		{"refused_on_host", []diagnosis.Diagnosis{refusedOnHost()}},
		{"syn_dropped_between_pods_ipv6", []diagnosis.Diagnosis{synDroppedBetweenPodsIPv6()}},
		{"policy_block_into_pod", []diagnosis.Diagnosis{policyBlockIntoPod()}},
		{"sparse", []diagnosis.Diagnosis{sparse()}},
		{"service_without_endpoints", []diagnosis.Diagnosis{serviceWithoutEndpoints()}},
		// One resource per affected pod or host, in arrival order.
		{"batch_grouped_by_resource", []diagnosis.Diagnosis{synDroppedBetweenPodsIPv6(), refusedOnHost(), other}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, d := range tt.in {
				if err := d.Validate(); err != nil {
					t.Fatalf("test input is not a valid diagnosis: %v", err)
				}
			}
			got := marshalLogs(t, diagnosesToLogs(tt.in, meta))
			path := filepath.Join("testdata", "golden", tt.name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestDiagnosesToLogsGolden -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s differs (-want +got); if intended, rerun with -update:\n%s", path, diff)
			}
		})
	}
}

func marshalLogs(t *testing.T, logs plog.Logs) []byte {
	t.Helper()
	raw, err := (&plog.JSONMarshaler{}).MarshalLogs(logs)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

// Properties that must hold whatever the golden files say.
func TestDiagnosesToLogsInvariants(t *testing.T) {
	ds := []diagnosis.Diagnosis{refusedOnHost(), synDroppedBetweenPodsIPv6(), policyBlockIntoPod(), sparse()}
	observed := t0.Add(time.Minute)
	logs := diagnosesToLogs(ds, logsMeta{HostName: "h", Observed: observed})
	if logs.LogRecordCount() != len(ds) {
		t.Fatalf("%d records for %d diagnoses", logs.LogRecordCount(), len(ds))
	}
	i := 0
	for _, rl := range logs.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				if lr.EventName() != EventName {
					t.Errorf("EventName %q", lr.EventName())
				}
				if lr.Body().Str() == "" {
					t.Error("empty body")
				}
				if lr.ObservedTimestamp().AsTime() != observed {
					t.Errorf("observed %v", lr.ObservedTimestamp().AsTime())
				}
				if _, ok := lr.Attributes().Get("event.name"); ok {
					t.Error("deprecated event.name attribute set")
				}
				i++
			}
		}
	}
	if len(ds) != i {
		t.Fatalf("walked %d records", i)
	}
	if diagnosesToLogs(nil, logsMeta{}).ResourceLogs().Len() != 0 {
		t.Error("empty batch produced resources")
	}
}
