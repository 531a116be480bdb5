package networkcorrelatorreceiver

import (
	"go/token"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/network-correlator/network-correlator/internal/k8sctx"
)

func TestLoadConfig(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	custom := createDefaultConfig()
	custom.Source = SourceReplay
	custom.ReplayFile = "testdata/replay/lifecycle.jsonl"
	custom.BufferSize = 16 << 20
	custom.SYNTimeout = 3 * time.Second
	custom.CorrelationWindow = 2 * time.Minute
	custom.MaxFlows = 1000
	custom.ARPTimeout = 6 * time.Second
	custom.MinRetransmits = 5
	custom.LifecycleWait = 8 * time.Second
	custom.Interfaces = []string{"eth0", "veth-a1b2c3"}
	custom.DropReasons = []string{"NETFILTER_DROP", "skb_drop_reason_no_socket"}
	custom.ConnectErrors = true
	custom.CollectionInterval = 10 * time.Second
	custom.Metrics.NetworkcorrelatorSignalsReceived.Enabled = false
	custom.ResourceAttributes.HostName.Enabled = false

	kube := createDefaultConfig()
	kube.Kubernetes.EnableK8sMetadata = true
	kube.Kubernetes.EnablePolicyCheck = true
	kube.Kubernetes.AuthType = k8sctx.AuthNone
	kube.Kubernetes.APIServerURL = "https://10.96.0.1:443"
	kube.Kubernetes.NodeName = "node-1"
	kube.Kubernetes.HistoryWindow = 10 * time.Minute
	kube.Kubernetes.SyncTimeout = 3 * time.Second
	kube.Kubernetes.HealthCheckInterval = 2 * time.Second

	tests := []struct {
		id   string
		want *Config
		// wantErrs: one fragment per expected error, each must appear.
		wantErrs []string
	}{
		{id: "networkcorrelator", want: createDefaultConfig()},
		{id: "networkcorrelator/custom", want: custom},
		{id: "networkcorrelator/bad_source", wantErrs: []string{`source: must be "kernel" or "replay", got "pcap"`}},
		{id: "networkcorrelator/replay_without_file", wantErrs: []string{`replay_file: required when source is "replay"`}},
		{id: "networkcorrelator/kernel_with_replay_file", wantErrs: []string{`replay_file: only used with source "replay"`}},
		{id: "networkcorrelator/buffer_not_power_of_two", wantErrs: []string{"buffer_size: must be a power of two between 65536 (64 KiB) and 1073741824 (1 GiB) bytes, got 100000"}},
		{id: "networkcorrelator/buffer_too_small", wantErrs: []string{"buffer_size: must be a power of two between 65536 (64 KiB) and 1073741824 (1 GiB) bytes, got 4096"}},
		{id: "networkcorrelator/syn_timeout_zero", wantErrs: []string{"syn_timeout: must be positive, got 0s"}},
		{id: "networkcorrelator/window_shorter_than_syn_timeout", wantErrs: []string{"correlation_window: must be at least syn_timeout (5s), got 2s"}},
		{id: "networkcorrelator/max_flows_zero", wantErrs: []string{"max_flows: must be between 1 and 16777216, got 0"}},
		{id: "networkcorrelator/arp_timeout_zero", wantErrs: []string{"arp_timeout: must be positive, got 0s"}},
		{id: "networkcorrelator/arp_timeout_negative", wantErrs: []string{"arp_timeout: must be positive, got -1s"}},
		{id: "networkcorrelator/min_retransmits_1", want: withMinRetransmits(1)},
		{id: "networkcorrelator/min_retransmits_15", want: withMinRetransmits(15)},
		{id: "networkcorrelator/min_retransmits_zero", wantErrs: []string{"min_retransmits: must be between 1 and 15 (consecutive retransmission timeouts), got 0"}},
		{id: "networkcorrelator/min_retransmits_above_tcp_retries2", wantErrs: []string{"min_retransmits: must be between 1 and 15 (consecutive retransmission timeouts), got 16"}},
		{id: "networkcorrelator/lifecycle_wait_zero", wantErrs: []string{"lifecycle_wait: must be positive and at most 1m0s, got 0s"}},
		{id: "networkcorrelator/lifecycle_wait_too_long", wantErrs: []string{"lifecycle_wait: must be positive and at most 1m0s, got 2m0s"}},
		{id: "networkcorrelator/collection_interval_negative", wantErrs: []string{"collection_interval: must be positive, got -1s"}},
		{id: "networkcorrelator/bad_interfaces", wantErrs: []string{
			"interfaces[0]: interface name is empty",
			`interfaces[1]: interface name "a-very-long-interface-name" is longer than 15 bytes`,
			`interfaces[2]: interface name "eth0/1" contains '/' or ':'`,
			`interfaces[3]: interface name "eth 0" contains white space`,
			`interfaces[5]: "eth0" listed twice`,
		}},
		{id: "networkcorrelator/bad_drop_reasons", wantErrs: []string{
			`drop_reasons[0]: "NETFILTER DROP" is not a kernel drop reason name`,
			`drop_reasons[1]: "" is not a kernel drop reason name`,
			`drop_reasons[3]: "SKB_DROP_REASON_NO_SOCKET" listed twice`,
		}},
		{id: "networkcorrelator/kubernetes", want: kube},
		{id: "networkcorrelator/bad_kubernetes", wantErrs: []string{
			"kubernetes: enable_policy_check: needs enable_k8s_metadata: true",
			`auth_type: must be "serviceAccount", "kubeConfig" or "none", got "token"`,
			"history_window: must be positive, got 0s",
		}},
		{id: "networkcorrelator/several", wantErrs: []string{
			"replay_file: required",
			"buffer_size: must be a power of two",
			"max_flows: must be between 1 and 16777216, got -1",
			"min_retransmits: must be between 1 and 15 (consecutive retransmission timeouts), got -3",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			sub, err := cm.Sub(tt.id)
			if err != nil {
				t.Fatal(err)
			}
			cfg := createDefaultConfig()
			if err := sub.Unmarshal(cfg); err != nil {
				t.Fatal(err)
			}
			err = confmap.Validate(cfg)
			if len(tt.wantErrs) > 0 {
				if err == nil {
					t.Fatalf("Validate() = nil, want errors %q", tt.wantErrs)
				}
				for _, frag := range tt.wantErrs {
					if !strings.Contains(err.Error(), frag) {
						t.Errorf("error %q\ndoes not contain %q", err, frag)
					}
				}
				if n := strings.Count(err.Error(), "\n") + 1; n != len(tt.wantErrs) {
					t.Errorf("got %d errors, want %d:\n%s", n, len(tt.wantErrs), err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if diff := cmp.Diff(tt.want, cfg, ignoreUnexported); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func withMinRetransmits(n int) *Config {
	cfg := createDefaultConfig()
	cfg.MinRetransmits = n
	return cfg
}

// ignoreUnexported skips every unexported field (mdatagen's generated
// configs carry some, one type per metric).
var ignoreUnexported = cmp.FilterPath(func(p cmp.Path) bool {
	sf, ok := p.Last().(cmp.StructField)
	return ok && !token.IsExported(sf.Name())
}, cmp.Ignore())

func TestValidIfName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"eth0", true},
		{"lxc1234567890ab", true}, // 15 bytes: the longest the kernel allows
		{"lxc1234567890abc", false},
		{".", false},
		{"..", false},
		{"br:0", false},
		{"tab\tname", false},
		{"", false},
	}
	for _, tt := range tests {
		if err := validIfName(tt.name); (err == nil) != tt.ok {
			t.Errorf("validIfName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
