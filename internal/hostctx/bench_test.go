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

// BenchmarkRulesetListing: what a cache miss costs (the netlink listing
// of the ruleset, addresses and devices).
func BenchmarkRulesetListing(b *testing.B) {
	_, p := benchLab(b)
	for i := 0; i < b.N; i++ {
		e, err := loadNetfilter(p.NetnsInode)
		if err != nil {
			b.Fatal(err)
		}
		if len(e.rs.chains) == 0 {
			b.Fatal("no chains listed")
		}
	}
}

func BenchmarkHostQueries(b *testing.B) {
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
	h := NewNetlink()
	b.Run("Route", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := h.Route(srv.Inode, l.Node().IP); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Listeners", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := h.Listeners(srv.Inode, 80); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Link", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := h.Link(srv.Inode, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}
