//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

// A container killed (OOM, crash) in a pod whose network namespace stays:
// its kernel closes its sockets, and the client sees ECONNRESET or EPIPE,
// exactly as after an application's own abort. With the kubelet's report
// of the termination (restartCount+1, lastState.terminated) a second
// later, peer_lost_state names the pod, the container and the reason
// within the wait; without it, nothing is diagnosed.

// killIO is how the killed server's kernel reaches the client, and what
// the client does to meet it.
type killIO struct {
	name string
	// before: what the client does before the kill.
	before func(t *testing.T, c net.Conn)
	// after: what the client does after it; returns the error it got.
	after   func(c net.Conn) error
	file    string   // replay fixture written with -record
	reasons []string // the kill's RST reason on the server's side, one of
}

var killIOs = []killIO{
	{
		// The client's request is unread when the process dies: the kernel
		// closes the socket with a RST.
		name: "unread request, RST",
		before: func(t *testing.T, c net.Conn) {
			if _, err := c.Write([]byte("GET /slow")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // in the server's receive queue
		},
		after: func(c net.Conn) error {
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			_, err := c.Read(make([]byte, 16))
			return err
		},
		file: "container_kill_unread", reasons: []string{"TCP_ABORT_ON_CLOSE"},
	},
	{
		// Nothing unread: the kernel sends a FIN; the client's next request
		// meets the orphan socket, which answers with a RST.
		name:   "idle, FIN then RST to the next request",
		before: func(*testing.T, net.Conn) {},
		after: func(c net.Conn) error {
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			time.Sleep(50 * time.Millisecond) // the FIN arrives
			if _, err := c.Write([]byte("GET /next")); err != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond) // the orphan's RST arrives
			_, err := c.Write([]byte("GET /next"))
			return err
		},
		file: "container_kill_fin", reasons: []string{"TCP_TIMEWAIT_SOCKET", "TCP_ABORT_ON_DATA"},
	},
}

func TestContainerKillResetsConnections(t *testing.T) {
	const port = 8090
	const backend = "backend-7d4b9c-k1ll3"
	c := startCluster(t) // one API server for the subtests, a namespace each
	i := 0
	for _, reported := range []bool{true, false} {
		for _, kio := range killIOs {
			name := kio.name
			if !reported {
				name += ", not reported"
			}
			i++
			t.Run(name, func(t *testing.T) {
				l := lab.New(t)
				client := l.MustAddHost(t, "client")
				server := l.MustAddHost(t, "server")
				front, prod := c.namespace(t, fmt.Sprint("kfront", i)), c.namespace(t, fmt.Sprint("kprod", i))
				c.pod(t, front, "web-5d8f7c9b4-x2x7k", client.IP, webLabels, 9000)
				c.pod(t, prod, backend, server.IP, map[string]string{"app": "backend", "pod-template-hash": "7d4b9c"}, port)
				c.setContainer(t, prod, backend, 0, nil)

				p := startPipeline(t, l, func(cfg *correlate.Config) { cfg.Cluster = c.ctx })
				conn, s := connected(t, client, server, port)
				t.Cleanup(func() { abortClose(conn) })
				kio.before(t, conn)

				// The kill: the process's sockets are closed by its kernel
				// (with unread data: a RST; else a FIN); the namespace stays.
				killed := time.Now()
				_ = s.Close()
				err := kio.after(conn)
				if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
					t.Fatalf("client got %v, want ECONNRESET or EPIPE", err)
				}
				isOurs := func(d diagnosis.Diagnosis) bool {
					return d.Pattern == diagnosis.PatternPeerLostState && d.Flow.Dst == server.IP && d.Flow.DstPort == port
				}
				wait := pattern.DefaultLifecycleWait
				if !reported {
					time.Sleep(wait + time.Second)
					sigs, ds := p.snapshot()
					for _, d := range ds {
						if isOurs(d) {
							t.Errorf("diagnosed without the cluster's report: %s%s", d.Summary, signalsOf(sigs, d))
						}
					}
					return
				}
				// The kubelet reports it a second later.
				time.Sleep(time.Until(killed.Add(time.Second)))
				c.setContainer(t, prod, backend, 1, &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137,
					StartedAt: metav1.NewTime(killed.Add(-time.Minute)), FinishedAt: metav1.NewTime(killed)})
				d := p.waitFor(t, time.Until(killed.Add(wait+time.Second)), "peer_lost_state", isOurs)
				took := time.Since(killed)
				logDiagnosis(t, d, killed)
				if took > wait+500*time.Millisecond {
					t.Errorf("diagnosed %s after the kill, want within the wait (%s)", took, wait)
				}
				if !strings.Contains(d.Key, "/"+pattern.CauseContainerTerminated+"/") {
					t.Errorf("key %s, want cause %s", d.Key, pattern.CauseContainerTerminated)
				}
				want := fmt.Sprintf("connection to %s:%d reset: container app of pod %s/%s was OOMKilled (exit 137) at ", server.IP, port, prod, backend)
				if !strings.HasPrefix(d.Summary, want) || !strings.HasSuffix(d.Summary, " and its connections were reset") {
					t.Errorf("summary %q, want %q... and its connections were reset", d.Summary, want)
				}
				if !strings.Contains(d.Resolution, "Container app was killed for memory (OOM)") ||
					!strings.Contains(d.Resolution, "preStop") || !strings.Contains(d.Resolution, "retry idempotent requests") {
					t.Errorf("resolution: %s", d.Resolution)
				}
				ev := c.waitLifecycle(t, server.IP, pattern.LifecycleRestarted)
				if e, ok := lifecycleEvidence(d, "restarted (restart 1)"); !ok || !e.Time.Equal(ev.Time) {
					t.Errorf("evidence lacks the termination at %s: %+v", ev.Time, d.Evidence)
				}
				saidOnce(t, d)
				if !slices.ContainsFunc(kio.reasons, func(r string) bool { return hasEvidence(d, "tcp:tcp_send_reset", r) }) {
					sigs, _ := p.snapshot()
					t.Errorf("evidence lacks the server kernel's RST (%v): %+v%s", kio.reasons, d.Evidence, signalsOf(sigs, d))
				}
				if !hasEvidence(d, "tcp:tcp_receive_reset", "") && !hasEvidence(d, "sock:inet_sock_set_state", "") {
					t.Errorf("evidence lacks the client's reset: %+v", d.Evidence)
				}
				if d.Destination.K8sNamespace != prod || d.Destination.K8sPod != backend {
					t.Errorf("destination = %+v, want pod %s/%s", d.Destination, prod, backend)
				}
				if d.Source.K8sPod != "web-5d8f7c9b4-x2x7k" {
					t.Errorf("source = %+v, want the client pod", d.Source)
				}
				abortClose(conn)
				time.Sleep(300 * time.Millisecond)
				recordSignals(t, p, kio.file, fmt.Sprintf("Recorded by e2e TestContainerKillResetsConnections -record (%s): the server\n"+
					"process's sockets closed by its kernel as at a container kill, the namespace kept. A pod's\n"+
					"container termination near the reset makes it peer_lost_state/container_terminated.", kio.name))
			})
		}
	}
}
