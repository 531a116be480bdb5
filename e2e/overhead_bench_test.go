//go:build linux

package e2e

import (
	"net"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/probe"
)

// BenchmarkSuccessPathOverhead measures what the probes cost the success path:
// connect+accept+close throughput in a lab namespace with the receiver's
// probes attached versus not, alternating in one run so both sides see the
// same machine state. Run with a fixed count, e.g.
//
//	go test -run '^$' -bench SuccessPathOverhead -benchtime 20000x ./e2e/
//
// Reported: ns per connection with and without probes, the on/off throughput ratio (target >= 0.99), and
// the kernel's own per-call cost of each program (kernel.bpf_stats_enabled).
func BenchmarkSuccessPathOverhead(b *testing.B) {
	h := benchHosts(b, "bench")[0]
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return }); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	to := netip.MustParseAddrPort(ln.Addr().String())

	// connections runs n connect/close cycles inside the lab namespace.
	connections := func(n int) time.Duration {
		var d time.Duration
		err := h.Do(func() error {
			start := time.Now()
			for i := 0; i < n; i++ {
				c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(to))
				if err != nil {
					return err
				}
				c.Close()
			}
			d = time.Since(start)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		return d
	}

	const rounds = 5
	// The framework's ns/op would mix both sides: time is measured per
	// phase instead and reported as the metrics below.
	b.StopTimer()
	connections(min(b.N, 2000)) // warm up the listener and caches
	var off, on []float64       // connections per second
	for r := 0; r < rounds; r++ {
		off = append(off, float64(b.N)/connections(b.N).Seconds())
		p, err := probe.Open(probe.Config{RingBufferBytes: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		on = append(on, float64(b.N)/connections(b.N).Seconds())
		if err := p.Close(); err != nil {
			b.Fatal(err)
		}
	}

	// The kernel's run-time accounting times every program run, which
	// itself costs: it is on only for this last pass, never for the ratio.
	stats, err := probe.EnableStats()
	if err != nil {
		b.Skipf("skipping: %v", err)
	}
	defer stats.Close()
	p, err := probe.Open(probe.Config{RingBufferBytes: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	connections(b.N)
	ps, err := p.Stats()
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Close(); err != nil {
		b.Fatal(err)
	}
	perProg := map[string]*probe.ProgramStats{}
	for i := range ps {
		perProg[ps[i].Name] = &ps[i]
	}

	mOff, mOn := median(off), median(on)
	b.ReportMetric(mOn/mOff, "on/off-ratio")
	b.ReportMetric(1e9/mOff, "ns/conn-off")
	b.ReportMetric(1e9/mOn, "ns/conn-on")
	var total time.Duration
	names := make([]string, 0, len(perProg))
	for n, s := range perProg {
		total += s.RunTime
		names = append(names, n)
	}
	sort.Strings(names)
	conns := float64(b.N)
	b.ReportMetric(float64(total.Nanoseconds())/conns, "bpf-ns/conn")
	for _, n := range names {
		s := perProg[n]
		b.Logf("%-28s %-34s %8.1f calls/conn %7.1f ns/call", s.Name, s.Hook, float64(s.RunCount)/conns, s.NsPerCall())
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// benchHosts skips a benchmark that lacks root or kernel probes, else builds
// a lab with the named hosts, removed when the benchmark ends.
func benchHosts(b *testing.B, names ...string) []*lab.Host {
	b.Helper()
	if err := lab.Check(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	if err := probe.Check(); err != nil {
		b.Skipf("skipping: kernel probes unavailable: %v", err)
	}
	l, err := lab.Create()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	hosts := make([]*lab.Host, len(names))
	for i, n := range names {
		if hosts[i], err = l.AddHost(n); err != nil {
			b.Fatal(err)
		}
	}
	return hosts
}
