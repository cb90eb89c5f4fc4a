#!/usr/bin/env bash
# `make run`: the operator running against a cluster, with an example DittoServer.
#
# Uses the cluster of KUBECONFIG when it is set; otherwise starts the local control
# plane (tests/cluster/up.sh), which has no nodes: pods never start there, so the
# example stays Pending until you mark its StatefulSet ready yourself.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == --help || ${1:-} == -h ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

module=target/modules/dittofs-reconciler.wasm
host=target/release/wasm-operator
addr=${WASM_OPERATOR_HTTP_ADDR:-127.0.0.1:8080}
say() { printf '\033[1m[run]\033[0m %s\n' "$*" >&2; }

[[ -f $module && -x $host ]] || { say "build first: make build"; exit 1; }

if [[ -n ${KUBECONFIG:-} ]]; then
  say "using the cluster of KUBECONFIG=$KUBECONFIG"
  kubectl=$(command -v kubectl || echo target/cluster/bin/kubectl)
else
  say "starting the local control plane (no nodes: pods never start here)"
  tests/cluster/up.sh
  export KUBECONFIG=$PWD/target/cluster/kubeconfig
  kubectl=target/cluster/bin/kubectl
  # The local plane has no Percona operator; its CRD lets the Percona example be tried.
  "$kubectl" apply --server-side -f tests/fixtures/perconapgclusters.yaml >/dev/null
fi

say "installing the CRDs from crds/"
"$kubectl" apply --server-side -f crds/ >/dev/null
"$kubectl" wait --for condition=Established --timeout=60s -f crds/ >/dev/null

mkdir -p target/run
say "starting wasm-operator (log: target/run/operator.log, metrics: http://$addr/metrics)"
"$host" run --module "$module" --http-addr "$addr" >target/run/operator.log 2>&1 &
operator=$!
trap 'say "stopping wasm-operator"; kill $operator 2>/dev/null; wait $operator 2>/dev/null || true;
      say "the control plane keeps running; stop it with: make cluster-down"' EXIT

for _ in $(seq 1 60); do
  curl -fsS "http://$addr/readyz" >/dev/null 2>&1 && break
  kill -0 $operator 2>/dev/null || { say "wasm-operator exited:"; tail -20 target/run/operator.log >&2; exit 1; }
  sleep 0.5
done

say "applying examples/dittoserver.yaml"
"$kubectl" apply -f examples/dittoserver.yaml
say "watching its status (Ctrl-C to stop the operator)"
"$kubectl" get dittoservers -n default -w
