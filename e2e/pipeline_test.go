//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/hostctx"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/probe"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// pipeline is the product's chain without the collector: kernel probes ->
// correlator -> diagnoses, recording what concerns one lab subnet.
type pipeline struct {
	subnet, subnet6 netip.Prefix

	mu      sync.Mutex
	signals []signal.Signal
	diags   []diagnosis.Diagnosis
	changed chan struct{}
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
	if err := probe.Check(); err != nil {
		t.Skipf("skipping: kernel probes unavailable: %v", err)
	}
	// Opened inside the node namespace, as the collector runs in a node's
	// host namespace: the ICMP parser then watches the hosts' veth ports.
	var pr *probe.Probe
	if err := l.Node().Do(func() (err error) {
		pr, err = probe.Open(probe.Config{RingBufferBytes: 4 << 20, ConnectErrors: true})
		return err
	}); err != nil {
		t.Fatalf("open probes: %v", err)
	}
	for _, e := range pr.Unavailable() {
		t.Logf("probe unavailable: %v", e)
	}
	p := &pipeline{subnet: l.Subnet(), subnet6: l.Subnet6(), changed: make(chan struct{}, 1)}
	cfg := correlate.Config{
		SYNTimeout: time.Second,
		Window:     time.Minute,
		MaxFlows:   100000,
		NetnsNamer: hostctx.NewNetnsNames(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	eng, err := correlate.New(cfg, func(d diagnosis.Diagnosis) {
		if err := d.Validate(); err != nil {
			t.Errorf("invalid diagnosis emitted: %v", err)
		}
		if !p.concerns(d.Flow) {
			return
		}
		p.mu.Lock()
		p.diags = append(p.diags, d)
		p.mu.Unlock()
		p.notify()
	})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan signal.Signal, 4096)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(sigs)
		if err := pr.Run(ctx, func(s signal.Signal) { sigs <- s }); err != nil && ctx.Err() == nil {
			t.Errorf("probe run: %v", err)
		}
	}()
	go func() { // the engine is single-goroutine: signals and ticks both go through here
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case s, ok := <-sigs:
				if !ok {
					return
				}
				if keep != nil && !keep(&s) {
					continue
				}
				if p.concernsSignal(s) {
					p.mu.Lock()
					p.signals = append(p.signals, s)
					p.mu.Unlock()
				}
				eng.Observe(s)
			case now := <-tick.C:
				eng.Tick(now)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := pr.Close(); err != nil {
			t.Errorf("close probes: %v", err)
		}
		wg.Wait()
		if lost := pr.Lost(); lost > 0 {
			t.Logf("probe lost %d records", lost)
		}
	})
	return p
}

func (p *pipeline) concerns(f signal.Flow) bool {
	return p.inLab(f.Src) || p.inLab(f.Dst)
}

func (p *pipeline) inLab(a netip.Addr) bool {
	return p.subnet.Contains(a) || p.subnet6.Contains(a)
}

// concernsSignal also keeps signals about the lab that carry no flow: a
// neighbour entry of a lab address.
func (p *pipeline) concernsSignal(s signal.Signal) bool {
	return p.concerns(s.Flow) || p.inLab(s.NeighAddr)
}

func (p *pipeline) notify() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// waitFor returns the first diagnosis matching pred, or fails after timeout.
func (p *pipeline) waitFor(t *testing.T, timeout time.Duration, what string, pred func(diagnosis.Diagnosis) bool) diagnosis.Diagnosis {
	t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		for _, d := range p.diags {
			if pred(d) {
				p.mu.Unlock()
				return d
			}
		}
		p.mu.Unlock()
		select {
		case <-p.changed:
		case <-deadline:
			t.Fatalf("no %s diagnosis within %s; got:\n%s", what, timeout, p.dump())
		}
	}
}

func (p *pipeline) dump() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, d := range p.diags {
		b.WriteString("  diagnosis " + string(d.Pattern) + ": " + d.Summary + "\n")
	}
	for _, s := range p.signals {
		fmt.Fprintf(&b, "  signal %s %s %s %s %s err=%d neigh=%s/%s\n", s.Time.Format("15:04:05.000"), s.Kind, s.Flow, s.DropReason, s.DropLocation, s.Err, s.NeighAddr, s.NeighState)
	}
	return b.String()
}

func (p *pipeline) snapshot() ([]signal.Signal, []diagnosis.Diagnosis) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]signal.Signal(nil), p.signals...), append([]diagnosis.Diagnosis(nil), p.diags...)
}

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
