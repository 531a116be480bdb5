//go:build linux

package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/network-correlator/network-correlator/internal/diagnosis"
	"github.com/network-correlator/network-correlator/internal/lab"
	"github.com/network-correlator/network-correlator/internal/replay"
	"github.com/network-correlator/network-correlator/internal/signal"
)

var recordPatterns = flag.Bool("record", false, "write the signals of the established-connection scenarios to testdata/replay/kernel_*.jsonl")

// recordSignals writes what the probes sent for the lab subnet as a replay
// fixture (with -record), so the pattern tests replay real kernel sequences.
func recordSignals(t *testing.T, p *pipeline, name, describe string) {
	t.Helper()
	if !*recordPatterns {
		return
	}
	sigs, _ := p.snapshot()
	var b bytes.Buffer
	for _, line := range strings.Split(describe, "\n") {
		b.WriteString("# " + line + "\n")
	}
	enc := replay.NewEncoder(&b)
	for _, s := range sigs {
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
	}
	path := "../testdata/replay/kernel_" + name + ".jsonl"
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("recorded %d signals to %s", len(sigs), path)
}

// Failures of established connections through the real probes: the peer
// restarted (no socket, or a new listener), half-open after the client's
// close, and a black hole installed mid-connection.

// sysctl writes a /proc/sys value inside the host's namespace (the net.*
// tree is per namespace).
func sysctl(t *testing.T, h *lab.Host, name, value string) {
	t.Helper()
	path := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
	if err := h.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) }); err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v", name, value, h.Netns, err)
	}
}

// connected opens a connection client -> server:port, with the accepted end.
func connected(t *testing.T, client, server *lab.Host, port uint16) (c, s net.Conn) {
	t.Helper()
	ln, err := server.Listen(port)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		a, err := ln.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- a
	}()
	c, err = client.Dial(context.Background(), netip.AddrPortFrom(server.IP, port), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s = <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	// Data both ways: the connection is established and in use.
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	return c, s
}

// abortClose closes with SO_LINGER 0: the socket is gone at once, no orphan
// keeps a namespace alive after the test.
func abortClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func needNft(t *testing.T) {
	t.Helper()
	needTool(t, "nft")
}

// signalsOf renders the signals of d's connection (either direction), for
// a failure message.
func signalsOf(sigs []signal.Signal, d diagnosis.Diagnosis) string {
	var b strings.Builder
	for _, s := range sigs {
		if s.Flow == d.Flow || s.Flow == d.Flow.Reverse() {
			fmt.Fprintf(&b, "\n    %s %s %s state=%s old=%s flags=%s sk_err=%d drop=%s reset=%s rt=%d netns=%d",
				s.Time.Format("15:04:05.000000"), s.Kind, s.Flow, s.State, s.OldState, replay.FlagsString(s.TCPFlags),
				s.SkErr, s.DropReason, s.ResetReason, s.Retransmits, s.NetnsCookie)
		}
	}
	return b.String()
}

func logDiagnosis(t *testing.T, d diagnosis.Diagnosis, since time.Time) {
	t.Helper()
	t.Logf("%s after %s: %s\n  details: %s\n  resolution: %s\n  confidence %.2f, key %s",
		d.Pattern, time.Since(since).Round(time.Millisecond), d.Summary, d.Details, d.Resolution, d.Confidence, d.Key)
}

func TestPeerRestarted(t *testing.T) {
	const port = 8080
	for _, tc := range []struct {
		name     string
		file     string
		listen   bool // the new server listens on the port again
		cause    string
		evidence [2]string
	}{
		{"no socket", "peer_lost_no_socket", false, "no_socket", [2]string{"skb:kfree_skb", "NO_SOCKET"}},
		{"listening again", "peer_lost_new_listener", true, "new_listener", [2]string{"skb:kfree_skb", "TCP_FLAGS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			old := l.MustAddHost(t, "server")
			repl := l.MustAddHost(t, "server2")
			p := startPipeline(t, l)
			c, s := connected(t, client, old, port)
			// Closed only after the diagnosis: the abort's RST goes nowhere.
			t.Cleanup(func() { abortClose(c); abortClose(s) })

			// The server "restarts": its namespace drops off the link with
			// its sockets, a new one takes over its address (a new MAC),
			// and the client re-resolves it.
			start := time.Now()
			if _, err := old.Run("ip", "link", "set", "eth0", "down"); err != nil {
				t.Fatal(err)
			}
			prefix := netip.PrefixFrom(old.IP, l.Subnet().Bits()).String()
			for _, args := range [][]string{
				{"addr", "flush", "dev", "eth0"},
				{"addr", "add", prefix, "dev", "eth0"},
			} {
				if _, err := repl.Run("ip", args...); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := client.Run("ip", "neigh", "flush", "to", old.IP.String()); err != nil {
				t.Fatal(err)
			}
			repl.IP = old.IP
			if tc.listen {
				ln, err := repl.Listen(port)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
			}

			// The client uses its connection: the new server has none.
			useAfterLoss(t, c)
			d := p.waitFor(t, 5*time.Second, "peer_lost_state", func(d diagnosis.Diagnosis) bool {
				return d.Pattern == diagnosis.PatternPeerLostState && d.Flow.Dst == old.IP && d.Flow.DstPort == port
			})
			logDiagnosis(t, d, start)
			if !strings.Contains(d.Key, "/"+tc.cause+"/") {
				t.Errorf("key %s, want cause %s", d.Key, tc.cause)
			}
			if !hasEvidence(d, tc.evidence[0], tc.evidence[1]) || !hasEvidence(d, "tcp:tcp_receive_reset", "ESTABLISHED") {
				t.Errorf("evidence lacks %v or the client's RST: %+v", tc.evidence, d.Evidence)
			}
			if !strings.Contains(d.Summary, repl.Netns) || d.Destination.NetnsInode != repl.Inode {
				t.Errorf("the replacement namespace %s is not named: %s (dest inode %d)", repl.Netns, d.Summary, d.Destination.NetnsInode)
			}
			if d.Flow.Src != client.IP {
				t.Errorf("flow source %s, want the client %s", d.Flow.Src, client.IP)
			}
			time.Sleep(300 * time.Millisecond)
			recordSignals(t, p, tc.file, "Recorded by e2e TestPeerRestarted -record ("+tc.name+"): the server's netns leaves the link,\n"+
				"a new one takes its IP, the client re-resolves it and writes. Expect peer_lost_state, "+tc.cause+".")
		})
	}
}

func TestHalfOpenClientClose(t *testing.T) {
	needNft(t)
	const port = 8081
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	p := startPipeline(t, l)
	// The orphaned FIN_WAIT1 socket gives up after one retransmit.
	sysctl(t, client, "net.ipv4.tcp_orphan_retries", "1")
	c, s := connected(t, client, server, port)
	t.Cleanup(func() { abortClose(s) })

	// Everything from the server is dropped: its ACK of the FIN never arrives.
	if err := server.Nft(fmt.Sprintf("table inet gone {\n chain output {\n  type filter hook output priority 0;\n  ip daddr %s drop\n }\n}\n", client.IP)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	d := p.waitFor(t, 20*time.Second, "half_open", func(d diagnosis.Diagnosis) bool {
		return d.Pattern == diagnosis.PatternHalfOpen && d.Flow.Src == client.IP && d.Flow.Dst == server.IP
	})
	logDiagnosis(t, d, start)
	if !hasEvidence(d, "tcp:tcp_retransmit_skb", "FIN") {
		t.Errorf("no FIN retransmit in the evidence: %+v", d.Evidence)
	}
	if !strings.Contains(d.Summary, "FIN never acknowledged") {
		t.Errorf("summary: %s", d.Summary)
	}
	// The final close (FIN_WAIT1 -> CLOSE ETIMEDOUT) comes within seconds
	// and folds into the diagnosis instead of making a second one.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sigs, _ := p.snapshot()
		for _, sg := range sigs {
			if sg.Flow.Src == client.IP && sg.OldState.String() == "FIN_WAIT1" && sg.SkErr == 110 {
				t.Logf("kernel gave up the orphan after %s", sg.Time.Sub(start).Round(time.Millisecond))
				time.Sleep(300 * time.Millisecond)
				_, ds := p.snapshot()
				n := 0
				for _, x := range ds {
					if x.Pattern == diagnosis.PatternHalfOpen && x.Count == 1 && !strings.Contains(x.Details, "Aggregated:") {
						n++
					}
				}
				if n != 1 {
					t.Errorf("%d first emissions of half_open, want 1", n)
				}
				recordSignals(t, p, "half_open_fin", "Recorded by e2e TestHalfOpenClientClose -record: the client closes while the server's output\n"+
					"drops everything to it; tcp_orphan_retries=1. Expect half_open, fin_dropped in the server netns.")
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("no FIN_WAIT1 -> CLOSE ETIMEDOUT within 10s")
}

func TestEstablishedBlackhole(t *testing.T) {
	const port = 8082
	nftRule := func(script string) func(c, s *lab.Host) error {
		return func(c, s *lab.Host) error {
			needNft(t)
			return s.Nft(fmt.Sprintf(script, c.IP, port))
		}
	}
	for _, tc := range []struct {
		name  string
		file  string
		block func(client, server *lab.Host) error // installed mid-connection
		cause string
		// drop: evidence of a local drop ("" = none must be named)
		drop   string
		ranked string // the runner-up the ranking note names
	}{
		{"data dropped in the server's input", "blackhole_input",
			nftRule("table inet bh {\n chain input {\n  type filter hook input priority 0;\n  ip saddr %s tcp dport %d drop\n }\n}\n"),
			"netfilter_drop", "NETFILTER_DROP", ""},
		{"everything from the server dropped", "blackhole_acks",
			nftRule("table inet bh {\n chain output {\n  type filter hook output priority 0;\n  ip daddr %s drop\n }\n}\n# %d\n"),
			"ack_dropped", "NETFILTER_DROP", ""},
		// The server vanishes: its link goes down, nothing on the node
		// reports a drop, the path or the peer is blamed and half_open's
		// reading (the peer vanished) is the runner-up.
		{"server vanished", "blackhole_vanished", func(_, s *lab.Host) error {
			_, err := s.Run("ip", "link", "set", "eth0", "down")
			return err
		}, "no_local_drop", "", "half_open/data_unanswered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t)
			client := l.MustAddHost(t, "client")
			server := l.MustAddHost(t, "server")
			p := startPipeline(t, l)
			// The kernel gives up after a few seconds instead of ~15 minutes.
			sysctl(t, client, "net.ipv4.tcp_retries2", "4")
			c, s := connected(t, client, server, port)
			t.Cleanup(func() { abortClose(c); abortClose(s) })
			if err := tc.block(client, server); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if _, err := c.Write([]byte("into the void")); err != nil {
				t.Fatal(err)
			}
			d := p.waitFor(t, 15*time.Second, "blackhole", func(d diagnosis.Diagnosis) bool {
				return d.Pattern == diagnosis.PatternBlackhole && d.Flow.Src == client.IP && d.Flow.Dst == server.IP
			})
			logDiagnosis(t, d, start)
			if !strings.Contains(d.Key, "/"+tc.cause+"/") {
				t.Errorf("key %s, want cause %s", d.Key, tc.cause)
			}
			if !hasEvidence(d, "tcp:tcp_retransmit_skb", "ESTABLISHED") {
				t.Errorf("no retransmit in the evidence: %+v", d.Evidence)
			}
			if tc.drop != "" {
				if !hasEvidence(d, "skb:kfree_skb", tc.drop) {
					t.Errorf("no %s drop in the evidence: %+v", tc.drop, d.Evidence)
				}
				if !strings.Contains(d.Summary, server.Netns) {
					t.Errorf("the server namespace is not named: %s", d.Summary)
				}
			} else if hasEvidence(d, "skb:kfree_skb", "") {
				t.Errorf("a drop is named though none should be seen: %+v", d.Evidence)
			}
			if tc.ranked != "" && !strings.Contains(d.Details, tc.ranked) {
				t.Errorf("details do not name the runner-up %s: %s", tc.ranked, d.Details)
			}
			// The application learns of it only when the kernel gives up.
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err := c.Read(make([]byte, 1))
			t.Logf("read returned %v after %s", err, time.Since(start).Round(time.Millisecond))
			if !errors.Is(err, syscall.ETIMEDOUT) && !errors.Is(err, syscall.EHOSTUNREACH) {
				t.Errorf("read error %v, want ETIMEDOUT (or EHOSTUNREACH once the neighbour fails)", err)
			}
			time.Sleep(300 * time.Millisecond)
			recordSignals(t, p, tc.file, "Recorded by e2e TestEstablishedBlackhole -record ("+tc.name+"): installed\n"+
				"mid-connection, the client writes, tcp_retries2=4. Expect blackhole, "+tc.cause+".")
		})
	}
}

// Thousands of connections with ordinary closes (the client first, the
// server first, data in flight read to the end before the close) must make
// no diagnosis of any pattern.
func TestNormalClosesAreSilent(t *testing.T) {
	const port, n = 9091, 3000
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	p := startPipeline(t, l)
	ln, err := server.Listen(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	payload := make([]byte, 64<<10) // more than one window's worth in flight
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func(c net.Conn, i int) {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 1)
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				switch buf[0] {
				case 's': // the server closes first
					return
				case 'd': // data in flight, then the server closes; the client reads it all
					_, _ = c.Write(payload)
					return
				default: // the client closes first: wait for its FIN
					_, _ = io.Copy(io.Discard, c)
				}
			}(c, i)
		}
	}()

	start := time.Now()
	to := netip.AddrPortFrom(server.IP, port)
	for i := 0; i < n; i++ {
		c, err := client.Dial(context.Background(), to, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		mode := "csd"[i%3]
		if _, err := c.Write([]byte{mode}); err != nil {
			t.Fatal(err)
		}
		switch mode {
		case 'c':
		default: // read to the server's FIN
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d connections in %s", n, time.Since(start).Round(time.Millisecond))
	time.Sleep(time.Second) // late signals and the grace period
	sigs, ds := p.snapshot()
	for _, d := range ds {
		t.Errorf("diagnosis on a success-only run: %s %s%s", d.Pattern, d.Summary, signalsOf(sigs, d))
	}
	t.Logf("%d signals reached user space for the lab subnet", len(sigs))
	for i, s := range sigs {
		if i < 10 {
			t.Logf("  signal %s %s %s %s sk_err=%d icsk_retransmits=%d", s.Kind, s.Flow, s.State, s.DropReason, s.SkErr, s.Retransmits)
		}
	}
}

// The application's own aborts are not lost state: the server aborts with
// SO_LINGER 0 or closes with unread data (a RST instead of a FIN), the
// client gets ECONNRESET and its data still in flight meets no socket. No
// diagnosis; the active RSTs must reach the correlator (they are what rules
// the pattern out) with their reasons.
func TestApplicationAbortsAreNotLostState(t *testing.T) {
	const port, n = 9092, 60
	l := lab.New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	p := startPipeline(t, l)
	ln, err := server.Listen(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn, i int) {
				buf := make([]byte, 1)
				if _, err := io.ReadFull(c, buf); err != nil {
					c.Close()
					return
				}
				if i%2 == 0 {
					abortClose(c) // SO_LINGER 0
					return
				}
				time.Sleep(20 * time.Millisecond) // let more data arrive unread
				c.Close()                         // unread data: RST instead of FIN
			}(c, i)
		}
	}()
	to := netip.AddrPortFrom(server.IP, port)
	resets := 0
	for i := 0; i < n; i++ {
		c, err := client.Dial(context.Background(), to, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("x"))
		_, _ = c.Write([]byte("unread data"))
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		for {
			if _, err := c.Write([]byte("more")); err != nil {
				if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
					resets++
				}
				break
			}
			if _, err := c.Read(make([]byte, 1)); err != nil {
				if errors.Is(err, syscall.ECONNRESET) {
					resets++
				}
				break
			}
		}
		c.Close()
	}
	time.Sleep(time.Second)
	sigs, ds := p.snapshot()
	for _, d := range ds {
		t.Errorf("diagnosis for an application's own abort: %s %s%s", d.Pattern, d.Summary, signalsOf(sigs, d))
	}
	// Late client segments meet no socket (NO_SOCKET) or the still open
	// listener (TCP_FLAGS): the signature of lost state, ruled out by the
	// active RST before them.
	reasons, drops := map[string]int{}, map[string]int{}
	for _, s := range sigs {
		switch s.Kind.String() {
		case "reset_sent":
			reasons[fmt.Sprintf("%s flags=%#x", s.ResetReason, s.TCPFlags)]++
		case "drop":
			drops[fmt.Sprintf("%s flags=%#x", s.DropReason, s.TCPFlags)]++
		}
	}
	t.Logf("%d/%d clients saw ECONNRESET/EPIPE; %d signals; resets sent: %v; drops: %v", resets, n, len(sigs), reasons, drops)
	if reasons["TCP_STATE flags=0x0"] == 0 && reasons["TCP_ABORT_ON_CLOSE flags=0x0"] == 0 {
		t.Errorf("no active RST (TCP_STATE / TCP_ABORT_ON_CLOSE without a triggering segment) seen: %v", reasons)
	}
}
