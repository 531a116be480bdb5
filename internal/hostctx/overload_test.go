//go:build linux

package hostctx

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"golang.org/x/sys/unix"
)

func TestParseNetstat(t *testing.T) {
	b := []byte("TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 4 17 19\n" +
		"IpExt: InNoRoutes ListenOverflows\nIpExt: 1 99\n")
	m := parseNetstat(b, "TcpExt")
	if m["ListenOverflows"] != 17 || m["ListenDrops"] != 19 || m["SyncookiesSent"] != 4 || len(m) != 3 {
		t.Errorf("TcpExt = %v", m)
	}
	if m := parseNetstat(b, "Nope"); len(m) != 0 {
		t.Errorf("missing section = %v", m)
	}
}

func TestListenerFor(t *testing.T) {
	ap := netip.MustParseAddrPort
	exact := Listener{Addr: ap("10.0.0.2:80"), Backlog: 1}
	wild4 := Listener{Addr: ap("0.0.0.0:80"), Backlog: 2}
	wild6 := Listener{Addr: ap("[::]:80"), Backlog: 3}
	other := Listener{Addr: ap("10.0.0.3:80"), Backlog: 4}
	tests := []struct {
		name string
		ls   []Listener
		addr string
		want uint32 // Backlog of the chosen one, 0 = none
	}{
		{"bound address first", []Listener{wild4, exact}, "10.0.0.2", 1},
		{"ipv4 wildcard", []Listener{other, wild4}, "10.0.0.2", 2},
		{"ipv6 wildcard takes ipv4", []Listener{wild6}, "10.0.0.2", 3},
		{"ipv4 wildcard not ipv6", []Listener{wild4}, "fd00::2", 0},
		{"bound to another address", []Listener{other}, "10.0.0.2", 0},
		{"none", nil, "10.0.0.2", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, ok := listenerFor(tc.ls, netip.MustParseAddr(tc.addr))
			if ok != (tc.want != 0) || ok && l.Backlog != tc.want {
				t.Errorf("got %+v %v, want backlog %d", l, ok, tc.want)
			}
		})
	}
}

func TestConntrackStatsDecode(t *testing.T) {
	msg := func(attrs func(ae *netlink.AttributeEncoder)) []byte {
		ae := netlink.NewAttributeEncoder()
		ae.ByteOrder = binary.BigEndian
		attrs(ae)
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{unix.AF_UNSPEC, 0, 0, 1}, b...)
	}
	var s ConntrackStats
	if err := s.decodeGlobal(msg(func(ae *netlink.AttributeEncoder) {
		ae.Uint32(ctaStatsGlobalEntries, 16)
		ae.Uint32(ctaStatsGlobalMaxEntries, 16)
	})); err != nil {
		t.Fatal(err)
	}
	for cpu := uint32(0); cpu < 2; cpu++ {
		if err := s.decodeCPU(msg(func(ae *netlink.AttributeEncoder) {
			ae.Uint32(ctaStatsFound, 1)
			ae.Uint32(ctaStatsDrop, 3+cpu)
			ae.Uint32(ctaStatsEarlyDrop, 5)
			ae.Uint32(ctaStatsInsertFailed, 7)
			ae.Uint32(13, 1000) // search_restart: not kept
		})); err != nil {
			t.Fatal(err)
		}
	}
	want := ConntrackStats{Entries: 16, Max: 16, Drop: 7, EarlyDrop: 10, InsertFailed: 14, Found: 2, CPUs: 2}
	if s != want || !s.Full() {
		t.Errorf("got %+v, want %+v (full)", s, want)
	}
	if err := s.decodeCPU([]byte{1}); err == nil {
		t.Error("a truncated message decoded")
	}
}

// A real listener whose accept queue fills: found from its address alone
// (in the namespace owning it), with its queue, counters and owner.
func TestOverloadAcceptQueue(t *testing.T) {
	l := lab.New(t)
	cli := l.MustAddHost(t, "client")
	srv := l.MustAddHost(t, "server")
	dst := netip.AddrPortFrom(srv.IP, 8090)
	fd, err := srv.ListenBacklog(dst.Port(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	o := NewOverload()
	o.AnswerTTL = 0
	o.OwnerBudget = 10 * time.Second // the scan's result, not its speed, is tested here
	client := pattern.Netns{Inode: cli.Inode}

	f, err := o.AcceptQueue(client, dst)
	if err != nil {
		t.Fatal(err)
	}
	if f.Netns.Inode != srv.Inode || f.Listener.Addr != dst || f.Listener.MaxBacklog != 1 || f.Full() || f.Somaxconn == 0 {
		t.Errorf("idle listener: %+v", f)
	}
	for i := 0; i < 3; i++ { // two complete and wait, the third SYN is dropped
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		c, err := cli.Dial(ctx, dst, 300*time.Millisecond)
		cancel()
		if i < 2 && err != nil {
			t.Fatal(err)
		}
		if c != nil {
			defer c.Close()
		}
	}
	f, err = o.AcceptQueue(client, dst)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Full() || f.Listener.Backlog != 2 || f.Overflows < 1 || f.OverflowsRose() < 1 || f.PrevAt.IsZero() {
		t.Errorf("full listener: %+v", f)
	}
	if !strings.HasPrefix(f.Process, "pid ") {
		t.Errorf("owner %q, want this test's pid", f.Process)
	}

	// Near misses: a port nobody listens on, an address of no namespace here.
	if _, err := o.AcceptQueue(client, netip.AddrPortFrom(srv.IP, 8091)); err == nil || !strings.Contains(err.Error(), "no listener") {
		t.Errorf("other port: %v", err)
	}
	if _, err := o.AcceptQueue(client, netip.MustParseAddrPort("192.0.2.77:8090")); !errors.Is(err, pattern.ErrNotLocal) {
		t.Errorf("foreign address: %v, want ErrNotLocal", err)
	}

	// A namespace made after the index: the miss is answered at once from
	// the index it has, and a rebuild in the background makes the address
	// local for the lookups after it.
	o.AddrMinRescan = 0
	late := l.MustAddHost(t, "late")
	lateDst := netip.AddrPortFrom(late.IP, 8090)
	if _, err := o.AcceptQueue(client, lateDst); !errors.Is(err, pattern.ErrNotLocal) {
		t.Fatalf("new namespace before the rebuild: %v, want ErrNotLocal", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := o.AcceptQueue(client, lateDst)
		if err != nil && strings.Contains(err.Error(), "no listener") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new namespace never indexed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOverloadRateLimit(t *testing.T) {
	o := NewOverload()
	o.MaxLookups = 2
	now := time.Unix(1000, 0)
	o.now = func() time.Time { return now }
	local := netip.MustParseAddr("192.0.2.1")
	// A local address in a namespace that does not exist: each lookup fails
	// after it was counted.
	o.addrs, o.addrsAt = map[netip.Addr][]uint32{local: {1}}, now
	for port := uint16(1); port <= 2; port++ {
		if _, err := o.AcceptQueue(pattern.Netns{}, netip.AddrPortFrom(local, port)); err == nil || strings.Contains(err.Error(), "skipped") {
			t.Fatalf("lookup %d: %v", port, err)
		}
	}
	if _, err := o.AcceptQueue(pattern.Netns{}, netip.AddrPortFrom(local, 3)); err == nil || !strings.Contains(err.Error(), "skipped") {
		t.Errorf("third lookup in a second: %v, want skipped", err)
	}
	// Remote destinations cost no lookup and are not limited.
	if _, err := o.AcceptQueue(pattern.Netns{}, netip.MustParseAddrPort("198.51.100.1:80")); !errors.Is(err, pattern.ErrNotLocal) {
		t.Errorf("remote destination: %v, want ErrNotLocal", err)
	}
	now = now.Add(time.Second)
	if _, err := o.AcceptQueue(pattern.Netns{}, netip.AddrPortFrom(local, 4)); err == nil || strings.Contains(err.Error(), "skipped") {
		t.Errorf("next second: %v", err)
	}
}

// The conntrack table of a namespace with a ct rule: its entries, the
// global max, and readings compared with the previous one.
func TestOverloadConntrack(t *testing.T) {
	l := lab.New(t)
	cli := l.MustAddHost(t, "client")
	srv := l.MustAddHost(t, "server")
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipping: nft is not installed")
	}
	if err := srv.Nft("table inet guard {\n chain input {\n  type filter hook input priority 0;\n  ct state new accept\n }\n}\n"); err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen(8092)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	o := NewOverload()
	o.CTMinInterval = 0
	ns := pattern.Netns{Inode: srv.Inode}
	f0, err := o.Conntrack(ns)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cli.Dial(context.Background(), netip.AddrPortFrom(srv.IP, 8092), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f1, err := o.Conntrack(ns)
	if err != nil {
		t.Fatal(err)
	}
	max, _ := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max")
	if f1.Entries != f0.Entries+1 || f1.Max == 0 || strings.TrimSpace(string(max)) != strconv.Itoa(int(f1.Max)) || f1.PrevAt != f0.At || f1.Full() {
		t.Errorf("before %+v, after a connection %+v (nf_conntrack_max %s)", f0, f1, max)
	}
	if _, err := o.Conntrack(pattern.Netns{Inode: 1}); err == nil {
		t.Error("a namespace that does not exist answered")
	}
}
