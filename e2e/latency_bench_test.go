//go:build linux

package e2e

import (
	"context"
	"net"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"
)

// BenchmarkTimeToDiagnosis measures kernel event -> log record handed to the
// pipeline, through the real probes and the real receiver, under a steady
// failure load: b.N refused connects, each to another closed port so each is
// a new diagnosis. The latency of a record is the moment the logs consumer
// gets it minus the record's Timestamp, which is the kernel time of the
// diagnosis's last signal. Reported: p50, p99 and max (target p99 <= 10 ms).
//
//	go test -run '^$' -bench TimeToDiagnosis -benchtime 2000x ./e2e/
func BenchmarkTimeToDiagnosis(b *testing.B) {
	hosts := benchHosts(b, "client", "server")
	client, server := hosts[0], hosts[1]

	sink := &latencySink{server: server.IP.String()}
	f := networkcorrelatorreceiver.NewFactory()
	cfg := f.CreateDefaultConfig()
	rcv, err := f.CreateLogs(context.Background(), receivertest.NewNopSettings(f.Type()), cfg, sink)
	if err != nil {
		b.Fatal(err)
	}
	if err := rcv.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := rcv.Shutdown(context.Background()); err != nil {
			b.Error(err)
		}
	}()

	// A steady load: one refused connect every 500 µs (2000/s).
	b.ResetTimer()
	err = client.Do(func() error {
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for i := 0; i < b.N; i++ {
			<-tick.C
			port := uint16(20000 + i%40000)
			c, err := dialOnce(netip.AddrPortFrom(server.IP, port))
			if err == nil {
				c.Close()
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for sink.count() < b.N && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	b.StopTimer()
	lat := sink.latencies()
	if len(lat) < b.N {
		b.Fatalf("%d of %d refused connects reached the pipeline", len(lat), b.N)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}

// latencySink is a logs consumer that records, per diagnosis of the lab's
// server, how long after its kernel timestamp it arrived.
type latencySink struct {
	server string
	mu     sync.Mutex
	lat    []time.Duration
}

func (s *latencySink) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (s *latencySink) ConsumeLogs(_ context.Context, ld plog.Logs) error {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			lrs := sls.At(j).LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				lr := lrs.At(k)
				if v, ok := lr.Attributes().Get("destination.address"); !ok || v.Str() != s.server {
					continue
				}
				s.lat = append(s.lat, now.Sub(lr.Timestamp().AsTime()))
			}
		}
	}
	return nil
}

func (s *latencySink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lat)
}

func (s *latencySink) latencies() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.lat...)
}

// dialOnce connects from the calling thread's namespace.
func dialOnce(to netip.AddrPort) (net.Conn, error) {
	return net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(to))
}
