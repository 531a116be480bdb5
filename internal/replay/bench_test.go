package replay

import (
	"bytes"
	"io"
	"testing"

	"github.com/network-correlator/network-correlator/internal/signal"
)

func BenchmarkDecode(b *testing.B) {
	var buf bytes.Buffer
	enc := NewEncoder(&buf)
	for _, s := range sampleSignals() {
		if err := enc.Encode(s); err != nil {
			b.Fatal(err)
		}
	}
	data := buf.Bytes()
	lines := len(sampleSignals())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var s signal.Signal
	for b.Loop() {
		dec := NewDecoder(bytes.NewReader(data))
		for {
			if err := dec.Decode(&s); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*lines)/b.Elapsed().Seconds(), "signals/s")
}
