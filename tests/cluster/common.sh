# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared by up.sh and down.sh (sourced, not run): where the running control plane
# keeps its files, and how to tell that a recorded process is still ours.

CLUSTER_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_SRC/../.." && pwd)"
# target/cluster: kubeconfig, bin/ (links into the cache), logs/, state.env.
CLUSTER_DIR="${DITTOFS_CLUSTER_DIR:-$REPO_ROOT/target/cluster}"
STATE_FILE="$CLUSTER_DIR/state.env"
KUBECONFIG_FILE="$CLUSTER_DIR/kubeconfig"
LOG_DIR="$CLUSTER_DIR/logs"
# Stop order: clients before the servers they talk to.
COMPONENTS=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

components_of() { # <nodes> -> the components a cluster with that many nodes runs
  if (($1 > 0)); then
    echo "${COMPONENTS[@]}"
  else
    echo kube-controller-manager kube-apiserver etcd
  fi
}

# The cached binary a component runs; kwok's name carries its version (build.sh).
binary_of() { # <component>; needs BIN_DIR (and KWOK_VERSION for kwok)
  if [[ "$1" == kwok ]]; then
    printf '%s/kwok-%s' "$BIN_DIR" "$KWOK_VERSION"
  else
    printf '%s/%s' "$BIN_DIR" "$1"
  fi
}

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

# Serialises up.sh and down.sh: test binaries started in parallel all call up.sh.
take_cluster_lock() {
  mkdir -p "$CLUSTER_DIR"
  exec 8>"$CLUSTER_DIR/.lock"
  if ! flock -n 8; then
    # Bounded, but generously: the holder may be in the middle of a cold build.
    log "another cluster-up/cluster-down is running; waiting for it (at most 30 minutes)"
    flock -w 1800 8 || die "gave up waiting for the lock $CLUSTER_DIR/.lock; is a cluster-up stuck? (fuser -v $CLUSTER_DIR/.lock)"
  fi
}

# True when <pid> is alive and runs <binary>. A recorded pid alone proves nothing:
# after a reboot or a crash the number may belong to an unrelated process.
is_our_process() { # <pid> <binary>
  local pid="$1" binary="$2" exe
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  exe="$(readlink -f "/proc/$pid/exe" 2>/dev/null)" || return 1
  [[ "$exe" == "$(readlink -f "$binary")" ]]
}

pid_var() { # <component> -> name of its variable in state.env
  local name="${1//-/_}"
  printf '%s_PID' "${name^^}"
}

# --- used by up.sh and restart.sh -------------------------------------------

admin_kubectl() {
  "$CLUSTER_DIR/bin/kubectl" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=5s "$@"
}

# Waits (START_TIMEOUT seconds at most) until <command> succeeds, failing early with
# the end of the component's log when its process, PIDS[<component>], exits.
wait_for() { # <component> <description> <command...>
  local component="$1" what="$2" deadline=$((SECONDS + START_TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "${PIDS[$component]}" 2>/dev/null; then
      tail -n 20 "$LOG_DIR/$component.log" >&2
      die "$component exited while waiting for $what; see $LOG_DIR/$component.log"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$LOG_DIR/$component.log" >&2
      die "timed out after ${START_TIMEOUT}s waiting for $what; see $LOG_DIR/$component.log"
    fi
    sleep 0.5
  done
}

etcd_healthy() {
  [[ "$(exec 3<>"/dev/tcp/127.0.0.1/$ETCD_CLIENT_PORT" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && cat <&3)" == *'"health":"true"'* ]]
}

readyz_ok() { [[ "$(admin_kubectl get --raw /readyz 2>/dev/null)" == ok ]]; }
