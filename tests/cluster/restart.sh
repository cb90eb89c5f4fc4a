#!/usr/bin/env bash
# Starts one component of the control plane that up.sh started again, exactly as
# up.sh started it, after a fault test killed it. See --help.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $(basename "$0") <etcd|kube-apiserver|kube-controller-manager> [--help]

Starts the component again with the arguments up.sh recorded for it (same ports,
certificates, etcd data directory and flags), appending to its log, records
its new pid in ${STATE_FILE#"$REPO_ROOT"/} (so down.sh stops it) and waits until
it is healthy: etcd answers /health, kube-apiserver answers /readyz ok (so etcd
must be running), kube-controller-manager is still running after a moment.
Refuses when the recorded process still runs: this restarts what a test stopped,
it does not stop anything itself.

Environment:
  CLUSTER_START_TIMEOUT  seconds to wait for the component (default 120)
  DITTOFS_CLUSTER_DIR    instead of target/cluster
EOF
}

component=""
for arg in "$@"; do
  case "$arg" in
    --help | -h) usage; exit 0 ;;
    etcd | kube-apiserver | kube-controller-manager) component="$arg" ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done
[[ -n "$component" ]] || die "name the component to restart (see --help)"

START_TIMEOUT="${CLUSTER_START_TIMEOUT:-120}"

take_cluster_lock

[[ -f "$STATE_FILE" ]] || die "no control plane recorded in $STATE_FILE; start one with up.sh"
# shellcheck disable=SC1090
source "$STATE_FILE"
args_file="$STATE_DIR/$component.args"
[[ -f "$args_file" ]] || die "no recorded arguments for $component ($args_file); was it started by an older up.sh?"
pid_name="$(pid_var "$component")"
if is_our_process "${!pid_name:-}" "$(binary_of "$component")"; then
  die "$component still runs (pid ${!pid_name}); stop it before restarting it"
fi

# A process killed a moment ago drops its memory (and /proc/PID/exe) before it closes
# its files: wait, bounded, until it has exited (gone or a zombie), or its ports may
# still be bound when the new one starts.
old_pid="${!pid_name:-}"
for _ in $(seq 1 100); do
  [[ -n "$old_pid" && -r "/proc/$old_pid/stat" ]] || break
  state="$(sed 's/^.*) //' "/proc/$old_pid/stat" 2>/dev/null | cut -d' ' -f1)"
  [[ -z "$state" || "$state" == Z || "$state" == X ]] && break
  sleep 0.1
done

mapfile -d '' args <"$args_file"
# As in up.sh: its own session, output appended to its log, without the lock.
setsid "$(binary_of "$component")" "${args[@]}" </dev/null >>"$LOG_DIR/$component.log" 2>&1 8>&- &
declare -A PIDS=(["$component"]=$!)
# The new pid replaces the old one in place; the rest of the state is unchanged.
sed "s/^$pid_name=.*/$pid_name=${PIDS[$component]}/" "$STATE_FILE" >"$STATE_FILE.tmp"
mv -f "$STATE_FILE.tmp" "$STATE_FILE"
log "restarted $component (pid ${PIDS[$component]}, log $LOG_DIR/$component.log)"

case "$component" in
  etcd) wait_for etcd "etcd to report healthy" etcd_healthy ;;
  kube-apiserver) wait_for kube-apiserver "kube-apiserver /readyz to answer ok" readyz_ok ;;
  kube-controller-manager)
    sleep 2
    kill -0 "${PIDS[$component]}" 2>/dev/null ||
      die "kube-controller-manager exited at once; see $LOG_DIR/$component.log"
    ;;
esac
log "$component is back"
