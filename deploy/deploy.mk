# In-cluster deployment of the operator (deploy/). Included by the root Makefile.
# See deploy/README.md.

KUBECTL ?= kubectl
DEPLOY_NAMESPACE ?= wasm-operator
DEPLOY_MODULE_CONFIGMAP ?= dittofs-module
DEPLOY_IMAGE ?= wasm-operator:0.2.0
# The arguments deploy/rbac.yaml is generated with; they must match the other files
# of deploy/ (ServiceAccount, namespace, module ConfigMap; the Lease is the host's
# default `wasm-operator`). The e2e test `deploy` regenerates the file with them and
# fails when the committed one is stale.
DEPLOY_RBAC_ARGS := --service-account wasm-operator --operator-namespace wasm-operator --lease-name wasm-operator --module-configmap dittofs-module
# The arguments deploy/admission/policy.yaml is generated with (the ServiceAccount of
# deploy/ and the default policy of `run`); checked by the same e2e test.
DEPLOY_ADMISSION_ARGS := --service-account wasm-operator --operator-namespace wasm-operator

##@ Deploy
.PHONY: deploy-rbac deploy-admission-policy deploy deploy-module undeploy image image-oci

deploy-rbac: wasm ## Regenerate deploy/rbac.yaml from the module's manifest (wasm-operator rbac)
	$(CARGO) run -q -p wasm-operator -- rbac --module $(GUEST_MODULE) $(DEPLOY_RBAC_ARGS) > deploy/rbac.yaml.tmp
	mv deploy/rbac.yaml.tmp deploy/rbac.yaml

deploy-admission-policy: wasm ## Regenerate deploy/admission/policy.yaml, the API server's own check of the module's writes
	$(CARGO) run -q -p wasm-operator -- admission-policy --module $(GUEST_MODULE) $(DEPLOY_ADMISSION_ARGS) > deploy/admission/policy.yaml.tmp
	mv deploy/admission/policy.yaml.tmp deploy/admission/policy.yaml

deploy: ## Install the CRDs, apply deploy/ to the current kubectl context, upload the module
	$(KUBECTL) apply --server-side -f crds/
	$(KUBECTL) apply --server-side -k deploy
	$(MAKE) --no-print-directory deploy-module

# Server-side apply: a client-side one would copy the module into the last-applied
# annotation (256 KiB limit). Its own field manager, so that re-applying the empty
# shell in deploy/module-configmap.yaml never removes the module.
deploy-module: wasm ## Upload target/modules/dittofs-reconciler.wasm into the module ConfigMap
	$(KUBECTL) create configmap $(DEPLOY_MODULE_CONFIGMAP) -n $(DEPLOY_NAMESPACE) \
	  --from-file=dittofs-reconciler.wasm=$(GUEST_MODULE) --dry-run=client -o yaml | \
	  $(KUBECTL) apply --server-side --field-manager=wasm-operator-module --force-conflicts -f -

undeploy: ## Delete what deploy/ created (the DittoServer CRD and objects are kept)
	$(KUBECTL) delete --ignore-not-found -k deploy

image: ## Build the container image (DEPLOY_IMAGE, default wasm-operator:0.2.0; needs Docker)
	docker build -t $(DEPLOY_IMAGE) .

# IMAGE_REF: where to push, e.g. registry.example.com/ops/wasm-operator:0.2.0.
image-oci: ## Build the image without Docker (crane) and push it to IMAGE_REF (scripts/image.sh)
	@[[ -n "$${IMAGE_REF:-}" ]] || { echo "make image-oci: set IMAGE_REF=REGISTRY/REPOSITORY:TAG"; exit 2; }
	scripts/image.sh $(IMAGE_ARGS) "$$IMAGE_REF"

##@ Helm chart and install.yaml
HELM = $(shell tests/helm/build.sh --print-path)
CHART := deploy/chart
# The placeholders the chart replaces with the release's names (templates/_helpers.tpl);
# the chart test checks the files are fresh and the replaced names right.
CHART_RBAC_ARGS := --service-account wasmop-chart-sa --operator-namespace wasmop-chart-ns --lease-name wasmop-chart-lease --module-configmap wasmop-chart-cm
CHART_ADMISSION_ARGS := --service-account wasmop-chart-sa --operator-namespace wasmop-chart-ns --name wasmop-chart-sa
# install.yaml: the chart's defaults, its namespace created, CRDs included.
INSTALL_ARGS := template wasm-operator $(CHART) --namespace wasm-operator --include-crds --set namespace.create=true
.PHONY: chart-files install-yaml helm

helm: ## Build and cache helm (tests/helm/build.sh)
	tests/helm/build.sh

chart-files: wasm ## Regenerate the chart's generated files (RBAC, admission policy, CRD) from the module and crds/
	$(CARGO) run -q -p wasm-operator -- rbac --module $(GUEST_MODULE) $(CHART_RBAC_ARGS) > $(CHART)/files/rbac-cluster.yaml
	$(CARGO) run -q -p wasm-operator -- rbac --module $(GUEST_MODULE) $(CHART_RBAC_ARGS) --namespace wasmop-chart-watch > $(CHART)/files/rbac-namespaced.yaml
	$(CARGO) run -q -p wasm-operator -- admission-policy --module $(GUEST_MODULE) $(CHART_ADMISSION_ARGS) > $(CHART)/files/admission-policy.yaml
	cp crds/dittoservers.yaml $(CHART)/crds/dittoservers.yaml

install-yaml: helm ## Render deploy/install.yaml from the chart (the one-file install)
	$(HELM) $(INSTALL_ARGS) > deploy/install.yaml.tmp
	mv deploy/install.yaml.tmp deploy/install.yaml
