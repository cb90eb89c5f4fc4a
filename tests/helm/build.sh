#!/usr/bin/env bash
# Builds helm from its Go module (pinned by go.mod/go.sum here) and caches it outside
# the repository, keyed by its version. See --help.
set -euo pipefail

HELM_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--print-path] [--help]

Builds helm (helm.sh/helm/v4, version pinned by ${HELM_SRC}/go.mod) into a cache
shared by every checkout:

  \${XDG_CACHE_HOME:-\$HOME/.cache}/dittofs-wasm/helm/<version>/helm

The chart tests (tests/tests/chart.rs) run it against the local control plane:
lint, template, install, upgrade, uninstall. A cached binary is reused; a cold build
takes a few minutes. Needs Go and the Go module proxy.

Options:
  --print-path  only print the path of the binary, build nothing
  --help        show this help
USAGE
}

print_path_only=false
for arg in "$@"; do
  case "$arg" in
    --help | -h) usage; exit 0 ;;
    --print-path) print_path_only=true ;;
    *) echo "build.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

exec "$HELM_SRC/../go-tool.sh" "$HELM_SRC" helm helm.sh/helm/v4 helm.sh/helm/v4/cmd/helm \
  $($print_path_only && echo --print-path)
