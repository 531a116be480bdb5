//go:build linux

package networkcorrelatorreceiver

import (
	"net/netip"
	"os"
	"syscall"
	"testing"

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
	// A drop in a namespace that does not exist is not attributed, with a reason.
	if m, err := rules.Attribute(&signal.Signal{Kind: signal.KindDrop, NetnsInode: 1, DropReason: "NETFILTER_DROP"}); err == nil {
		t.Errorf("attribution in a missing namespace = %+v, want an error", m)
	}
}
