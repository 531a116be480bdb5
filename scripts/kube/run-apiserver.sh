#!/usr/bin/env bash
# Runs etcd (Debian etcd-server) and kube-apiserver on loopback for manual
# tests, in the foreground; Ctrl-C stops both. Writes a kubeconfig for an
# administrator (system:masters) into the state directory.
#
# Usage: scripts/kube/run-apiserver.sh [STATE_DIR]   (default: a new temp dir)
# Env:   AUTHZ=RBAC|AlwaysAllow (default RBAC), API_PORT (6443),
#        ETCD_PORT (2379); the binary from build-apiserver.sh (built if missing).
# Then:  export KUBECONFIG=STATE_DIR/kubeconfig
# Restarting with the same STATE_DIR keeps etcd's data and the certificates.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-$(mktemp -d -t kube-apiserver.XXXXXX)}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
authz="${AUTHZ:-RBAC}"
api_port="${API_PORT:-6443}"
etcd_port="${ETCD_PORT:-2379}"
peer_port=$((etcd_port + 1))

command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
apiserver="$("$here/build-apiserver.sh")"

cd "$dir"
if [[ ! -f ca.crt ]]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj /CN=network-correlator-dev-ca -keyout ca.key -out ca.crt 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kube-apiserver \
		-keyout serving.key -out serving.csr 2>/dev/null
	openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out serving.crt \
		-extfile <(printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n') 2>/dev/null
	openssl ecparam -name prime256v1 -genkey -noout -out sa.key
	token="$(openssl rand -hex 16)"
	echo "$token,admin,admin-uid,\"system:masters\"" > tokens.csv
	chmod 600 ./*.key tokens.csv
fi
token="$(cut -d, -f1 tokens.csv)"
cat > kubeconfig <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 ca.crt)
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
KUBECONFIG

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

etcd --name=default --data-dir="$dir/etcd" \
	--listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
	--listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
	--initial-cluster="default=http://127.0.0.1:$peer_port" --log-level=warn >"$dir/etcd.log" 2>&1 &
pids+=($!)

"$apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
	--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
	--tls-cert-file=serving.crt --tls-private-key-file=serving.key --cert-dir="$dir/certs" \
	--token-auth-file=tokens.csv --authorization-mode="$authz" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file=sa.key --service-account-signing-key-file=sa.key \
	--service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none \
	--disable-admission-plugins=ServiceAccount --allow-privileged=true >"$dir/kube-apiserver.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 300); do
	if curl -fsS --cacert ca.crt -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
		echo "kube-apiserver ready ($authz): export KUBECONFIG=$dir/kubeconfig" >&2
		wait -n "${pids[@]}"
		echo "a process exited; see $dir/etcd.log and $dir/kube-apiserver.log" >&2
		exit 1
	fi
	for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "failed to start; see $dir/*.log" >&2; tail -20 "$dir/kube-apiserver.log" "$dir/etcd.log" >&2; exit 1; }; done
	sleep 0.2
done
echo "kube-apiserver not ready after 60s; see $dir/kube-apiserver.log" >&2
exit 1
