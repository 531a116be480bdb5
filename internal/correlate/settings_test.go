package correlate

import (
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// synDropped is a SYN dropped by netfilter in the server and retransmitted
// at the kernel's schedule (+1, 2, 3, 4, 5 s).
func synDropped(at time.Time, sport uint16, retries int) []signal.Signal {
	f := tcpFlow(sport, 8080)
	drop := func(t time.Time) signal.Signal {
		return signal.Signal{Kind: signal.KindDrop, Time: t, Flow: f, NetnsCookie: serverCookie, NetnsInode: serverInode,
			Dev: "eth0", TCPFlags: signal.TCPFlagSYN, DropReason: "NETFILTER_DROP", DropLocation: "nft_do_chain"}
	}
	out := []signal.Signal{drop(at)}
	for i := 1; i <= retries; i++ {
		t := at.Add(time.Duration(i) * time.Second)
		out = append(out, signal.Signal{Kind: signal.KindRetransmit, Time: t, Flow: f, NetnsCookie: clientCookie,
			NetnsInode: clientInode, State: signal.StateSynSent, TCPFlags: signal.TCPFlagSYN, Retransmits: uint32(i)},
			drop(t.Add(50*time.Microsecond)))
	}
	return out
}

// run feeds signals in time order, ticking every 100 ms, and returns when
// each diagnosis was emitted (engine time).
func run(e *Engine, sigs []signal.Signal, until time.Time) (at []time.Time) {
	r := e.emit
	now := t0
	e.emit = func(d diagnosis.Diagnosis) { at = append(at, now); r(d) }
	i := 0
	for now = t0; !now.After(until); now = now.Add(100 * time.Millisecond) {
		for ; i < len(sigs) && !sigs[i].Time.After(now); i++ {
			save := now
			now = sigs[i].Time
			e.Observe(sigs[i])
			now = save
		}
		e.Tick(now)
	}
	return at
}

// The documented settings: syn_timeout is the connect age at which an
// unanswered SYN is diagnosed (at the first retransmit at least that old);
// correlation_window aggregates repeats of a cause (one emission per window
// plus its update); max_flows bounds the connections held.
func TestSettingsAsDocumented(t *testing.T) {
	t.Run("syn_timeout", func(t *testing.T) {
		for _, tc := range []struct {
			timeout time.Duration
			want    time.Duration
		}{{time.Second, time.Second}, {3 * time.Second, 3 * time.Second}, {2500 * time.Millisecond, 3 * time.Second}} {
			e, r := newEngine(t, func(c *Config) { c.SYNTimeout = tc.timeout })
			at := run(e, synDropped(t0, 40000, 5), t0.Add(6*time.Second))
			if len(r.ds) == 0 || r.ds[0].Pattern != "syn_dropped" {
				t.Fatalf("syn_timeout %v: %d diagnoses", tc.timeout, len(r.ds))
			}
			if got := at[0].Sub(t0); got != tc.want {
				t.Errorf("syn_timeout %v: diagnosed at +%v, want +%v", tc.timeout, got, tc.want)
			}
		}
	})
	t.Run("correlation_window", func(t *testing.T) {
		for _, tc := range []struct {
			window time.Duration
			firsts int
		}{{30 * time.Second, 1}, {4 * time.Second, 3}, {time.Second, 10}} {
			e, r := newEngine(t, func(c *Config) { c.Window = tc.window })
			var sigs []signal.Signal
			for i := range 10 { // ten refused connects, one a second
				sigs = append(sigs, refusedClosedPort(t0.Add(time.Duration(i)*time.Second+time.Millisecond), uint16(41000+i), 8080)...)
			}
			run(e, sigs, t0.Add(40*time.Second))
			firsts, total := 0, 0
			for _, d := range r.ds {
				if !strings.Contains(d.Details, "Aggregated:") {
					firsts++
				} else {
					total = d.Count
				}
			}
			if firsts != tc.firsts {
				t.Errorf("window %v: %d first emissions, want %d", tc.window, firsts, tc.firsts)
			}
			if tc.firsts == 1 && total != 10 {
				t.Errorf("window %v: aggregate count %d, want 10", tc.window, total)
			}
		}
	})
	t.Run("max_flows", func(t *testing.T) {
		const limit = 50
		e, _ := newEngine(t, func(c *Config) { c.MaxFlows = limit; c.SYNTimeout = time.Minute })
		peak := 0
		for i := range 500 {
			observeAll(e, synDropped(t0.Add(time.Duration(i)*time.Millisecond), uint16(20000+i), 0))
			peak = max(peak, e.Stats().FlowsTracked)
		}
		st := e.Stats()
		if peak > limit || st.Evicted != 500-limit {
			t.Errorf("peak %d flows (max %d), %d evicted, want <= %d and %d", peak, limit, st.Evicted, limit, 500-limit)
		}
	})
	t.Run("arp_timeout validated", func(t *testing.T) {
		c := DefaultConfig()
		c.ARPTimeout = -time.Second
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "arp_timeout") {
			t.Errorf("negative arp_timeout: %v", err)
		}
	})
}
