package pattern_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

func TestICMPErrorFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		key     string // "" = nothing may be emitted
		summary string
		layer   diagnosis.Layer
		errType string
		details string
		minConf float64
	}{
		{"icmp_reject_prohibited.jsonl", "icmp_error/admin_prohibited/10.0.0.2:8080/netns:4098",
			"tcp 10.0.0.2:8080 rejected by a firewall: 10.0.0.2 sent ICMP administratively prohibited",
			diagnosis.LayerPolicy, "EHOSTUNREACH", "Seen both where it was generated and where it arrived", 0.9},
		{"icmp_port_unreachable_udp.jsonl", "icmp_error/port_unreachable/10.0.0.2:5353/netns:4098",
			"udp 10.0.0.2:5353: port unreachable from 10.0.0.2",
			diagnosis.LayerL4, "ECONNREFUSED", "nothing listens on udp 10.0.0.2:5353", 0.85},
		{"icmp_host_unreachable_remote.jsonl", "icmp_error/host_unreachable/192.0.2.20:443/netns:4097",
			"tcp 192.0.2.20:443 unreachable: 10.0.0.254 sent ICMP host unreachable",
			diagnosis.LayerL3, "EHOSTUNREACH", "(type 3 code 1)", 0.8},
		{"icmp_ttl_loop.jsonl", "icmp_error/ttl_exceeded/198.51.100.9:53/netns:1",
			"udp 198.51.100.9:53: TTL exceeded at 10.0.0.254, probably a routing loop",
			diagnosis.LayerL3, "EHOSTUNREACH", "loop", 0.85},
		{"mtu_blackhole.jsonl", "icmp_error/mtu_blackhole/198.51.100.5:443/netns:1",
			"MTU black hole towards tcp 198.51.100.5:443: the kernel in netns host said fragmentation needed (MTU 1400) but the ICMP never reached the sender",
			diagnosis.LayerL3, "ETIMEDOUT", "no such error was seen arriving at the sender", 0.6},
		// Near misses.
		{fixture: "icmp_frag_needed_received.jsonl"},
	}
	for _, tc := range tests {
		for _, lib := range []string{"alone", "library"} {
			t.Run(tc.fixture+"/"+lib, func(t *testing.T) {
				var ps []pattern.Pattern
				if lib == "alone" {
					ps = []pattern.Pattern{pattern.ICMPError{}}
				}
				ds, _ := replayFixture(t, tc.fixture, ps, func(c *correlate.Config) { c.Window = 10 * time.Minute })
				if tc.key == "" {
					for _, d := range ds {
						if d.Pattern == diagnosis.PatternICMPError {
							t.Errorf("unexpected %s: %s", d.Key, d.Summary)
						}
					}
					return
				}
				if len(ds) == 0 {
					t.Fatalf("no diagnosis, want %s", tc.key)
				}
				d := ds[0]
				if d.Key != tc.key || d.Summary != tc.summary {
					t.Errorf("got %s %q\nwant %s %q", d.Key, d.Summary, tc.key, tc.summary)
				}
				if d.Layer != tc.layer || d.ErrorType != tc.errType || d.Confidence < tc.minConf {
					t.Errorf("layer %s error %s confidence %.2f, want %s %s >= %.2f", d.Layer, d.ErrorType, d.Confidence, tc.layer, tc.errType, tc.minConf)
				}
				mustContain(t, "details", d.Details, tc.details)
				if !hasSource(d, "icmp:icmp_send") && !hasSource(d, "tc:icmp_ingress") {
					t.Errorf("no ICMP evidence: %+v", d.Evidence)
				}
				for _, x := range ds {
					if x.Key != d.Key {
						t.Errorf("second diagnosis %s: %s", x.Key, x.Summary)
					}
				}
			})
		}
	}
}

// Classification by type and code, IPv4 and IPv6 (RFC 792, 4443).
func TestICMPErrorCauses(t *testing.T) {
	tests := []struct {
		v6         bool
		typ, code  uint8
		cause, err string
	}{
		{false, 3, 0, pattern.CauseNetUnreachable, "ENETUNREACH"},
		{false, 3, 1, pattern.CauseHostUnreachable, "EHOSTUNREACH"},
		{false, 3, 3, pattern.CausePortUnreachable, "ECONNREFUSED"},
		{false, 3, 9, pattern.CauseAdminProhibited, "EHOSTUNREACH"},
		{false, 3, 13, pattern.CauseAdminProhibited, "EHOSTUNREACH"},
		{false, 11, 0, pattern.CauseTTLExceeded, "EHOSTUNREACH"},
		{false, 12, 0, pattern.CauseICMPOther, "EHOSTUNREACH"},
		{true, 1, 0, pattern.CauseNetUnreachable, "ENETUNREACH"},
		{true, 1, 1, pattern.CauseAdminProhibited, "EACCES"},
		{true, 1, 3, pattern.CauseHostUnreachable, "EHOSTUNREACH"},
		{true, 1, 4, pattern.CausePortUnreachable, "ECONNREFUSED"},
		{true, 3, 0, pattern.CauseTTLExceeded, "EHOSTUNREACH"},
	}
	for _, tc := range tests {
		src, dst := "10.0.0.1", "10.0.0.2"
		if tc.v6 {
			src, dst = "fd00::1", "fd00::2"
		}
		fl := udpFlow(src, dst)
		s := signal.Signal{Kind: signal.KindICMPError, Time: time.Unix(100, 0), Flow: fl, NetnsInode: clientInode, ICMPType: tc.typ, ICMPCode: tc.code}
		ev := &pattern.Evidence{Flow: fl, Oriented: true, Now: s.Time, Packet: []signal.Signal{s}}
		v, out := pattern.ICMPError{}.Match(ev)
		if out != pattern.Match || v.Cause != tc.cause {
			t.Errorf("v6=%v %d/%d: %v %q, want match %q", tc.v6, tc.typ, tc.code, out, v.Cause, tc.cause)
			continue
		}
		if d := (pattern.ICMPError{}).Diagnose(ev, v); d.ErrorType != tc.err || !strings.Contains(d.Summary, fl.Dst.String()) {
			t.Errorf("v6=%v %d/%d: error %s summary %q, want %s", tc.v6, tc.typ, tc.code, d.ErrorType, d.Summary, tc.err)
		}
	}
}

func udpFlow(src, dst string) signal.Flow {
	return signal.Flow{Proto: signal.ProtoUDP, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: 50000, DstPort: 53}
}
