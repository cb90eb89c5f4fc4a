# The end-to-end crate's targets; the top-level Makefile includes this file.

##@ Scale
N ?= 500
.PHONY: bench-scale
bench-scale: toolchain wasm ## Converge, touch, roll and delete N DittoServers (N=500; N=250,500,1000 adds growth; NODES=1 runs their pods on kwok) against a bare client, on a private control plane
	N=$(N) $(if $(NODES),NODES=$(NODES)) $(if $(CONCURRENCY),CONCURRENCY=$(CONCURRENCY)) $(CARGO) bench -p e2e --bench scale
