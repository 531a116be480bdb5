package correlate

import (
	"net/netip"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// FuzzEngine drives the engine with arbitrary signal sequences built from the
// input (small address and port ranges so connections collide, times that may
// go backwards) and checks it never panics, emits only valid diagnoses and
// keeps its bounds.
func FuzzEngine(f *testing.F) {
	f.Add([]byte{5, 1, 2, 0, 0, 0, 2, 0, 3, 1, 2, 0, 0, 0, 0, 0, 1, 1, 2, 7, 2, 111, 0, 0})
	f.Add([]byte{2, 1, 2, 0, 2, 0, 2, 1, 2, 1, 2, 0, 2, 0, 2, 2, 1, 1, 2, 7, 2, 110, 0, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxFlows = 8
		var emitted int
		e, err := New(Config{SYNTimeout: time.Second, Window: 5 * time.Second, MaxFlows: maxFlows, MaxEvidence: 4},
			func(d diagnosis.Diagnosis) {
				if err := d.Validate(); err != nil {
					t.Fatalf("invalid diagnosis: %v", err)
				}
				emitted++
			})
		if err != nil {
			t.Fatal(err)
		}
		addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::1"), {}}
		errs := []int32{0, 111, 110, 113, 32, 104}
		now := t0
		for len(data) >= 8 {
			b := data[:8]
			data = data[8:]
			s := signal.Signal{
				Kind: signal.Kind(b[0] % 10),
				Flow: signal.Flow{Proto: signal.ProtoTCP, Src: addrs[b[1]%4], Dst: addrs[b[2]%4],
					SrcPort: uint16(b[3] % 4), DstPort: uint16(b[4] % 4)},
				OldState: signal.TCPState(b[5] % 13),
				State:    signal.TCPState(b[6] % 13),
				SkErr:    errs[int(b[7])%len(errs)],
				Err:      []int32{0, -1, -16, -13, -22, -101, -113, -111}[b[7]%8],
				TCPFlags: b[3] ^ b[4],
				DropReason: []string{"NETFILTER_DROP", "NO_SOCKET", "NEIGH_FAILED", "OTHER", "TCP_LISTEN_OVERFLOW",
					"IP_RPFILTER", "NOT_SPECIFIED"}[b[5]%7],
				DropLocation:  []string{"", "ip_error"}[b[6]%2],
				NeighAddr:     addrs[b[2]%4],
				NeighResolved: b[3]&1 != 0,
				ICMPType:      []uint8{3, 11, 1, 2}[b[5]%4],
				ICMPCode:      b[6] % 14,
				MTU:           uint32(b[4]) * 8,
				Backlog:       uint32(b[3] % 3),
				MaxBacklog:    uint32(b[4] % 2),
				Retransmits:   uint32(b[6] % 12),
				NetnsCookie:   uint64(b[1] % 3),
				NetnsInode:    uint32(b[2] % 3),
			}
			now = now.Add(time.Duration(int8(b[7])) * 100 * time.Millisecond)
			s.Time = now
			e.Observe(s)
			if b[0]&0x80 != 0 {
				e.Tick(now)
			}
			if st := e.Stats(); st.FlowsTracked > maxFlows || st.OpenAggregates > maxFlows {
				t.Fatalf("bounds exceeded: %+v", st)
			}
		}
		e.Tick(now.Add(time.Hour))
		st := e.Stats()
		if st.FlowsTracked != 0 || st.OpenAggregates != 0 || st.Invalid != 0 || st.Diagnoses != uint64(emitted) {
			t.Fatalf("after the final tick: %+v, emitted %d", st, emitted)
		}
	})
}
