//go:build !linux

package probe

import (
	"context"
	"io"

	"github.com/network-correlator/network-correlator/internal/signal"
)

// Probe is unavailable outside Linux.
type Probe struct{}

// Check always fails outside Linux.
func Check() error { return ErrUnsupported }

// Open always fails outside Linux.
func Open(Config) (*Probe, error) { return nil, ErrUnsupported }

// Run fails outside Linux.
func (*Probe) Run(context.Context, func(signal.Signal)) error { return ErrUnsupported }

// Lost is 0 outside Linux.
func (*Probe) Lost() uint64 { return 0 }

// Undecodable is 0 outside Linux.
func (*Probe) Undecodable() uint64 { return 0 }

// Stats fails outside Linux.
func (*Probe) Stats() ([]ProgramStats, error) { return nil, ErrUnsupported }

// Close does nothing outside Linux.
func (*Probe) Close() error { return nil }

// EnableStats fails outside Linux.
func EnableStats() (io.Closer, error) { return nil, ErrUnsupported }

// Unavailable lists nothing outside Linux: Open already failed.
func (*Probe) Unavailable() []error { return nil }

// AttachICMP fails outside Linux.
func (*Probe) AttachICMP(string) error { return ErrUnsupported }
