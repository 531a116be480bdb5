package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/network-correlator/network-correlator/internal/clusterctx"
	"github.com/network-correlator/network-correlator/internal/k8sctx"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

// startCluster starts the informers of the kubernetes block and, with
// enable_policy_check, the policy index they feed. It returns after the
// first sync or kubernetes.sync_timeout, whichever comes first; an
// unreachable API server is reported by the context (Available), not here.
func startCluster(ctx context.Context, cfg *Config, logger *zap.Logger) (pattern.Cluster, func(), error) {
	p, err := k8sctx.New(cfg.Kubernetes, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes: %w", err)
	}
	c := clusterctx.ForProvider(p, cfg.Kubernetes.EnablePolicyCheck, logger)
	if err := p.Start(ctx); err != nil {
		p.Shutdown()
		return nil, nil, fmt.Errorf("kubernetes: %w", err)
	}
	return c, p.Shutdown, nil
}
