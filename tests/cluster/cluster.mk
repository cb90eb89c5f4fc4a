# Local Kubernetes control plane for the end-to-end tests and `make run`.
# Included by the root Makefile; the logic lives in the scripts beside this file.

CLUSTER_SCRIPTS := tests/cluster

##@ Cluster
.PHONY: cluster-build cluster-up cluster-down test-cluster
cluster-build: ## Build and cache etcd, kube-apiserver, kube-controller-manager, kubectl
	$(CLUSTER_SCRIPTS)/build.sh

cluster-up: ## Start the local control plane (reuses a running one); kubeconfig: target/cluster/kubeconfig
	$(CLUSTER_SCRIPTS)/up.sh

cluster-down: ## Stop the local control plane and delete its state
	$(CLUSTER_SCRIPTS)/down.sh

test-cluster: cluster-up ## Run the control plane's own end-to-end tests (GC cascades, RBAC)
	KUBECONFIG=$(CURDIR)/target/cluster/kubeconfig $(CARGO) test -p e2e --test control_plane
