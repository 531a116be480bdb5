//go:build linux

package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import (
	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/hostctx"
)

// hostNetnsNamer names namespaces as the user knows them (`ip netns`
// names, "host", the process living in it).
func hostNetnsNamer() correlate.NetnsNamer { return hostctx.NewNetnsNames() }
