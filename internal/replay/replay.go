package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// MaxLineBytes bounds one line so a corrupt recording cannot exhaust memory.
const MaxLineBytes = 64 << 10

// Error is a decoding error at one line (and field, when one is to blame).
type Error struct {
	Line  int    // 1-based; 0 when decoding a single object with Unmarshal
	Field string // JSON field name; empty for errors about the whole line
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("replay: ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Decoder reads signals from a JSON-lines stream.
type Decoder struct {
	sc   *bufio.Scanner
	line int
}

// NewDecoder returns a Decoder reading from r.
func NewDecoder(r io.Reader) *Decoder {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLineBytes)
	return &Decoder{sc: sc}
}

// Line is the number of the line last read (1-based).
func (d *Decoder) Line() int { return d.line }

// Decode reads the next signal into s. It returns io.EOF at the end of the
// stream and an *Error for a malformed line; decoding may continue after a
// malformed line.
func (d *Decoder) Decode(s *signal.Signal) error {
	for d.sc.Scan() {
		d.line++
		line := bytes.TrimSpace(d.sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if err := Unmarshal(line, s); err != nil {
			var e *Error
			if errors.As(err, &e) {
				e.Line = d.line
				return e
			}
			return &Error{Line: d.line, Err: err}
		}
		return nil
	}
	if err := d.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &Error{Line: d.line + 1, Err: fmt.Errorf("line longer than %d bytes", MaxLineBytes)}
		}
		return &Error{Line: d.line + 1, Err: err}
	}
	return io.EOF
}

// Unmarshal decodes one JSON object (one line without its newline) into s.
func Unmarshal(data []byte, s *signal.Signal) error {
	var buf [2 * len(fieldOrder)]member
	members, err := scanObject(data, buf[:])
	if err != nil {
		return err
	}
	// Unknown fields first, then known ones in documented order, so the
	// error for a line with several problems is deterministic. A repeated
	// key keeps its last value, as encoding/json does.
	var raws [len(fieldOrder)][]byte
	for _, m := range members {
		i, ok := fieldIndex[string(m.key)]
		if !ok {
			return &Error{Field: string(m.key), Err: errors.New("unknown field")}
		}
		raws[i] = m.value
	}
	var out signal.Signal
	for i, name := range fieldOrder {
		raw := raws[i]
		if raw == nil || isNull(raw) {
			continue
		}
		if err := decodeField(&out, name, raw); err != nil {
			return &Error{Field: name, Err: err}
		}
	}
	if out.Time.IsZero() {
		return &Error{Field: "time", Err: errors.New("required")}
	}
	if out.Kind == signal.KindUnknown {
		return &Error{Field: "kind", Err: errors.New("required")}
	}
	if out.Flow.Src.IsValid() && out.Flow.Dst.IsValid() && out.Flow.Src.Is4() != out.Flow.Dst.Is4() {
		return &Error{Field: "dst", Err: fmt.Errorf("address family differs from src %s", out.Flow.Src)}
	}
	*s = out
	return nil
}

var fieldOrder = [...]string{
	"time", "kind", "proto", "src", "src_port", "dst", "dst_port", "netns_cookie", "netns_inode",
	"ifindex", "dev", "state", "old_state", "sk_err", "err", "tcp_flags", "drop_reason",
	"drop_location", "reset_reason", "retransmits", "sock_cookie", "pid", "comm",
	"neigh_addr", "neigh_state", "neigh_resolved", "neigh_probes", "neigh_tried_ns",
	"icmp_type", "icmp_code", "icmp_from", "mtu", "backlog", "max_backlog",
}

var fieldIndex = func() map[string]int {
	m := make(map[string]int, len(fieldOrder))
	for i, n := range fieldOrder {
		m[n] = i
	}
	return m
}()

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

func decodeField(s *signal.Signal, name string, raw json.RawMessage) error {
	var err error
	switch name {
	case "time":
		var str string
		if str, err = jsonString(raw); err == nil {
			s.Time, err = time.Parse(time.RFC3339Nano, str)
			if err == nil && s.Time.IsZero() {
				err = errors.New("zero time")
			}
		}
	case "kind":
		var str string
		if str, err = jsonString(raw); err == nil {
			s.Kind, err = signal.ParseKind(str)
		}
	case "proto":
		s.Flow.Proto, err = decodeProto(raw)
	case "src":
		s.Flow.Src, err = decodeAddr(raw)
	case "dst":
		s.Flow.Dst, err = decodeAddr(raw)
	case "src_port":
		var v uint64
		v, err = jsonUint(raw, 16)
		s.Flow.SrcPort = uint16(v)
	case "dst_port":
		var v uint64
		v, err = jsonUint(raw, 16)
		s.Flow.DstPort = uint16(v)
	case "netns_cookie":
		var v uint64
		v, err = jsonUint(raw, 64)
		s.NetnsCookie = uint64(v)
	case "netns_inode":
		var v uint64
		v, err = jsonUint(raw, 32)
		s.NetnsInode = uint32(v)
	case "ifindex":
		var v uint64
		v, err = jsonUint(raw, 32)
		s.Ifindex = uint32(v)
	case "dev":
		s.Dev, err = jsonString(raw)
	case "state":
		s.State, err = decodeState(raw)
	case "old_state":
		s.OldState, err = decodeState(raw)
	case "sk_err":
		s.SkErr, err = jsonInt32(raw)
	case "err":
		s.Err, err = jsonInt32(raw)
	case "tcp_flags":
		s.TCPFlags, err = decodeFlags(raw)
	case "drop_reason":
		s.DropReason, err = jsonString(raw)
	case "drop_location":
		s.DropLocation, err = jsonString(raw)
	case "reset_reason":
		s.ResetReason, err = jsonString(raw)
	case "retransmits":
		var v uint64
		v, err = jsonUint(raw, 32)
		s.Retransmits = uint32(v)
	case "sock_cookie":
		var v uint64
		v, err = jsonUint(raw, 64)
		s.SockCookie = uint64(v)
	case "pid":
		var v uint64
		v, err = jsonUint(raw, 32)
		s.PID = uint32(v)
	case "comm":
		s.Comm, err = jsonString(raw)
	case "neigh_addr":
		s.NeighAddr, err = decodeAddr(raw)
	case "neigh_state":
		var str string
		if str, err = jsonString(raw); err == nil {
			s.NeighState, err = signal.ParseNUDState(str)
		}
	case "neigh_resolved":
		if err = json.Unmarshal(raw, &s.NeighResolved); err != nil {
			err = fmt.Errorf("want true or false, got %s", clip(raw))
		}
	case "neigh_probes":
		var v uint64
		v, err = jsonUint(raw, 32)
		s.NeighProbes = uint32(v)
	case "neigh_tried_ns":
		var v uint64
		v, err = jsonUint(raw, 63)
		s.NeighTried = time.Duration(v)
	case "icmp_type":
		var v uint64
		v, err = jsonUint(raw, 8)
		s.ICMPType = uint8(v)
	case "icmp_code":
		var v uint64
		v, err = jsonUint(raw, 8)
		s.ICMPCode = uint8(v)
	case "icmp_from":
		s.ICMPFrom, err = decodeAddr(raw)
	case "mtu":
		var v uint64
		v, err = jsonUint(raw, 32)
		s.MTU = uint32(v)
	case "backlog":
		var v uint64
		v, err = jsonUint(raw, 32)
		s.Backlog = uint32(v)
	case "max_backlog":
		var v uint64
		v, err = jsonUint(raw, 32)
		s.MaxBacklog = uint32(v)
	}
	return err
}

func jsonString(raw json.RawMessage) (string, error) {
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' {
		if b, err := unquote(raw); err == nil {
			return string(b), nil
		}
	}
	return "", fmt.Errorf("want a string, got %s", clip(raw))
}

func jsonUnmarshalString(tok []byte, s *string) error { return json.Unmarshal(tok, s) }

func isJSONString(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '"'
}

// jsonUint parses a JSON integer of the given bit size, rejecting fractions,
// negatives and values that do not fit.
func jsonUint(raw json.RawMessage, bits int) (uint64, error) {
	v, err := strconv.ParseUint(string(bytes.TrimSpace(raw)), 10, bits)
	if err != nil {
		return 0, fmt.Errorf("want an integer 0..%d, got %s", uint64(math.MaxUint64)>>(64-bits), clip(raw))
	}
	return v, nil
}

func jsonInt32(raw json.RawMessage) (int32, error) {
	v, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("want an integer %d..%d, got %s", math.MinInt32, math.MaxInt32, clip(raw))
	}
	return int32(v), nil
}

func decodeAddr(raw json.RawMessage) (netip.Addr, error) {
	str, err := jsonString(raw)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(str)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", str)
	}
	return a, nil
}

func decodeState(raw json.RawMessage) (signal.TCPState, error) {
	str, err := jsonString(raw)
	if err != nil {
		return 0, err
	}
	return signal.ParseTCPState(str)
}

var protoNames = map[string]uint8{
	"tcp": signal.ProtoTCP, "udp": signal.ProtoUDP, "icmp": signal.ProtoICMP,
	"icmpv6": signal.ProtoICMPv6, "sctp": signal.ProtoSCTP,
}

func decodeProto(raw json.RawMessage) (uint8, error) {
	if !isJSONString(raw) {
		v, err := jsonUint(raw, 8)
		if err != nil {
			return 0, fmt.Errorf("want a protocol name or 0..255, got %s", clip(raw))
		}
		return uint8(v), nil
	}
	str, err := jsonString(raw)
	if err != nil {
		return 0, err
	}
	p, ok := protoNames[str]
	if !ok {
		return 0, fmt.Errorf("unknown protocol %q (want tcp, udp, icmp, icmpv6, sctp or a number)", str)
	}
	return p, nil
}

func protoString(p uint8) (string, bool) {
	for n, v := range protoNames {
		if v == p {
			return n, true
		}
	}
	return "", false
}

var flagNames = [8]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}

func decodeFlags(raw json.RawMessage) (uint8, error) {
	if !isJSONString(raw) {
		v, err := jsonUint(raw, 8)
		if err != nil {
			return 0, fmt.Errorf("want flag names or 0..255, got %s", clip(raw))
		}
		return uint8(v), nil
	}
	str, err := jsonString(raw)
	if err != nil {
		return 0, err
	}
	if str == "" {
		return 0, nil
	}
	var f uint8
	for part := range strings.SplitSeq(str, "|") {
		bit := -1
		for i, n := range flagNames {
			if strings.EqualFold(strings.TrimSpace(part), n) {
				bit = i
			}
		}
		if bit < 0 {
			return 0, fmt.Errorf("unknown TCP flag %q (want names from %s joined by '|')", part, strings.Join(flagNames[:], " "))
		}
		f |= 1 << bit
	}
	return f, nil
}

// FlagsString renders TCP flags the way the format writes them ("RST|ACK").
func FlagsString(f uint8) string {
	var parts []string
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	return strings.Join(parts, "|")
}

func clip(raw json.RawMessage) string {
	const n = 40
	t := bytes.TrimSpace(raw)
	if len(t) > n {
		return string(t[:n]) + "..."
	}
	return string(t)
}

// wire is the encoded form; field order is the documented order.
type wire struct {
	Time          string `json:"time"`
	Kind          string `json:"kind"`
	Proto         any    `json:"proto,omitempty"`
	Src           string `json:"src,omitempty"`
	SrcPort       uint16 `json:"src_port,omitempty"`
	Dst           string `json:"dst,omitempty"`
	DstPort       uint16 `json:"dst_port,omitempty"`
	NetnsCookie   uint64 `json:"netns_cookie,omitempty"`
	NetnsInode    uint32 `json:"netns_inode,omitempty"`
	Ifindex       uint32 `json:"ifindex,omitempty"`
	Dev           string `json:"dev,omitempty"`
	State         string `json:"state,omitempty"`
	OldState      string `json:"old_state,omitempty"`
	SkErr         int32  `json:"sk_err,omitempty"`
	Err           int32  `json:"err,omitempty"`
	TCPFlags      string `json:"tcp_flags,omitempty"`
	DropReason    string `json:"drop_reason,omitempty"`
	DropLocation  string `json:"drop_location,omitempty"`
	ResetReason   string `json:"reset_reason,omitempty"`
	Retransmits   uint32 `json:"retransmits,omitempty"`
	SockCookie    uint64 `json:"sock_cookie,omitempty"`
	PID           uint32 `json:"pid,omitempty"`
	Comm          string `json:"comm,omitempty"`
	NeighAddr     string `json:"neigh_addr,omitempty"`
	NeighState    string `json:"neigh_state,omitempty"`
	NeighResolved bool   `json:"neigh_resolved,omitempty"`
	NeighProbes   uint32 `json:"neigh_probes,omitempty"`
	NeighTriedNs  int64  `json:"neigh_tried_ns,omitempty"`
	ICMPType      uint8  `json:"icmp_type,omitempty"`
	ICMPCode      uint8  `json:"icmp_code,omitempty"`
	ICMPFrom      string `json:"icmp_from,omitempty"`
	MTU           uint32 `json:"mtu,omitempty"`
	Backlog       uint32 `json:"backlog,omitempty"`
	MaxBacklog    uint32 `json:"max_backlog,omitempty"`
}

// Marshal encodes s as one JSON object without a trailing newline. It fails
// for values the format cannot carry back (zero time, unknown kind or state).
func Marshal(s signal.Signal) ([]byte, error) {
	if s.Time.IsZero() {
		return nil, &Error{Field: "time", Err: errors.New("zero time")}
	}
	if _, err := signal.ParseKind(s.Kind.String()); err != nil {
		return nil, &Error{Field: "kind", Err: err}
	}
	w := wire{
		Time:          s.Time.Format(time.RFC3339Nano),
		Kind:          s.Kind.String(),
		SrcPort:       s.Flow.SrcPort,
		DstPort:       s.Flow.DstPort,
		NetnsCookie:   s.NetnsCookie,
		NetnsInode:    s.NetnsInode,
		Ifindex:       s.Ifindex,
		Dev:           s.Dev,
		SkErr:         s.SkErr,
		Err:           s.Err,
		TCPFlags:      FlagsString(s.TCPFlags),
		DropReason:    s.DropReason,
		DropLocation:  s.DropLocation,
		ResetReason:   s.ResetReason,
		Retransmits:   s.Retransmits,
		SockCookie:    s.SockCookie,
		PID:           s.PID,
		Comm:          s.Comm,
		NeighResolved: s.NeighResolved,
		NeighProbes:   s.NeighProbes,
		ICMPType:      s.ICMPType,
		ICMPCode:      s.ICMPCode,
		MTU:           s.MTU,
		Backlog:       s.Backlog,
		MaxBacklog:    s.MaxBacklog,
	}
	if s.NeighTried < 0 {
		return nil, &Error{Field: "neigh_tried_ns", Err: errors.New("negative duration")}
	}
	w.NeighTriedNs = int64(s.NeighTried)
	if s.NeighState != 0 {
		if _, err := signal.ParseNUDState(s.NeighState.String()); err != nil {
			return nil, &Error{Field: "neigh_state", Err: err}
		}
		w.NeighState = s.NeighState.String()
	}
	if s.NeighAddr.IsValid() {
		w.NeighAddr = s.NeighAddr.String()
	}
	if s.ICMPFrom.IsValid() {
		w.ICMPFrom = s.ICMPFrom.String()
	}
	if s.Flow.Proto != 0 {
		if n, ok := protoString(s.Flow.Proto); ok {
			w.Proto = n
		} else {
			w.Proto = s.Flow.Proto
		}
	}
	if s.Flow.Src.IsValid() {
		w.Src = s.Flow.Src.String()
	}
	if s.Flow.Dst.IsValid() {
		w.Dst = s.Flow.Dst.String()
	}
	var err error
	if w.State, err = stateString(s.State); err != nil {
		return nil, &Error{Field: "state", Err: err}
	}
	if w.OldState, err = stateString(s.OldState); err != nil {
		return nil, &Error{Field: "old_state", Err: err}
	}
	return json.Marshal(w)
}

func stateString(st signal.TCPState) (string, error) {
	if st == 0 {
		return "", nil
	}
	n := st.String()
	if _, err := signal.ParseTCPState(n); err != nil {
		return "", err
	}
	return n, nil
}

// Encoder writes signals as JSON lines.
type Encoder struct {
	w io.Writer
}

// NewEncoder returns an Encoder writing to w; each Encode is one Write.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Encode writes s as one line.
func (e *Encoder) Encode(s signal.Signal) error {
	b, err := Marshal(s)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = e.w.Write(b)
	return err
}
