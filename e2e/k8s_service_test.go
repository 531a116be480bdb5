//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

const svcPort = 8080

// serviceLab: a client pod (Deployment web) in namespace front, a server
// host holding pod backend-0 (app=backend) in namespace prod, and Service
// prod/backend on a ClusterIP whose EndpointSlice the test writes, as the
// EndpointSlice controller would.
type serviceLab struct {
	l              *lab.Lab
	client, server *lab.Host
	c              *cluster
	front, prod    string
	vip            netip.Addr
}

// newServiceLab builds the lab in namespaces named with n, the Service on
// ClusterIP 10.96.77.n (in the API server's service range).
func newServiceLab(t *testing.T, c *cluster, n int) *serviceLab {
	t.Helper()
	needTool(t, "iptables")
	sl := &serviceLab{l: lab.New(t), c: c, vip: netip.AddrFrom4([4]byte{10, 96, 77, byte(n)})}
	sl.client = sl.l.MustAddHost(t, "client")
	sl.server = sl.l.MustAddHost(t, "server")
	sl.front, sl.prod = c.namespace(t, fmt.Sprint("front", n)), c.namespace(t, fmt.Sprint("prod", n))
	c.pod(t, sl.front, "web-5d8f7c9b4-x2x7k", sl.client.IP, webLabels, 9000)
	c.pod(t, sl.prod, "backend-0", sl.server.IP, map[string]string{"app": "backend"}, svcPort)
	_, err := c.client.CoreV1().Services(sl.prod).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "backend"},
		Spec: corev1.ServiceSpec{ClusterIP: sl.vip.String(), Selector: map[string]string{"app": "backend"},
			Ports: []corev1.ServicePort{{Name: "http", Port: svcPort, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sl
}

// endpoints writes EndpointSlice prod/backend-x7k2p listing the server with
// the given condition ("" lists no endpoint).
func (sl *serviceLab) endpoints(t *testing.T, condition string) {
	t.Helper()
	ready, term := condition == "ready", condition == "terminating"
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "backend-x7k2p", Labels: map[string]string{discoveryv1.LabelServiceName: "backend"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(svcPort))}},
	}
	if condition != "" {
		s.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{sl.server.IP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready, Terminating: &term},
			NodeName:   new("node-1"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: sl.prod, Name: "backend-0"}}}
	}
	api := sl.c.client.DiscoveryV1().EndpointSlices(sl.prod)
	ctx := context.Background()
	if old, err := api.Get(ctx, s.Name, metav1.GetOptions{}); err == nil {
		s.ResourceVersion = old.ResourceVersion
		_, err = api.Update(ctx, s, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	} else if _, err := api.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitService waits until the cluster context's view of addr satisfies ok.
func (sl *serviceLab) waitService(t *testing.T, addr netip.Addr, port uint16, what string, ok func(pattern.ServiceFact) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, found := sl.c.ctx.ServiceInfo(addr, port, time.Now(), false)
		if found && ok(f) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen by the cluster context in 10s (found %v: %+v)", what, found, f)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dial connects from the client through the pipeline and returns the first
// diagnosis of a connection to to.
func (sl *serviceLab) dial(t *testing.T, to netip.AddrPort, timeout time.Duration) diagnosis.Diagnosis {
	t.Helper()
	p := startPipeline(t, sl.l, func(cfg *correlate.Config) { cfg.Cluster = sl.c.ctx })
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		conn, err := sl.client.Dial(context.Background(), to, timeout)
		if conn != nil {
			conn.Close()
		}
		done <- err
	}()
	d := p.waitFor(t, timeout+2*time.Second, "a diagnosis", func(d diagnosis.Diagnosis) bool {
		return d.Flow.Dst == to.Addr() && d.Flow.DstPort == to.Port()
	})
	took := time.Since(start)
	if err := <-done; err == nil {
		t.Errorf("connect to %s succeeded", to)
	}
	t.Logf("after %s: %s: %s (%.2f)\n  details: %s\n  resolution: %s\n  key: %s\n  evidence: %+v",
		took.Round(time.Millisecond), d.Pattern, d.Summary, d.Confidence, d.Details, d.Resolution, d.Key, d.Evidence)
	return d
}

func (sl *serviceLab) checkClient(t *testing.T, d diagnosis.Diagnosis) {
	t.Helper()
	if d.Source.K8sNamespace != sl.front || d.Source.K8sPod != "web-5d8f7c9b4-x2x7k" || d.Source.K8sWorkload != "Deployment/web" ||
		d.Source.K8sNode != "node-1" {
		t.Errorf("source = %+v, want pod %s/web-5d8f7c9b4-x2x7k of Deployment/web on node-1", d.Source, sl.front)
	}
}

func mustContainAll(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q: %s", what, w, got)
		}
	}
}

// A connection to a ClusterIP whose Service has no ready endpoint, failing
// the ways dataplanes make it fail: kube-proxy's REJECT with
// icmp-port-unreachable in the node's forward path (pods) or in the
// client's own output path (host-network clients), and a DROP (SYNs time
// out). service_no_endpoints names the Service, its EndpointSlice state and
// the selector's pods, and outranks the kernel pattern.
func TestServiceNoEndpointsClusterIP(t *testing.T) {
	c := startCluster(t)
	tests := []struct {
		name, rival string
		rule        func(t *testing.T, sl *serviceLab)
		confidence  float64 // at least
		kernel      string  // in the details
	}{
		{"kube-proxy REJECT on the node", "icmp_error/port_unreachable", func(t *testing.T, sl *serviceLab) {
			sl.routeVIPThroughNode(t)
			sl.nodeRule(t, "REJECT", "--reject-with", "icmp-port-unreachable")
		}, 0.9, "The kernel confirms it: "},
		{"REJECT in the client's own output path", "icmp_error/local_reject", func(t *testing.T, sl *serviceLab) {
			if _, err := sl.client.Run("ip", "route", "add", sl.vip.String()+"/32", "dev", "eth0"); err != nil {
				t.Fatal(err)
			}
			if err := sl.client.Iptables("-A", "OUTPUT", "-d", sl.vip.String(), "-p", "tcp", "--dport", fmt.Sprint(svcPort),
				"-m", "comment", "--comment", sl.prod+"/backend:http has no endpoints",
				"-j", "REJECT", "--reject-with", "icmp-port-unreachable"); err != nil {
				t.Fatal(err)
			}
		}, 0.85, "The kernel confirms it: "},
		{"SYNs dropped on the node", "syn_dropped/netfilter_drop", func(t *testing.T, sl *serviceLab) {
			sl.routeVIPThroughNode(t)
			sl.nodeRule(t, "DROP")
		}, 0.7, "nothing on this node rejected it"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sl := newServiceLab(t, c, 10+i)
			sl.endpoints(t, "not ready")
			sl.waitService(t, sl.vip, svcPort, "the not-ready endpoint", func(f pattern.ServiceFact) bool { return f.NotReady == 1 })
			tt.rule(t, sl)
			d := sl.dial(t, netip.AddrPortFrom(sl.vip, svcPort), 3*time.Second)
			if d.Pattern != diagnosis.PatternServiceNoEndpoints || !strings.HasPrefix(d.Key, "service_no_endpoints/no_ready_endpoints/") {
				t.Fatalf("pattern %s key %s, want service_no_endpoints/no_ready_endpoints: %s", d.Pattern, d.Key, d.Summary)
			}
			svc := sl.prod + "/backend"
			mustContainAll(t, "summary", d.Summary, "Service "+svc, "has no ready endpoints")
			mustContainAll(t, "details", d.Details,
				sl.vip.String()+" is the ClusterIP of Service "+svc+", port http 8080/TCP",
				"EndpointSlices (backend-x7k2p) list 0 ready, 1 not ready and 0 terminating endpoints",
				"selector app=backend matches 1 pod(s) in namespace "+sl.prod+" (backend-0), 1 Running",
				tt.kernel, "also matched: "+tt.rival)
			mustContainAll(t, "resolution", d.Resolution, "readiness probe", "kubectl describe pod -n "+sl.prod+" backend-0")
			if !hasEvidence(d, "k8s:endpointslice", "Service "+svc+": Its EndpointSlices (backend-x7k2p) list 0 ready, 1 not ready") {
				t.Errorf("evidence lacks the EndpointSlice state: %+v", d.Evidence)
			}
			if d.Destination.K8sNamespace != sl.prod || d.Destination.K8sPod != "" {
				t.Errorf("destination = %+v, want the service's namespace %s and no pod", d.Destination, sl.prod)
			}
			sl.checkClient(t, d)
			if d.Confidence < tt.confidence {
				t.Errorf("confidence %.2f, want >= %.2f", d.Confidence, tt.confidence)
			}
		})
	}
}

// routeVIPThroughNode makes the node route the ClusterIP (as a node
// holding kube-proxy's rules would see pod traffic to it in forward).
func (sl *serviceLab) routeVIPThroughNode(t *testing.T) {
	t.Helper()
	node := sl.l.Node()
	enableForwarding(t, node, "br0")
	if _, err := node.Run("ip", "route", "add", sl.vip.String()+"/32", "dev", "br0"); err != nil {
		t.Fatal(err)
	}
}

func (sl *serviceLab) nodeRule(t *testing.T, target string, args ...string) {
	t.Helper()
	rule := append([]string{"-A", "FORWARD", "-d", sl.vip.String(), "-p", "tcp", "--dport", fmt.Sprint(svcPort),
		"-m", "comment", "--comment", sl.prod + "/backend:http has no endpoints", "-j", target}, args...)
	if err := sl.l.Node().Iptables(rule...); err != nil {
		t.Fatal(err)
	}
}

// A connection straight to a backend pod's address that is no longer a
// ready endpoint of its Service (nothing listens in the pod: refused):
// service_no_endpoints names the Service, the pod and since when. A
// backend that is still a ready endpoint is a near miss: connection_refused.
func TestServiceBackendNotReady(t *testing.T) {
	c := startCluster(t)
	tests := []struct {
		name, condition string // "" removes the endpoint
		pattern         diagnosis.Pattern
		cause, phrase   string
		since, change   string
	}{
		{"not ready", "not ready", diagnosis.PatternServiceNoEndpoints, pattern.CauseEndpointNotReady,
			"is a not-ready endpoint of Service", " since ", "went ready -> not ready in EndpointSlice backend-x7k2p"},
		{"removed", "", diagnosis.PatternServiceNoEndpoints, pattern.CauseEndpointRemoved,
			"is no longer an endpoint of Service", " (removed at ", "went ready -> removed in EndpointSlice backend-x7k2p"},
		{"ready (near miss)", "ready", diagnosis.PatternConnectionRefused, pattern.CauseNoListener, "", "", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sl := newServiceLab(t, c, 20+i)
			sl.endpoints(t, "ready")
			sl.waitService(t, sl.server.IP, svcPort, "the ready endpoint", func(f pattern.ServiceFact) bool { return f.State == pattern.EndpointReady })
			if tt.condition != "ready" {
				sl.endpoints(t, tt.condition)
				want := tt.condition
				if want == "" {
					want = pattern.EndpointRemoved
				}
				sl.waitService(t, sl.server.IP, svcPort, "the endpoint "+want, func(f pattern.ServiceFact) bool { return f.State == want })
			}
			d := sl.dial(t, netip.AddrPortFrom(sl.server.IP, svcPort), 3*time.Second)
			if d.Pattern != tt.pattern || !strings.HasPrefix(d.Key, string(tt.pattern)+"/"+tt.cause+"/") {
				t.Fatalf("pattern %s key %s, want %s/%s: %s", d.Pattern, d.Key, tt.pattern, tt.cause, d.Summary)
			}
			sl.checkClient(t, d)
			if d.Destination.K8sNamespace != sl.prod || d.Destination.K8sPod != "backend-0" {
				t.Errorf("destination = %+v, want pod %s/backend-0", d.Destination, sl.prod)
			}
			if tt.pattern != diagnosis.PatternServiceNoEndpoints {
				return
			}
			svc := sl.prod + "/backend"
			mustContainAll(t, "summary", d.Summary, sl.server.IP.String()+" (pod "+sl.prod+"/backend-0) "+tt.phrase+" "+svc+tt.since)
			mustContainAll(t, "details", d.Details, "EndpointSlice backend-x7k2p of Service "+svc,
				"Kernel view: connection to "+sl.server.IP.String()+":8080 refused: no process listens on port 8080",
				"also matched: connection_refused/no_listener")
			if !hasEvidence(d, "k8s:endpointslice", tt.change) {
				t.Errorf("evidence lacks the change %q: %+v", tt.change, d.Evidence)
			}
			mustContainAll(t, "resolution", d.Resolution, "Service "+svc+" has no ready endpoint at all")
			if d.Confidence < 0.9 {
				t.Errorf("confidence %.2f, want >= 0.90 (refusal seen on both ends, endpoint change seconds ago)", d.Confidence)
			}
		})
	}
}

// The API server goes down after the cluster context learnt the Service:
// the diagnosis still names it from the last known state, says the context
// is unavailable and lowers the confidence.
func TestServiceNoEndpointsAPIDown(t *testing.T) {
	c := startCluster(t)
	sl := newServiceLab(t, c, 30)
	sl.endpoints(t, "not ready")
	sl.waitService(t, sl.vip, svcPort, "the not-ready endpoint", func(f pattern.ServiceFact) bool { return f.NotReady == 1 })
	sl.routeVIPThroughNode(t)
	sl.nodeRule(t, "REJECT", "--reject-with", "icmp-port-unreachable")
	c.srv.StopAPIServer()
	deadline := time.Now().Add(10 * time.Second)
	for ok, _ := c.provider.Available(); ok; ok, _ = c.provider.Available() {
		if time.Now().After(deadline) {
			t.Fatal("the outage was not noticed in 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	d := sl.dial(t, netip.AddrPortFrom(sl.vip, svcPort), 3*time.Second)
	if d.Pattern != diagnosis.PatternServiceNoEndpoints {
		t.Fatalf("pattern %s, want service_no_endpoints from the last known state: %s", d.Pattern, d.Summary)
	}
	mustContainAll(t, "details", d.Details, "Service "+sl.prod+"/backend", "Kubernetes context is unavailable", "confidence is lowered")
	if !hasEvidence(d, "k8s", "cluster context unavailable: API server unreachable") {
		t.Errorf("no evidence saying the API server is unreachable: %+v", d.Evidence)
	}
	if d.Confidence > 0.8 {
		t.Errorf("confidence %.2f, want it lowered from the 0.95 of an available context", d.Confidence)
	}
	sl.checkClient(t, d)
}
