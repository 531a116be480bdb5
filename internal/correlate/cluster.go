package correlate

import (
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// policyCache is one connection's NetworkPolicy attribution.
type policyCache struct {
	flow signal.Flow
	fact pattern.PolicyFact
	ok   bool
}

// policyOf is the engine's pattern.PolicyChecker for the connection being
// evaluated: the attribution is asked of the cluster once per connection
// (and again only if its orientation is learnt later); the full analysis
// with the fix is never cached, it is asked when a diagnosis is built.
type policyOf struct {
	e *Engine
	f *flowState
}

func (p *policyOf) Policy(full bool) (pattern.PolicyFact, bool) {
	f := p.f
	if full {
		return p.e.cfg.Cluster.PolicyCheck(f.flow, true)
	}
	if f.pol == nil || f.pol.flow != f.flow {
		if f.pol == nil {
			f.pol = new(policyCache)
		}
		f.pol.flow = f.flow
		f.pol.fact, f.pol.ok = p.e.cfg.Cluster.PolicyCheck(f.flow, false)
		p.e.stats.PolicyChecks++
	}
	return f.pol.fact, f.pol.ok
}
