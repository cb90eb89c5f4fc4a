# Local Kubernetes cluster (control plane, scheduler, kwok nodes) for the end-to-end
# tests and `make run`.
# Included by the root Makefile; the logic lives in the scripts beside this file.

CLUSTER_SCRIPTS := tests/cluster

##@ Cluster
.PHONY: cluster-build cluster-up cluster-down test-cluster
cluster-build: ## Build and cache etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok
	$(CLUSTER_SCRIPTS)/build.sh

cluster-up: ## Start the local cluster with one kwok node (CLUSTER_NODES=0: bare control plane; reuses a running one); kubeconfig: target/cluster/kubeconfig
	$(CLUSTER_SCRIPTS)/up.sh

cluster-down: ## Stop the local cluster and delete its state
	$(CLUSTER_SCRIPTS)/down.sh

test-cluster: cluster-up ## Run the cluster's own end-to-end tests (GC cascades, RBAC, pods on kwok)
	KUBECONFIG=$(CURDIR)/target/cluster/kubeconfig $(CARGO) test -p e2e --test control_plane
