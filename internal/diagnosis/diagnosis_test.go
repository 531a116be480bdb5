package diagnosis

import (
	"strings"
	"testing"
	"time"
)

func valid() Diagnosis {
	t0 := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	return Diagnosis{
		Pattern: PatternConnectionRefused, Summary: "connection to 10.0.0.2:8080 refused",
		Evidence:   []Evidence{{Time: t0, Source: "tcp:tcp_receive_reset", Fact: "RST in SYN_SENT"}},
		Confidence: 0.9, Severity: SeverityError, Resolution: "start the server", Layer: LayerL4,
		Key: "connection_refused/no_listener/10.0.0.2:8080/netns:1", FirstSeen: t0, LastSeen: t0,
		Count: 3, New: 2,
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Diagnosis)
		wantErr string // "" = valid
	}{
		{"complete", func(*Diagnosis) {}, ""},
		{"first report", func(d *Diagnosis) { d.Count, d.New = 1, 1 }, ""},
		{"update with evidence only", func(d *Diagnosis) { d.New = 0 }, ""},
		{"every occurrence new", func(d *Diagnosis) { d.New = d.Count }, ""},
		{"new above count", func(d *Diagnosis) { d.New = d.Count + 1 }, "new occurrences 4 outside [0, count 3]"},
		{"new negative", func(d *Diagnosis) { d.New = -1 }, "new occurrences -1 outside [0, count 3]"},
		{"count zero", func(d *Diagnosis) { d.Count, d.New = 0, 0 }, "count 0 < 1"},
		{"no pattern", func(d *Diagnosis) { d.Pattern = "" }, "pattern is empty"},
		{"no evidence", func(d *Diagnosis) { d.Evidence = nil }, "no evidence"},
		{"confidence zero", func(d *Diagnosis) { d.Confidence = 0 }, "confidence 0 outside (0,1]"},
		{"no key", func(d *Diagnosis) { d.Key = "" }, "aggregation key is empty"},
		{"last before first", func(d *Diagnosis) { d.LastSeen = d.FirstSeen.Add(-time.Second) }, "first/last seen inconsistent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := valid()
			tt.mod(&d)
			err := d.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
