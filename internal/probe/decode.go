package probe

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// Layout of struct nc_event in bpf/probe.c (checked against the bpf2go
// type in decode_test.go). Integers are host-endian.
const (
	offTsNs        = 0
	offNetnsCookie = 8
	offSockCookie  = 16
	offLocation    = 24
	offNetnsInum   = 32
	offIfindex     = 36
	offPid         = 40
	offReason      = 44
	offSkErr       = 48
	offErr         = 52
	offRetransmits = 56
	offSport       = 60
	offDport       = 62
	offSaddr       = 64
	offDaddr       = 80
	offKind        = 96
	offFamily      = 97
	offState       = 98
	offOldState    = 99
	offProto       = 100
	offTCPFlags    = 101
	offFlags       = 102
	offComm        = 104
	offDev         = 120
	offPeer        = 136
	offDurationNs  = 152
	offProbes      = 160
	offMTU         = 164
	offBacklog     = 168
	offMaxBacklog  = 172
	offICMPType    = 176
	offICMPCode    = 177
	recordSize     = 184
)

// nc_event.flags
const (
	flagFlow     = 0x01
	flagReason   = 0x02
	flagErr      = 0x04
	flagSock     = 0x08
	flagLLAddr   = 0x10
	flagDuration = 0x20
	flagBacklog  = 0x40
	flagPeer     = 0x80
)

const (
	afInet  = 2
	afInet6 = 10
)

// decoder turns raw records into signals. It is used by one goroutine.
type decoder struct {
	// wallMinusMono converts bpf_ktime_get_ns (CLOCK_MONOTONIC) to wall
	// clock nanoseconds since the epoch.
	wallMinusMono int64
	dropReasons   map[uint32]string // skb_drop_reason value -> name without prefix
	rstReasons    map[uint32]string // sk_rst_reason value -> name without prefix
	syms          symbolizer
	locCache      map[uint64]string
}

type symbolizer interface {
	// symbol returns the function containing addr, or "" when unknown.
	symbol(addr uint64) string
}

func (d *decoder) decode(b []byte, s *signal.Signal) error {
	if len(b) < recordSize {
		return fmt.Errorf("probe: record of %d bytes, want %d", len(b), recordSize)
	}
	ne := binary.NativeEndian
	kind := signal.Kind(b[offKind])
	if kind < signal.KindStateChange || kind > signal.KindICMPSent {
		return fmt.Errorf("probe: record of unknown kind %d", b[offKind])
	}
	flags := b[offFlags]

	*s = signal.Signal{
		Kind:        kind,
		Time:        time.Unix(0, d.wallMinusMono+int64(ne.Uint64(b[offTsNs:]))),
		NetnsCookie: ne.Uint64(b[offNetnsCookie:]),
		NetnsInode:  ne.Uint32(b[offNetnsInum:]),
		Ifindex:     ne.Uint32(b[offIfindex:]),
		Dev:         cString(b[offDev : offDev+16]),
		State:       signal.TCPState(b[offState]),
		OldState:    signal.TCPState(b[offOldState]),
		SkErr:       int32(ne.Uint32(b[offSkErr:])),
		TCPFlags:    b[offTCPFlags],
		SockCookie:  ne.Uint64(b[offSockCookie:]),
		PID:         ne.Uint32(b[offPid:]),
		Comm:        cString(b[offComm : offComm+16]),
	}
	if flags&flagErr != 0 {
		s.Err = int32(ne.Uint32(b[offErr:]))
	}
	if flags&flagFlow != 0 {
		s.Flow.Proto = b[offProto]
		s.Flow.SrcPort = ne.Uint16(b[offSport:])
		s.Flow.DstPort = ne.Uint16(b[offDport:])
		switch b[offFamily] {
		case afInet:
			s.Flow.Src = netip.AddrFrom4([4]byte(b[offSaddr : offSaddr+4]))
			s.Flow.Dst = netip.AddrFrom4([4]byte(b[offDaddr : offDaddr+4]))
		case afInet6:
			// A dual-stack socket talking IPv4 has v4-mapped addresses;
			// unmap them so they match the packets' own addresses.
			s.Flow.Src = netip.AddrFrom16([16]byte(b[offSaddr : offSaddr+16])).Unmap()
			s.Flow.Dst = netip.AddrFrom16([16]byte(b[offDaddr : offDaddr+16])).Unmap()
		}
	}
	var peer netip.Addr
	if flags&flagPeer != 0 {
		peer = addrOf(b[offFamily], b[offPeer:offPeer+16])
	}
	reason := ne.Uint32(b[offReason:])
	switch kind {
	case signal.KindNeighFailed:
		// The record's state bytes hold NUD states, not TCP states.
		s.State, s.OldState = 0, 0
		s.NeighAddr = peer
		s.NeighState = signal.NUDState(b[offOldState])
		s.NeighResolved = flags&flagLLAddr != 0
		s.NeighProbes = ne.Uint32(b[offProbes:])
		if flags&flagDuration != 0 {
			s.NeighTried = time.Duration(ne.Uint64(b[offDurationNs:]))
		}
	case signal.KindICMPError, signal.KindICMPSent:
		s.ICMPType = b[offICMPType]
		s.ICMPCode = b[offICMPCode]
		s.ICMPFrom = peer
		s.MTU = ne.Uint32(b[offMTU:])
	case signal.KindRetransmit:
		s.Retransmits = ne.Uint32(b[offRetransmits:])
	case signal.KindDrop:
		if flags&flagReason != 0 {
			s.DropReason = enumName(d.dropReasons, reason)
		}
		s.DropLocation = d.location(ne.Uint64(b[offLocation:]))
		if flags&flagBacklog != 0 {
			s.Backlog = ne.Uint32(b[offBacklog:])
			s.MaxBacklog = ne.Uint32(b[offMaxBacklog:])
		}
	case signal.KindResetSent:
		if flags&flagReason != 0 {
			s.ResetReason = enumName(d.rstReasons, reason)
		}
	}
	return nil
}

// addrOf reads an address of the record's family; the zero Addr otherwise.
func addrOf(family byte, b []byte) netip.Addr {
	switch family {
	case afInet:
		return netip.AddrFrom4([4]byte(b[:4]))
	case afInet6:
		return netip.AddrFrom16([16]byte(b[:16])).Unmap()
	}
	return netip.Addr{}
}

func (d *decoder) location(addr uint64) string {
	if addr == 0 {
		return ""
	}
	if name, ok := d.locCache[addr]; ok {
		return name
	}
	name := ""
	if d.syms != nil {
		name = d.syms.symbol(addr)
	}
	if name == "" {
		name = fmt.Sprintf("0x%x", addr)
	}
	// Drops come from a few dozen call sites: remember them, within bounds.
	if d.locCache == nil || len(d.locCache) >= maxLocCache {
		d.locCache = make(map[uint64]string)
	}
	d.locCache[addr] = name
	return name
}

const maxLocCache = 4096

func enumName(names map[uint32]string, v uint32) string {
	if n, ok := names[v]; ok {
		return n
	}
	return fmt.Sprintf("REASON_%d", v)
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
