package pattern

import "github.com/network-correlator/network-correlator/internal/signal"

// KindSet is a set of signal kinds: bit k holds Kind k.
type KindSet uint64

// KindsOf returns the set of the given kinds.
func KindsOf(ks ...signal.Kind) KindSet {
	var s KindSet
	for _, k := range ks {
		s |= 1 << (k & 63)
	}
	return s
}

// Has reports whether k is in the set. Kinds beyond the set's 64 bits are
// always in it, so an unknown future kind is never filtered out.
func (s KindSet) Has(k signal.Kind) bool { return k >= 64 || s&(1<<k) != 0 }

// Gate tells the correlator when a pattern cannot match, so that it is not
// asked at all: on a busy node most signals concern only a few patterns, and
// asking each of them costs as much as the rest of the correlator. A gate
// must be exact about what it promises (asking more is always safe): it is
// checked by the correlator's tests against every replay fixture, so a
// change to Match that decides at another trigger, or on evidence its Wants
// does not accept, must update the gate here.
type Gate struct {
	// Triggers: Match returns NoMatch (and never Defer) when the trigger is
	// of any other kind. 0 = any kind. A Tick (Trigger nil) always asks.
	Triggers KindSet
	// Decides, when set, refines Triggers: Match returns NoMatch at a
	// trigger t for which Decides(t) is false. Cheap, no evidence.
	Decides func(t *signal.Signal) bool
	// Evidenced: Match returns NoMatch, at a trigger or on a Tick, unless
	// Wants was true for at least one signal the correlator recorded for the
	// connection (the trigger included).
	Evidenced bool
	// Policy: Match returns NoMatch without a policy checker
	// (Evidence.Policy nil: no cluster context).
	Policy bool
	// Wanted: Wants is false for signals of any other kind. 0 = any kind.
	Wanted KindSet
}

// Gated is implemented by patterns that declare a Gate. A pattern without
// one is asked at every signal of a connection the correlator holds.
type Gated interface {
	Gate() Gate
}

// The library's gates, next to one another so that they are read together;
// each restates the trigger switch of its pattern's Match.

// Gate: decides at the RST received in SYN_SENT and at the client's close
// with ECONNREFUSED (on a Tick: with that RST recorded); both wanted.
func (ConnectionRefused) Gate() Gate {
	return Gate{Triggers: KindsOf(signal.KindResetReceived, signal.KindStateChange), Decides: refusedDecides,
		Evidenced: true, Wanted: KindsOf(signal.KindStateChange, signal.KindResetReceived, signal.KindDrop, signal.KindResetSent)}
}

func refusedDecides(t *signal.Signal) bool {
	return resetInSynSent(t) || ClientClose(t) && t.SkErr == ECONNREFUSED
}

// Gate: decides at a SYN retransmit and at the client's close with
// ETIMEDOUT or EHOSTUNREACH (on a Tick: with SYN retransmits recorded); all
// wanted.
func (SYNDropped) Gate() Gate {
	return Gate{Triggers: KindsOf(signal.KindRetransmit, signal.KindStateChange), Decides: synDecides, Evidenced: true,
		Wanted: KindsOf(signal.KindRetransmit, signal.KindStateChange, signal.KindDrop)}
}

func synDecides(t *signal.Signal) bool {
	return t.Kind == signal.KindRetransmit && t.State == signal.StateSynSent ||
		ClientClose(t) && (t.SkErr == ETIMEDOUT || t.SkErr == EHOSTUNREACH)
}

// Gate: any trigger, but only with an EBUSY retransmit, a neighbour drop or
// a neighbour failure (its pseudo-connection) recorded: all of them wanted.
func (ARPFailure) Gate() Gate {
	return Gate{Evidenced: true, Wanted: KindsOf(signal.KindNeighFailed, signal.KindRetransmit, signal.KindDrop)}
}

// Gate: an ICMP signal of the connection (wanted) must be recorded; decides
// at ICMP signals, state changes, connect errors and retransmits.
func (ICMPError) Gate() Gate {
	return Gate{Evidenced: true, Triggers: KindsOf(signal.KindICMPError, signal.KindICMPSent, signal.KindStateChange,
		signal.KindConnectError, signal.KindRetransmit), Wanted: KindsOf(signal.KindICMPError, signal.KindICMPSent)}
}

// Gate: any trigger, with a routing drop recorded or a routing connect error
// as the trigger: both wanted.
func (RouteFailure) Gate() Gate {
	return Gate{Evidenced: true, Wanted: KindsOf(signal.KindConnectError, signal.KindDrop)}
}

// Gate: any trigger, with a listen overflow drop (wanted) recorded.
func (ListenOverflow) Gate() Gate { return Gate{Evidenced: true, Wanted: KindsOf(signal.KindDrop)} }

// Gate: decides at timer-driven retransmits of data and at the close of a
// data state with ETIMEDOUT, EHOSTUNREACH or ENETUNREACH.
func (Blackhole) Gate() Gate {
	return Gate{Triggers: KindsOf(signal.KindRetransmit, signal.KindStateChange), Decides: blackholeDecides,
		Wanted: KindsOf(signal.KindRetransmit, signal.KindStateChange, signal.KindDrop)}
}

func blackholeDecides(t *signal.Signal) bool {
	switch t.Kind {
	case signal.KindRetransmit:
		return dataState(t.State) && t.Retransmits > 0
	case signal.KindStateChange:
		return t.State == signal.StateClose && dataState(t.OldState) &&
			(t.SkErr == ETIMEDOUT || t.SkErr == EHOSTUNREACH || t.SkErr == 101)
	}
	return false
}

// Gate: decides at timer-driven retransmits of data or a FIN and at the
// close of those states with ETIMEDOUT.
func (HalfOpen) Gate() Gate {
	return Gate{Triggers: KindsOf(signal.KindRetransmit, signal.KindStateChange), Decides: halfOpenDecides,
		Wanted: KindsOf(signal.KindRetransmit, signal.KindStateChange)}
}

func halfOpenDecides(t *signal.Signal) bool {
	switch t.Kind {
	case signal.KindRetransmit:
		return anyState(t.State) && t.Retransmits > 0
	case signal.KindStateChange:
		return t.State == signal.StateClose && anyState(t.OldState) && t.SkErr == ETIMEDOUT
	}
	return false
}

// Gate: decides at a segment meeting no socket (its drop or the RST sent for
// it), at a RST received in ESTABLISHED and at the close it causes; with
// Restarts also at the peer kernel's own RST, at a RST received in CLOSE_WAIT and
// at the close it causes (a RST received is then wanted too).
func (p PeerLostState) Gate() Gate {
	if p.Restarts != nil {
		return Gate{Triggers: KindsOf(signal.KindDrop, signal.KindResetSent, signal.KindResetReceived, signal.KindStateChange),
			Decides: peerLostKilledDecides,
			Wanted:  KindsOf(signal.KindDrop, signal.KindResetSent, signal.KindRetransmit, signal.KindResetReceived)}
	}
	return Gate{Triggers: KindsOf(signal.KindDrop, signal.KindResetSent, signal.KindResetReceived, signal.KindStateChange),
		Decides: peerLostDecides, Wanted: KindsOf(signal.KindDrop, signal.KindResetSent, signal.KindRetransmit)}
}

func peerLostDecides(t *signal.Signal) bool {
	return lostDrop(t) || lostReset(t) || peerReset(t) || resetClose(t)
}

func peerLostKilledDecides(t *signal.Signal) bool {
	return peerLostDecides(t) || peerKernelReset(t) || keeperReset(t) || keeperClose(t)
}

// Gate: matches only where syn_dropped or connection_refused does, and only
// with the cluster's policy verdict.
func (p NetworkPolicyBlock) Gate() Gate {
	return Gate{Triggers: p.SYN.Gate().Triggers | p.Refused.Gate().Triggers, Decides: policyDecides, Evidenced: true,
		Policy: true, Wanted: p.SYN.Gate().Wanted | p.Refused.Gate().Wanted}
}

func policyDecides(t *signal.Signal) bool { return synDecides(t) || refusedDecides(t) }
