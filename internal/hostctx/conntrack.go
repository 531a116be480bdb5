//go:build linux

package hostctx

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ConntrackStats is a namespace's conntrack table as ctnetlink reports it.
// Entries is counted per namespace; Max is nf_conntrack_max, global on this
// kernel (read-only in every namespace but the initial one). The counters
// are summed over CPUs and run from the namespace's creation.
type ConntrackStats struct {
	Entries, Max uint32
	// Drop: packets dropped because no entry could be made or confirmed
	// (the table full and nothing to early-drop, or an insert that failed).
	Drop uint64
	// EarlyDrop: unassured entries evicted to make room for new flows.
	EarlyDrop    uint64
	InsertFailed uint64
	Found        uint64
	Invalid      uint64
	Error        uint64
	CPUs         int
}

// Full: no room for a new entry (Max 0 means no limit).
func (s ConntrackStats) Full() bool { return s.Max > 0 && s.Entries >= s.Max }

// ctnetlink message types and attributes (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const (
	ipctnlMsgCtGetStatsCPU = 4
	ipctnlMsgCtGetStats    = 5

	ctaStatsFound        = 2
	ctaStatsInvalid      = 4
	ctaStatsInsertFailed = 9
	ctaStatsDrop         = 10
	ctaStatsEarlyDrop    = 11
	ctaStatsError        = 12

	ctaStatsGlobalEntries    = 1
	ctaStatsGlobalMaxEntries = 2

	nfnetlinkV0 = 0
)

// ReadConntrackStats asks ctnetlink in the namespace (by inode) for the
// table's fill and its per-CPU statistics: two requests on one socket
// opened at the namespace (no thread switch), a few microseconds each.
func ReadConntrackStats(ns uint32) (ConntrackStats, error) {
	nsh, err := OpenNetns(ns)
	if err != nil {
		return ConntrackStats{}, err
	}
	defer nsh.Close()
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(nsh)})
	if err != nil {
		return ConntrackStats{}, fmt.Errorf("ctnetlink in netns %d: %w", ns, err)
	}
	defer c.Close()
	// Never hold the caller (the correlator) on a kernel that stays silent.
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return ConntrackStats{}, err
	}
	var s ConntrackStats
	// The kernel marks its one answer NLM_F_MULTI without a DONE after it:
	// the ACK is what ends the exchange.
	msgs, err := c.Execute(ctRequest(ipctnlMsgCtGetStats, netlink.Acknowledge))
	if err != nil {
		return ConntrackStats{}, fmt.Errorf("conntrack stats in netns %d: %w", ns, err)
	}
	for _, m := range msgs {
		if m.Header.Type != ctType(ipctnlMsgCtGetStats) {
			continue // the ACK
		}
		if err := s.decodeGlobal(m.Data); err != nil {
			return ConntrackStats{}, fmt.Errorf("conntrack stats in netns %d: %w", ns, err)
		}
	}
	msgs, err = c.Execute(ctRequest(ipctnlMsgCtGetStatsCPU, netlink.Dump))
	if err != nil {
		return ConntrackStats{}, fmt.Errorf("conntrack per-CPU stats in netns %d: %w", ns, err)
	}
	for _, m := range msgs {
		if m.Header.Type != ctType(ipctnlMsgCtGetStatsCPU) {
			continue
		}
		if err := s.decodeCPU(m.Data); err != nil {
			return ConntrackStats{}, fmt.Errorf("conntrack per-CPU stats in netns %d: %w", ns, err)
		}
	}
	return s, nil
}

func ctType(msg uint16) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | msg)
}

func ctRequest(msg uint16, flags netlink.HeaderFlags) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: ctType(msg), Flags: netlink.Request | flags},
		// struct nfgenmsg: family, version, res_id (big endian)
		Data: []byte{unix.AF_UNSPEC, nfnetlinkV0, 0, 0},
	}
}

// ctAttrs decodes the attributes after a struct nfgenmsg (4 bytes);
// ctnetlink's numbers are big endian.
func ctAttrs(b []byte) (*netlink.AttributeDecoder, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("ctnetlink message of %d bytes", len(b))
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

func (s *ConntrackStats) decodeGlobal(b []byte) error {
	ad, err := ctAttrs(b)
	if err != nil {
		return err
	}
	for ad.Next() {
		switch ad.Type() {
		case ctaStatsGlobalEntries:
			s.Entries = ad.Uint32()
		case ctaStatsGlobalMaxEntries:
			s.Max = ad.Uint32()
		}
	}
	return ad.Err()
}

func (s *ConntrackStats) decodeCPU(b []byte) error {
	ad, err := ctAttrs(b)
	if err != nil {
		return err
	}
	s.CPUs++
	for ad.Next() {
		switch ad.Type() {
		case ctaStatsFound:
			s.Found += uint64(ad.Uint32())
		case ctaStatsInvalid:
			s.Invalid += uint64(ad.Uint32())
		case ctaStatsInsertFailed:
			s.InsertFailed += uint64(ad.Uint32())
		case ctaStatsDrop:
			s.Drop += uint64(ad.Uint32())
		case ctaStatsEarlyDrop:
			s.EarlyDrop += uint64(ad.Uint32())
		case ctaStatsError:
			s.Error += uint64(ad.Uint32())
		}
	}
	return ad.Err()
}
