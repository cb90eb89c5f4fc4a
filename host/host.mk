# The host's targets; the top-level Makefile includes this file.

##@ Host
.PHONY: bench
bench: wasm ## Benchmark a wasm call against native reconcile (criterion, then a p50/ratio summary)
	$(CARGO) bench -p wasm-operator --bench call
