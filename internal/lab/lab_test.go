//go:build linux

package lab

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLabConnectivityAndCleanup(t *testing.T) {
	if err := Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	l, err := Create()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")

	if want := l.Subnet().Addr().Next().Next(); client.IP != want {
		t.Errorf("client IP = %s, want %s", client.IP, want)
	}
	if client.Inode == 0 || client.Inode == server.Inode {
		t.Fatalf("namespace inodes not distinct: %d %d", client.Inode, server.Inode)
	}

	ln, err := server.Listen(8080)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	ctx := context.Background()
	c, err := client.Dial(ctx, netip.AddrPortFrom(server.IP, 8080), 2*time.Second)
	if err != nil {
		t.Fatalf("dial open port: %v", err)
	}
	c.Close()

	_, err = client.Dial(ctx, netip.AddrPortFrom(server.IP, 8081), 2*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial closed port: err = %v, want ECONNREFUSED", err)
	}

	// The listener lives in the server namespace, not in ours.
	if out, err := exec.Command("ss", "-Htln", "sport", "= :8080").Output(); err == nil && strings.Contains(string(out), server.IP.String()) {
		t.Errorf("listener leaked into the caller's namespace: %s", out)
	}

	names := []string{client.Netns, server.Netns, l.Node().Netns}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s still present after Close", n)
		}
	}
}

func TestFirewallHelpers(t *testing.T) {
	l := New(t)
	client := l.MustAddHost(t, "client")
	server := l.MustAddHost(t, "server")
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipping: nft (nftables) is not installed")
	}
	if err := server.Nft("table inet t {\n chain in {\n  type filter hook input priority 0;\n  tcp dport 9000 drop\n }\n}\n"); err != nil {
		t.Fatal(err)
	}
	_, err := client.Dial(context.Background(), netip.AddrPortFrom(server.IP, 9000), 300*time.Millisecond)
	if err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial through DROP: err = %v, want a timeout", err)
	}
	out, err := server.Run("nft", "list", "ruleset")
	if err != nil || !strings.Contains(string(out), "dport 9000 drop") {
		t.Fatalf("rule not in the server namespace: %v %s", err, out)
	}
}

func TestSweepRemovesDeadLabs(t *testing.T) {
	if err := Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	// A pid far above pid_max cannot be alive.
	stale := Prefix + "-999999999-1-node"
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = deleteNetns(stale) })
	if err := Sweep(); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), stale) {
		t.Fatalf("Sweep left %s", stale)
	}
}
