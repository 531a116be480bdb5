// Package e2e holds the end-to-end tests: real failures induced in the netns
// lab, seen by the real eBPF probes, explained by the real correlator, and
// (collector_test.go) carried through an ocb-built collector into a file.
// They need root; without it they skip saying so.
package e2e
