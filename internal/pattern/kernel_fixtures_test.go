package pattern_test

import (
	"strings"
	"testing"
)

// Recordings of the real probes (TestKernelPatternScenarios -record in
// internal/correlate): each failure is diagnosed once, by its pattern, with
// every emission (the first and its window updates) under one key.
func TestKernelPatternFixtures(t *testing.T) {
	tests := []struct{ fixture, key string }{
		{"kernel_arp_unused_ip.jsonl", "arp_failure/never_resolved/"},
		{"kernel_route_blackhole_connect.jsonl", "route_failure/blackhole_route/198.51.100.7:443/"},
		{"kernel_icmp_admin_prohibited.jsonl", "icmp_error/admin_prohibited/"},
		{"kernel_listen_overflow.jsonl", "listen_overflow/accept_queue_full/"},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			ds, _ := replayFixture(t, tc.fixture, nil)
			if len(ds) == 0 {
				t.Fatal("no diagnosis")
			}
			for _, d := range ds {
				if !strings.HasPrefix(d.Key, tc.key) || d.Key != ds[0].Key {
					t.Errorf("diagnoses %v, want all under one key %s...", keysOf(ds), tc.key)
					break
				}
			}
		})
	}
}
