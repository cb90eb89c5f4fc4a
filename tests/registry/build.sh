#!/usr/bin/env bash
# Builds the CNCF Distribution registry from its Go module (pinned by go.mod/go.sum
# here) and caches it outside the repository, keyed by its version. See --help.
set -euo pipefail

REGISTRY_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--print-path] [--help]

Builds the CNCF Distribution registry (github.com/distribution/distribution/v3,
version pinned by ${REGISTRY_SRC}/go.mod) into a cache shared by every checkout:

  \${XDG_CACHE_HOME:-\$HOME/.cache}/dittofs-wasm/registry/<version>/registry

The module-supply tests (host/tests/oci.rs) start it on a free loopback port with its
storage in a temporary directory. A cached binary is reused; a cold build takes one
to two minutes. Needs Go and the Go module proxy.

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

exec "$REGISTRY_SRC/../go-tool.sh" "$REGISTRY_SRC" registry github.com/distribution/distribution/v3 \
  github.com/distribution/distribution/v3/cmd/registry $($print_path_only && echo --print-path)
