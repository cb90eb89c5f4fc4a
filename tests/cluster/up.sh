#!/usr/bin/env bash
# Starts a local Kubernetes cluster on 127.0.0.1 for the end-to-end tests and
# `make run`: etcd, kube-apiserver, kube-controller-manager and, unless
# CLUSTER_NODES=0, kube-scheduler and kwok's fake nodes.
# Idempotent: a healthy running cluster is reused. See --help.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $(basename "$0") [--help]

Starts a local cluster on 127.0.0.1, on free ports, with its state in a fresh
temporary directory. Builds the binaries first when they are not cached (see
build.sh --help).

By default (CLUSTER_NODES=1) it has what the DittoServer lifecycle needs:
  etcd, kube-apiserver;
  kube-controller-manager with the workload controllers (statefulset, replicaset,
    deployment, endpointslice, serviceaccount and its tokens), the volume
    controllers (persistentvolume binder with the hostPath provisioner, PVC and PV
    protection), the garbage collector and the namespace controller;
  kube-scheduler;
  kwok, which plays the kubelet of CLUSTER_NODES fake nodes (kwok-node-0, ...):
    scheduled pods become Running and Ready. No container ever runs and no image
    is pulled;
  a default StorageClass "standard" (kubernetes.io/host-path): PVCs are bound to
    empty directories under /tmp/hostpath_pv that nothing writes to.

CLUSTER_NODES=0 starts the bare control plane instead: etcd, kube-apiserver and
kube-controller-manager with only the garbage collector and namespace controllers.
Nothing schedules or runs pods, and nothing writes a StatefulSet's status.

If a cluster started by this script is already running, ready and of the same
kind (CLUSTER_NODES), it is reused and nothing changes. A half-dead one, or one
with another number of nodes, is stopped and replaced.

Afterwards:
  ${KUBECONFIG_FILE#"$REPO_ROOT"/}   admin kubeconfig (group system:masters)
  ${CLUSTER_DIR#"$REPO_ROOT"/}/bin/         kubectl, kube-apiserver, ... (links into the cache)
  ${LOG_DIR#"$REPO_ROOT"/}/        one log per component
  ${STATE_FILE#"$REPO_ROOT"/}     ports, pids and state directory, for down.sh

  export KUBECONFIG=\$PWD/${KUBECONFIG_FILE#"$REPO_ROOT"/}
  ${CLUSTER_DIR#"$REPO_ROOT"/}/bin/kubectl get namespaces

Environment:
  CLUSTER_NODES          fake nodes (default 1); 0 for the bare control plane
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
NODES="${CLUSTER_NODES:-1}"
[[ "$NODES" =~ ^[0-9]+$ && "$NODES" -le 100 ]] || die "CLUSTER_NODES must be a number from 0 to 100, not '$NODES'"
# Split on whitespace, no quoting: flags with paths that contain spaces do not fit.
read -r -a APISERVER_EXTRA_FLAGS <<<"${DITTOFS_APISERVER_EXTRA_FLAGS:-}"

take_cluster_lock

# Already running? Every recorded process must be ours and alive, and the API
# server must answer /readyz with our admin credentials.
if [[ -f "$STATE_FILE" ]]; then
  # shellcheck disable=SC1090
  source "$STATE_FILE"
  healthy=true
  for component in $(components_of "${CLUSTER_NODES_STARTED:-0}"); do
    pid_name="$(pid_var "$component")"
    is_our_process "${!pid_name:-}" "$(binary_of "$component")" || healthy=false
  done
  if $healthy && [[ "${CLUSTER_NODES_STARTED:-0}" != "$NODES" ]]; then
    log "the running cluster has ${CLUSTER_NODES_STARTED:-0} node(s) and CLUSTER_NODES=$NODES; replacing it"
  elif $healthy && [[ "$(admin_kubectl get --raw /readyz 2>/dev/null)" == ok ]]; then
    log "already running at $API_SERVER_URL with $NODES node(s) (kubeconfig: $KUBECONFIG_FILE)"
    exit 0
  else
    log "a previous cluster is not healthy; stopping what is left of it"
  fi
  flock -u 8
  "$CLUSTER_SRC/down.sh"
  take_cluster_lock
fi

"$CLUSTER_SRC/build.sh"
BIN_DIR="$("$CLUSTER_SRC/build.sh" --print-dir)"

started=$SECONDS
mkdir -p "$CLUSTER_DIR/bin" "$LOG_DIR"
KWOK_VERSION="$("$CLUSTER_SRC/build.sh" --print-kwok-version)"
for binary in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
  ln -sfn "$(binary_of "$binary")" "$CLUSTER_DIR/bin/$binary"
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
    printf 'CLUSTER_NODES_STARTED=%q\nKWOK_VERSION=%q\n' "$NODES" "$KWOK_VERSION"
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
# The scheduler's bootstrap roles (system:kube-scheduler, system:volume-scheduler)
# are bound to this user. kwok plays every node's kubelet; without the Node
# authorizer no node identity would be allowed to, so it is an administrator.
sign_cert kube-scheduler "/CN=system:kube-scheduler" "$client_ext"
sign_cert kwok "/O=system:masters/CN=kwok" "$client_ext"
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
  setsid "$(binary_of "$component")" "$@" </dev/null >>"$LOG_DIR/$component.log" 2>&1 8>&- &
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
for user in kube-controller-manager kube-scheduler kwok; do
  write_kubeconfig "$STATE_DIR/$user.kubeconfig" "$user" "$PKI/$user.crt" "$PKI/$user.key"
done

# No endpoint reconciler: it would publish 127.0.0.1 as the endpoint of the
# default/kubernetes Service, which validation rejects, and no container runs here
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

# The bare plane (CLUSTER_NODES=0) runs only the garbage collector, for
# ownerReference cascades (background, foreground, orphan), the namespace
# controller, so that deleted namespaces go away, and the ClusterRole aggregation
# controller, which merges the chart's user roles into admin, edit and view. With nodes it also runs what takes
# a StatefulSet to Running pods: the workload controllers, the default service
# account (admission refuses pods without it) and its token, and the volume
# controllers that bind the StatefulSet's PVCs, and the node lifecycle controller:
# it lifts the not-ready taint that admission puts on every new node once kwok
# reports the node Ready, and taints it again if kwok stops. The hostPath provisioner is
# Kubernetes' own, for single-machine tests: it makes an empty directory per volume.
# No serving port: nothing scrapes it. Its client rate is raised from 20 requests/s
# (burst 30) to 500 (burst 1000): the garbage collector deletes owned objects at
# that rate, and 2,000 of them (500 DittoServers) took 2 minutes at the default.
KCM_CONTROLLERS=garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller
if ((NODES > 0)); then
  KCM_CONTROLLERS+=,statefulset-controller,replicaset-controller,deployment-controller
  KCM_CONTROLLERS+=,endpointslice-controller,serviceaccount-controller,serviceaccount-token-controller
  KCM_CONTROLLERS+=,persistentvolume-binder-controller,persistentvolumeclaim-protection-controller
  KCM_CONTROLLERS+=,persistentvolume-protection-controller,node-lifecycle-controller
fi
start kube-controller-manager \
  --kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
  --controllers="$KCM_CONTROLLERS" \
  --kube-api-qps=500 \
  --kube-api-burst=1000 \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --enable-hostpath-provisioner=true \
  --leader-elect=false \
  --secure-port=0
# The controller manager creates each controller's service account as it starts
# that controller, so the garbage collector's account shows it got that far.
gc_started() { admin_kubectl -n kube-system get serviceaccount generic-garbage-collector; }
wait_for kube-controller-manager "kube-controller-manager to start the garbage collector" gc_started

if ((NODES > 0)); then
  # The same client rate as the controller manager: it binds every pod it places.
  cat >"$STATE_DIR/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $STATE_DIR/kube-scheduler.kubeconfig
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
EOF
  start kube-scheduler --config="$STATE_DIR/kube-scheduler.yaml" --secure-port=0

  # kwok manages only the nodes annotated as its own, and gives pods IPs from a
  # range apart from the Services' (10.0.0.0/16). Its stages are the defaults it
  # ships (build.sh): a node becomes Ready; a pod becomes Running and Ready at once,
  # and goes when it is deleted. Those stages update a node's status only every 10
  # minutes and leave its heartbeat to a Lease, which kwok keeps only when given a
  # lease duration (40 s, as a kubelet's). Without one the node lifecycle controller
  # sees no heartbeat for its 50 s grace period and marks every pod NotReady.
  start kwok \
    --kubeconfig="$STATE_DIR/kwok.kubeconfig" \
    --config="$BIN_DIR/kwok-$KWOK_VERSION-stages.yaml" \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 \
    --cidr=10.244.0.0/16 \
    --node-ip=127.0.0.1
  for ((i = 0; i < NODES; i++)); do
    cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
---
EOF
  done | admin_kubectl apply --server-side -f - >/dev/null
  nodes_ready() {
    admin_kubectl wait --for=condition=Ready --timeout=1s nodes --all &&
      [[ "$(admin_kubectl -n kube-node-lease get leases -o name | wc -l)" -ge "$NODES" ]]
  }
  wait_for kwok "kwok to make $NODES node(s) Ready, each with its Lease" nodes_ready
  # Admission gives a new node the not-ready taint; the node lifecycle controller
  # lifts it once it sees the node Ready. Until then nothing is scheduled.
  nodes_untainted() { [[ -z "$(admin_kubectl get nodes -o jsonpath='{.items[*].spec.taints}')" ]]; }
  wait_for kube-controller-manager "the node lifecycle controller to lift the nodes' not-ready taint" nodes_untainted
  admin_kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
EOF
  # The scheduler has no port to ask; a pod that reaches a node proves it works
  # (tests/tests/control_plane.rs), so here it only has to stay up.
  sleep 1
  if ! kill -0 "${PIDS[kube-scheduler]}" 2>/dev/null; then
    tail -n 20 "$LOG_DIR/kube-scheduler.log" >&2
    die "kube-scheduler exited at once; see $LOG_DIR/kube-scheduler.log"
  fi
fi

write_state
trap - EXIT
log "cluster ready at $API_SERVER_URL with $NODES node(s) in $((SECONDS - started))s"
log "  export KUBECONFIG=$KUBECONFIG_FILE"
log "  kubectl: $CLUSTER_DIR/bin/kubectl; logs: $LOG_DIR; stop: tests/cluster/down.sh"
