package pattern_test

import (
	"errors"
	"net/netip"

	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// fakeHost and fakeRules stand in for the host context providers; they
// count calls so tests can check lookups happen per diagnosis, not per signal.
type fakeHost struct {
	route                                  pattern.RouteFact
	neigh                                  *pattern.NeighborFact
	listeners                              []pattern.ListenerFact
	routeCalls, neighCalls, listenersCalls int
}

func (h *fakeHost) Neighbor(ns uint32, ip netip.Addr) (pattern.NeighborFact, error) {
	h.neighCalls++
	if h.neigh == nil {
		return pattern.NeighborFact{}, errors.New("not found")
	}
	return *h.neigh, nil
}

func (h *fakeHost) Route(ns uint32, dst netip.Addr) (pattern.RouteFact, error) {
	h.routeCalls++
	r := h.route
	r.Dst = dst
	return r, nil
}

func (h *fakeHost) Listeners(ns uint32, port uint16) ([]pattern.ListenerFact, error) {
	h.listenersCalls++
	return h.listeners, nil
}

type fakeRules struct {
	rule  pattern.RuleFact
	calls int
	last  signal.Signal
}

func (r *fakeRules) Attribute(drop *signal.Signal) (*pattern.RuleFact, error) {
	r.calls++
	r.last = *drop
	m := r.rule
	return &m, nil
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
