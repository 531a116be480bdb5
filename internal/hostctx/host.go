//go:build linux

package hostctx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/network-correlator/network-correlator/internal/signal"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host answers questions about one network namespace's own state, named by
// the inode the probes report (signal.Signal.NetnsInode).
//
// How the correlator uses it: accept it in its Config as an optional
// interface, like NetnsNamer (nil: diagnose without host context), e.g.
//
//	type HostContext interface {
//		Neighbor(ns uint32, ip netip.Addr) (hostctx.Neighbor, error)
//		Route(ns uint32, dst netip.Addr) (hostctx.Route, error)
//		Listeners(ns uint32, port uint16) ([]hostctx.Listener, error)
//		Link(ns uint32, ifindex uint32) (hostctx.Link, error)
//	}
//	type RuleAttributor interface {
//		Attribute(hostctx.Packet) (*hostctx.RuleMatch, error)
//	}
//
// and query it only when a diagnosis is emitted (never per signal): the
// neighbour entry of a KindNeighFailed address, the route of a
// KindConnectError or an IP_NOROUTE drop, the listeners of a NO_SOCKET drop
// or TCP_LISTEN_OVERFLOW, the device of a drop's Ifindex, and for
// NETFILTER_DROP the rule (PacketFromSignal builds the Packet). Every answer
// is a fact for the diagnosis' evidence; an error means "not known", since
// the namespace may be gone by then. *Netlink implements Host,
// *Netfilter implements RuleAttributor.
type Host interface {
	Neighbor(ns uint32, ip netip.Addr) (Neighbor, error)
	Route(ns uint32, dst netip.Addr) (Route, error)
	Listeners(ns uint32, port uint16) ([]Listener, error)
	Link(ns uint32, ifindex uint32) (Link, error)
}

// ErrNotFound: the namespace has no such neighbour entry or device.
var ErrNotFound = errors.New("not found")

// Neighbor is a neighbour (ARP/NDP) table entry.
type Neighbor struct {
	IP      netip.Addr
	State   signal.NUDState // may hold several NUD bits (e.g. REACHABLE|NOARP never; PERMANENT alone)
	LLAddr  net.HardwareAddr
	Ifindex uint32
	Dev     string
}

// Route is the kernel's answer for a destination ("ip route get").
type Route struct {
	Dst  netip.Addr
	Type string // unicast, local, broadcast, blackhole, unreachable, prohibit, throw
	// Prefix and Table are those of the route that matched; for a lookup
	// the kernel answered with a route (unicast, local) Prefix is unset.
	Prefix  netip.Prefix
	Table   int
	Gateway netip.Addr
	Src     netip.Addr
	Ifindex uint32
	Dev     string
	// Err is what the lookup returned (EINVAL for blackhole, EHOSTUNREACH
	// for unreachable, EACCES for prohibit, ENETUNREACH without a route),
	// nil when the destination is routable.
	Err error
}

// Listener is a listening TCP socket.
type Listener struct {
	Addr       netip.AddrPort
	Backlog    uint32 // connections waiting in the accept queue
	MaxBacklog uint32 // the listen() backlog as the kernel capped it
	UID        uint32
	Inode      uint32
}

// Link is a network device.
type Link struct {
	Index     uint32
	Name      string
	Type      string // veth, bridge, ...
	MTU       int
	OperState string // up, down, lowerlayerdown, unknown, ...
	AdminUp   bool
	Master    uint32 // ifindex of the bridge or bond it is enslaved to
}

// Netlink implements Host with rtnetlink and sock_diag in the namespace,
// through a netlink handle opened at the namespace (no thread switching).
// Each call opens and closes its own handle: holding one would keep a
// deleted namespace alive.
type Netlink struct{}

// NewNetlink returns the netlink implementation of Host.
func NewNetlink() *Netlink { return &Netlink{} }

func (*Netlink) handle(ns uint32, families ...int) (*netlink.Handle, error) {
	nsh, err := OpenNetns(ns)
	if err != nil {
		return nil, err
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh, families...)
	if err != nil {
		return nil, fmt.Errorf("netlink in netns %d: %w", ns, err)
	}
	return h, nil
}

func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// Neighbor returns the neighbour entry for ip, or ErrNotFound.
func (n *Netlink) Neighbor(ns uint32, ip netip.Addr) (Neighbor, error) {
	h, err := n.handle(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return Neighbor{}, err
	}
	defer h.Close()
	ip = ip.Unmap()
	neighs, err := h.NeighList(0, family(ip))
	if err != nil {
		return Neighbor{}, fmt.Errorf("neighbours of netns %d: %w", ns, err)
	}
	for _, e := range neighs {
		a, ok := netip.AddrFromSlice(e.IP)
		if !ok || a.Unmap() != ip {
			continue
		}
		nb := Neighbor{IP: ip, State: signal.NUDState(e.State), LLAddr: e.HardwareAddr, Ifindex: uint32(e.LinkIndex)}
		if l, err := h.LinkByIndex(e.LinkIndex); err == nil {
			nb.Dev = l.Attrs().Name
		}
		return nb, nil
	}
	return Neighbor{}, fmt.Errorf("neighbour %v in netns %d: %w", ip, ns, ErrNotFound)
}

var routeTypes = map[int]string{
	unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast",
	unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast", unix.RTN_BLACKHOLE: "blackhole",
	unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit", unix.RTN_THROW: "throw",
	unix.RTN_NAT: "nat",
}

func routeType(t int) string {
	if s, ok := routeTypes[t]; ok {
		return s
	}
	return fmt.Sprintf("type %d", t)
}

// Route looks dst up as the kernel would for a locally generated packet.
// A failed lookup is no error of Route's: it is returned in Route.Err,
// together with the blackhole/unreachable/prohibit route that caused it
// when one covers dst (longest prefix over all tables).
func (n *Netlink) Route(ns uint32, dst netip.Addr) (Route, error) {
	h, err := n.handle(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return Route{}, err
	}
	defer h.Close()
	dst = dst.Unmap()
	r := Route{Dst: dst}
	routes, err := h.RouteGet(dst.AsSlice())
	if err == nil && len(routes) > 0 {
		rt := routes[0]
		r.Type, r.Table = routeType(rt.Type), rt.Table
		r.Gateway, _ = netip.AddrFromSlice(rt.Gw)
		r.Src, _ = netip.AddrFromSlice(rt.Src)
		r.Gateway, r.Src = r.Gateway.Unmap(), r.Src.Unmap()
		r.Ifindex = uint32(rt.LinkIndex)
		if l, err := h.LinkByIndex(rt.LinkIndex); err == nil {
			r.Dev = l.Attrs().Name
		}
		return r, nil
	}
	if err == nil {
		err = syscall.ENETUNREACH
	}
	r.Err = err
	all, lerr := h.RouteListFiltered(family(dst), &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if lerr != nil {
		return r, nil
	}
	best := -1
	for _, rt := range all {
		switch rt.Type {
		case unix.RTN_BLACKHOLE, unix.RTN_UNREACHABLE, unix.RTN_PROHIBIT, unix.RTN_THROW:
		default:
			continue
		}
		p := netip.PrefixFrom(netip.IPv4Unspecified(), 0) // a default route has no Dst
		if dst.Is6() {
			p = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if rt.Dst != nil {
			a, _ := netip.AddrFromSlice(rt.Dst.IP)
			ones, _ := rt.Dst.Mask.Size()
			p = netip.PrefixFrom(a.Unmap(), ones)
		}
		if p.Contains(dst) && p.Bits() > best {
			best = p.Bits()
			r.Type, r.Prefix, r.Table = routeType(rt.Type), p, rt.Table
		}
	}
	return r, nil
}

// Listeners returns the TCP sockets listening on port (any address, IPv4
// and IPv6) with their accept queues. An empty list: nobody listens.
//
// The sock_diag dump asks the kernel for LISTEN sockets only, so its cost
// does not grow with the namespace's established connections.
func (n *Netlink) Listeners(ns uint32, port uint16) ([]Listener, error) {
	nsh, err := OpenNetns(ns)
	if err != nil {
		return nil, err
	}
	defer nsh.Close()
	sock, err := nl.GetNetlinkSocketAt(nsh, netns.None(), unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag in netns %d: %w", ns, err)
	}
	defer sock.Close()
	if err := sock.SetReceiveTimeout(&nl.SocketTimeoutTv); err != nil {
		return nil, err
	}
	var out []Listener
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_INET_DIAG: {Socket: sock}}
		req.AddData(listenReq(fam))
		var perr error
		err := req.ExecuteIter(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY, func(msg []byte) bool {
			l, p, err := parseDiagMsg(msg)
			if err != nil {
				perr = err
				return false
			}
			if p == port {
				out = append(out, l)
			}
			return true
		})
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("sock_diag in netns %d: %w", ns, err)
		}
		if perr != nil {
			return nil, fmt.Errorf("sock_diag in netns %d: %w", ns, perr)
		}
	}
	return out, nil
}

// listenReq is a struct inet_diag_req_v2 for TCP sockets in LISTEN:
//
//	u8 family, u8 protocol, u8 ext, u8 pad, u32 states,
//	struct inet_diag_sockid id (48 bytes, unused in a dump)       = 56 bytes
type listenReq uint8

func (r listenReq) Len() int { return 56 }

func (r listenReq) Serialize() []byte {
	b := make([]byte, 56)
	b[0], b[1] = byte(r), unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:], 1<<uint(signal.StateListen))
	return b
}

// parseDiagMsg reads a struct inet_diag_msg:
//
//	u8 family, state, timer, retrans;
//	id: be16 sport, be16 dport, be32 src[4], be32 dst[4], u32 if, u32 cookie[2];
//	u32 expires, rqueue, wqueue, uid, inode                        = 72 bytes
//
// For a listener rqueue is the accept queue and wqueue its limit.
func parseDiagMsg(b []byte) (Listener, uint16, error) {
	if len(b) < 72 {
		return Listener{}, 0, fmt.Errorf("inet_diag_msg of %d bytes, want 72", len(b))
	}
	port := binary.BigEndian.Uint16(b[4:])
	var a netip.Addr
	if b[0] == unix.AF_INET6 {
		a = netip.AddrFrom16([16]byte(b[8:24])).Unmap()
	} else {
		a = netip.AddrFrom4([4]byte(b[8:12]))
	}
	return Listener{
		Addr:       netip.AddrPortFrom(a, port),
		Backlog:    binary.NativeEndian.Uint32(b[56:]),
		MaxBacklog: binary.NativeEndian.Uint32(b[60:]),
		UID:        binary.NativeEndian.Uint32(b[64:]),
		Inode:      binary.NativeEndian.Uint32(b[68:]),
	}, port, nil
}

// Link returns the device with ifindex, or ErrNotFound.
func (n *Netlink) Link(ns uint32, ifindex uint32) (Link, error) {
	h, err := n.handle(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return Link{}, err
	}
	defer h.Close()
	l, err := h.LinkByIndex(int(ifindex))
	if err != nil {
		var lnf netlink.LinkNotFoundError
		if errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) {
			return Link{}, fmt.Errorf("link %d in netns %d: %w", ifindex, ns, ErrNotFound)
		}
		return Link{}, fmt.Errorf("link %d in netns %d: %w", ifindex, ns, err)
	}
	a := l.Attrs()
	return Link{Index: uint32(a.Index), Name: a.Name, Type: l.Type(), MTU: a.MTU, OperState: a.OperState.String(), AdminUp: a.Flags&net.FlagUp != 0, Master: uint32(a.MasterIndex)}, nil
}

var _ Host = (*Netlink)(nil)

// PacketFromSignal builds the Packet of a dropped packet's signal for
// Netfilter.Attribute. The path is left to Attribute to infer from the
// namespace's addresses, except that a drop without a device is a locally
// generated packet (output, see KERNEL.md).
func PacketFromSignal(s signal.Signal) Packet {
	p := Packet{
		NetnsInode: s.NetnsInode,
		Proto:      s.Flow.Proto,
		Src:        s.Flow.Src, Dst: s.Flow.Dst,
		SrcPort: s.Flow.SrcPort, DstPort: s.Flow.DstPort,
		TCPFlags: s.TCPFlags,
		Time:     s.Time,
	}
	if s.Dev != "" || s.Ifindex != 0 {
		p.DropDev, p.DropIfindex = s.Dev, s.Ifindex
	} else {
		p.Path = PathOutput
	}
	return p
}
