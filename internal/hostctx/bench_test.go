//go:build linux

package hostctx

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/lab"
)

// A namespace with 300 iptables-nft rules, the dropping one last.
func benchLab(b *testing.B) (*lab.Host, Packet) {
	if err := lab.Check(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	l, err := lab.Create()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	srv, err := l.AddHost("server")
	if err != nil {
		b.Fatal(err)
	}
	var sb strings.Builder
	sb.WriteString("*filter\n")
	for i := 0; i < 299; i++ {
		fmt.Fprintf(&sb, "-A INPUT -s 192.168.%d.0/24 -p tcp --dport %d -j ACCEPT\n", i%256, 1000+i)
	}
	sb.WriteString("-A INPUT -p tcp --dport 8080 -j DROP\nCOMMIT\n")
	if _, err := srv.Run("sh", "-c", "printf '%s' \""+sb.String()+"\" | iptables-restore"); err != nil {
		b.Fatal(err)
	}
	return srv, Packet{NetnsInode: srv.Inode, Proto: 6, Src: netip.MustParseAddr("10.1.1.1"), Dst: srv.IP, SrcPort: 40000, DstPort: 8080, TCPFlags: 0x02}
}

// BenchmarkAttributeCached: the ruleset is in the cache.
func BenchmarkAttributeCached(b *testing.B) {
	_, p := benchLab(b)
	nf := NewNetfilter(nil)
	nf.TTL = time.Hour
	if _, err := nf.Attribute(p); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := nf.Attribute(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttributeUncached: every call lists the ruleset over netlink.
func BenchmarkAttributeUncached(b *testing.B) {
	_, p := benchLab(b)
	nf := NewNetfilter(nil)
	nf.TTL = 0
	for i := 0; i < b.N; i++ {
		if _, err := nf.Attribute(p); err != nil {
			b.Fatal(err)
		}
	}
}
