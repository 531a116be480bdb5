//go:build linux

package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import (
	"net/netip"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/hostctx"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// hostContext names namespaces as the user knows them (`ip netns` names,
// "host", the process living in it) and answers the correlator's
// questions about them over netlink: neighbours, routes, listeners and
// the netfilter rule behind a drop. The namer is shared so rules name the
// same namespaces.
func hostContext() (correlate.NetnsNamer, correlate.HostContext, correlate.RuleAttributor) {
	names := hostctx.NewNetnsNames()
	return names, hostFacts{hostctx.NewNetlink()}, ruleFacts{hostctx.NewNetfilter(names)}
}

// overloadContext finds full accept queues and conntrack tables
// (sock_diag, /proc, ctnetlink in the namespace concerned).
func overloadContext() pattern.OverloadContext { return hostctx.NewOverload() }

// hostFacts adapts hostctx.Host to the correlator's HostContext.
type hostFacts struct{ h hostctx.Host }

func (a hostFacts) Neighbor(ns uint32, ip netip.Addr) (pattern.NeighborFact, error) {
	n, err := a.h.Neighbor(ns, ip)
	if err != nil {
		return pattern.NeighborFact{}, err
	}
	f := pattern.NeighborFact{IP: n.IP, State: n.State, Dev: n.Dev}
	if len(n.LLAddr) > 0 {
		f.LLAddr = n.LLAddr.String()
	}
	return f, nil
}

func (a hostFacts) Route(ns uint32, dst netip.Addr) (pattern.RouteFact, error) {
	r, err := a.h.Route(ns, dst)
	if err != nil {
		return pattern.RouteFact{}, err
	}
	f := pattern.RouteFact{Dst: r.Dst, Type: r.Type, Prefix: r.Prefix, Table: r.Table, Gateway: r.Gateway, Dev: r.Dev}
	if r.Err != nil {
		f.Err = r.Err.Error()
	}
	return f, nil
}

func (a hostFacts) Listeners(ns uint32, port uint16) ([]pattern.ListenerFact, error) {
	ls, err := a.h.Listeners(ns, port)
	if err != nil {
		return nil, err
	}
	out := make([]pattern.ListenerFact, len(ls))
	for i, l := range ls {
		out[i] = pattern.ListenerFact{Addr: l.Addr, Backlog: l.Backlog, MaxBacklog: l.MaxBacklog}
	}
	return out, nil
}

// ruleFacts adapts hostctx.Netfilter to the correlator's RuleAttributor.
type ruleFacts struct{ nf *hostctx.Netfilter }

func (a ruleFacts) Attribute(drop *signal.Signal) (*pattern.RuleFact, error) {
	m, err := a.nf.Attribute(hostctx.PacketFromSignal(*drop))
	if err != nil {
		return nil, err
	}
	return &pattern.RuleFact{Netns: m.Netns, Family: m.Family, Table: m.Table, Chain: m.Chain, Handle: m.Handle,
		Text: m.Text, Iptables: m.Iptables, Verdict: m.Verdict, Exact: m.Exact, Alternatives: m.Alternatives}, nil
}

var (
	_ correlate.HostContext    = hostFacts{}
	_ correlate.RuleAttributor = ruleFacts{}
)
