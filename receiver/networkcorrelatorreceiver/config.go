package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/network-correlator/network-correlator/internal/k8sctx"
	"github.com/network-correlator/network-correlator/internal/pattern"
	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/metadata"
)

// Source names where signals come from.
const (
	// SourceKernel loads the eBPF probes and reads the kernel ring buffer.
	SourceKernel = "kernel"
	// SourceReplay reads a recording of signals (JSON lines) and feeds it
	// through the same correlator, as fast as it can be read; time is the
	// recording's own.
	SourceReplay = "replay"
)

// Defaults. Each is documented on its Config field.
const (
	defaultBufferSize         = 8 << 20
	defaultSYNTimeout         = time.Second
	defaultCorrelationWindow  = time.Minute
	defaultMaxFlows           = 65536
	defaultARPTimeout         = 4 * time.Second
	defaultCollectionInterval = 30 * time.Second
)

// Bounds checked by Validate.
const (
	// minBufferSize is a power of two that is a multiple of every Linux page
	// size (4, 16 and 64 KiB), so any valid buffer_size is a page multiple.
	minBufferSize = 64 << 10
	maxBufferSize = 1 << 30
	maxMaxFlows   = 16 << 20
	// maxMinRetransmits is tcp_retries2's default: the kernel gives up on
	// an established connection after 15 timeouts, so a higher threshold
	// would never be reached before the close.
	maxMinRetransmits = 15
	// maxLifecycleWait bounds how long a reset connection is held for the
	// kubelet's report (it comes 1-2 s after a container died).
	maxLifecycleWait = time.Minute
	// ifNameSize is the kernel's IFNAMSIZ: names are at most 15 bytes.
	ifNameSize = 16
)

// Config is the networkcorrelator receiver's configuration.
type Config struct {
	// Source is "kernel" (default: live eBPF probes) or "replay" (re-analyse
	// a recording through the same correlator).
	Source string `mapstructure:"source"`
	// ReplayFile is the JSON-lines recording read when Source is "replay".
	ReplayFile string `mapstructure:"replay_file"`

	// BufferSize is the size in bytes of the kernel ring buffer that carries
	// signals to user space. It must be a power of two between 64 KiB and
	// 1 GiB (the kernel requires a power-of-two multiple of the page size).
	// Default 8 MiB. When it overflows the kernel drops signals and counts
	// them (networkcorrelator.signals.lost); it never blocks.
	BufferSize int `mapstructure:"buffer_size"`
	// SYNTimeout is how long a SYN may go unanswered before it is diagnosed
	// as dropped. Default 1s: the kernel's first SYN retransmission, about
	// one second after connect(), is the earliest signal that a SYN was lost.
	SYNTimeout time.Duration `mapstructure:"syn_timeout"`
	// CorrelationWindow is how long per-flow state is kept and repeats of the
	// same cause are aggregated into one diagnosis instead of re-emitted.
	// Default 60s. It must be at least SYNTimeout.
	CorrelationWindow time.Duration `mapstructure:"correlation_window"`
	// MaxFlows bounds the correlator's per-flow state (memory under failure
	// storms); the oldest flows are evicted beyond it. Default 65536.
	MaxFlows int `mapstructure:"max_flows"`
	// ARPTimeout is how long after connect() a connection whose SYNs wait
	// for neighbour resolution (ARP/NDP) is held for the kernel's verdict
	// on the neighbour, so that it is diagnosed as arp_failure with the
	// entry's history (resolved before or never, how long it was tried)
	// rather than as a dropped SYN. The kernel gives up after
	// mcast_solicit x retrans_time (3 x 1 s by default) and marks the entry
	// FAILED; set this a little above that if those sysctls are raised.
	// SYNs still queued past it are diagnosed as arp_failure without the
	// kernel's verdict. Default 4s; must be > 0.
	ARPTimeout time.Duration `mapstructure:"arp_timeout"`
	// MinRetransmits is the number of consecutive retransmission timeouts
	// of an established connection (its data or its FIN unacknowledged)
	// from which it is diagnosed as blackhole or half_open, before the
	// kernel gives up (tcp_retries2, ~15 min). Default 3 (tcp_retries1, when
	// the kernel itself starts to doubt the route: ~1.4 s after the loss at
	// the minimum RTO). Lower diagnoses earlier but may report a lossy path
	// that would have recovered; higher waits longer (the timeouts back off
	// exponentially). 1 to 15; a threshold the kernel does not reach
	// leaves the diagnosis to its final ETIMEDOUT close.
	MinRetransmits int `mapstructure:"min_retransmits"`
	// LifecycleWait: with the Kubernetes context, how long a connection
	// reset by a pod on this node's or another's kernel (what an
	// application's own abort also looks like) is held for the cluster to
	// report that the pod's container stopped at that moment, which makes
	// it peer_lost_state (container_terminated); without such a report it
	// stays undiagnosed. The kubelet reports a termination 1-2 s after the
	// container died, so a slow API server wants more. Default 5s; > 0 and
	// at most 1m.
	LifecycleWait time.Duration `mapstructure:"lifecycle_wait"`
	// Interfaces lists the network interfaces on which the TC program parses
	// received ICMP errors. Empty (default) means every interface.
	Interfaces []string `mapstructure:"interfaces"`
	// DropReasons lists the kernel's skb_drop_reason names reported as
	// drop signals ("NETFILTER_DROP", with or without SKB_DROP_REASON_).
	// Empty (default) selects the probe's list of reasons a healthy
	// connection never produces. Names are checked against the running
	// kernel at start.
	DropReasons []string `mapstructure:"drop_reasons"`
	// ConnectErrors catches connect() calls that fail before any socket
	// state changes (no route; blackhole, unreachable or prohibit routes in
	// the caller's namespace) with the connect syscall's exit tracepoint.
	// Default false: any syscall tracepoint puts every syscall on the host
	// on the kernel's slow path (BENCHMARKS.md has the measured cost).
	// Route failures seen as packet drops are diagnosed without it.
	ConnectErrors bool `mapstructure:"connect_errors"`
	// CollectionInterval is how often the metrics are emitted. Default 30s.
	CollectionInterval time.Duration `mapstructure:"collection_interval"`

	// Kubernetes is the cluster context: pod identities of both ends of
	// each diagnosis (enable_k8s_metadata) and the NetworkPolicy check of
	// failing connections (enable_policy_check). Off by default.
	Kubernetes k8sctx.Config `mapstructure:"kubernetes"`

	// MetricsBuilderConfig enables or disables each metric and resource
	// attribute (keys "metrics" and "resource_attributes").
	metadata.MetricsBuilderConfig `mapstructure:",squash"`

	// Prevent unkeyed literals.
	_ struct{}
}

func createDefaultConfig() *Config {
	return &Config{
		Source:               SourceKernel,
		BufferSize:           defaultBufferSize,
		SYNTimeout:           defaultSYNTimeout,
		CorrelationWindow:    defaultCorrelationWindow,
		MaxFlows:             defaultMaxFlows,
		ARPTimeout:           defaultARPTimeout,
		MinRetransmits:       pattern.DefaultMinRetransmits,
		LifecycleWait:        pattern.DefaultLifecycleWait,
		CollectionInterval:   defaultCollectionInterval,
		Kubernetes:           k8sctx.DefaultConfig(),
		MetricsBuilderConfig: metadata.NewDefaultMetricsBuilderConfig(),
	}
}

// Validate reports every invalid field, each error naming its key.
func (cfg *Config) Validate() error {
	var errs []error
	switch cfg.Source {
	case SourceKernel:
		if cfg.ReplayFile != "" {
			errs = append(errs, errors.New(`replay_file: only used with source "replay" (source is "kernel")`))
		}
	case SourceReplay:
		if cfg.ReplayFile == "" {
			errs = append(errs, errors.New(`replay_file: required when source is "replay"`))
		}
	default:
		errs = append(errs, fmt.Errorf(`source: must be "kernel" or "replay", got %q`, cfg.Source))
	}

	if cfg.BufferSize < minBufferSize || cfg.BufferSize > maxBufferSize || cfg.BufferSize&(cfg.BufferSize-1) != 0 {
		errs = append(errs, fmt.Errorf("buffer_size: must be a power of two between %d (64 KiB) and %d (1 GiB) bytes, got %d",
			minBufferSize, maxBufferSize, cfg.BufferSize))
	}
	if cfg.SYNTimeout <= 0 {
		errs = append(errs, fmt.Errorf("syn_timeout: must be positive, got %s", cfg.SYNTimeout))
	}
	if cfg.CorrelationWindow <= 0 {
		errs = append(errs, fmt.Errorf("correlation_window: must be positive, got %s", cfg.CorrelationWindow))
	} else if cfg.SYNTimeout > cfg.CorrelationWindow {
		errs = append(errs, fmt.Errorf("correlation_window: must be at least syn_timeout (%s), got %s",
			cfg.SYNTimeout, cfg.CorrelationWindow))
	}
	if cfg.ARPTimeout <= 0 {
		errs = append(errs, fmt.Errorf("arp_timeout: must be positive, got %s", cfg.ARPTimeout))
	}
	if cfg.MinRetransmits < 1 || cfg.MinRetransmits > maxMinRetransmits {
		errs = append(errs, fmt.Errorf("min_retransmits: must be between 1 and %d (consecutive retransmission timeouts), got %d",
			maxMinRetransmits, cfg.MinRetransmits))
	}
	if cfg.LifecycleWait <= 0 || cfg.LifecycleWait > maxLifecycleWait {
		errs = append(errs, fmt.Errorf("lifecycle_wait: must be positive and at most %s, got %s", maxLifecycleWait, cfg.LifecycleWait))
	}
	if cfg.MaxFlows < 1 || cfg.MaxFlows > maxMaxFlows {
		errs = append(errs, fmt.Errorf("max_flows: must be between 1 and %d, got %d", maxMaxFlows, cfg.MaxFlows))
	}
	if cfg.CollectionInterval <= 0 {
		errs = append(errs, fmt.Errorf("collection_interval: must be positive, got %s", cfg.CollectionInterval))
	}
	seen := make(map[string]bool, len(cfg.Interfaces))
	for i, name := range cfg.Interfaces {
		if err := validIfName(name); err != nil {
			errs = append(errs, fmt.Errorf("interfaces[%d]: %w", i, err))
			continue
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("interfaces[%d]: %q listed twice", i, name))
		}
		seen[name] = true
	}
	seenReason := make(map[string]bool, len(cfg.DropReasons))
	for i, r := range cfg.DropReasons {
		name := normalizeDropReason(r)
		if name == "" || strings.IndexFunc(name, notReasonRune) >= 0 {
			errs = append(errs, fmt.Errorf("drop_reasons[%d]: %q is not a kernel drop reason name (letters, digits and '_', e.g. NETFILTER_DROP)", i, r))
			continue
		}
		if seenReason[name] {
			errs = append(errs, fmt.Errorf("drop_reasons[%d]: %q listed twice", i, r))
		}
		seenReason[name] = true
	}
	// Kubernetes (k8sctx.Config.Validate) is validated by the collector's
	// config walk, which reports its errors under "kubernetes: ".
	return errors.Join(errs...)
}

// normalizeDropReason gives the name the probe resolves: upper case, without
// the SKB_DROP_REASON_ prefix.
func normalizeDropReason(s string) string {
	return strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SKB_DROP_REASON_")
}

func notReasonRune(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_')
}

// validIfName applies the kernel's own rules (dev_valid_name): 1 to 15 bytes,
// not "." or "..", no '/', ':' or white space.
func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("interface name is empty")
	case len(name) >= ifNameSize:
		return fmt.Errorf("interface name %q is longer than %d bytes", name, ifNameSize-1)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/:"):
		return fmt.Errorf("interface name %q contains '/' or ':'", name)
	case strings.IndexFunc(name, unicode.IsSpace) >= 0:
		return fmt.Errorf("interface name %q contains white space", name)
	}
	return nil
}
