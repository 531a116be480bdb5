//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/k8sctx/apitest"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/probe"
)

// readmePolicyQuery is the README's LogsQL example for a pod's policy
// blocks, with its example namespace replaced by ns, so the documented query
// is the one run against the real server.
func readmePolicyQuery(t *testing.T, ns string) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`'query=([^']*networkcorrelator\.pattern:=network_policy_block[^']*)'`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no LogsQL example ('query=...') selecting network_policy_block")
	}
	const example = `k8s.namespace.name="front"`
	q := string(m[1])
	if !strings.Contains(q, example) {
		t.Fatalf("the README's policy query does not select the stream %s: %s", example, q)
	}
	return strings.Replace(q, example, fmt.Sprintf("k8s.namespace.name=%q", ns), 1)
}

// The headline end to end through the shipped binary: a NetworkPolicy denies
// a client pod, an iptables DROP enforces it as iptables-based CNIs do, and
// the ocb-built collector, watching a real API server through a kubeconfig,
// exports the diagnosis to a real VictoriaLogs under the client pod's stream,
// naming the policy, its rule, the fix and both pods.
func TestCollectorK8sPolicyBlockInVictoriaLogs(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	if err := probe.Check(); err != nil {
		t.Skipf("skipping: kernel probes unavailable: %v", err)
	}
	vl := startVictoriaLogs(t)
	// Objects exist and the DROP is in place before the collector starts:
	// its informers' first sync, which start waits for, already has them.
	pl := newPolicyLab(t, webLabels)
	const clientPod, serverPod = "web-5d8f7c9b4-x2x7k", "backend-0"
	readmeQuery := readmePolicyQuery(t, pl.front)
	runCollector(t, "testdata/collector/k8s-victorialogs.yaml",
		"NC_KUBECONFIG="+pl.c.srv.WriteKubeconfig(apitest.AdminToken),
		"NC_NODE_NAME=node-1",
		"NC_VICTORIALOGS_URL="+vl)

	start := time.Now()
	dialed := make(chan error, 1)
	go func() {
		conn, err := pl.client.Dial(context.Background(), netip.AddrPortFrom(pl.server.IP, policyPort), 4*time.Second)
		if conn != nil {
			conn.Close()
		}
		dialed <- err
	}()
	t.Cleanup(func() { <-dialed }) // the dial ends before the lab goes

	q := fmt.Sprintf(`{k8s.namespace.name=%q, k8s.pod.name=%q} networkcorrelator.pattern:=network_policy_block destination.address:=%q destination.port:=%d`,
		pl.front, clientPod, pl.server.IP, policyPort)
	var rows []map[string]string
	for deadline := time.Now().Add(20 * time.Second); len(rows) == 0; time.Sleep(250 * time.Millisecond) {
		if time.Now().After(deadline) {
			all := logsQL(t, vl, `networkcorrelator.pattern:* | fields _stream, networkcorrelator.pattern, source.address, destination.address, destination.port, _msg`)
			t.Fatalf("LogsQL %s found nothing within 20s; diagnoses in the store: %v", q, all)
		}
		rows = logsQL(t, vl, q)
	}
	r := rows[0]
	t.Logf("in VictoriaLogs %s after the dial: %s [%s] stream %s\n  resolution: %s",
		time.Since(start).Round(time.Millisecond), r["_msg"], r["severity_text"], r["_stream"], r["networkcorrelator.resolution"])

	// The stream is exactly the affected pod: not the host, not the server.
	if want := fmt.Sprintf(`{k8s.namespace.name=%q,k8s.pod.name=%q}`, pl.front, clientPod); r["_stream"] != want {
		t.Errorf("_stream = %s, want %s", r["_stream"], want)
	}
	for _, s := range []string{pl.prod + "/backend-allow-api", "spec.ingress[0]"} {
		if !strings.Contains(r["_msg"], s) {
			t.Errorf("_msg (the summary) lacks %q: %s", s, r["_msg"])
		}
	}
	checkFields(t, r, map[string]string{
		"event_name":                         "networkcorrelator.diagnosis",
		"severity_text":                      "ERROR",
		"severity_number":                    "17",
		"k8s.node.name":                      "node-1", // the resource's other attribute
		"network.transport":                  "tcp",
		"source.address":                     pl.client.IP.String(),
		"server.address":                     pl.server.IP.String(),
		"server.port":                        strconv.Itoa(policyPort),
		"networkcorrelator.layer":            "policy",
		"networkcorrelator.policy.namespace": pl.prod,
		"networkcorrelator.policy.name":      "backend-allow-api",
		"networkcorrelator.policy.direction": "Ingress",
		"networkcorrelator.policy.rule":      "spec.ingress[0]",
		// Both ends, the resource naming only the affected one.
		"networkcorrelator.source.k8s.namespace.name":      pl.front,
		"networkcorrelator.source.k8s.pod.name":            clientPod,
		"networkcorrelator.source.k8s.node.name":           "node-1",
		"networkcorrelator.source.k8s.workload":            "Deployment/web",
		"networkcorrelator.destination.k8s.namespace.name": pl.prod,
		"networkcorrelator.destination.k8s.pod.name":       serverPod,
		"networkcorrelator.destination.k8s.node.name":      "node-1",
	})
	if res := r["networkcorrelator.resolution"]; !strings.Contains(res, "role=api") || !strings.Contains(res, pl.front+"/"+clientPod) {
		t.Errorf("networkcorrelator.resolution does not say to label %s/%s role=api: %q", pl.front, clientPod, res)
	}
	if c, err := strconv.ParseFloat(r["networkcorrelator.confidence"], 64); err != nil || c < 0.75 || c > 1 {
		t.Errorf("networkcorrelator.confidence = %q: the kernel confirms the policy, want [0.75, 1]", r["networkcorrelator.confidence"])
	}
	checkEvidence(t, r["networkcorrelator.evidence"], pl.server.IP.String())
	var ev []struct{ Source, Fact string }
	_ = json.Unmarshal([]byte(r["networkcorrelator.evidence"]), &ev)
	for _, want := range []struct{ source, fact string }{{"skb:kfree_skb", "NETFILTER_DROP"}, {"k8s:networkpolicy", "backend-allow-api"}} {
		found := false
		for _, e := range ev {
			found = found || e.Source == want.source && strings.Contains(e.Fact, want.fact)
		}
		if !found {
			t.Errorf("no %s evidence naming %s: %+v", want.source, want.fact, ev)
		}
	}

	// The README's example finds the same record, with the fields it lists.
	readmeRows := logsQL(t, vl, readmeQuery)
	if len(readmeRows) == 0 {
		t.Fatalf("the README's LogsQL example found nothing: %s", readmeQuery)
	}
	checkFields(t, readmeRows[0], map[string]string{
		"_time": "",
		"_msg":  r["_msg"],
		"networkcorrelator.destination.k8s.pod.name": serverPod,
		"networkcorrelator.policy.name":              "backend-allow-api",
		"networkcorrelator.policy.rule":              "spec.ingress[0]",
		"networkcorrelator.resolution":               r["networkcorrelator.resolution"],
	})

	if err := <-dialed; err == nil {
		t.Error("connect succeeded through the DROP")
	}
	dialed <- nil // for the cleanup
}
