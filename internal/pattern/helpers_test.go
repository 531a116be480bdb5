package pattern_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

// Namespaces used by the fixtures in testdata/replay.
const (
	clientInode = 4026532301
	serverInode = 4026532302
	hostInode   = 4026531840
)

type namer map[uint32]string

func (n namer) Name(inode uint32, _ uint64) string { return n[inode] }

var fixtureNames = namer{clientInode: "client", serverInode: "server", hostInode: "host"}

// replayFixture runs a recorded fixture through the correlator with the given
// patterns (nil = the whole library) and returns every emitted diagnosis,
// failing the test on any that does not validate.
func replayFixture(t *testing.T, name string, ps []pattern.Pattern, mods ...func(*correlate.Config)) ([]diagnosis.Diagnosis, correlate.Stats) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "replay", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg := correlate.DefaultConfig()
	cfg.NetnsNamer = fixtureNames
	cfg.Patterns = ps
	for _, m := range mods {
		m(&cfg)
	}
	var out []diagnosis.Diagnosis
	e, err := correlate.New(cfg, func(d diagnosis.Diagnosis) {
		if err := d.Validate(); err != nil {
			t.Errorf("emitted an invalid diagnosis: %v\n%+v", err, d)
		}
		out = append(out, d)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := correlate.Replay(f, e, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Invalid != 0 {
		t.Fatalf("%d invalid diagnoses: %s", st.Invalid, st.LastInvalid)
	}
	return out, e.Stats()
}

func hasSource(d diagnosis.Diagnosis, src string) bool {
	for _, ev := range d.Evidence {
		if ev.Source == src {
			return true
		}
	}
	return false
}

func mustContain(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Errorf("%s = %q, want it to contain %q", what, got, want)
	}
}

func keysOf(ds []diagnosis.Diagnosis) []string {
	var ks []string
	for _, d := range ds {
		ks = append(ks, fmt.Sprintf("%s@%s(count %d)", d.Key, d.LastSeen.Format("15:04:05.000"), d.Count))
	}
	return ks
}
