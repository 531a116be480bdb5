package netpol

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Regression against netpol-analyzer's expected connectivity listings (see
// testdata/netpol/corpus/README.md). netpol-analyzer treats ipBlock as
// matching only addresses outside the pod network, so the corpus runs with
// IPBlockMatchesPods=false. Every pair of workloads and every elementary
// range of external IPv4 addresses is evaluated for every protocol and every
// port interval that the policies and container ports distinguish, and the
// resulting connection sets must equal the listing. The one deliberate
// difference, host-network pods, is checked separately and counted per
// scenario.

const corpusDir = "../../testdata/netpol/corpus"

var corpusScenarios = []struct {
	dir string
	// hostNetworkDiffs counts the pairs whose answer deliberately differs
	// because a pod has hostNetwork: true (see the README).
	hostNetworkDiffs int
}{
	{dir: "acs-security-demos"},
	{dir: "acs-security-demos-with-netpol-list"},
	{dir: "acs_security_frontend_demos"},
	{dir: "core_pods_without_host_ip"},
	{dir: "demo_app_with_routes_and_ingress"},
	{dir: "example_pods_w_same_owner_and_labels_gap_no_policy"},
	{dir: "exposure_test_pod_exposed_only_to_representative_peers"},
	{dir: "example_pods_w_same_owner_and_labels_gap_with_good_match_expression"},
	{dir: "example_pods_w_same_owner_and_labels_gap_with_good_match_expression2"},
	{dir: "example_pods_w_same_owner_and_labels_gap_with_policy_selector_not_in_gap"},
	{dir: "ipblockstest", hostNetworkDiffs: 84},
	{dir: "ipblockstest_2", hostNetworkDiffs: 84},
	{dir: "ipblockstest_3", hostNetworkDiffs: 87},
	{dir: "k8s_ingress_test"},
	{dir: "minikube_resources"},
	{dir: "minimal_test_in_ns"},
	{dir: "multiple_ingress_objects_with_different_ports"},
	{dir: "multiple_topology_resources_1", hostNetworkDiffs: 46},
	{dir: "multiple_topology_resources_2", hostNetworkDiffs: 46},
	{dir: "multiple_topology_resources_3"},
	{dir: "multiple_topology_resources_4"},
	{dir: "netpol-analysis-example-minimal"},
	{dir: "netpol_named_port_test"},
	{dir: "netpol_named_port_test_2"},
	{dir: "new_online_boutique"},
	{dir: "new_online_boutique_synthesis"},
	{dir: "one_ingress_multiple_ports"},
	{dir: "one_ingress_multiple_services"},
	{dir: "online_boutique_workloads_no_ns"},
	{dir: "onlineboutique"},
	{dir: "onlineboutique_workloads"},
	{dir: "semanticDiff-different-topologies-policy-a"},
	{dir: "semanticDiff-different-topologies-policy-a-with-ipblock"},
	{dir: "semanticDiff-different-topologies-policy-b"},
	{dir: "semanticDiff-different-topologies-policy-b-with-ipblock"},
	{dir: "semanticDiff-orig-topologies-no-policy"},
	{dir: "semanticDiff-orig-topologies-policy-a"},
	{dir: "semanticDiff-same-topologies-new1", hostNetworkDiffs: 4},
	{dir: "semanticDiff-same-topologies-new1a", hostNetworkDiffs: 5},
	{dir: "semanticDiff-same-topologies-new2", hostNetworkDiffs: 3},
	{dir: "semanticDiff-same-topologies-new3", hostNetworkDiffs: 5},
	{dir: "semanticDiff-same-topologies-old1", hostNetworkDiffs: 4},
	{dir: "semanticDiff-same-topologies-old2", hostNetworkDiffs: 3},
	{dir: "semanticDiff-same-topologies-old3", hostNetworkDiffs: 5},
	{dir: "test_with_named_ports"},
	{dir: "test_with_named_ports_changed_netpol"},
	{dir: "test_with_named_ports_changed_netpol_2"},
	{dir: "with_end_port_example"},
	{dir: "with_end_port_example_new"},
}

var corpusProtocols = []corev1.Protocol{corev1.ProtocolSCTP, corev1.ProtocolTCP, corev1.ProtocolUDP}

// portCuts returns the starts of the port intervals on which every verdict
// is constant: policy ports and ranges and every declared container port
// (named ports resolve to those).
func portCuts(ms *manifestSet) []int32 {
	set := map[int32]bool{1: true, 65536: true}
	add := func(a, b int32) { set[a] = true; set[b+1] = true }
	for _, p := range ms.policies {
		var ports []intstr.IntOrString
		var ends []*int32
		for _, r := range p.Spec.Ingress {
			for _, po := range r.Ports {
				if po.Port != nil {
					ports, ends = append(ports, *po.Port), append(ends, po.EndPort)
				}
			}
		}
		for _, r := range p.Spec.Egress {
			for _, po := range r.Ports {
				if po.Port != nil {
					ports, ends = append(ports, *po.Port), append(ends, po.EndPort)
				}
			}
		}
		for i, po := range ports {
			if po.Type == intstr.Int {
				e := po.IntVal
				if ends[i] != nil && *ends[i] > e {
					e = *ends[i]
				}
				add(po.IntVal, e)
			}
		}
	}
	for _, p := range ms.pods {
		for _, cp := range p.Ports {
			add(cp.Port, cp.Port)
		}
	}
	var out []int32
	for c := range set {
		if c >= 1 && c <= 65536 {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func v4u(a netip.Addr) uint64 { b := a.As4(); return uint64(binary.BigEndian.Uint32(b[:])) }

func u2v4(u uint64) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(u))
	return netip.AddrFrom4(b)
}

// ipCuts returns the starts of the IPv4 ranges every ipBlock boundary splits
// the address space into.
func ipCuts(ms *manifestSet) []uint64 {
	set := map[uint64]bool{0: true, 1 << 32: true}
	add := func(s string) {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return
		}
		p = p.Masked()
		start := v4u(p.Addr())
		set[start] = true
		set[start+(uint64(1)<<(32-p.Bits()))] = true
	}
	for _, p := range ms.policies {
		for _, r := range p.Spec.Ingress {
			for _, pe := range r.From {
				if pe.IPBlock != nil {
					add(pe.IPBlock.CIDR)
					for _, e := range pe.IPBlock.Except {
						add(e)
					}
				}
			}
		}
		for _, r := range p.Spec.Egress {
			for _, pe := range r.To {
				if pe.IPBlock != nil {
					add(pe.IPBlock.CIDR)
					for _, e := range pe.IPBlock.Except {
						add(e)
					}
				}
			}
		}
	}
	var out []uint64
	for c := range set {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// connSet renders the allowed connections in the listing's format.
func connSet(t *testing.T, x *Index, src, dst Endpoint, cuts []int32) string {
	var parts []string
	full := 0
	for _, proto := range corpusProtocols {
		var ranges []string
		lo := int32(-1)
		for i := 0; i+1 < len(cuts); i++ {
			f := Flow{Src: src, Dst: dst, Protocol: proto, Port: cuts[i]}
			ok, err := x.Allowed(f)
			if err != nil {
				t.Fatal(err)
			}
			v := struct{ Allowed bool }{ok}
			if v.Allowed && lo < 0 {
				lo = cuts[i]
			}
			last := i+2 == len(cuts)
			if lo >= 0 && (!v.Allowed || last) {
				hi := cuts[i] - 1
				if v.Allowed {
					hi = cuts[i+1] - 1
				}
				if lo == hi {
					ranges = append(ranges, strconv.Itoa(int(lo)))
				} else {
					ranges = append(ranges, fmt.Sprintf("%d-%d", lo, hi))
				}
				lo = -1
			}
		}
		if len(ranges) == 1 && ranges[0] == "1-65535" {
			full++
		}
		if len(ranges) > 0 {
			parts = append(parts, string(proto)+" "+strings.Join(ranges, ","))
		}
	}
	if full == len(corpusProtocols) {
		return "All Connections"
	}
	return strings.Join(parts, ",")
}

func readListing(t *testing.T, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// parseExternal parses "a-b[External]".
func parseExternal(s string) (lo, hi uint64, ok bool) {
	r, found := strings.CutSuffix(s, "[External]")
	if !found {
		return 0, 0, false
	}
	a, b, _ := strings.Cut(r, "-")
	la, err1 := netip.ParseAddr(a)
	lb, err2 := netip.ParseAddr(b)
	if err1 != nil || err2 != nil || !la.Is4() {
		return 0, 0, false
	}
	return v4u(la), v4u(lb), true
}

// corpusListing evaluates every pair of a scenario. With asAnalyzer the
// host-network flag of every pod is cleared, because netpol-analyzer treats
// host-network pods as ordinary pods.
func corpusListing(t *testing.T, ms *manifestSet, asAnalyzer bool) (map[string]string, []uint64) {
	pods := ms.pods
	if asAnalyzer {
		pods = make([]Pod, len(ms.pods))
		copy(pods, ms.pods)
		for i := range pods {
			pods[i].HostNetwork = false
		}
	}
	x, errs := Build(Options{IPBlockMatchesPods: false}, ms.namespaces, pods, ms.policies)
	for _, e := range errs {
		t.Errorf("policy error: %v", e)
	}
	cuts := portCuts(ms)
	ipc := ipCuts(ms)
	got := map[string]string{}
	for _, s := range ms.pods {
		sp := podEP(s.Namespace, s.Name)
		for _, d := range ms.pods {
			if s.Namespace == d.Namespace && s.Name == d.Name {
				continue
			}
			if c := connSet(t, x, sp, podEP(d.Namespace, d.Name), cuts); c != "" {
				got[ms.peer[s.Namespace+"/"+s.Name]+" => "+ms.peer[d.Namespace+"/"+d.Name]] = c
			}
		}
		for i := 0; i+1 < len(ipc); i++ {
			ext := Endpoint{IP: u2v4(ipc[i])}
			if c := connSet(t, x, ext, sp, cuts); c != "" {
				got[ext.IP.String()+" => "+ms.peer[s.Namespace+"/"+s.Name]] = c
			}
			if c := connSet(t, x, sp, ext, cuts); c != "" {
				got[ms.peer[s.Namespace+"/"+s.Name]+" => "+ext.IP.String()] = c
			}
		}
	}
	return got, ipc
}

func diffKeys(got, want map[string]string) []string {
	var keys []string
	for k := range got {
		if got[k] != want[k] {
			keys = append(keys, k)
		}
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func TestCorpusRegression(t *testing.T) {
	for _, sc := range corpusScenarios {
		t.Run(sc.dir, func(t *testing.T) {
			ms, err := loadManifests(filepath.Join(corpusDir, "tests", sc.dir))
			if err != nil {
				t.Fatal(err)
			}
			got, ipc := corpusListing(t, ms, true)
			want := map[string]string{}
			for _, l := range readListing(t, filepath.Join(corpusDir, "expected", sc.dir+"_connlist_output.txt")) {
				pair, conns, ok := strings.Cut(l, " : ")
				if !ok {
					t.Fatalf("bad listing line %q", l)
				}
				src, dst, _ := strings.Cut(pair, " => ")
				if strings.Contains(src, "{ingress-controller}") {
					continue // Ingress/Route analysis is outside NetworkPolicy
				}
				srcLo, srcHi, srcExt := parseExternal(src)
				dstLo, dstHi, dstExt := parseExternal(dst)
				switch {
				case srcExt:
					for i := 0; i+1 < len(ipc); i++ {
						if ipc[i] >= srcLo && ipc[i] <= srcHi {
							want[u2v4(ipc[i]).String()+" => "+dst] = conns
						}
					}
				case dstExt:
					for i := 0; i+1 < len(ipc); i++ {
						if ipc[i] >= dstLo && ipc[i] <= dstHi {
							want[src+" => "+u2v4(ipc[i]).String()] = conns
						}
					}
				default:
					want[pair] = conns
				}
			}
			var bad []string
			for _, k := range diffKeys(got, want) {
				bad = append(bad, fmt.Sprintf("%s: got %q want %q", k, got[k], want[k]))
			}
			if len(bad) > 0 {
				t.Errorf("%d differences (of %d listed pairs):\n%s", len(bad), len(want), strings.Join(bad, "\n"))
			}

			// Our own semantics for host-network pods: they are never
			// isolated and only ipBlocks match them. Every pair that then
			// differs must involve such a pod, and their number is recorded.
			hostNet := map[string]bool{}
			for _, p := range ms.pods {
				if p.HostNetwork {
					hostNet[ms.peer[p.Namespace+"/"+p.Name]] = true
				}
			}
			ours, _ := corpusListing(t, ms, false)
			n := 0
			for _, k := range diffKeys(ours, got) {
				src, dst, _ := strings.Cut(k, " => ")
				if !hostNet[src] && !hostNet[dst] {
					t.Errorf("%s differs without a host-network pod: %q vs %q", k, ours[k], got[k])
				}
				n++
			}
			if n != sc.hostNetworkDiffs {
				t.Errorf("%d pairs differ because of host-network pods, recorded %d", n, sc.hostNetworkDiffs)
			}
		})
	}
}
