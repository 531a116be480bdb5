//go:build linux

package livetest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// fatalTB records Fatalf instead of ending the test, to check the message.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

// TestStartDiagnosesAndStops: a connect to a closed port in a lab comes out
// of the real probes and the engine as the refused diagnosis, the filters
// decide what is fed and recorded, a vain wait prints the record, and
// nothing of the run survives the test.
func TestStartDiagnosesAndStops(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping kernel probes in -short mode")
	}
	tests := []struct {
		name string
		node bool // open the probes in the lab's node namespace
	}{
		{name: "probes in the test's namespace"},
		{name: "probes in the lab node", node: true},
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			server := l.MustAddHost(t, "server")
			inLab := func(s *signal.Signal) bool { return InLab(l, s.Flow.Src) || InLab(l, s.Flow.Dst) }
			o := Options{
				Engine: correlate.DefaultConfig(),
				Feed:   inLab,
				Record: func(s *signal.Signal) bool { return s.NetnsInode == client.Inode },
				Keep:   func(d diagnosis.Diagnosis) bool { return d.Flow.Dst == server.IP },
			}
			o.Engine.NetnsNamer = Names{Lab: l}
			if tc.node {
				o.OpenIn = l.Node()
			}
			r := Start(t, o)
			if _, err := client.Dial(context.Background(), netip.AddrPortFrom(server.IP, 8080), 2*time.Second); err == nil {
				t.Fatal("connect to a closed port succeeded")
			}
			d := r.WaitFor(t, 3*time.Second, "connection_refused", func(d diagnosis.Diagnosis) bool {
				return d.Pattern == diagnosis.PatternConnectionRefused && d.Flow.DstPort == 8080
			})
			if !strings.Contains(d.Summary, "in netns server") {
				t.Errorf("summary %q does not name the server's namespace by its lab name", d.Summary)
			}
			sigs, ds := r.Snapshot()
			if len(sigs) == 0 {
				t.Error("no signal recorded")
			}
			for _, s := range sigs {
				if !inLab(&s) || s.NetnsInode != client.Inode {
					t.Errorf("recorded a signal Feed or Record refuses: %s", s)
				}
			}
			for _, x := range ds {
				if x.Flow.Dst != server.IP {
					t.Errorf("recorded a diagnosis Keep refuses: %s", x.Key)
				}
			}
			f := &fatalTB{TB: t}
			if got := r.WaitFor(f, 100*time.Millisecond, "impossible", func(diagnosis.Diagnosis) bool { return false }); got.Key != "" {
				t.Errorf("a vain wait returned %s", got.Key)
			}
			for _, want := range []string{"no impossible diagnosis within 100ms", "diagnosis " + d.Key, "signal "} {
				if !strings.Contains(f.msg, want) {
					t.Errorf("timeout message lacks %q:\n%s", want, f.msg)
				}
			}
		})
	}
}
