//go:build !linux

package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import (
	"github.com/network-correlator/network-correlator/internal/correlate"
	"github.com/network-correlator/network-correlator/internal/pattern"
)

// hostContext: without Linux namespaces are shown by inode and there is no
// host context.
func hostContext() (correlate.NetnsNamer, correlate.HostContext, correlate.RuleAttributor) {
	return nil, nil, nil
}

// overloadContext: no host context, so no server-overload patterns.
func overloadContext() pattern.OverloadContext { return nil }
