package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import (
	"go.uber.org/zap"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/probe"
)

// This file (with wiring_linux.go and wiring_other.go) is the only one that
// knows the kernel probes, the host context and the engine.

func defaultDeps() deps {
	return deps{openSource: openSource, newCorrelator: newCorrelator, startCluster: startCluster}
}

// openSource opens the configured source: the eBPF probes, whose load errors
// (no BTF, missing capabilities, unknown drop reason) say what is missing and
// how to grant it, or a recording.
func openSource(cfg *Config, logger *zap.Logger) (signalSource, error) {
	if cfg.Source == SourceReplay {
		return openReplay(cfg.ReplayFile, logger)
	}
	p, err := probe.Open(probe.Config{RingBufferBytes: cfg.BufferSize, DropReasons: cfg.DropReasons, Interfaces: cfg.Interfaces, ConnectErrors: cfg.ConnectErrors})
	if err != nil {
		return nil, err
	}
	// Optional hooks (the ICMP parser, connect() errors) that could not
	// attach leave their patterns blind, not the receiver stopped.
	for _, e := range p.Unavailable() {
		logger.Warn("networkcorrelator: a probe is unavailable; its failures will not be diagnosed", zap.Error(e))
	}
	return p, nil
}

func newCorrelator(cfg *Config, cluster pattern.Cluster, emit func(diagnosis.Diagnosis)) (correlator, error) {
	ecfg := correlate.Config{
		SYNTimeout:     cfg.SYNTimeout,
		Window:         cfg.CorrelationWindow,
		MaxFlows:       cfg.MaxFlows,
		ARPTimeout:     cfg.ARPTimeout,
		MinRetransmits: cfg.MinRetransmits,
		LifecycleWait:  cfg.LifecycleWait,
		Cluster:        cluster,
	}
	// A recording's namespaces are not this host's: only live signals are
	// named from /proc and /run/netns, and only they get host context
	// (neighbours, routes, listeners, netfilter rules), asked when a
	// diagnosis is built.
	if cfg.Source == SourceKernel {
		ecfg.NetnsNamer, ecfg.Host, ecfg.Rules = hostContext()
		// The server-overload patterns decide on the host's own state
		// (accept queues, conntrack tables), asked at a failing connect's
		// first overdue SYN retransmits.
		correlate.WithOverload(&ecfg, overloadContext())
	}
	e, err := correlate.New(ecfg, emit)
	if err != nil {
		return nil, err
	}
	return engine{e}, nil
}

// engine adapts *correlate.Engine to the receiver's correlator.
type engine struct{ *correlate.Engine }

func (e engine) Stats() correlatorStats {
	s := e.Engine.Stats()
	return correlatorStats{FlowsTracked: s.FlowsTracked, Evicted: s.Evicted, AggregateUpdates: s.AggregateUpdates}
}
