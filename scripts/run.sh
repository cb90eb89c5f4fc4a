#!/usr/bin/env bash
# `make run`: the operator running against a cluster, with an example DittoServer.
#
# Uses the cluster of KUBECONFIG when it is set; otherwise starts the local cluster
# (tests/cluster/up.sh): a real control plane, scheduler and workload controllers
# with one kwok node, on which the example's pod is scheduled and reported Running
# and Ready (no container runs, no image is pulled). There it waits for the example
# to be Running and prints what to try next; then it shows the example's status as
# it changes, until Ctrl-C stops the operator.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == --help || ${1:-} == -h ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

module=target/modules/dittofs-reconciler.wasm
host=target/release/wasm-operator
metrics_addr=${WASM_OPERATOR_METRICS_ADDR:-127.0.0.1:8080}
probe_addr=${WASM_OPERATOR_PROBE_ADDR:-127.0.0.1:8081}
say() { printf '\033[1m[run]\033[0m %s\n' "$*" >&2; }

[[ -f $module && -x $host ]] || { say "build first: make build"; exit 1; }

local_cluster=false
if [[ -n ${KUBECONFIG:-} ]]; then
  say "using the cluster of KUBECONFIG=$KUBECONFIG"
  kubectl=$(command -v kubectl || echo target/cluster/bin/kubectl)
else
  say "starting the local cluster (control plane, scheduler, one kwok node)"
  tests/cluster/up.sh
  export KUBECONFIG=$PWD/target/cluster/kubeconfig
  kubectl=$PWD/target/cluster/bin/kubectl
  local_cluster=true
  # The local cluster has no Percona operator; its CRD lets the Percona example be tried.
  "$kubectl" apply --server-side -f tests/fixtures/perconapgclusters.yaml >/dev/null
fi

say "installing the CRDs from crds/"
"$kubectl" apply --server-side -f crds/ >/dev/null
"$kubectl" wait --for condition=Established --timeout=60s -f crds/ >/dev/null

mkdir -p target/run
say "starting wasm-operator (log: target/run/operator.log, metrics: http://$metrics_addr/metrics, module: http://$probe_addr/module)"
"$host" run --module "$module" --metrics-bind-address "$metrics_addr" --health-probe-bind-address "$probe_addr" \
  >target/run/operator.log 2>&1 &
operator=$!
trap 'say "stopping wasm-operator"; kill $operator 2>/dev/null; wait $operator 2>/dev/null || true;
      say "the cluster keeps running; stop it with: make cluster-down"' EXIT

for _ in $(seq 1 60); do
  curl -fsS "http://$probe_addr/readyz" >/dev/null 2>&1 && break
  kill -0 $operator 2>/dev/null || { say "wasm-operator exited:"; tail -20 target/run/operator.log >&2; exit 1; }
  sleep 0.5
done

say "applying examples/dittoserver.yaml"
"$kubectl" apply -f examples/dittoserver.yaml

# What the module made for the example carries its owner label; the StatefulSet's
# PVCs are named after their claim templates.
owned="-l dittofs.dittofs.com/server=demo"
claims="metadata-demo-0 cache-demo-0"

if $local_cluster; then
  say "waiting for DittoServer demo to be Running (its pod on the kwok node; at most 2 minutes)"
  "$kubectl" get dittoservers -n default -w &
  watcher=$!
  if ! "$kubectl" wait -n default --for=jsonpath='{.status.phase}'=Running --timeout=120s \
    dittoserver/demo >/dev/null; then
    kill $watcher 2>/dev/null || true
    say "DittoServer demo is not Running after 2 minutes. Its status, objects and events:"
    "$kubectl" get -n default dittoserver/demo -o jsonpath='{.status}{"\n"}' >&2 || true
    # shellcheck disable=SC2086 # word splitting of the selector is meant
    "$kubectl" get -n default statefulsets,pods $owned >&2 || true
    "$kubectl" get -n default events --sort-by=.lastTimestamp 2>&1 | tail -n 15 >&2 || true
    say "operator log: target/run/operator.log; cluster logs: target/cluster/logs/"
    exit 1
  fi
  kill $watcher 2>/dev/null || true
  wait $watcher 2>/dev/null || true
  echo >&2
  # shellcheck disable=SC2086 # word splitting of the selector and names is meant
  "$kubectl" get -n default statefulsets,pods $owned >&2
  # shellcheck disable=SC2086
  "$kubectl" get -n default pvc $claims >&2
  cat >&2 <<EOF

$(printf '\033[1m[run]\033[0m') DittoServer demo is Running. In another terminal, try:

  export KUBECONFIG=$KUBECONFIG
  alias kubectl=$kubectl

  # stop it: the StatefulSet scales to 0, its pod goes, the phase becomes Stopped
  kubectl patch dittoserver demo --type merge -p '{"spec":{"replicas":0}}'
  # start it with another metrics port: a new config hash rolls the pod
  kubectl patch dittoserver demo --type merge -p '{"spec":{"replicas":1,"metrics":{"port":9191}}}'
  kubectl get pods $owned -w
  # delete it: the finalizer runs (phase Deleting), then the garbage collector
  # removes the StatefulSet, its pod, the Services and the ConfigMap; the PVCs stay
  kubectl delete dittoserver demo
  kubectl get statefulsets,pods,services,configmaps $owned
  kubectl get pvc $claims

EOF
fi
say "watching its status (Ctrl-C to stop the operator)"
"$kubectl" get dittoservers -n default -w
