package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/signal"
)

func sampleSignals() []signal.Signal {
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 123456789, time.UTC)
	flow := signal.Flow{Proto: signal.ProtoTCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000, DstPort: 8080}
	return []signal.Signal{
		{Kind: signal.KindDrop, Time: t0, Flow: flow, NetnsCookie: 1 << 60, NetnsInode: 4026532300, Ifindex: 2, Dev: "eth0",
			TCPFlags: signal.TCPFlagSYN, DropReason: "NO_SOCKET", DropLocation: "tcp_v4_rcv"},
		{Kind: signal.KindResetSent, Time: t0.Add(time.Microsecond), Flow: flow.Reverse(), TCPFlags: signal.TCPFlagSYN, ResetReason: "NO_SOCKET"},
		{Kind: signal.KindStateChange, Time: t0.Add(time.Millisecond), Flow: flow, OldState: signal.StateSynSent, State: signal.StateClose,
			SkErr: 111, SockCookie: 99, PID: 1234, Comm: "curl"},
		{Kind: signal.KindRetransmit, Time: t0.In(time.FixedZone("x", 3600)), Flow: signal.Flow{Proto: 200,
			Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddr("fd00::2")}, State: signal.StateSynSent, Err: -16, Retransmits: 3},
		{Kind: signal.KindResetReceived, Time: t0}, // only the required fields
		{Kind: signal.KindNeighFailed, Time: t0, NetnsCookie: 7, Ifindex: 3, Dev: "eth0", NeighAddr: netip.MustParseAddr("fd00::9"),
			NeighState: signal.NUDProbe, NeighResolved: true, NeighProbes: 3, NeighTried: 3*time.Second + time.Millisecond},
		{Kind: signal.KindConnectError, Time: t0, Flow: signal.Flow{Proto: signal.ProtoTCP, Src: netip.MustParseAddr("10.0.0.1"),
			Dst: netip.MustParseAddr("198.51.100.7"), DstPort: 443}, Err: -113, PID: 77, Comm: "curl"},
		{Kind: signal.KindICMPError, Time: t0, Flow: flow, ICMPType: 3, ICMPCode: 4, MTU: 1280, ICMPFrom: netip.MustParseAddr("10.0.0.254")},
		{Kind: signal.KindICMPSent, Time: t0, Flow: flow, ICMPType: 3, ICMPCode: 10},
		{Kind: signal.KindDrop, Time: t0, Flow: flow, DropReason: "TCP_LISTEN_OVERFLOW", Backlog: 2, MaxBacklog: 1, State: signal.StateListen},
	}
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	enc := NewEncoder(&buf)
	want := sampleSignals()
	for _, s := range want {
		if err := enc.Encode(s); err != nil {
			t.Fatalf("Encode(%v): %v", s, err)
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != len(want) {
		t.Fatalf("encoded %d lines, want %d:\n%s", n, len(want), buf.String())
	}
	dec := NewDecoder(&buf)
	for i, w := range want {
		var got signal.Signal
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("Decode #%d: %v", i, err)
		}
		assertEqual(t, got, w)
	}
	var s signal.Signal
	if err := dec.Decode(&s); err != io.EOF {
		t.Fatalf("Decode at end = %v, want io.EOF", err)
	}
}

func assertEqual(t *testing.T, got, want signal.Signal) {
	t.Helper()
	if !got.Time.Equal(want.Time) {
		t.Errorf("time %v, want %v", got.Time, want.Time)
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestEncodedForm(t *testing.T) {
	b, err := Marshal(sampleSignals()[2])
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"time":"2026-11-26T00:00:00.124456789Z","kind":"state_change","proto":"tcp","src":"10.0.0.1","src_port":40000,"dst":"10.0.0.2","dst_port":8080,"state":"CLOSE","old_state":"SYN_SENT","sk_err":111,"sock_cookie":99,"pid":1234,"comm":"curl"}`
	if string(b) != want {
		t.Fatalf("Marshal =\n%s\nwant\n%s", b, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	const ok = `{"time":"2026-11-26T00:00:00Z","kind":"drop"}`
	tests := []struct {
		name  string
		input string
		line  int
		field string
		msg   string
	}{
		{"not json", ok + "\n{oops", 2, "", "not a JSON object"},
		{"array", `[1,2]`, 1, "", "not a JSON object"},
		{"null line", `null`, 1, "", "not a JSON object"},
		{"missing time", `{"kind":"drop"}`, 1, "time", "required"},
		{"missing kind", `{"time":"2026-11-26T00:00:00Z"}`, 1, "kind", "required"},
		{"bad time", `{"time":"yesterday","kind":"drop"}`, 1, "time", "cannot parse"},
		{"bad kind", `{"time":"2026-11-26T00:00:00Z","kind":"explosion"}`, 1, "kind", "unknown signal kind"},
		{"kind number", `{"time":"2026-11-26T00:00:00Z","kind":5}`, 1, "kind", "want a string"},
		{"bad ip after comments", "# header\n\n" + `{"time":"2026-11-26T00:00:00Z","kind":"drop","src":"10.0.0.300"}`, 3, "src", "not an IP address"},
		{"mixed family", `{"time":"2026-11-26T00:00:00Z","kind":"drop","src":"10.0.0.1","dst":"fd00::1"}`, 1, "dst", "family"},
		{"port range", `{"time":"2026-11-26T00:00:00Z","kind":"drop","dst_port":70000}`, 1, "dst_port", "0..65535"},
		{"negative inode", `{"time":"2026-11-26T00:00:00Z","kind":"drop","netns_inode":-1}`, 1, "netns_inode", "want an integer"},
		{"fraction", `{"time":"2026-11-26T00:00:00Z","kind":"drop","sk_err":1.5}`, 1, "sk_err", "want an integer"},
		{"bad state", `{"time":"2026-11-26T00:00:00Z","kind":"state_change","state":"OPEN"}`, 1, "state", "unknown TCP state"},
		{"bad flag", `{"time":"2026-11-26T00:00:00Z","kind":"drop","tcp_flags":"SYN|FOO"}`, 1, "tcp_flags", "unknown TCP flag"},
		{"flags range", `{"time":"2026-11-26T00:00:00Z","kind":"drop","tcp_flags":256}`, 1, "tcp_flags", "0..255"},
		{"bad proto", `{"time":"2026-11-26T00:00:00Z","kind":"drop","proto":"quic"}`, 1, "proto", "unknown protocol"},
		{"unknown field", `{"time":"2026-11-26T00:00:00Z","kind":"drop","srcport":1}`, 1, "srcport", "unknown field"},
		{"bad neigh state", `{"time":"2026-11-26T00:00:00Z","kind":"neigh_failed","neigh_state":"GONE"}`, 1, "neigh_state", "unknown neighbour state"},
		{"neigh resolved not bool", `{"time":"2026-11-26T00:00:00Z","kind":"neigh_failed","neigh_resolved":"yes"}`, 1, "neigh_resolved", "true or false"},
		{"negative tried", `{"time":"2026-11-26T00:00:00Z","kind":"neigh_failed","neigh_tried_ns":-5}`, 1, "neigh_tried_ns", "want an integer"},
		{"icmp code range", `{"time":"2026-11-26T00:00:00Z","kind":"icmp_error","icmp_code":300}`, 1, "icmp_code", "0..255"},
		{"bad icmp from", `{"time":"2026-11-26T00:00:00Z","kind":"icmp_error","icmp_from":"router"}`, 1, "icmp_from", "not an IP address"},
		{"too long", strings.Repeat(" ", MaxLineBytes+1), 1, "", "longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dec := NewDecoder(strings.NewReader(tc.input))
			var s signal.Signal
			var err error
			for err == nil {
				err = dec.Decode(&s)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode error = %v (%T), want *Error", err, err)
			}
			if e.Line != tc.line || e.Field != tc.field || !strings.Contains(e.Error(), tc.msg) {
				t.Fatalf("error = %q (line %d field %q), want line %d field %q containing %q",
					e, e.Line, e.Field, tc.line, tc.field, tc.msg)
			}
		})
	}
}

func TestDecodeContinuesAfterBadLine(t *testing.T) {
	in := `{"time":"2026-11-26T00:00:00Z","kind":"nope"}` + "\r\n" + `{"time":"2026-11-26T00:00:01Z","kind":"drop","tcp_flags":18,"proto":6}` + "\r\n"
	dec := NewDecoder(strings.NewReader(in))
	var s signal.Signal
	if err := dec.Decode(&s); err == nil {
		t.Fatal("first line decoded without error")
	}
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("second line: %v", err)
	}
	if s.TCPFlags != signal.TCPFlagSYN|signal.TCPFlagACK || s.Flow.Proto != signal.ProtoTCP || dec.Line() != 2 {
		t.Fatalf("got %+v at line %d", s, dec.Line())
	}
}

func TestMarshalRejectsUnencodable(t *testing.T) {
	t0 := time.Unix(1, 0)
	tests := []struct {
		name  string
		s     signal.Signal
		field string
	}{
		{"zero time", signal.Signal{Kind: signal.KindDrop}, "time"},
		{"unknown kind", signal.Signal{Time: t0}, "kind"},
		{"bad state", signal.Signal{Time: t0, Kind: signal.KindDrop, State: 77}, "state"},
		{"bad old state", signal.Signal{Time: t0, Kind: signal.KindDrop, OldState: 77}, "old_state"},
		{"bad neigh state", signal.Signal{Time: t0, Kind: signal.KindNeighFailed, NeighState: 0x03}, "neigh_state"},
		{"negative tried", signal.Signal{Time: t0, Kind: signal.KindNeighFailed, NeighTried: -1}, "neigh_tried_ns"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Marshal(tc.s)
			var e *Error
			if !errors.As(err, &e) || e.Field != tc.field {
				t.Fatalf("Marshal error = %v, want field %q", err, tc.field)
			}
		})
	}
}

// TestFixturesDecode keeps every recorded fixture valid.
func TestFixturesDecode(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/replay/*.jsonl")
	if len(files) == 0 {
		t.Fatal("no fixtures in testdata/replay")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := NewDecoder(bytes.NewReader(data))
		n := 0
		for {
			var s signal.Signal
			err := dec.Decode(&s)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			n++
		}
		if n == 0 {
			t.Errorf("%s: no signals", f)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, s := range sampleSignals() {
		b, err := Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	files, _ := filepath.Glob("../../testdata/replay/*.jsonl")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			f.Add(line)
		}
	}
	for _, seed := range []string{"", "{}", "null", `{"time":null,"kind":null}`, `{"tcp_flags":"|"}`,
		`{"time":"2026-11-26T00:00:00Z","kind":"drop","dev":"e\u0074h0","comm":"\ud83d\ude00"}`,
		`{"time":"2026-11-26T00:00:00Z","kind":"drop","sk_err":-0,"err":1e2}`, `{"a":{"b":1}}`, ` { "kind" : "drop" } x`,
		`{"time":"2026-11-26T00:00:00Z","kind":"drop","src":"fe80::1%eth0","dst":"::ffff:1.2.3.4"}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s signal.Signal
		if err := Unmarshal(data, &s); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not *Error", err)
			}
			return
		}
		// The hand-written scanner accepts only valid JSON.
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		// Whatever decodes must encode and decode back to the same signal.
		b, err := Marshal(s)
		if err != nil {
			t.Fatalf("decoded %+v but Marshal fails: %v", s, err)
		}
		var back signal.Signal
		if err := Unmarshal(b, &back); err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
		assertEqual(t, back, s)
	})
}

func FuzzDecoder(f *testing.F) {
	f.Add([]byte("# c\n{\"time\":\"2026-11-26T00:00:00Z\",\"kind\":\"drop\"}\n\n{bad"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := NewDecoder(bytes.NewReader(data))
		for i := 0; i < 1000; i++ {
			var s signal.Signal
			err := dec.Decode(&s)
			if err == io.EOF {
				return
			}
			var e *Error
			if err != nil && (!errors.As(err, &e) || e.Line < 1) {
				t.Fatalf("error %v lacks a line number", err)
			}
			if err != nil && e.Field == "" && strings.Contains(e.Error(), "longer than") {
				return
			}
		}
	})
}

// The scanner agrees with encoding/json on what a line means.
func TestScannerStrings(t *testing.T) {
	tests := []struct {
		in      string
		dev     string
		wantErr string
	}{
		{`{"time":"2026-11-26T00:00:00Z","kind":"drop","dev":"eth0"}`, "eth0", ""},
		{`{"time":"2026-11-26T00:00:00Z","kind":"drop","dev":"e\u0074h\"0\\"}`, "eth\"0\\", ""},
		{`{"time":"2026-11-26T00:00:00Z","kind":"drop","dev":"\ud83d\ude00"}`, "\U0001F600", ""},
		{` { "time" : "2026-11-26T00:00:00Z" , "kind" : "drop" } `, "", ""},
		{`{"time":"2026-11-26T00:00:00Z","kind":"drop","dev":"a` + "\x01" + `"}`, "", "control character"},
		{`{"time":"2026-11-26T00:00:00Z","kind":"drop","dev":{"x":1}}`, "", "nested"},
		{`{"time":"2026-11-26T00:00:00Z","kind":"drop","sk_err":01}`, "", "not a JSON object"},
		{`{"time":"2026-11-26T00:00:00Z","kind":"drop","sk_err":1.}`, "", "bad number"},
		{`{"time":"2026-11-26T00:00:00Z","kind":"drop"} {}`, "", "data after the object"},
		{`{"time":"2026-11-26T00:00:00Z","kind":"drop",}`, "", "want a string"},
		{`{"time":"2026-11-26T00:00:00Z" "kind":"drop"}`, "", "missing ','"},
		{`{"time":"2026-11-26T00:00:00Z","kind":"drop","dev":"x","dev":"y"}`, "y", ""},
	}
	for _, tc := range tests {
		var s signal.Signal
		err := Unmarshal([]byte(tc.in), &s)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || s.Dev != tc.dev {
			t.Errorf("%s: dev %q err %v, want %q", tc.in, s.Dev, err, tc.dev)
		}
	}
}
