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

log() { printf '[registry-build] %s\n' "$*" >&2; }
die() { printf '[registry-build] error: %s\n' "$*" >&2; exit 1; }

MODULE=github.com/distribution/distribution/v3
VERSION="$(awk -v mod="$MODULE" '$1 == "require" && $2 == mod { print $3; exit } $1 == mod && $2 ~ /^v/ { print $2; exit }' "$REGISTRY_SRC/go.mod")"
[[ -n "$VERSION" ]] || die "cannot read the pinned version of $MODULE from $REGISTRY_SRC/go.mod"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-wasm/registry/$VERSION"
BINARY="$CACHE_DIR/registry"
if $print_path_only; then
  echo "$BINARY"
  exit 0
fi
if [[ -x "$BINARY" ]]; then
  log "registry $VERSION cached: $BINARY"
  exit 0
fi
command -v go >/dev/null 2>&1 || die "the Go toolchain (go) is not on PATH; it is needed once to build the registry into $CACHE_DIR"

mkdir -p "$CACHE_DIR"
# Test binaries started in parallel may all ask for it; the others wait.
exec 9>"$CACHE_DIR/.build.lock"
if ! flock -n 9; then
  log "another build into $CACHE_DIR is running; waiting for it"
  flock 9
  [[ -x "$BINARY" ]] && exit 0
fi

log "downloading the Go modules (GOPROXY=$(go env GOPROXY))"
if ! out="$(cd "$REGISTRY_SRC" && go mod download 2>&1)"; then
  printf '%s\n' "$out" | tail -n 15 >&2
  die "cannot download the registry's Go modules: is the Go module proxy reachable? Go says the above."
fi
build_log="$CACHE_DIR/.build.log"
total="$(cd "$REGISTRY_SRC" && go list -deps "$MODULE/cmd/registry" 2>/dev/null | wc -l || echo '?')"
log "building registry $VERSION ($total packages) into $CACHE_DIR; log: $build_log"
started=$SECONDS
(
  cd "$REGISTRY_SRC"
  CGO_ENABLED=0 exec nice -n 10 go build -v -trimpath -buildvcs=false -ldflags="-s -w" -o "$CACHE_DIR/.registry.tmp" "$MODULE/cmd/registry"
) >"$build_log" 2>&1 &
build_pid=$!
while kill -0 "$build_pid" 2>/dev/null; do
  sleep 15
  if kill -0 "$build_pid" 2>/dev/null; then
    log "  $(wc -l <"$build_log") of ~$total packages compiled, $((SECONDS - started)) s elapsed"
  fi
done
if ! wait "$build_pid"; then
  tail -n 30 "$build_log" >&2
  die "building the registry failed (full log: $build_log)"
fi
mv -f "$CACHE_DIR/.registry.tmp" "$BINARY"
log "built in $((SECONDS - started)) s: $BINARY ($(du -h "$BINARY" | cut -f1))"
