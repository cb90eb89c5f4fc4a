# The DittoFS reconcile module (guest/): wasm builds, the CRD, and the guest's tests.
# Included by the root Makefile.

GUEST_WASM_TARGET := wasm32-unknown-unknown
GUEST_MODULES := target/modules
GUEST_MODULE := $(GUEST_MODULES)/dittofs-reconciler.wasm
GUEST_MODULE_JS := $(GUEST_MODULES)/js
GUEST_WASM_OUT := target/$(GUEST_WASM_TARGET)/wasm/dittofs_reconciler.wasm
# The wasm-bindgen CLI must match the `wasm-bindgen` crate pinned in Cargo.toml.
WASM_BINDGEN_VERSION := 0.2.130
GUEST_TOOLS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/dittofs-wasm/tools
WASM_BINDGEN := $(GUEST_TOOLS)/bin/wasm-bindgen
WASM_BINDGEN_TEST_RUNNER := $(GUEST_TOOLS)/bin/wasm-bindgen-test-runner
GUEST_PACKAGES := -p dittofs-reconciler -p reconcile-sdk

##@ Guest
.PHONY: wasm wasm-js crds test-guest lint-guest wasm-bindgen-cli

wasm: ## Build the plain ABI v1 module into target/modules/dittofs-reconciler.wasm
	$(CARGO) build -p dittofs-reconciler --lib --target $(GUEST_WASM_TARGET) --profile wasm
	mkdir -p $(GUEST_MODULES)
	cp $(GUEST_WASM_OUT) $(GUEST_MODULE)
	@echo "$(GUEST_MODULE): $$(wc -c < $(GUEST_MODULE)) bytes"

# The js build is not stripped: wasm-bindgen reads its target_features section.
wasm-js: wasm wasm-bindgen-cli ## Build the wasm-bindgen variant (feature js) for Node into target/modules/js/
	CARGO_PROFILE_WASM_STRIP=false $(CARGO) build -p dittofs-reconciler --lib --target $(GUEST_WASM_TARGET) --profile wasm --features js
	$(WASM_BINDGEN) --target nodejs --out-dir $(GUEST_MODULE_JS) $(GUEST_WASM_OUT)

crds: ## Regenerate crds/dittoservers.yaml (and the Helm chart's copy) from the API types (guest/src/api.rs)
	mkdir -p crds
	$(CARGO) run -q -p dittofs-reconciler --example crdgen > crds/dittoservers.yaml.tmp
	mv crds/dittoservers.yaml.tmp crds/dittoservers.yaml
	cp crds/dittoservers.yaml deploy/chart/crds/dittoservers.yaml

test-guest: wasm wasm-js ## Guest tests: native, the built module through wasmtime, and Node (wasm-bindgen)
	$(CARGO) test $(GUEST_PACKAGES)
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WASM_BINDGEN_TEST_RUNNER) \
	  $(CARGO) test -p dittofs-reconciler --target $(GUEST_WASM_TARGET) --features js
	node --test guest/tests/js/

lint-guest: ## Clippy (native and wasm32, -D warnings) and rustfmt check of the guest crates
	$(CARGO) clippy $(GUEST_PACKAGES) --all-targets -- -D warnings
	$(CARGO) clippy $(GUEST_PACKAGES) --all-targets --target $(GUEST_WASM_TARGET) -- -D warnings
	$(CARGO) clippy $(GUEST_PACKAGES) --all-targets --target $(GUEST_WASM_TARGET) --features dittofs-reconciler/js -- -D warnings
	$(CARGO) fmt $(GUEST_PACKAGES) --check

# `--locked` first; should a crate of its lock file have been yanked since, the
# same version is built against the registry's current versions instead.
wasm-bindgen-cli: ## Install wasm-bindgen-cli $(WASM_BINDGEN_VERSION) into the user cache (reused when present)
	@if ! "$(WASM_BINDGEN_TEST_RUNNER)" --version 2>/dev/null | grep -q " $(WASM_BINDGEN_VERSION)"; then \
	  $(CARGO) install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --locked --root "$(GUEST_TOOLS)" || \
	  { echo "wasm-bindgen-cli: --locked failed, retrying without the lock file" >&2; \
	    $(CARGO) install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --root "$(GUEST_TOOLS)"; }; \
	fi
