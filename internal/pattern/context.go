package pattern

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// Need says which host context a verdict's diagnosis would use. Patterns
// stay pure: the correlator looks the facts up (only when it builds a new
// diagnosis, never per signal) and hands them over in Evidence.Facts.
type Need uint8

const (
	// NeedRule: the netfilter rule behind the verdict's NETFILTER_DROP.
	NeedRule Need = 1 << iota
	// NeedRoute: the route to the destination in the netns of the cause.
	NeedRoute
	// NeedNeighbor: the neighbour entry of Verdict.Subject (else the
	// destination) in the netns of the cause.
	NeedNeighbor
	// NeedListeners: the listeners on the destination port in the netns of
	// the cause.
	NeedListeners
)

// RuleFact is the netfilter rule that dropped or rejected a packet.
type RuleFact struct {
	Netns  string
	Family string // ip, ip6, inet, ...
	Table  string
	Chain  string
	Handle uint64 // 0: the chain's policy
	Text   string // nft syntax
	// Iptables is the rule as iptables-save prints it, for iptables-nft tables.
	Iptables string
	Verdict  string // "drop", "reject with tcp reset", "policy drop"
	// Exact: every expression was understood and matched; otherwise the
	// rule is the probable one.
	Exact        bool
	Alternatives []string
}

// Where renders "inet filter input, handle 4" (or ", chain policy").
func (r *RuleFact) Where() string {
	if r.Handle == 0 {
		return fmt.Sprintf("%s %s %s, chain policy", r.Family, r.Table, r.Chain)
	}
	return fmt.Sprintf("%s %s %s, handle %d", r.Family, r.Table, r.Chain, r.Handle)
}

// Phrase renders "rule `tcp dport 8080 drop` (inet filter input, handle 4)".
func (r *RuleFact) Phrase() string {
	text := r.Text
	if text == "" {
		text = r.Verdict
	}
	s := fmt.Sprintf("rule `%s` (%s)", text, r.Where())
	if !r.Exact {
		s = "probably " + s
	}
	return s
}

// RouteFact is the kernel's route lookup for a destination.
type RouteFact struct {
	Dst     netip.Addr
	Type    string // unicast, blackhole, unreachable, prohibit, throw, ...
	Prefix  netip.Prefix
	Table   int
	Gateway netip.Addr
	Dev     string
	// Err is the lookup's error ("network is unreachable"), "" if routable.
	Err string
}

// NeighborFact is a neighbour table entry as it is now.
type NeighborFact struct {
	IP     netip.Addr
	State  signal.NUDState
	LLAddr string
	Dev    string
}

// ListenerFact is a listening socket and its accept queue.
type ListenerFact struct {
	Addr       netip.AddrPort
	Backlog    uint32
	MaxBacklog uint32
}

// Facts is the host context the correlator found for a diagnosis. Nil
// fields were not asked for or are unknown; Missing says which lookups
// failed and why (the namespace may be gone by then).
type Facts struct {
	At        time.Time
	Rule      *RuleFact
	Route     *RouteFact
	Neighbor  *NeighborFact
	Listeners []ListenerFact
	Listened  bool // Listeners was looked up (an empty list: nobody listens)
	Missing   []string
}

// missingText lists failed lookups for the details, "" when none.
func (f *Facts) missingText() string {
	if f == nil || len(f.Missing) == 0 {
		return ""
	}
	return " Host context not available: " + strings.Join(f.Missing, "; ") + "."
}

// Fix is the command that removes the rule, said for people.
func (r *RuleFact) Fix() string {
	if r.Handle == 0 {
		return fmt.Sprintf("change the policy of chain %s %s %s (`nft list chain %s %s %s`)", r.Family, r.Table, r.Chain,
			r.Family, r.Table, r.Chain)
	}
	s := fmt.Sprintf("delete or narrow it (`nft delete rule %s %s %s handle %d`", r.Family, r.Table, r.Chain, r.Handle)
	if r.Iptables != "" {
		s += fmt.Sprintf("; iptables: `%s`", strings.Replace(r.Iptables, "-A ", "-D ", 1))
	}
	return s + ")"
}
