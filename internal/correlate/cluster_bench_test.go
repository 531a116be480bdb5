package correlate

import (
	"runtime"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// benchCluster answers at once: the benchmark measures what the engine
// adds (the policy pattern, one attribution per connection, annotation per
// diagnosis), not the evaluator (internal/netpol has its own benchmarks).
type benchCluster struct{ checks int }

func (*benchCluster) Available() (bool, string) { return true, "" }

func (*benchCluster) Annotate(e *diagnosis.Endpoint, _ time.Time) ([]diagnosis.Evidence, bool) {
	e.K8sNamespace, e.K8sPod = "prod", "pod-"+e.Addr
	return nil, true
}

func (c *benchCluster) PolicyCheck(f signal.Flow, full bool) (pattern.PolicyFact, bool) {
	c.checks++
	pf := pattern.PolicyFact{Denied: f.DstPort%2 == 0,
		Policy: diagnosis.PolicyRef{Namespace: "prod", Name: "deny", Direction: "Ingress", Rule: "spec.ingress[0]"}}
	if full {
		pf.Explain, pf.Fix = "blocked by NetworkPolicy `prod/deny`", "label the client"
	}
	return pf, true
}

// BenchmarkObserveWithCluster is BenchmarkObserve with a cluster context.
func BenchmarkObserveWithCluster(b *testing.B) {
	const span = 60 * time.Second
	benchOnce.Do(func() { benchSigs = mixedWorkload(span, 40000) })
	sigs := benchSigs
	cl := &benchCluster{}
	cfg := DefaultConfig()
	cfg.Cluster = cl
	e, err := New(cfg, func(diagnosis.Diagnosis) {})
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	replayLoop(b, e, sigs, span)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signals/s")
	st := e.Stats()
	b.ReportMetric(float64(st.PolicyChecks)/float64(b.N), "checks/op")
	if b.N > len(sigs) && st.PolicyChecks == 0 {
		b.Fatalf("no policy check: %+v", st)
	}
}
