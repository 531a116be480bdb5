package correlate

import (
	"math"
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// rec is what the engine keeps of a signal per connection: the fields the
// patterns read. A signal.Signal is large (320 B, growing as the probes
// learn more), and a connection holds up to maxSock+maxPkt+2 of them; keeping
// only these fields makes a connection about 1 KB. A pattern that needs
// another field adds it to rec, pack and unpack.
type rec struct {
	nanos   int64
	cookie  uint64
	inode   uint32
	skErr   int32
	err     int32
	retrans uint32
	kind    signal.Kind
	state   signal.TCPState
	old     signal.TCPState
	flags   uint8
	// fwd: the signal's flow is the connection's tuple in key order
	// (flowState.tuple); otherwise its reverse.
	fwd                                        bool
	icmpType, icmpCode                         uint8
	mtu, backlog, maxBacklog                   uint32
	icmpFrom                                   netip.Addr
	dev, dropReason, dropLocation, resetReason string
}

const noTime = math.MinInt64

func pack(s *signal.Signal, k *connKey) rec {
	r := rec{
		nanos: noTime, cookie: s.NetnsCookie, inode: s.NetnsInode, skErr: s.SkErr, err: s.Err,
		retrans: s.Retransmits, kind: s.Kind, state: s.State, old: s.OldState, flags: s.TCPFlags,
		fwd: inKeyOrder(s.Flow, k),
		dev: s.Dev, dropReason: s.DropReason, dropLocation: s.DropLocation, resetReason: s.ResetReason,
		icmpType: s.ICMPType, icmpCode: s.ICMPCode, mtu: s.MTU, backlog: s.Backlog, maxBacklog: s.MaxBacklog,
		icmpFrom: s.ICMPFrom,
	}
	if !s.Time.IsZero() {
		r.nanos = s.Time.UnixNano()
	}
	return r
}

// inKeyOrder reports whether f runs from the key's first end to its second.
func inKeyOrder(f signal.Flow, k *connKey) bool {
	return f.SrcPort == k.ap && f.Src.As16() == k.a
}

// unpack writes r's fields into out. Fields rec does not keep are left
// alone: the engine's scratch signals never hold anything else, so they stay zero.
func (r *rec) unpack(tuple signal.Flow, out *signal.Signal) {
	out.Kind, out.State, out.OldState, out.TCPFlags = r.kind, r.state, r.old, r.flags
	out.Time = time.Time{}
	if r.nanos != noTime {
		out.Time = time.Unix(0, r.nanos).UTC()
	}
	out.Flow = tuple
	if !r.fwd {
		out.Flow = tuple.Reverse()
	}
	out.NetnsCookie, out.NetnsInode = r.cookie, r.inode
	out.SkErr, out.Err, out.Retransmits = r.skErr, r.err, r.retrans
	out.Dev, out.DropReason, out.DropLocation, out.ResetReason = r.dev, r.dropReason, r.dropLocation, r.resetReason
	out.ICMPType, out.ICMPCode, out.MTU, out.ICMPFrom = r.icmpType, r.icmpCode, r.mtu, r.icmpFrom
	out.Backlog, out.MaxBacklog = r.backlog, r.maxBacklog
}
