#!/bin/sh
# Regenerates the committed eBPF objects (bpf/probe_bpf{el,eb}.{o,go})
# from bpf/probe.c with bpf2go. The output is deterministic for a given clang,
# so CI can check staleness with:  scripts/gen-bpf.sh --check
# Needs clang-16 and llvm-strip-16 (Debian: clang-16 llvm-16) and libbpf's
# headers (libbpf-dev). The kernel types come from bpf/headers/vmlinux.h, not
# from the running kernel, so the machine's kernel does not change the output.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
for tool in clang-16 llvm-strip-16; do
	command -v "$tool" >/dev/null || { echo "gen-bpf: $tool not found (apt-get install clang-16 llvm-16)" >&2; exit 1; }
done
[ -f /usr/include/bpf/bpf_helpers.h ] || { echo "gen-bpf: libbpf headers not found (apt-get install libbpf-dev)" >&2; exit 1; }
cd "$root/bpf"
go generate ./
if [ "${1:-}" = "--check" ]; then
	git -C "$root" diff --exit-code -- bpf/ || { echo "gen-bpf: generated files in bpf/ are stale: run scripts/gen-bpf.sh and commit" >&2; exit 1; }
fi
