# DittoFS wasm operator. `make` (or `make help`) lists the targets.
#
# The two commands a newcomer needs: `make run` (a running operator on a local
# control plane) and `make test` (everything CI runs). Each part of the project keeps
# its own targets beside its code in a *.mk fragment included below.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
CLUSTER_KUBECONFIG := $(CURDIR)/target/cluster/kubeconfig

##@ General
.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

.PHONY: toolchain
toolchain: ## Install the pinned Rust toolchain's wasm32 target (idempotent)
	@rustup target add wasm32-unknown-unknown >/dev/null

.PHONY: build
build: toolchain wasm ## Build the module and the host (release)
	$(CARGO) build --release -p wasm-operator

.PHONY: lint
lint: toolchain ## rustfmt check and clippy -D warnings: the workspace natively, the modules for wasm32 (plain and js)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p reconcile-sdk -p dittofs-reconciler -p configmap-mirror --all-targets --target wasm32-unknown-unknown -- -D warnings
	$(CARGO) clippy -p reconcile-sdk -p dittofs-reconciler --all-targets --target wasm32-unknown-unknown --features dittofs-reconciler/js -- -D warnings

##@ Run and test
.PHONY: run
run: build ## Build, start the local control plane (unless KUBECONFIG is set), run the operator and an example
	scripts/run.sh

.PHONY: test
test: toolchain ## Everything CI runs: lint, CRDs fresh, guest (native, wasmtime, Node), host, end to end (with a local OCI registry, helm and crane)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory test-guest
	@command -v openssl >/dev/null || { echo "make test: installing openssl (the signature tests make keys with it)"; apt-get install -y openssl >/dev/null; }
	tests/registry/build.sh
	tests/helm/build.sh
	tests/crane/build.sh
	scripts/with-cluster.sh $(CARGO) test --workspace --exclude dittofs-reconciler

# Each part of the project keeps its targets beside its code.
-include guest/guest.mk
-include host/host.mk
-include tests/tests.mk
-include tests/cluster/cluster.mk
-include tests/registry/registry.mk
-include deploy/deploy.mk
