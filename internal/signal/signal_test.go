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

func TestSuccessNoise(t *testing.T) {
	tests := []struct {
		name string
		s    Signal
		want bool
	}{
		{"listener late ACK drop", Signal{Kind: KindDrop, State: StateListen, TCPFlags: TCPFlagACK, DropReason: "TCP_FLAGS"}, true},
		{"listener RST for it", Signal{Kind: KindResetSent, State: StateListen, TCPFlags: TCPFlagACK, ResetReason: "TCP_FLAGS"}, true},
		{"tail-loss probe of a FIN", Signal{Kind: KindRetransmit, State: StateLastAck, TCPFlags: TCPFlagFIN | TCPFlagACK}, true},
		{"retransmission timeout", Signal{Kind: KindRetransmit, State: StateEstablished, Retransmits: 1}, false},
		{"SYN retransmit", Signal{Kind: KindRetransmit, State: StateSynSent}, false},
		{"NO_SOCKET drop of data", Signal{Kind: KindDrop, TCPFlags: TCPFlagPSH | TCPFlagACK, DropReason: "NO_SOCKET"}, false},
		{"netfilter drop at a listener", Signal{Kind: KindDrop, State: StateListen, TCPFlags: TCPFlagACK, DropReason: "NETFILTER_DROP"}, false},
		{"refused close", Signal{Kind: KindStateChange, OldState: StateSynSent, State: StateClose, SkErr: 111}, false},
	}
	for _, tt := range tests {
		if got := SuccessNoise(tt.s); got != tt.want {
			t.Errorf("%s: SuccessNoise = %v, want %v", tt.name, got, tt.want)
		}
	}
}
