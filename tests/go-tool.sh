#!/usr/bin/env bash
# Builds one program of a Go module pinned by a tool directory's go.mod/go.sum
# (tests/registry, tests/helm) and caches it outside the repository, keyed by the
# module's version:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-wasm/<name>/<version>/<name>
#
# Usage: go-tool.sh TOOL_DIR NAME MODULE PACKAGE PURPOSE [--print-path | --help]
# The tool directories' build.sh call it with their module and what the tool is for
# (PURPOSE, shown by --help). A cached binary is reused; test binaries started in
# parallel that all ask for it wait for one build.
set -euo pipefail

[[ $# -ge 5 ]] || { echo "usage: go-tool.sh TOOL_DIR NAME MODULE PACKAGE PURPOSE [--print-path | --help]" >&2; exit 2; }
TOOL_DIR="$1" NAME="$2" MODULE="$3" PACKAGE="$4" PURPOSE="$5"
shift 5
print_path_only=false
for arg in "$@"; do
  case "$arg" in
    --help | -h)
      cat <<USAGE
Usage: $TOOL_DIR/build.sh [--print-path] [--help]

Builds $NAME ($MODULE, version pinned by $TOOL_DIR/go.mod) into a cache shared by
every checkout:

  \${XDG_CACHE_HOME:-\$HOME/.cache}/dittofs-wasm/$NAME/<version>/$NAME

$PURPOSE

A cached binary is reused. Needs Go and the Go module proxy once.

Options:
  --print-path  only print the path of the binary, build nothing
  --help        show this help
USAGE
      exit 0 ;;
    --print-path) print_path_only=true ;;
    *) echo "build.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[%s-build] %s\n' "$NAME" "$*" >&2; }
die() { printf '[%s-build] error: %s\n' "$NAME" "$*" >&2; exit 1; }

VERSION="$(awk -v mod="$MODULE" '$1 == "require" && $2 == mod { print $3; exit } $1 == mod && $2 ~ /^v/ { print $2; exit }' "$TOOL_DIR/go.mod")"
[[ -n "$VERSION" ]] || die "cannot read the pinned version of $MODULE from $TOOL_DIR/go.mod"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-wasm/$NAME/$VERSION"
BINARY="$CACHE_DIR/$NAME"
if $print_path_only; then
  echo "$BINARY"
  exit 0
fi
if [[ -x "$BINARY" ]]; then
  log "$NAME $VERSION cached: $BINARY"
  exit 0
fi
command -v go >/dev/null 2>&1 || die "the Go toolchain (go) is not on PATH; it is needed once to build $NAME into $CACHE_DIR"

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.build.lock"
if ! flock -n 9; then
  log "another build into $CACHE_DIR is running; waiting for it"
  flock 9
  [[ -x "$BINARY" ]] && exit 0
fi

log "downloading the Go modules (GOPROXY=$(go env GOPROXY))"
if ! out="$(cd "$TOOL_DIR" && go mod download 2>&1)"; then
  printf '%s\n' "$out" | tail -n 15 >&2
  die "cannot download $NAME's Go modules: is the Go module proxy reachable? Go says the above."
fi
build_log="$CACHE_DIR/.build.log"
total="$(cd "$TOOL_DIR" && go list -deps "$PACKAGE" 2>/dev/null | wc -l || echo '?')"
log "building $NAME $VERSION ($total packages) into $CACHE_DIR; log: $build_log"
started=$SECONDS
(
  cd "$TOOL_DIR"
  CGO_ENABLED=0 exec nice -n 10 go build -v -trimpath -buildvcs=false -ldflags="-s -w" -o "$CACHE_DIR/.$NAME.tmp" "$PACKAGE"
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
  die "building $NAME failed (full log: $build_log)"
fi
mv -f "$CACHE_DIR/.$NAME.tmp" "$BINARY"
log "built in $((SECONDS - started)) s: $BINARY ($(du -h "$BINARY" | cut -f1))"
