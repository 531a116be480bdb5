//go:generate mdatagen metadata.yaml

// Package networkcorrelatorreceiver is the collector receiver of type
// networkcorrelator: it turns kernel failure signals (or a replayed
// recording of them) into diagnoses, one log record each, and metrics about
// diagnoses and the signal stream. One instance serves the logs and the
// metrics pipelines that name it.
package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"
