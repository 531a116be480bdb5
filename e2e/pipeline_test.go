//go:build linux

package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/hostctx"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/livetest"
	"github.com/network-correlator/network-correlator/internal/probe"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// pipeline is the product's chain without the collector: kernel probes ->
// correlator -> diagnoses, recording what concerns one lab subnet.
type pipeline struct {
	run *livetest.Run
}

// startPipeline starts the chain on lab l; opts adjust the correlator's
// configuration (e.g. a cluster context).
func startPipeline(t *testing.T, l *lab.Lab, opts ...func(*correlate.Config)) *pipeline {
	t.Helper()
	return startPipelineKeeping(t, l, nil, opts...)
}

// startPipelineKeeping is startPipeline feeding the correlator (and the
// record) only the signals keep accepts, nil: all. Keeping one namespace's
// signals stands for a node that does not see its peer's kernel.
func startPipelineKeeping(t *testing.T, l *lab.Lab, keep func(*signal.Signal) bool, opts ...func(*correlate.Config)) *pipeline {
	t.Helper()
	cfg := correlate.Config{
		SYNTimeout: time.Second,
		Window:     time.Minute,
		MaxFlows:   100000,
		NetnsNamer: hostctx.NewNetnsNames(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	concerns := func(f signal.Flow) bool { return livetest.InLab(l, f.Src) || livetest.InLab(l, f.Dst) }
	return &pipeline{run: livetest.Start(t, livetest.Options{
		Probe: probe.Config{RingBufferBytes: 4 << 20, ConnectErrors: true},
		// Inside the node namespace, as the collector runs in a node's
		// host namespace: the ICMP parser then watches the hosts' veth ports.
		OpenIn: l.Node(),
		Engine: cfg,
		// The correlator sees all the host's signals (a Service VIP is not
		// on the lab subnet); the record keeps the lab's, including
		// neighbour entries of lab addresses, which carry no flow.
		Feed:   keep,
		Record: func(s *signal.Signal) bool { return concerns(s.Flow) || livetest.InLab(l, s.NeighAddr) },
		Keep:   func(d diagnosis.Diagnosis) bool { return concerns(d.Flow) },
		Tick:   100 * time.Millisecond,
	})}
}

// waitFor returns the first diagnosis matching pred, or fails after timeout.
func (p *pipeline) waitFor(t *testing.T, timeout time.Duration, what string, pred func(diagnosis.Diagnosis) bool) diagnosis.Diagnosis {
	t.Helper()
	return p.run.WaitFor(t, timeout, what, pred)
}

func (p *pipeline) dump() string { return p.run.Dump() }

func (p *pipeline) snapshot() ([]signal.Signal, []diagnosis.Diagnosis) { return p.run.Snapshot() }

func hasEvidence(d diagnosis.Diagnosis, source, fact string) bool {
	for _, e := range d.Evidence {
		if e.Source == source && strings.Contains(e.Fact, fact) {
			return true
		}
	}
	return false
}

// needTool skips the test, naming the tool, when a scenario needs a command
// (iptables, nft) that is not installed; "" needs none.
func needTool(t *testing.T, name string) {
	t.Helper()
	if name == "" {
		return
	}
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("skipping: %s is not installed", name)
	}
}
