#!/usr/bin/env bash
# Builds kube-apiserver from the Go module proxy and caches the binary.
#
# k8s.io/kubernetes is not meant to be required as a module: its go.mod requires
# every staging module at v0.0.0 and replaces it with ./staging/src/... . A
# throwaway module outside the repository requires k8s.io/kubernetes and
# replaces each of those staging modules by its published v0.<minor>.<patch>.
# Only the binary is kept; the Go build and module caches are the user's own.
#
# Usage: scripts/kube/build-apiserver.sh        prints the binary path
# Env:   KUBE_VERSION (default 1.34.4), NC_KUBE_CACHE (default
#        ${XDG_CACHE_HOME:-$HOME/.cache}/network-correlator/kube)
set -euo pipefail

version="${KUBE_VERSION:-1.34.4}"
cache="${NC_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/network-correlator/kube}"
bin="$cache/bin/kube-apiserver-v$version"

mkdir -p "$cache/bin"
# One build at a time: test packages may ask for the binary concurrently.
exec 9>"$cache/build.lock"
flock 9
# Under the lock no other build runs: any build directory is a killed one's.
rm -rf "$cache"/build.??????

if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
	echo "$bin"
	exit 0
fi

work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"

export GOWORK=off GOFLAGS=-mod=mod GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
minor="${version#*.}" # 34.4
staging_version="v0.$minor"

go mod init kube-apiserver-build >/dev/null 2>&1
go mod edit -require "k8s.io/kubernetes@v$version"
gomod="$(go mod download -json "k8s.io/kubernetes@v$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -f "$gomod" ]] || { echo "cannot download go.mod of k8s.io/kubernetes@v$version" >&2; exit 1; }

# Staging modules: required at v0.0.0 and replaced by a ./staging path. The
# sample-* modules are never published; kube-apiserver does not import them.
n=0
while read -r mod; do
	go mod edit -replace "$mod=$mod@$staging_version"
	n=$((n + 1))
done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod" | grep -v '^k8s.io/sample-')
echo "replaced $n staging modules with $staging_version" >&2

start=$(date +%s)
go build -trimpath -ldflags="-s -w" -o "$work/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
echo "built kube-apiserver v$version in $(( $(date +%s) - start ))s" >&2
mv "$work/kube-apiserver" "$bin"
ln -sfn "$(basename "$bin")" "$cache/bin/kube-apiserver"
echo "$bin"
