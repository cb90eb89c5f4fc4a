#!/usr/bin/env bash
# Runs a command against a Kubernetes cluster: the one KUBECONFIG names, or else the
# local control plane, started for the command and stopped afterwards (also on failure).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -eq 0 || $1 == --help || $1 == -h ]]; then
  echo "usage: scripts/with-cluster.sh COMMAND [ARGS...]" >&2
  echo "Runs COMMAND with KUBECONFIG pointing at a cluster (the local one unless KUBECONFIG is set)." >&2
  exit 2
fi

if [[ -n ${KUBECONFIG:-} ]]; then
  echo "with-cluster: using the cluster of KUBECONFIG=$KUBECONFIG" >&2
  exec "$@"
fi

# A cluster someone started before us (make cluster-up) stays up afterwards. up.sh
# reuses it when it has the nodes asked for (CLUSTER_NODES), and replaces it if not.
kubectl=target/cluster/bin/kubectl
if [[ -f target/cluster/state.env ]] &&
  "$kubectl" --kubeconfig target/cluster/kubeconfig --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
  echo "with-cluster: reusing the running local cluster" >&2
  tests/cluster/up.sh
else
  tests/cluster/up.sh
  trap 'tests/cluster/down.sh' EXIT
fi
export KUBECONFIG=$PWD/target/cluster/kubeconfig
"$@"
