//go:build linux

package probe

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The test re-runs itself as root restricted to a capability set (setpriv
// clears the bounding set) and checks what Check and Open say there.
func TestCapabilities(t *testing.T) {
	switch os.Getenv("NC_PROBE_CAPS_CHILD") {
	case "none":
		if err := Check(); err == nil || !strings.Contains(err.Error(), "missing capability") {
			t.Fatalf("Check() = %v, want a missing-capability error", err)
		}
		_, err := Open(Config{})
		if err == nil {
			t.Fatal("Open succeeded without capabilities")
		}
		t.Logf("Open without capabilities: %v", err)
		for _, want := range []string{"CAP_BPF", "CAP_PERFMON", "setcap"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Open error %q does not mention %s", err, want)
			}
		}
		return
	case "bpf+perfmon":
		p, err := Open(Config{})
		if err != nil {
			t.Fatalf("Open with CAP_BPF and CAP_PERFMON: %v", err)
		}
		// Optional hooks may be missing (the TC program needs
		// CAP_NET_ADMIN, a private tracefs CAP_SYS_ADMIN); each must name
		// the capability that would enable it.
		for _, u := range p.Unavailable() {
			t.Logf("unavailable: %v", u)
			if !strings.Contains(u.Error(), "CAP_NET_ADMIN") && !strings.Contains(u.Error(), "CAP_SYS_ADMIN") {
				t.Errorf("unavailable hook error %q does not name the missing capability", u)
			}
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		return
	}
	requireProbe(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("skipping: setpriv (util-linux) is needed to drop capabilities")
	}
	for _, tc := range []struct{ name, caps string }{
		{"none", "-all"},
		{"bpf+perfmon", "-all,+bpf,+perfmon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set="+tc.caps, "--",
				os.Args[0], "-test.run=^TestCapabilities$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "NC_PROBE_CAPS_CHILD="+tc.name)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child with capabilities %s: %v\n%s", tc.caps, err, out)
			}
			if !strings.Contains(string(out), "--- PASS: TestCapabilities") {
				t.Fatalf("child did not run:\n%s", out)
			}
		})
	}
}
