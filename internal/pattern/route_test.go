package pattern_test

import (
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

func TestRouteFailureFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		key     string // "" = no route_failure
		summary string
		errType string
		count   int
		details string
	}{
		{"route_blackhole_connect.jsonl", "route_failure/blackhole_route/198.51.100.7:443/netns:4097",
			"connect() to tcp 198.51.100.7:443 in netns client failed with EINVAL: a blackhole route to 198.51.100.7",
			"EINVAL", 2, "Caller: pid 4242 (curl)"},
		{"route_no_route_connect.jsonl", "route_failure/no_route/198.51.100.7:443/netns:4097",
			"connect() to tcp 198.51.100.7:443 in netns client failed with ENETUNREACH: no route to 198.51.100.7",
			"ENETUNREACH", 2, "no packet left"},
		{"route_unreachable_udp.jsonl", "route_failure/unreachable_route/198.51.100.7:53/netns:4097",
			"connect() to udp 198.51.100.7:53 in netns client failed with EHOSTUNREACH: an unreachable route to 198.51.100.7",
			"EHOSTUNREACH", 2, "no socket state changed"},
		{"route_prohibit_connect.jsonl", "route_failure/prohibit_route/198.51.100.7:443/netns:4097",
			"connect() to tcp 198.51.100.7:443 in netns client failed with EACCES: a prohibit route to 198.51.100.7",
			"EACCES", 2, ""},
		{"route_host_blackhole_drop.jsonl", "route_failure/route_drop_on_path/10.0.0.2:8080/netns:1",
			"Packets to tcp 10.0.0.2:8080 dropped in netns host by a blackhole/unreachable/prohibit route (ip_error)",
			"ETIMEDOUT", 1, "A blackhole route sends no ICMP"},
		{"route_rpfilter_drop.jsonl", "route_failure/rp_filter/10.0.0.2:8080/netns:4098",
			"Packets from 192.0.2.50 to tcp 10.0.0.2:8080 dropped by the reverse-path filter in netns server",
			"ETIMEDOUT", 1, "IP_RPFILTER on dev eth0"},
		// Near misses.
		{fixture: "route_connect_refused.jsonl"},
		{fixture: "route_arp_connect_error.jsonl"},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			ds, _ := replayFixture(t, tc.fixture, nil, func(c *correlate.Config) { c.Window = 10 * time.Minute })
			var got []diagnosis.Diagnosis
			for _, d := range ds {
				if d.Pattern == diagnosis.PatternRouteFailure {
					got = append(got, d)
				} else if tc.key != "" {
					t.Errorf("other diagnosis %s: %s", d.Key, d.Summary)
				}
			}
			if tc.key == "" {
				if len(got) != 0 {
					t.Errorf("route_failure on a near miss: %v", keysOf(got))
				}
				return
			}
			if len(got) == 0 {
				t.Fatalf("no route_failure; got %v", keysOf(ds))
			}
			d, last := got[0], got[len(got)-1]
			if d.Key != tc.key || d.Summary != tc.summary || d.ErrorType != tc.errType || d.Layer != diagnosis.LayerL3 {
				t.Errorf("got %s %q %s %s\nwant %s %q %s L3", d.Key, d.Summary, d.ErrorType, d.Layer, tc.key, tc.summary, tc.errType)
			}
			if last.Count != tc.count {
				t.Errorf("count %d, want %d", last.Count, tc.count)
			}
			mustContain(t, "details", d.Details, tc.details)
		})
	}
	// The ARP near miss is still diagnosed, as ARP.
	ds, _ := replayFixture(t, "route_arp_connect_error.jsonl", nil)
	if len(ds) == 0 || ds[0].Pattern != diagnosis.PatternARPFailure {
		t.Errorf("route_arp_connect_error: %v, want arp_failure", keysOf(ds))
	}
}

// With a host context the route's own type and prefix are named.
func TestRouteFailureNamesTheRoute(t *testing.T) {
	host := &fakeHost{route: pattern.RouteFact{Type: "blackhole", Prefix: mustPrefix("198.51.100.0/24"), Table: 254, Err: "invalid argument"}}
	ds, _ := replayFixture(t, "route_blackhole_connect.jsonl", nil, func(c *correlate.Config) { c.Host = host })
	if len(ds) == 0 {
		t.Fatal("no diagnosis")
	}
	d := ds[0]
	mustContain(t, "summary", d.Summary, "failed with EINVAL: blackhole route 198.51.100.0/24 to 198.51.100.7")
	mustContain(t, "resolution", d.Resolution, "`ip route del blackhole 198.51.100.0/24`")
	mustContain(t, "details", d.Details, "Route lookup now: blackhole (invalid argument)")
	if host.routeCalls != 1 {
		t.Errorf("%d route lookups for one diagnosis and one aggregated repeat, want 1", host.routeCalls)
	}
}
