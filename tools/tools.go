//go:build tools

// Package tools pins the code generators the project runs (go generate), in a
// module of their own so their dependencies never enter the main module.
package tools

import (
	// mdatagen generates receiver/networkcorrelatorreceiver/internal/metadata
	// and documentation.md from metadata.yaml. v0.159.0 is pinned: it is the
	// newest release whose dependencies the module proxy serves, and its
	// generated code builds against collector v1.71.0 / v0.165.0.
	_ "go.opentelemetry.io/collector/cmd/mdatagen"
)
