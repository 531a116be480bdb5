package correlate

import (
	"net/netip"
	"testing"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// The fields patterns read survive pack/unpack in both directions.
func TestRecordRoundTrip(t *testing.T) {
	f := tcpFlow(40000, 8080)
	tests := []signal.Signal{
		{Kind: signal.KindDrop, Time: t0, Flow: f, NetnsCookie: 7, NetnsInode: 8, Dev: "eth0", TCPFlags: signal.TCPFlagSYN,
			DropReason: "NETFILTER_DROP", DropLocation: "nft_do_chain"},
		{Kind: signal.KindResetSent, Time: t0, Flow: f.Reverse(), NetnsCookie: 7, TCPFlags: signal.TCPFlagSYN, ResetReason: "NO_SOCKET"},
		{Kind: signal.KindRetransmit, Time: t0, Flow: f, State: signal.StateSynSent, Err: -1, Retransmits: 3},
		{Kind: signal.KindStateChange, Time: t0, Flow: f, OldState: signal.StateSynSent, State: signal.StateClose, SkErr: 111},
		{Kind: signal.KindICMPError, Time: t0, Flow: f, NetnsCookie: 7, Dev: "eth0", ICMPType: 3, ICMPCode: 4, MTU: 1400,
			ICMPFrom: netip.MustParseAddr("10.0.0.254")},
		{Kind: signal.KindDrop, Time: t0, Flow: f, NetnsCookie: 7, TCPFlags: signal.TCPFlagSYN, DropReason: "TCP_LISTEN_OVERFLOW",
			Backlog: 129, MaxBacklog: 128},
		{Kind: signal.KindConnectError, Time: t0, Flow: f, NetnsCookie: 7, Err: -22},
	}
	for _, s := range tests {
		k := keyOf(s.Flow)
		tuple := f
		if !inKeyOrder(f, &k) {
			tuple = f.Reverse()
		}
		r := pack(&s, &k)
		var out signal.Signal
		r.unpack(tuple, &out)
		if !out.Time.Equal(s.Time) {
			t.Errorf("%s: time %v, want %v", s.Kind, out.Time, s.Time)
		}
		out.Time, s.Time = t0, t0
		if out != s {
			t.Errorf("round trip:\n got %+v\nwant %+v", out, s)
		}
	}
}
