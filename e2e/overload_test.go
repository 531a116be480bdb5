//go:build linux

package e2e

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/hostctx"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/internal/signal"
)

// withOverload gives the correlator the host context the server-overload
// patterns decide on, and netfilter rule attribution.
func withOverload(c *correlate.Config) {
	c.Rules = ruleAttributor{hostctx.NewNetfilter(hostctx.NewNetnsNames())}
	correlate.WithOverload(c, hostctx.NewOverload())
}

// ruleAttributor adapts hostctx.Netfilter as the receiver does.
type ruleAttributor struct{ nf *hostctx.Netfilter }

func (a ruleAttributor) Attribute(drop *signal.Signal) (*pattern.RuleFact, error) {
	m, err := a.nf.Attribute(hostctx.PacketFromSignal(*drop))
	if err != nil {
		return nil, err
	}
	return &pattern.RuleFact{Netns: m.Netns, Family: m.Family, Table: m.Table, Chain: m.Chain, Handle: m.Handle,
		Text: m.Text, Verdict: m.Verdict, Exact: m.Exact}, nil
}

// listenBacklog opens a listener in h's namespace with the given listen()
// backlog that never accepts.
func listenBacklog(t *testing.T, h *lab.Host, port uint16, backlog int) {
	t.Helper()
	fd, err := h.ListenBacklog(port, backlog)
	if err != nil {
		t.Fatalf("listen in %s: %v", h.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
}

func dialKeep(t *testing.T, from *lab.Host, to netip.AddrPort) net.Conn {
	t.Helper()
	c, err := from.Dial(context.Background(), to, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", to, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialAsync starts a connect that is expected to hang, and returns when it
// started; the connect is cancelled when the test ends.
func dialAsync(t *testing.T, from *lab.Host, to netip.AddrPort) time.Time {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	started := make(chan time.Time, 1)
	go func() {
		defer close(done)
		started <- time.Now()
		if c, err := from.Dial(ctx, to, 20*time.Second); err == nil {
			c.Close()
		}
	}()
	return <-started
}

func flowTo(d diagnosis.Diagnosis, dst netip.AddrPort) bool {
	return d.Flow.Dst == dst.Addr() && d.Flow.DstPort == dst.Port()
}

// A SYN meeting a full accept queue is consumed without a drop record: the
// client only retransmits. The listener is found in the namespace owning
// the address and its queue, backlog and counters name the cause.
func TestAcceptQueueFullDiagnosed(t *testing.T) {
	l := lab.New(t)
	client, server := l.MustAddHost(t, "client"), l.MustAddHost(t, "server")
	p := startPipeline(t, l, withOverload)
	dst := netip.AddrPortFrom(server.IP, 8090)
	listenBacklog(t, server, dst.Port(), 1)
	// backlog 1: two completed connections wait (the queue is full when it
	// holds more than the backlog), the third SYN is dropped.
	dialKeep(t, client, dst)
	dialKeep(t, client, dst)
	start := dialAsync(t, client, dst)

	d := p.waitFor(t, 5*time.Second, "listen_overflow", func(d diagnosis.Diagnosis) bool {
		return d.Pattern == diagnosis.PatternListenOverflow && flowTo(d, dst)
	})
	t.Logf("diagnosed %s after connect(): %s", time.Since(start).Round(time.Millisecond), d.Summary)
	t.Logf("details: %s", d.Details)
	if !strings.Contains(d.Summary, "full accept queue (2/1)") || !strings.Contains(d.Summary, dst.String()) {
		t.Errorf("summary %q: want the listener %s and its queue 2/1", d.Summary, dst)
	}
	for _, want := range []string{"TcpExtListenOverflows", "syn_dropped/no_local_drop"} {
		if !strings.Contains(d.Details, want) {
			t.Errorf("details lack %q: %s", want, d.Details)
		}
	}
	if d.Destination.NetnsInode != server.Inode {
		t.Errorf("destination netns %d, want the server's %d", d.Destination.NetnsInode, server.Inode)
	}
	if !hasEvidence(d, "hostctx:sock_diag", "accept queue 2/1") {
		t.Errorf("no listener evidence: %+v", d.Evidence)
	}
	if !strings.Contains(d.Resolution, "somaxconn") || !strings.Contains(d.Resolution, "backlog (now 1)") {
		t.Errorf("resolution %q", d.Resolution)
	}
	sigs, ds := p.snapshot()
	for _, s := range sigs {
		if s.Kind == signal.KindDrop && s.Flow.Dst == dst.Addr() && s.Flow.DstPort == dst.Port() && pattern.IsSYN(s.TCPFlags) {
			t.Errorf("a drop record for the SYN (%s at %s): the kernel fact this pattern rests on changed", s.DropReason, s.DropLocation)
		}
	}
	for _, x := range ds {
		if flowTo(x, dst) && x.Pattern != diagnosis.PatternListenOverflow {
			t.Errorf("also diagnosed %s: %s", x.Pattern, x.Summary)
		}
	}
}

const ctMaxPath = "/proc/sys/net/netfilter/nf_conntrack_max"

// A namespace's conntrack table full of assured flows drops a new SYN as
// NETFILTER_DROP like a rule would; ctnetlink's statistics tell it apart.
// nf_conntrack_max is global (read-only in a child namespace): it is
// lowered to the lab namespace's count for about a second and restored.
func TestConntrackTableFullDiagnosed(t *testing.T) {
	needTool(t, "nft")
	l := lab.New(t)
	client, server := l.MustAddHost(t, "client"), l.MustAddHost(t, "server")
	orig, err := os.ReadFile(ctMaxPath)
	if err != nil {
		t.Skipf("skipping: conntrack sysctl unavailable: %v", err)
	}
	if err := server.Nft("table inet nclabct {\n chain input {\n  type filter hook input priority 0;\n" +
		"  ct state established,related accept\n  ct state new accept\n }\n}\n"); err != nil {
		t.Fatal(err)
	}
	p := startPipeline(t, l, withOverload)
	dst := netip.AddrPortFrom(server.IP, 8091)
	ln, err := server.Listen(dst.Port())
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan []net.Conn, 1)
	go func() {
		var cs []net.Conn
		defer func() { accepted <- cs }()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cs = append(cs, c)
			c.Write([]byte{1}) // both directions seen: the entry is assured
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for _, c := range <-accepted {
			c.Close()
		}
	})
	const n = 16 // a namespace with fewer entries elsewhere on the node is unaffected
	for i := 0; i < n; i++ {
		c := dialKeep(t, client, dst)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := hostctx.ReadConntrackStats(server.Inode)
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries < n {
		t.Fatalf("conntrack entries in the server namespace: %d, want >= %d", st.Entries, n)
	}
	restore := func() {
		if err := os.WriteFile(ctMaxPath, orig, 0o644); err != nil {
			t.Errorf("restore %s to %s: %v", ctMaxPath, strings.TrimSpace(string(orig)), err)
		}
	}
	t.Cleanup(restore) // also when the test fails
	if err := os.WriteFile(ctMaxPath, []byte(strconv.Itoa(int(st.Entries))), 0o644); err != nil {
		t.Skipf("skipping: cannot set %s (needs the initial network namespace): %v", ctMaxPath, err)
	}
	lowered := time.Now()
	start := dialAsync(t, client, dst)
	d := p.waitFor(t, 4*time.Second, "conntrack_table_full", func(d diagnosis.Diagnosis) bool {
		return d.Pattern == diagnosis.PatternConntrackTableFull && flowTo(d, dst)
	})
	restore()
	t.Logf("nf_conntrack_max was %d for %s", st.Entries, time.Since(lowered).Round(time.Millisecond))
	t.Logf("diagnosed %s after connect(): %s", time.Since(start).Round(time.Millisecond), d.Summary)
	t.Logf("details: %s", d.Details)
	want := "conntrack table full (" + strconv.Itoa(int(st.Entries)) + "/" + strconv.Itoa(int(st.Entries)) + " entries)"
	if !strings.Contains(d.Summary, want) {
		t.Errorf("summary %q, want %q", d.Summary, want)
	}
	for _, w := range []string{"No netfilter rule explains the drop", "syn_dropped/netfilter_drop", "drop "} {
		if !strings.Contains(d.Details, w) {
			t.Errorf("details lack %q: %s", w, d.Details)
		}
	}
	if !hasEvidence(d, "hostctx:ctnetlink", "entries") || !hasEvidence(d, "skb:kfree_skb", "NETFILTER_DROP") {
		t.Errorf("evidence: %+v", d.Evidence)
	}
	if d.Destination.NetnsInode != server.Inode {
		t.Errorf("destination netns %d, want the server's %d", d.Destination.NetnsInode, server.Inode)
	}
	_, ds := p.snapshot()
	for _, x := range ds {
		if flowTo(x, dst) && x.Pattern != diagnosis.PatternConntrackTableFull {
			t.Errorf("also diagnosed %s: %s", x.Pattern, x.Summary)
		}
	}
}

// The near miss: a rule's DROP in a namespace that tracks connections with
// room in its table is the rule's, named by the attribution, not conntrack's.
func TestConntrackRoomRuleDropIsTheRule(t *testing.T) {
	needTool(t, "nft")
	l := lab.New(t)
	client, server := l.MustAddHost(t, "client"), l.MustAddHost(t, "server")
	dst := netip.AddrPortFrom(server.IP, 8093)
	if err := server.Nft("table inet nclabct {\n chain input {\n  type filter hook input priority 0;\n" +
		"  ct state established,related accept\n  tcp dport 8093 drop\n }\n}\n"); err != nil {
		t.Fatal(err)
	}
	p := startPipeline(t, l, withOverload)
	start := dialAsync(t, client, dst)
	d := p.waitFor(t, 4*time.Second, "syn_dropped", func(d diagnosis.Diagnosis) bool {
		return d.Pattern == diagnosis.PatternSYNDropped && flowTo(d, dst)
	})
	t.Logf("diagnosed %s after connect(): %s", time.Since(start).Round(time.Millisecond), d.Summary)
	if !strings.Contains(d.Summary, "tcp dport 8093 drop") {
		t.Errorf("summary %q: want the rule named", d.Summary)
	}
	time.Sleep(300 * time.Millisecond) // a later conntrack verdict would have been emitted by now
	_, ds := p.snapshot()
	for _, x := range ds {
		if flowTo(x, dst) && x.Pattern == diagnosis.PatternConntrackTableFull {
			t.Errorf("conntrack_table_full for a rule's drop: %s", x.Summary)
		}
	}
}
