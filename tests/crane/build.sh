#!/usr/bin/env bash
# Builds crane (go-containerregistry) from its Go module (pinned by go.mod/go.sum here)
# and caches it outside the repository, keyed by its version. See --help.
set -euo pipefail

CRANE_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--print-path] [--help]

Builds crane (github.com/google/go-containerregistry, version pinned by
${CRANE_SRC}/go.mod) into a cache shared by every checkout:

  \${XDG_CACHE_HOME:-\$HOME/.cache}/dittofs-wasm/crane/<version>/crane

scripts/image.sh uses it to assemble the operator's image without a container engine
and push it to a registry; the image test (tests/tests/image.rs) pushes to a local
registry. A cached binary is reused; a cold build takes about a minute. Needs Go and
the Go module proxy.

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

exec "$CRANE_SRC/../go-tool.sh" "$CRANE_SRC" crane github.com/google/go-containerregistry \
  github.com/google/go-containerregistry/cmd/crane $($print_path_only && echo --print-path)
