//go:build linux

package networkcorrelatorreceiver

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"

	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/probe"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// The host context handed to the correlator answers from the real
// namespace: a route lookup and a listener query in the test's own netns.
func TestHostContextAdapters(t *testing.T) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		t.Skipf("no /proc/self/ns/net: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN to open a namespace's netlink by inode)")
	}
	ns := uint32(st.Ino)
	namer, host, rules := hostContext()
	if namer == nil || host == nil || rules == nil {
		t.Fatal("hostContext left a provider out")
	}
	r, err := host.Route(ns, netip.MustParseAddr("127.0.0.1"))
	if err != nil || r.Type != "local" || r.Err != "" {
		t.Errorf("route to 127.0.0.1 = %+v, %v; want a local route", r, err)
	}
	ls, err := host.Listeners(ns, 1) // tcpmux: nobody listens
	if err != nil || len(ls) != 0 {
		t.Errorf("listeners on port 1 = %v, %v; want none", ls, err)
	}
	// The overload patterns' context reads this namespace's conntrack table.
	if ct, err := overloadContext().Conntrack(pattern.Netns{Inode: ns}); err != nil || ct.Max == 0 && ct.Entries != 0 {
		t.Errorf("conntrack of this namespace = %+v, %v", ct, err)
	}
	// A drop in a namespace that does not exist is not attributed, with a reason.
	if m, err := rules.Attribute(&signal.Signal{Kind: signal.KindDrop, NetnsInode: 1, DropReason: "NETFILTER_DROP"}); err == nil {
		t.Errorf("attribution in a missing namespace = %+v, want an error", m)
	}
}

// The kernel source end to end with host context: a SYN dropped by an nft
// rule in a lab namespace is diagnosed naming the rule, its chain and
// handle, and the fix deletes it.
func TestKernelSourceNamesTheRule(t *testing.T) {
	if err := probe.Check(); err != nil {
		t.Skipf("kernel source unavailable: %v", err)
	}
	if err := lab.Check(); err != nil {
		t.Skipf("lab unavailable: %v", err)
	}
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	if err := server.Nft("table inet nctest {\n chain input {\n  type filter hook input priority 0\n  tcp dport 8095 drop\n }\n}\n"); err != nil {
		if strings.Contains(err.Error(), "executable file not found") {
			t.Skipf("the nft command (package nftables) is not installed: %v", err)
		}
		t.Fatal(err)
	}
	logs, metrics := new(consumertest.LogsSink), new(consumertest.MetricsSink)
	cfg := createDefaultConfig()
	started(t, NewFactory(), cfg, logs, metrics, componenttest.NewNopHost())
	if _, err := client.Dial(context.Background(), netip.AddrPortFrom(server.IP, 8095), 2500*time.Millisecond); err == nil {
		t.Fatal("connect succeeded through the drop rule")
	}
	var found record
	waitFor(t, "a syn_dropped diagnosis naming the rule", func() bool {
		for _, r := range records(logs) {
			a := r.lr.Attributes().AsRaw()
			if a["networkcorrelator.pattern"] == "syn_dropped" && a["server.port"] == int64(8095) {
				found = r
				return true
			}
		}
		return false
	})
	body := found.lr.Body().Str()
	for _, want := range []string{"dropped by rule `tcp dport 8095 drop` (inet nctest input, handle ", " in netns "} {
		if !strings.Contains(body, want) {
			t.Errorf("body %q, want it to contain %q", body, want)
		}
	}
	if res := fmt.Sprint(found.lr.Attributes().AsRaw()); !strings.Contains(res, "nft delete rule inet nctest input handle") {
		t.Errorf("attributes %s, want the fix deleting the rule", res)
	}
	t.Logf("body: %s", body)
}
