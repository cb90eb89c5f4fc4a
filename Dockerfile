# syntax=docker/dockerfile:1
#
# The operator image: the static `wasm-operator` host (musl) and the DittoFS module
# on distroless/static (CA certificates, a non-root user, no shell).
#
#   docker build -t wasm-operator:0.2.0 .        # or: make image
#
# The DittoFS module baked in here is what the chart's and deploy/'s Deployments run
# by default (module.source=builtin), so a fresh install reconciles at once; a
# ConfigMap, file or registry source replaces it, and is hot-swapped. Building needs BuildKit (the default builder of current Docker). The
# build stage runs on the target platform (amd64 or arm64; another one is emulated).

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
# musl-gcc builds the C parts of the dependencies (ring) for the static target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The pinned toolchain first, so this layer is cached until it changes.
COPY rust-toolchain.toml ./
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add wasm32-unknown-unknown "$(cat /rust-target)"
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    target="$(cat /rust-target)"; \
    cargo build --locked -p dittofs-reconciler --lib --target wasm32-unknown-unknown --profile wasm; \
    cargo build --locked --release -p wasm-operator --bin wasm-operator --target "$target"; \
    mkdir -p /out/cache; \
    cp "target/$target/release/wasm-operator" /out/wasm-operator; \
    cp target/wasm32-unknown-unknown/wasm/dittofs_reconciler.wasm /out/dittofs-reconciler.wasm

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/wasm-operator /usr/local/bin/wasm-operator
COPY --from=build /out/dittofs-reconciler.wasm /usr/local/share/wasm-operator/dittofs-reconciler.wasm
# The compiled-module cache; in Kubernetes an emptyDir is mounted at its parent,
# since the root filesystem is read-only. The operator creates `modules` with mode
# 0700 (it refuses a cache directory others can write, as an emptyDir's root is).
COPY --from=build --chown=65532:65532 /out/cache /var/cache/wasm-operator
ENV WASM_OPERATOR_MODULE_CACHE_DIR=/var/cache/wasm-operator/modules
USER 65532:65532
# /metrics on 8080, /healthz, /readyz and /module on 8081.
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/wasm-operator"]
CMD ["run", "--module=/usr/local/share/wasm-operator/dittofs-reconciler.wasm", "--leader-elect"]
