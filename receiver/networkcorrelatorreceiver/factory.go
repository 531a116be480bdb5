package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import (
	"context"
	"fmt"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"

	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/metadata"
	"github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/sharedcomponent"
)

// NewFactory returns the factory of the networkcorrelator receiver.
func NewFactory() receiver.Factory {
	return newFactory(defaultDeps())
}

func newFactory(d deps) receiver.Factory {
	// One receiver per *Config: the collector hands every pipeline that
	// names the receiver ID the same config, so the logs and the metrics
	// pipeline share the probes and the correlator.
	receivers := sharedcomponent.NewMap[*Config, *networkReceiver]()
	shared := func(set receiver.Settings, cfg component.Config) (*sharedcomponent.Component[*networkReceiver], error) {
		c, ok := cfg.(*Config)
		if !ok {
			return nil, fmt.Errorf("networkcorrelator: config is %T, not *Config", cfg)
		}
		return receivers.LoadOrStore(c, func() (*networkReceiver, error) {
			return newReceiver(c, set, d)
		})
	}
	return receiver.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		receiver.WithLogs(func(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Logs) (receiver.Logs, error) {
			r, err := shared(set, cfg)
			if err != nil {
				return nil, err
			}
			r.Unwrap().nextLogs = next
			return r, nil
		}, metadata.LogsStability),
		receiver.WithMetrics(func(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
			r, err := shared(set, cfg)
			if err != nil {
				return nil, err
			}
			r.Unwrap().nextMetrics = next
			return r, nil
		}, metadata.MetricsStability),
	)
}
