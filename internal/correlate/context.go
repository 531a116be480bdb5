package correlate

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// claimNeigh marks the neighbour failures of addr shown to a connection
// whose diagnosis named it, so the failure's own pseudo-connection folds
// into that diagnosis instead of counting again.
func (e *Engine) claimNeigh(ev *pattern.Evidence, addr netip.Addr) {
	for i := range ev.Neigh {
		if ev.Neigh[i].NeighAddr == addr {
			e.neighs[e.neighIdx[i]].claimed = true
		}
	}
}

// neighClaimed reports whether the failure behind pseudo-connection f was
// named by a connection's diagnosis.
func (e *Engine) neighClaimed(f *flowState) bool {
	for j := 0; j < e.neighN; j++ {
		x := &e.neighs[(e.neighHd+j)%maxNeighs]
		if x.claimed && x.s.NeighAddr == f.flow.Dst && (x.s.NetnsCookie == f.key.ns ||
			x.s.NetnsCookie == 0 && uint64(x.s.NetnsInode) == f.key.ns) && !x.s.Time.After(f.last) {
			return true
		}
	}
	return false
}

// resolve looks up the host context the verdict needs. It runs once per
// new diagnosis: aggregated repeats reuse the first one's facts.
func (e *Engine) resolve(ev *pattern.Evidence, v pattern.Verdict, at time.Time) *pattern.Facts {
	if v.Need == 0 || e.cfg.Host == nil && e.cfg.Rules == nil {
		return nil
	}
	fs := &pattern.Facts{At: at}
	ns := v.Where.Inode
	if ns == 0 {
		ns = ev.Client.Inode
	}
	miss := func(what string, err error) {
		fs.Missing = append(fs.Missing, fmt.Sprintf("%s: %v", what, err))
	}
	if v.Need&pattern.NeedRule != 0 && e.cfg.Rules != nil {
		if d := ruleDrop(ev, v.Where); d != nil {
			if r, err := e.cfg.Rules.Attribute(d); err != nil {
				miss("netfilter rule", err)
			} else {
				fs.Rule = r
			}
		}
	}
	if e.cfg.Host != nil && ns != 0 {
		if v.Need&pattern.NeedRoute != 0 {
			if r, err := e.cfg.Host.Route(ns, ev.Flow.Dst); err != nil {
				miss("route", err)
			} else {
				fs.Route = &r
			}
		}
		if v.Need&pattern.NeedNeighbor != 0 {
			ip := ev.Flow.Dst
			if v.Subject.IsValid() {
				ip = v.Subject.Addr()
			}
			if n, err := e.cfg.Host.Neighbor(ns, ip); err != nil {
				miss("neighbour entry", err)
			} else {
				fs.Neighbor = &n
			}
		}
		if v.Need&pattern.NeedListeners != 0 {
			port := ev.Flow.DstPort
			if v.Subject.IsValid() && v.Subject.Port() != 0 {
				port = v.Subject.Port()
			}
			if ls, err := e.cfg.Host.Listeners(ns, port); err != nil {
				miss("listeners", err)
			} else {
				fs.Listeners, fs.Listened = ls, true
			}
		}
	}
	return fs
}

// ruleDrop is the netfilter drop to attribute: the first in the netns of
// the cause, else the first.
func ruleDrop(ev *pattern.Evidence, where pattern.Netns) *signal.Signal {
	var first *signal.Signal
	for i := range ev.Packet {
		s := &ev.Packet[i]
		if s.Kind != signal.KindDrop || s.DropReason != "NETFILTER_DROP" {
			continue
		}
		if where.Known() && pattern.NetnsOf(s).SameAs(where) {
			return s
		}
		if first == nil {
			first = s
		}
	}
	return first
}

// WithOverload gives the library's server-overload patterns their host
// context (pattern.AcceptQueueFull, pattern.ConntrackTableFull: they decide
// on it, so it is asked at their decision points, not after the ranking):
// cfg.Patterns becomes the library built from cfg's settings with o.
func WithOverload(cfg *Config, o pattern.OverloadContext) {
	opts := cfg.libraryOptions()
	opts.Overload = o
	cfg.Patterns = pattern.Library(opts)
}

// libraryOptions are the pattern library's settings taken from cfg.
func (c *Config) libraryOptions() pattern.Options {
	return pattern.Options{SYNTimeout: c.SYNTimeout, ARPTimeout: c.ARPTimeout, MinRetransmits: c.MinRetransmits,
		Cluster: c.Cluster, LifecycleWait: c.LifecycleWait, LifecycleTolerance: c.LifecycleTolerance}
}
