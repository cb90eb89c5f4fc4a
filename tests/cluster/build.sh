#!/usr/bin/env bash
# Builds the local cluster's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from their Go modules and caches them outside the
# repository, keyed by the pinned versions. See --help.
set -euo pipefail

CLUSTER_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  cat <<EOF
Usage: $(basename "$0") [--print-dir | --print-kwok-version] [--help]

Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and
kwok (the fake nodes) from the Go modules in ${CLUSTER_SRC}/{etcd,kube,kwok}
(versions pinned by their go.mod/go.sum) into a cache shared by every checkout:

  \${XDG_CACHE_HOME:-\$HOME/.cache}/dittofs-wasm/k8s/<kubernetes>+etcd-<etcd>/

kwok is cached as kwok-<version>, beside kwok-<version>-stages.yaml: the node and
pod stages kwok ships as its defaults (node-initialize, node heartbeat with lease,
pod ready/complete/delete), taken from its module.

Binaries already in the cache are reused; a cold build takes several minutes.
Needs Go (the version named in the go.mod files) and the Go module proxy.

Options:
  --print-dir   only print the cache directory the binaries go to, build nothing
  --print-kwok-version
                only print the pinned kwok version, build nothing
  --help        show this help

Environment:
  XDG_CACHE_HOME   base of the cache (default: \$HOME/.cache)
  GOPROXY, GOFLAGS passed to go as usual
EOF
}

print_dir_only=false
print_kwok_version=false
for arg in "$@"; do
  case "$arg" in
    --help | -h) usage; exit 0 ;;
    --print-dir) print_dir_only=true ;;
    --print-kwok-version) print_kwok_version=true ;;
    *) echo "build.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[cluster-build] %s\n' "$*" >&2; }
die() { printf '[cluster-build] error: %s\n' "$*" >&2; exit 1; }

# The pinned versions are read from the go.mod files so that they are written in
# exactly one place.
module_version() { # <go.mod> <module path>
  awk -v mod="$2" '$1 == mod && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == mod { print $3; exit }' "$1"
}
K8S_VERSION="$(module_version "$CLUSTER_SRC/kube/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(module_version "$CLUSTER_SRC/etcd/go.mod" go.etcd.io/etcd/server/v3)"
KWOK_VERSION="$(module_version "$CLUSTER_SRC/kwok/go.mod" sigs.k8s.io/kwok)"
[[ -n "$K8S_VERSION" && -n "$ETCD_VERSION" && -n "$KWOK_VERSION" ]] ||
  die "cannot read the pinned versions from $CLUSTER_SRC/{kube,etcd,kwok}/go.mod"

CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-wasm/k8s/${K8S_VERSION}+etcd-${ETCD_VERSION}"
if $print_dir_only; then
  echo "$CACHE_DIR"
  exit 0
fi
if $print_kwok_version; then
  echo "$KWOK_VERSION"
  exit 0
fi

# kwok's release is not part of the cache directory's key, so its version is in
# its file names: a new pin builds a new kwok and nothing else.
KWOK_STAGES="kwok-$KWOK_VERSION-stages.yaml"

# cached file | module directory | package
BINARIES=(
  "etcd|etcd|."
  "kube-apiserver|kube|k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager|kube|k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler|kube|k8s.io/kubernetes/cmd/kube-scheduler"
  "kubectl|kube|k8s.io/kubernetes/cmd/kubectl"
  "kwok-$KWOK_VERSION|kwok|sigs.k8s.io/kwok/cmd/kwok"
)

missing=()
for entry in "${BINARIES[@]}"; do
  IFS='|' read -r name _ _ <<<"$entry"
  [[ -x "$CACHE_DIR/$name" ]] || missing+=("$entry")
done
if [[ ${#missing[@]} -eq 0 && -s "$CACHE_DIR/$KWOK_STAGES" ]]; then
  log "binaries cached in $CACHE_DIR (kubernetes $K8S_VERSION, etcd $ETCD_VERSION)"
  exit 0
fi

command -v go >/dev/null 2>&1 ||
  die "the Go toolchain (go) is not on PATH; it is needed once to build kubernetes $K8S_VERSION and etcd $ETCD_VERSION into $CACHE_DIR"

mkdir -p "$CACHE_DIR"
# Two test runs (or two checkouts) may start a cold build at the same time; the
# second waits for the first and then finds the binaries cached.
exec 9>"$CACHE_DIR/.build.lock"
if ! flock -n 9; then
  log "another build into $CACHE_DIR is running; waiting for it"
  flock 9
fi

# The kubernetes version metadata that its own build scripts inject; without it
# the binaries report v0.0.0-master. No build date, so that builds are reproducible.
k8s_minor="${K8S_VERSION#v1.}"
k8s_minor="${k8s_minor%%.*}"
K8S_LDFLAGS=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done

fmt_elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

build_started=$SECONDS
log "building into $CACHE_DIR: ${#missing[@]} binaries (kubernetes $K8S_VERSION, etcd $ETCD_VERSION); the first build takes several minutes"

# Fetch the modules first so that an unreachable proxy is reported as such rather
# than as a compile error halfway through.
for dir in etcd kube kwok; do
  log "downloading the Go modules of $dir (GOPROXY=$(go env GOPROXY))"
  if ! out="$(cd "$CLUSTER_SRC/$dir" && go mod download 2>&1)"; then
    printf '%s\n' "$out" | tail -n 15 >&2
    die "cannot download the Go modules for $dir: is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))? Go says the above."
  fi
done

index=0
for entry in "${missing[@]}"; do
  IFS='|' read -r name dir pkg <<<"$entry"
  index=$((index + 1))
  ldflags="-s -w"
  [[ "$dir" == kube ]] && ldflags+="$K8S_LDFLAGS"
  build_log="$CACHE_DIR/.build-$name.log"
  total="$(cd "$CLUSTER_SRC/$dir" && go list -deps "$pkg" 2>/dev/null | wc -l || echo '?')"
  log "[$index/${#missing[@]}] building $name ($total packages); log: $build_log"
  started=$SECONDS
  # -v prints each package as it is compiled, which is our progress counter.
  # CGO is off: static binaries that do not depend on this machine's libc.
  (
    cd "$CLUSTER_SRC/$dir"
    CGO_ENABLED=0 exec nice -n 10 go build -v -trimpath -buildvcs=false -ldflags="$ldflags" -o "$CACHE_DIR/.$name.tmp" "$pkg"
  ) >"$build_log" 2>&1 &
  build_pid=$!
  while kill -0 "$build_pid" 2>/dev/null; do
    sleep 15
    if kill -0 "$build_pid" 2>/dev/null; then
      log "  $name: $(wc -l <"$build_log") of ~$total packages compiled, $(fmt_elapsed $((SECONDS - started))) elapsed"
    fi
  done
  if ! wait "$build_pid"; then
    tail -n 30 "$build_log" >&2
    if grep -qiE 'dial tcp|proxy|no such host|i/o timeout|connection refused' "$build_log"; then
      die "building $name failed while fetching modules: is the Go module proxy reachable? (full log: $build_log)"
    fi
    die "building $name failed (full log: $build_log)"
  fi
  # Renamed only when complete, so a cached binary is never a half-written one.
  mv -f "$CACHE_DIR/.$name.tmp" "$CACHE_DIR/$name"
  log "  $name built in $(fmt_elapsed $((SECONDS - started)))"
done

# kwok's default stages, as its module ships them (kwokctl configures the same
# ones). A Stage is how kwok decides that a node is Ready and a pod Running.
if [[ ! -s "$CACHE_DIR/$KWOK_STAGES" ]]; then
  kwok_dir="$(cd "$CLUSTER_SRC/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  stages=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)
  for stage in "${stages[@]}"; do
    [[ -f "$kwok_dir/kustomize/stage/$stage" ]] || die "kwok $KWOK_VERSION has no default stage $stage in $kwok_dir"
    cat "$kwok_dir/kustomize/stage/$stage"
    printf '\n---\n'
  done >"$CACHE_DIR/.$KWOK_STAGES.tmp"
  mv -f "$CACHE_DIR/.$KWOK_STAGES.tmp" "$CACHE_DIR/$KWOK_STAGES"
  log "kwok's default stages written to $CACHE_DIR/$KWOK_STAGES"
fi

{
  echo "kubernetes $K8S_VERSION"
  echo "etcd $ETCD_VERSION"
  echo "kwok $KWOK_VERSION"
  go version
} >"$CACHE_DIR/VERSIONS"
log "done in $(fmt_elapsed $((SECONDS - build_started))); cache: $(du -sh "$CACHE_DIR" | cut -f1) in $CACHE_DIR"
