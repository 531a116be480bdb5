package k8sctx

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/confmap"
)

func TestConfigValidate(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // substrings of the error; none means valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"metadata and policy", func(c *Config) { c.EnableK8sMetadata, c.EnablePolicyCheck = true, true }, nil},
		{"policy without metadata", func(c *Config) { c.EnablePolicyCheck = true }, []string{"enable_policy_check:"}},
		{"unknown auth", func(c *Config) { c.AuthType = "token" }, []string{`auth_type: must be`}},
		{"kubeconfig path with service account", func(c *Config) { c.KubeConfigPath = kubeconfig }, []string{"kubeconfig_path: only used"}},
		{"kubeconfig", func(c *Config) {
			c.EnableK8sMetadata, c.AuthType, c.KubeConfigPath = true, AuthKubeConfig, kubeconfig
		}, nil},
		{"missing kubeconfig", func(c *Config) {
			c.EnableK8sMetadata, c.AuthType, c.KubeConfigPath = true, AuthKubeConfig, kubeconfig+".missing"
		}, []string{"kubeconfig_path:"}},
		{"none without url", func(c *Config) { c.EnableK8sMetadata, c.AuthType = true, AuthNone }, []string{"api_server_url: required"}},
		{"url with service account", func(c *Config) { c.APIServerURL = "http://127.0.0.1:8080" }, []string{"api_server_url: not used"}},
		{"bad durations", func(c *Config) { c.HistoryWindow, c.SyncTimeout, c.HealthCheckInterval = 0, -time.Second, 0 },
			[]string{"history_window:", "sync_timeout:", "health_check_interval:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.modify(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestDefaultNodeNameFromEnv(t *testing.T) {
	t.Setenv(NodeNameEnv, "node-7")
	if got := DefaultConfig().NodeName; got != "node-7" {
		t.Errorf("NodeName = %q, want node-7", got)
	}
}

func TestRESTConfigErrors(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	c := DefaultConfig()
	if _, err := c.RESTConfig(); err == nil || !strings.Contains(err.Error(), "serviceAccount") {
		t.Errorf("in-cluster config outside a pod: %v", err)
	}
	c.AuthType, c.APIServerURL = AuthNone, "http://127.0.0.1:1"
	rc, err := c.RESTConfig()
	if err != nil || rc.Host != "http://127.0.0.1:1" {
		t.Errorf("auth none: %+v %v", rc, err)
	}
}

// TestConfigUnmarshal decodes the keys as the collector does when the
// receiver embeds Config.
func TestConfigUnmarshal(t *testing.T) {
	var wrapper struct {
		Kubernetes Config `mapstructure:"kubernetes"`
	}
	wrapper.Kubernetes = DefaultConfig()
	conf := confmap.NewFromStringMap(map[string]any{"kubernetes": map[string]any{
		"enable_k8s_metadata":   true,
		"enable_policy_check":   true,
		"auth_type":             "kubeConfig",
		"kubeconfig_path":       "/etc/kube/config",
		"context":               "prod",
		"node_name":             "node-3",
		"history_window":        "2m",
		"sync_timeout":          "3s",
		"health_check_interval": "1s",
	}})
	if err := conf.Unmarshal(&wrapper); err != nil {
		t.Fatal(err)
	}
	want := Config{EnableK8sMetadata: true, EnablePolicyCheck: true, AuthType: AuthKubeConfig, KubeConfigPath: "/etc/kube/config",
		Context: "prod", NodeName: "node-3", HistoryWindow: 2 * time.Minute, SyncTimeout: 3 * time.Second, HealthCheckInterval: time.Second}
	if wrapper.Kubernetes != want {
		t.Errorf("Unmarshal = %+v, want %+v", wrapper.Kubernetes, want)
	}
	bad := confmap.NewFromStringMap(map[string]any{"kubernetes": map[string]any{"auth_typ": "none"}})
	if err := bad.Unmarshal(&wrapper); err == nil || !strings.Contains(err.Error(), "auth_typ") {
		t.Errorf("unknown key: %v", err)
	}
}
