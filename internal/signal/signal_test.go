package signal

import "testing"

func TestKindNamesRoundTrip(t *testing.T) {
	for k := KindStateChange; k <= KindICMPSent; k++ {
		got, err := ParseKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", k.String(), got, err, k)
		}
	}
	if _, err := ParseKind("unknown"); err == nil {
		t.Error("ParseKind(unknown) succeeded")
	}
}

func TestNUDState(t *testing.T) {
	tests := []struct {
		st   NUDState
		name string
	}{
		{NUDIncomplete, "INCOMPLETE"},
		{NUDReachable, "REACHABLE"},
		{NUDStale, "STALE"},
		{NUDDelay, "DELAY"},
		{NUDProbe, "PROBE"},
		{NUDFailed, "FAILED"},
		{NUDNoARP, "NOARP"},
		{NUDPermanent, "PERMANENT"},
		{0x11, "NUD(0x11)"},
		{0, "NUD(0x0)"},
	}
	for _, tt := range tests {
		if got := tt.st.String(); got != tt.name {
			t.Errorf("%#x.String() = %q, want %q", uint8(tt.st), got, tt.name)
		}
		got, err := ParseNUDState(tt.name)
		single := tt.st != 0 && tt.st&(tt.st-1) == 0
		if single && (err != nil || got != tt.st) {
			t.Errorf("ParseNUDState(%q) = %v, %v; want %#x", tt.name, got, err, uint8(tt.st))
		}
		if !single && err == nil {
			t.Errorf("ParseNUDState(%q) succeeded", tt.name)
		}
	}
}
