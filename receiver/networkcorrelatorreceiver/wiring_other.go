//go:build !linux

package networkcorrelatorreceiver // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver"

import "github.com/network-correlator/network-correlator/internal/correlate"

// hostNetnsNamer: without Linux namespaces are shown by inode.
func hostNetnsNamer() correlate.NetnsNamer { return nil }
