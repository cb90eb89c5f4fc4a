# The OCI registry of the module-supply tests (host/tests/oci.rs): the CNCF
# Distribution registry, built from its Go module and cached like the cluster.
# Included by the root Makefile; the logic lives in build.sh beside this file.

##@ Registry
.PHONY: registry-build
registry-build: ## Build and cache the CNCF Distribution registry the OCI tests start on loopback
	tests/registry/build.sh
