# The host's targets; the top-level Makefile includes this file.

##@ Host
.PHONY: bench
bench: wasm wasm-v2 ## Benchmark a wasm call against native reconcile, then a hot swap (p50/p90; local control plane)
	$(CARGO) bench -p wasm-operator --bench call
	scripts/with-cluster.sh $(CARGO) bench -p wasm-operator --bench swap

# The DittoFS module with feature v2-annotation, an observably different build for the
# hot-swap tests and benchmark. Its own target directory keeps `make wasm` from
# rebuilding after it (and the other way round).
HOST_V2_TARGET_DIR := target/module-v2
.PHONY: wasm-v2
wasm-v2: ## Build the DittoFS module with feature v2-annotation into target/modules/dittofs-reconciler-v2.wasm
	$(CARGO) build -p dittofs-reconciler --lib --target wasm32-unknown-unknown --profile wasm --features v2-annotation --target-dir $(HOST_V2_TARGET_DIR)
	mkdir -p target/modules
	cp $(HOST_V2_TARGET_DIR)/wasm32-unknown-unknown/wasm/dittofs_reconciler.wasm target/modules/dittofs-reconciler-v2.wasm
	@echo "target/modules/dittofs-reconciler-v2.wasm: $$(wc -c < target/modules/dittofs-reconciler-v2.wasm) bytes"

.PHONY: bench-swap
bench-swap: wasm wasm-v2 ## Benchmark a hot swap: ConfigMap update until the new module is active (p50/p90 of 20; local control plane)
	scripts/with-cluster.sh $(CARGO) bench -p wasm-operator --bench swap
