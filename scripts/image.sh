#!/usr/bin/env bash
# Builds the operator's image without a container engine and pushes it to a
# registry: the static (musl) host and the DittoFS module on an empty base, as the
# Dockerfile's image holds them. See --help.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<USAGE
Usage: scripts/image.sh [--insecure] REGISTRY/REPOSITORY:TAG

Assembles the operator image with crane (built from its Go module by
tests/crane/build.sh) and pushes it to REGISTRY/REPOSITORY:TAG; prints its digest.
No Docker or other engine is needed. The image: one layer with

  /usr/local/bin/wasm-operator                              the host, static (musl), release, stripped
  /usr/local/share/wasm-operator/dittofs-reconciler.wasm    the module the chart runs by default
  /etc/ssl/certs/ca-certificates.crt                        this machine's CA roots (registries over HTTPS)
  /var/cache/wasm-operator/                                 the compiled-module cache's parent, owned by 65532

user 65532:65532, entrypoint the host, command \`run --module=<the module>
--leader-elect\`, ports 8080 (metrics) and 8081 (probes), linux/amd64. The layer's
files have fixed owners and times, so the same binaries give the same digest.

Builds the host for x86_64-unknown-linux-musl (rustup adds the target; ring's C code
needs musl-gcc: Debian's musl-tools, installed when missing and running as root).

Options:
  --insecure  speak plain HTTP to the registry (one on loopback)
  --help      show this help
USAGE
}

insecure=()
ref=""
for arg in "$@"; do
  case "$arg" in
    --help | -h) usage; exit 0 ;;
    --insecure) insecure=(--insecure) ;;
    -*) echo "image.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
    *) [[ -z $ref ]] || { echo "image.sh: one reference only (see --help)" >&2; exit 2; }; ref=$arg ;;
  esac
done
[[ -n $ref ]] || { echo "image.sh: which REGISTRY/REPOSITORY:TAG? (see --help)" >&2; exit 2; }

say() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

target=x86_64-unknown-linux-musl
module=target/modules/dittofs-reconciler.wasm
certs=/etc/ssl/certs/ca-certificates.crt
[[ -f $certs ]] || die "$certs is missing: install Debian's ca-certificates"

if ! command -v musl-gcc >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing musl-tools (musl-gcc builds ring's C code for the static host)"
    apt-get install -y musl-tools >/dev/null || die "cannot install musl-tools"
  else
    die "musl-gcc is missing: install musl-tools (Debian, Ubuntu) or your distribution's musl-gcc"
  fi
fi
rustup target add "$target" >/dev/null 2>&1 || die "cannot add the Rust target $target (rustup target add $target)"

say "building the module (make wasm) and the static host (release, $target)"
make --no-print-directory wasm >/dev/null
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --locked --release -q -p wasm-operator --bin wasm-operator --target "$target"
out=target/image
mkdir -p "$out"
# Symbols are a quarter of the binary; the image does not need them.
host=$out/wasm-operator
strip -o "$host" "target/$target/release/wasm-operator"
python3 - "$out/layer.tar" "$host" "$module" "$certs" <<'PYEOF'
import sys, tarfile, io
layer, host, module, certs = sys.argv[1:]

def add_dir(tar, path, uid=0, mode=0o755):
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, uid, uid, 0
    tar.addfile(info)

def add_file(tar, path, source, mode):
    data = open(source, "rb").read()
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, 0, 0, 0
    tar.addfile(info, io.BytesIO(data))

with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
    for d in ["etc", "etc/ssl", "etc/ssl/certs", "usr", "usr/local", "usr/local/bin", "usr/local/share",
              "usr/local/share/wasm-operator", "var", "var/cache"]:
        add_dir(tar, d)
    add_dir(tar, "var/cache/wasm-operator", uid=65532, mode=0o700)
    add_dir(tar, "tmp", mode=0o1777)
    add_file(tar, "etc/ssl/certs/ca-certificates.crt", certs, 0o644)
    add_file(tar, "usr/local/bin/wasm-operator", host, 0o755)
    add_file(tar, "usr/local/share/wasm-operator/dittofs-reconciler.wasm", module, 0o644)
PYEOF

tests/crane/build.sh
crane=$(tests/crane/build.sh --print-path)
say "pushing $ref ($(du -h "$out/layer.tar" | cut -f1) layer)"
"$crane" append "${insecure[@]}" --oci-empty-base -f "$out/layer.tar" -t "$ref" >/dev/null
"$crane" mutate "${insecure[@]}" "$ref" \
  --entrypoint /usr/local/bin/wasm-operator \
  --cmd run,--module=/usr/local/share/wasm-operator/dittofs-reconciler.wasm,--leader-elect \
  --user 65532:65532 \
  --env WASM_OPERATOR_MODULE_CACHE_DIR=/var/cache/wasm-operator/modules \
  --exposed-ports 8080/tcp,8081/tcp \
  --label org.opencontainers.image.title=wasm-operator \
  --set-platform linux/amd64 \
  -t "$ref" >/dev/null
digest=$("$crane" digest "${insecure[@]}" "$ref")
say "pushed $ref@$digest"
echo "$digest"
