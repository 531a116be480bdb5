package correlate

import (
	"testing"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// Keys whose hashes collide share a chain: found, and removed from its
// head, middle and end, whatever the order.
func TestFlowChains(t *testing.T) {
	for _, order := range [][3]int{{0, 1, 2}, {1, 0, 2}, {2, 1, 0}, {1, 2, 0}} {
		e, _ := newEngine(t, nil)
		var fs [3]*flowState
		var ks [3]connKey
		var h uint64
		for i := range fs {
			s := signal.Signal{Kind: signal.KindDrop, Time: t0, Flow: tcpFlow(uint16(40000+i), 8080)}
			ks[i] = keyOf(s.Flow)
			if i == 0 {
				h = e.hash(&ks[0])
			}
			fs[i] = e.newFlow(ks[i], h, &s) // all under the first key's hash
		}
		if f, _ := e.lookup(&ks[0]); f != fs[0] {
			t.Fatalf("first key not found through its chain")
		}
		for n, i := range order {
			e.removeFlow(fs[i])
			if got := e.Stats().FlowsTracked; got != 2-n {
				t.Fatalf("order %v: %d held after %d removals", order, got, n+1)
			}
			for j := range fs {
				removed := false
				for _, r := range order[:n+1] {
					removed = removed || r == j
				}
				found := false
				for f := e.flows[h]; f != nil; f = f.hnext {
					found = found || f.key == ks[j]
				}
				if found == removed {
					t.Fatalf("order %v, after removing %v: key %d found %v", order, order[:n+1], j, found)
				}
			}
		}
		if len(e.flows) != 0 {
			t.Fatalf("order %v: %d hashes left", order, len(e.flows))
		}
	}
}

// equal agrees with == on keys that differ in any one field.
func TestKeyEqual(t *testing.T) {
	base := keyOf(tcpFlow(40000, 8080))
	variants := []func(k *connKey){
		func(k *connKey) {},
		func(k *connKey) { k.a[0]++ },
		func(k *connKey) { k.a[15]++ },
		func(k *connKey) { k.b[3]++ },
		func(k *connKey) { k.b[12]++ },
		func(k *connKey) { k.ap++ },
		func(k *connKey) { k.bp++ },
		func(k *connKey) { k.proto++ },
		func(k *connKey) { k.ns = 7 },
	}
	for i, v := range variants {
		k := base
		v(&k)
		if got, want := k.equal(&base), k == base; got != want {
			t.Errorf("variant %d: equal %v, == %v", i, got, want)
		}
	}
}
