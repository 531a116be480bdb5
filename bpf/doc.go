// Package bpf holds the network-correlator eBPF programs (probe.c, CO-RE,
// dual BSD/GPL) and the objects bpf2go generated from them. The generated
// files are committed so that building the module needs no clang; regenerate
// them with `go generate ./bpf` (or scripts/gen-bpf.sh), which is
// deterministic: the same sources and clang give the same bytes.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-16 -strip llvm-strip-16 -target bpfel,bpfeb -go-package bpf -type nc_event Probe probe.c -- -O2 -Wall -Werror -mcpu=v3 -Iheaders
