//go:build linux

package probe

import (
	"context"
	"testing"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// BenchmarkLoopbackConnect measures connect/accept/exchange/close on
// loopback without and with the probes attached; the ratio of the two is
// the success-path cost. With the probes it also reports the kernel's
// accounted ns per connection over all programs (needs CAP_SYS_ADMIN for
// EnableStats; otherwise that metric is absent).
func BenchmarkLoopbackConnect(b *testing.B) {
	if err := Check(); err != nil {
		b.Skipf("skipping kernel benchmark: %v", err)
	}
	b.Run("without", func(b *testing.B) {
		ns := newTestNetns(b)
		b.ResetTimer()
		loopbackConnects(b, ns, b.N, 4260)
	})
	b.Run("with", func(b *testing.B) {
		p, err := Open(Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.Run(ctx, func(signal.Signal) {})
		st, serr := EnableStats()
		if serr == nil {
			defer st.Close()
		}
		ns := newTestNetns(b)
		before, _ := p.Stats()
		b.ResetTimer()
		loopbackConnects(b, ns, b.N, 4261)
		b.StopTimer()
		after, _ := p.Stats()
		if serr == nil && len(after) == len(before) {
			var ns int64
			for i := range after {
				ns += int64(after[i].RunTime - before[i].RunTime)
			}
			b.ReportMetric(float64(ns)/float64(b.N), "bpf-ns/conn")
		}
	})
}
