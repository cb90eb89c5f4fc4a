#!/usr/bin/env bash
# Stops the local cluster started by up.sh and removes its state.
# Idempotent: without a running control plane it does nothing. See --help.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $(basename "$0") [--help]

Stops the kwok, kube-scheduler, kube-controller-manager, kube-apiserver and etcd
that up.sh started (SIGTERM, then SIGKILL after ${STOP_TIMEOUT:-15}s), and deletes
their temporary state directory (etcd data, certificates). Only processes recorded in
${STATE_FILE#"$REPO_ROOT"/} that still run the cached binaries are signalled.
Logs stay in ${LOG_DIR#"$REPO_ROOT"/}; the kubeconfig is removed.

Environment:
  STOP_TIMEOUT          seconds to wait for a graceful stop (default 15)
  DITTOFS_CLUSTER_DIR   instead of target/cluster
EOF
}

for arg in "$@"; do
  case "$arg" in
    --help | -h) usage; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done

STOP_TIMEOUT="${STOP_TIMEOUT:-15}"

take_cluster_lock

if [[ ! -f "$STATE_FILE" ]]; then
  log "no control plane recorded in $STATE_FILE; nothing to stop"
  exit 0
fi
# shellcheck disable=SC1090
source "$STATE_FILE"

stop() { # <component>
  local component="$1" pid_name pid deadline
  pid_name="$(pid_var "$component")"
  pid="${!pid_name:-}"
  if ! is_our_process "$pid" "$(binary_of "$component")"; then
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + STOP_TIMEOUT))
  while is_our_process "$pid" "$(binary_of "$component")"; do
    if ((SECONDS >= deadline)); then
      log "$component (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.2
  done
  if is_our_process "$pid" "$(binary_of "$component")"; then
    die "could not stop $component (pid $pid)"
  fi
  log "stopped $component (pid $pid)"
}

for component in "${COMPONENTS[@]}"; do
  stop "$component"
done

# Only a directory that up.sh made with mktemp is removed.
if [[ -n "${STATE_DIR:-}" && "$(basename "$STATE_DIR")" == dittofs-cluster.* && -d "$STATE_DIR" ]]; then
  rm -rf "$STATE_DIR"
fi
rm -f "$STATE_FILE" "$KUBECONFIG_FILE"
log "control plane stopped"
