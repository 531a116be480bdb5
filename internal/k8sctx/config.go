package k8sctx

import (
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// AuthType says how to reach the API server (the values of the contrib
// k8sattributes and kubeletstats receivers).
type AuthType string

const (
	// AuthServiceAccount uses the pod's service account (in-cluster config).
	AuthServiceAccount AuthType = "serviceAccount"
	// AuthKubeConfig reads a kubeconfig: kubeconfig_path, else $KUBECONFIG,
	// else ~/.kube/config.
	AuthKubeConfig AuthType = "kubeConfig"
	// AuthNone connects without credentials (api_server_url required).
	AuthNone AuthType = "none"
)

// NodeNameEnv is the variable the DaemonSet sets from spec.nodeName through
// the downward API.
const NodeNameEnv = "K8S_NODE_NAME"

// Defaults.
const (
	DefaultHistoryWindow  = 5 * time.Minute
	DefaultSyncTimeout    = 10 * time.Second
	DefaultHealthInterval = 5 * time.Second
)

// Config is the cluster-context part of the receiver's configuration; the
// receiver embeds it under a "kubernetes" key or squashed.
type Config struct {
	// EnableK8sMetadata watches the cluster to name the pods, services and
	// nodes behind the addresses of each diagnosis.
	EnableK8sMetadata bool `mapstructure:"enable_k8s_metadata"`
	// EnablePolicyCheck evaluates NetworkPolicies for failed flows; it
	// needs enable_k8s_metadata.
	EnablePolicyCheck bool `mapstructure:"enable_policy_check"`
	// AuthType is serviceAccount (default), kubeConfig or none.
	AuthType AuthType `mapstructure:"auth_type"`
	// KubeConfigPath is the kubeconfig read with auth_type kubeConfig.
	KubeConfigPath string `mapstructure:"kubeconfig_path"`
	// Context selects a kubeconfig context other than the current one.
	Context string `mapstructure:"context"`
	// APIServerURL is the server used with auth_type none.
	APIServerURL string `mapstructure:"api_server_url"`
	// NodeName is the node this agent runs on. Default: $K8S_NODE_NAME.
	// Every pod of the cluster is watched anyway: a failed flow's peer is
	// usually on another node.
	NodeName string `mapstructure:"node_name"`
	// HistoryWindow is how long deleted pods, released IPs and container
	// restarts are remembered. It should be at least the receiver's
	// correlation_window. Default 5m.
	HistoryWindow time.Duration `mapstructure:"history_window"`
	// SyncTimeout bounds how long Start waits for the first sync; after it
	// the receiver runs without cluster context until the caches fill.
	// Default 10s.
	SyncTimeout time.Duration `mapstructure:"sync_timeout"`
	// HealthCheckInterval is how often the API server is probed to detect an
	// outage and its end. Default 5s.
	HealthCheckInterval time.Duration `mapstructure:"health_check_interval"`
}

// DefaultConfig returns the defaults; NodeName comes from $K8S_NODE_NAME.
func DefaultConfig() Config {
	return Config{
		AuthType:            AuthServiceAccount,
		NodeName:            os.Getenv(NodeNameEnv),
		HistoryWindow:       DefaultHistoryWindow,
		SyncTimeout:         DefaultSyncTimeout,
		HealthCheckInterval: DefaultHealthInterval,
	}
}

// Validate reports every invalid field, each error naming its key.
func (c *Config) Validate() error {
	var errs []error
	if c.EnablePolicyCheck && !c.EnableK8sMetadata {
		errs = append(errs, errors.New("enable_policy_check: needs enable_k8s_metadata: true (policies are evaluated against the watched pods and namespaces)"))
	}
	switch c.AuthType {
	case AuthServiceAccount:
		if c.KubeConfigPath != "" {
			errs = append(errs, errors.New(`kubeconfig_path: only used with auth_type "kubeConfig"`))
		}
	case AuthKubeConfig:
		if c.KubeConfigPath != "" {
			if _, err := os.Stat(c.KubeConfigPath); err != nil && c.EnableK8sMetadata {
				errs = append(errs, fmt.Errorf("kubeconfig_path: %w", err))
			}
		}
	case AuthNone:
		if c.APIServerURL == "" && c.EnableK8sMetadata {
			errs = append(errs, errors.New(`api_server_url: required with auth_type "none"`))
		}
	default:
		errs = append(errs, fmt.Errorf(`auth_type: must be "serviceAccount", "kubeConfig" or "none", got %q`, c.AuthType))
	}
	if c.APIServerURL != "" && c.AuthType == AuthServiceAccount {
		errs = append(errs, errors.New(`api_server_url: not used with auth_type "serviceAccount" (the in-cluster address is used)`))
	}
	if c.HistoryWindow <= 0 {
		errs = append(errs, fmt.Errorf("history_window: must be positive, got %s", c.HistoryWindow))
	}
	if c.SyncTimeout <= 0 {
		errs = append(errs, fmt.Errorf("sync_timeout: must be positive, got %s", c.SyncTimeout))
	}
	if c.HealthCheckInterval <= 0 {
		errs = append(errs, fmt.Errorf("health_check_interval: must be positive, got %s", c.HealthCheckInterval))
	}
	return errors.Join(errs...)
}

// RESTConfig builds the client configuration for the auth type.
func (c *Config) RESTConfig() (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	switch c.AuthType {
	case AuthServiceAccount:
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf(`auth_type "serviceAccount": %w (outside a pod use "kubeConfig")`, err)
		}
	case AuthKubeConfig:
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if c.KubeConfigPath != "" {
			rules.ExplicitPath = c.KubeConfigPath
		}
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
			&clientcmd.ConfigOverrides{CurrentContext: c.Context}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf(`auth_type "kubeConfig": %w`, err)
		}
	case AuthNone:
		rc = &rest.Config{Host: c.APIServerURL}
	default:
		return nil, fmt.Errorf("auth_type: unknown %q", c.AuthType)
	}
	rc.UserAgent = "network-correlator"
	return rc, nil
}
