#!/usr/bin/env bash
# Starts a local Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager) on 127.0.0.1 for the end-to-end tests and `make run`.
# Idempotent: a healthy running control plane is reused. See --help.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $(basename "$0") [--help]

Starts etcd, kube-apiserver and kube-controller-manager (garbage collector and
namespace controllers only) on 127.0.0.1, on free ports, with their state in a
fresh temporary directory. There is no kubelet and no scheduler: nothing runs pods.
Builds the binaries first when they are not cached (see build.sh --help).

If a control plane started by this script is already running and ready, it is
reused and nothing changes. A half-dead one is stopped and replaced.

Afterwards:
  ${KUBECONFIG_FILE#"$REPO_ROOT"/}   admin kubeconfig (group system:masters)
  ${CLUSTER_DIR#"$REPO_ROOT"/}/bin/         kubectl, kube-apiserver, ... (links into the cache)
  ${LOG_DIR#"$REPO_ROOT"/}/        one log per component
  ${STATE_FILE#"$REPO_ROOT"/}     ports, pids and state directory, for down.sh

  export KUBECONFIG=\$PWD/${KUBECONFIG_FILE#"$REPO_ROOT"/}
  ${CLUSTER_DIR#"$REPO_ROOT"/}/bin/kubectl get namespaces

Environment:
  CLUSTER_START_TIMEOUT  seconds to wait for each component (default 120)
  DITTOFS_CLUSTER_DIR    instead of target/cluster
  DITTOFS_APISERVER_EXTRA_FLAGS
                         more kube-apiserver flags, separated by whitespace (e.g.
                         --max-requests-inflight=100 --audit-log-path=...); only
                         when a control plane is started, a running one is reused as is
Stop it with down.sh (make cluster-down).
EOF
}

for arg in "$@"; do
  case "$arg" in
    --help | -h) usage; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done

START_TIMEOUT="${CLUSTER_START_TIMEOUT:-120}"
# Split on whitespace, no quoting: flags with paths that contain spaces do not fit.
read -r -a APISERVER_EXTRA_FLAGS <<<"${DITTOFS_APISERVER_EXTRA_FLAGS:-}"

take_cluster_lock

# Already running? Every recorded process must be ours and alive, and the API
# server must answer /readyz with our admin credentials.
if [[ -f "$STATE_FILE" ]]; then
  # shellcheck disable=SC1090
  source "$STATE_FILE"
  healthy=true
  for component in "${COMPONENTS[@]}"; do
    pid_name="$(pid_var "$component")"
    is_our_process "${!pid_name:-}" "$BIN_DIR/$component" || healthy=false
  done
  if $healthy && [[ "$(admin_kubectl get --raw /readyz 2>/dev/null)" == ok ]]; then
    log "already running at $API_SERVER_URL (kubeconfig: $KUBECONFIG_FILE)"
    exit 0
  fi
  log "a previous control plane is not healthy; stopping what is left of it"
  flock -u 8
  "$CLUSTER_SRC/down.sh"
  take_cluster_lock
fi

"$CLUSTER_SRC/build.sh"
BIN_DIR="$("$CLUSTER_SRC/build.sh" --print-dir)"

started=$SECONDS
mkdir -p "$CLUSTER_DIR/bin" "$LOG_DIR"
for binary in etcd kube-apiserver kube-controller-manager kubectl; do
  ln -sfn "$BIN_DIR/$binary" "$CLUSTER_DIR/bin/$binary"
done

STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/dittofs-cluster.XXXXXX")"
PKI="$STATE_DIR/pki"
mkdir -p "$PKI"

# From here on a failure stops whatever was started, so that a failed start never
# leaves stray servers behind. The state file is written first for that reason.
declare -A PIDS=()
write_state() {
  local component
  {
    printf 'STATE_DIR=%q\nBIN_DIR=%q\nAPI_SERVER_URL=%q\n' "$STATE_DIR" "$BIN_DIR" "${API_SERVER_URL:-}"
    printf 'ETCD_CLIENT_PORT=%q\nETCD_PEER_PORT=%q\nAPISERVER_PORT=%q\n' "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT"
    for component in "${COMPONENTS[@]}"; do
      printf '%s=%q\n' "$(pid_var "$component")" "${PIDS[$component]:-}"
    done
  } >"$STATE_FILE.tmp"
  mv -f "$STATE_FILE.tmp" "$STATE_FILE"
}
on_exit() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    log "start failed; stopping what was started (logs stay in $LOG_DIR)"
    flock -u 8 || true
    "$CLUSTER_SRC/down.sh" >&2 || true
  fi
}
trap on_exit EXIT

# --- certificates ----------------------------------------------------------
# One throwaway CA signs the API server's serving certificate and the client
# certificates. P-256 keys: quick to generate and accepted by Go and rustls alike.
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
sign_cert() { # <name> <subject> <extensions>
  new_key "$PKI/$1.key"
  openssl req -new -key "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile <(printf '%b' "$3") -out "$PKI/$1.crt" 2>/dev/null
}
command -v openssl >/dev/null 2>&1 || die "openssl is needed to generate the control plane's certificates"
new_key "$PKI/ca.key"
openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=dittofs-e2e-ca" -days 30 -sha256 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$PKI/ca.crt" 2>/dev/null
client_ext='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n'
sign_cert apiserver "/CN=kube-apiserver" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1\n"
sign_cert admin "/O=system:masters/CN=dittofs-e2e-admin" "$client_ext"
# The controller manager authenticates as itself; with
# --use-service-account-credentials each controller then acts through its own
# service account and RBAC role, as in a real cluster.
sign_cert kube-controller-manager "/CN=system:kube-controller-manager" "$client_ext"
# Service account tokens (also used by the controller manager's controllers).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null

# --- ports -----------------------------------------------------------------
# Free = nobody listens on it now (IPv4 or IPv6). Picked below the kernel's
# ephemeral range so that outgoing connections do not take it meanwhile.
declare -A TAKEN=()
while read -r hex; do TAKEN[$((16#$hex))]=1; done < <(
  awk 'FNR > 1 && $4 == "0A" { n = split($2, a, ":"); print a[n] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
)
free_port() { # <variable to set>; not $(...): TAKEN must see every pick
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 12000))
    if [[ -z "${TAKEN[$port]:-}" ]]; then
      TAKEN[$port]=1
      printf -v "$1" '%s' "$port"
      return 0
    fi
  done
  die "found no free TCP port on 127.0.0.1"
}
free_port ETCD_CLIENT_PORT
free_port ETCD_PEER_PORT
free_port APISERVER_PORT
API_SERVER_URL="https://127.0.0.1:$APISERVER_PORT"
write_state

# --- processes -------------------------------------------------------------
# setsid: the servers outlive this script and the make/cargo process that ran
# it, and a Ctrl-C in that terminal does not reach them. Their output goes to log
# files so that no caller's pipe is held open.
start() { # <component> <args...>
  local component="$1"
  shift
  : >"$LOG_DIR/$component.log"
  # The exact arguments, NUL-separated, so that restart.sh can start the component
  # again as it was (same ports, certificates and data) after a test killed it.
  printf '%s\0' "$@" >"$STATE_DIR/$component.args"
  # 8>&-: the server must not inherit the cluster lock, or it would hold it
  # for as long as it runs and every later up.sh/down.sh would wait forever.
  setsid "$BIN_DIR/$component" "$@" </dev/null >>"$LOG_DIR/$component.log" 2>&1 8>&- &
  PIDS[$component]=$!
  write_state
  log "started $component (pid ${PIDS[$component]}, log $LOG_DIR/$component.log)"
}

# Durability is pointless for a throwaway test store; skipping fsync keeps etcd
# from slowing down every write on a busy machine. The 8 GiB quota (etcd's largest
# recommended; the default is 2 GiB) leaves room for the scale benchmark's thousands
# of objects and their history between the API server's compactions.
start etcd \
  --name=dittofs-e2e \
  --data-dir="$STATE_DIR/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="dittofs-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync \
  --quota-backend-bytes=8589934592 \
  --log-level=warn
wait_for etcd "etcd to report healthy" etcd_healthy

# The kubeconfig embeds the credentials, so it stays valid on its own.
b64() { base64 -w0 <"$1"; }
write_kubeconfig() { # <file> <user> <cert> <key>
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dittofs-e2e
  cluster:
    server: $API_SERVER_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$3")
    client-key-data: $(b64 "$4")
contexts:
- name: dittofs-e2e
  context:
    cluster: dittofs-e2e
    user: $2
current-context: dittofs-e2e
EOF
}
write_kubeconfig "$KUBECONFIG_FILE" dittofs-e2e-admin "$PKI/admin.crt" "$PKI/admin.key"
write_kubeconfig "$STATE_DIR/kube-controller-manager.kubeconfig" kube-controller-manager \
  "$PKI/kube-controller-manager.crt" "$PKI/kube-controller-manager.key"

# No endpoint reconciler: it would publish 127.0.0.1 as the endpoint of the
# default/kubernetes Service, which validation rejects, and nothing here runs pods
# that would use it. The service range is only an allocation pool: no traffic. A /16
# holds 65,534 ClusterIPs, enough for 30,000 DittoServers (two ClusterIP Services
# each); a /24 held fewer than 130.
start kube-apiserver \
  --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$APISERVER_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" \
  --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.0.0.0/16 \
  --endpoint-reconciler-type=none \
  --allow-privileged=true \
  --profiling=false \
  "${APISERVER_EXTRA_FLAGS[@]}"
wait_for kube-apiserver "kube-apiserver /readyz to answer ok" readyz_ok

# Only what the tests need: the garbage collector for ownerReference cascades
# (background, foreground, orphan) and the namespace controller so that deleted
# namespaces go away. No serving port: nothing scrapes it. Its client rate is raised
# from 20 requests/s (burst 30) to 500 (burst 1000): the garbage collector deletes
# owned objects at that rate, and 2,000 of them (500 DittoServers) took 2 minutes
# at the default.
start kube-controller-manager \
  --kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
  --controllers=garbagecollector,namespace \
  --kube-api-qps=500 \
  --kube-api-burst=1000 \
  --use-service-account-credentials=true \
  --leader-elect=false \
  --secure-port=0
# The controller manager creates each controller's service account as it starts
# that controller, so the garbage collector's account shows it got that far.
gc_started() { admin_kubectl -n kube-system get serviceaccount generic-garbage-collector; }
wait_for kube-controller-manager "kube-controller-manager to start the garbage collector" gc_started

write_state
trap - EXIT
log "control plane ready at $API_SERVER_URL in $((SECONDS - started))s"
log "  export KUBECONFIG=$KUBECONFIG_FILE"
log "  kubectl: $CLUSTER_DIR/bin/kubectl; logs: $LOG_DIR; stop: tests/cluster/down.sh"
