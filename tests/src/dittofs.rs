//! The DittoFS operator's world as the lifecycle tests see it: DittoServers and the
//! objects they own, their pods as the real StatefulSet controller and kwok run them,
//! the one actor the cluster lacks (the Percona operator marking its cluster ready),
//! and a [`Scenario`]: one namespace with its own host.
//!
//! The names here are the operator's contract (`reference/dittoserver.md`), written
//! out again on purpose rather than imported from the guest: the tests check the
//! module against the contract, not against itself.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, Config, ResourceExt as _};
use serde_json::{Value, json};

use crate::namespace::KEEP_ENV;
use crate::operator::Operator;
use crate::wait::{DEFAULT_TIMEOUT, wait_until};
use crate::{Cluster, TestNamespace};

/// The finalizer the module puts on every DittoServer.
pub const FINALIZER: &str = "dittofs.dittofs.com/finalizer";
/// The label on every object a DittoServer owns; its value is the server's name.
pub const OWNER_LABEL: &str = "dittofs.dittofs.com/server";
/// The pod template annotation whose change rolls the pod.
pub const CONFIG_HASH_ANNOTATION: &str = "dittofs.dittofs.com/config-hash";
/// `apiVersion` of DittoServers.
pub const API_VERSION: &str = "dittofs.dittofs.com/v1alpha1";

/// The DittoServer resource.
pub fn dittoservers() -> ApiResource {
    ApiResource {
        group: "dittofs.dittofs.com".into(),
        version: "v1alpha1".into(),
        api_version: API_VERSION.into(),
        kind: "DittoServer".into(),
        plural: "dittoservers".into(),
    }
}

/// The PerconaPGCluster resource (its CRD is a test fixture).
pub fn percona_clusters() -> ApiResource {
    ApiResource {
        group: "pgv2.percona.com".into(),
        version: "v2".into(),
        api_version: "pgv2.percona.com/v2".into(),
        kind: "PerconaPGCluster".into(),
        plural: "perconapgclusters".into(),
    }
}

/// Names of the objects a DittoServer `server` owns.
pub mod names {
    /// The ConfigMap.
    pub fn config_map(server: &str) -> String {
        format!("{server}-config")
    }
    /// The Services without metrics, in a fixed order.
    pub fn services(server: &str) -> [String; 3] {
        [format!("{server}-headless"), format!("{server}-file"), format!("{server}-api")]
    }
    /// The metrics Service.
    pub fn metrics_service(server: &str) -> String {
        format!("{server}-metrics")
    }
    /// The PerconaPGCluster.
    pub fn percona_cluster(server: &str) -> String {
        format!("{server}-postgres")
    }
}

/// `status.phase` of a DittoServer.
pub fn phase(server: &DynamicObject) -> Option<&str> {
    server.data.pointer("/status/phase").and_then(Value::as_str)
}

/// The condition of `kind` in a DittoServer's status.
pub fn condition<'a>(server: &'a DynamicObject, kind: &str) -> Option<&'a Value> {
    server
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// `(status, reason)` of the condition of `kind`, if present.
pub fn condition_state(server: &DynamicObject, kind: &str) -> Option<(String, String)> {
    let condition = condition(server, kind)?;
    let field = |name: &str| condition.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    Some((field("status"), field("reason")))
}

/// Whether `object` carries a controller ownerReference to the DittoServer `uid`.
pub fn controlled_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| {
        r.uid == uid && r.controller == Some(true) && r.kind == "DittoServer" && r.api_version == API_VERSION
    })
}

/// Whether `object` has any ownerReference to `uid`.
pub fn references(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// One namespace with its own host (`wasm-operator run --namespace <it>`) running the
/// built module.
///
/// Dropping it kills the host, then removes the module's finalizer from whatever
/// DittoServers are left (nothing would remove it any more, and the namespace could
/// not be deleted), then deletes the namespace. `E2E_KEEP_NAMESPACES` keeps
/// everything as it is.
pub struct Scenario {
    operator: Option<Operator>,
    /// An admin client on the test's runtime.
    pub client: Client,
    cluster: &'static Cluster,
    config: Config,
    // Declared last: dropped after `Drop::drop` has cleared the finalizers.
    namespace: TestNamespace,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario").field("namespace", &self.namespace.name()).finish_non_exhaustive()
    }
}

impl Scenario {
    /// A fresh namespace `e2e-<prefix>-...`, without a host yet.
    pub async fn new(prefix: &str) -> Result<Self> {
        let cluster = crate::cluster().await?;
        let namespace = TestNamespace::create(cluster, prefix).await?;
        Ok(Self {
            operator: None,
            client: cluster.client()?,
            cluster,
            config: cluster.config().clone(),
            namespace,
        })
    }

    /// A fresh namespace with a ready host running as the admin.
    pub async fn start(prefix: &str) -> Result<Self> {
        let mut scenario = Self::new(prefix).await?;
        scenario.start_operator(None).await?;
        Ok(scenario)
    }

    /// Starts the host for this namespace, with `kubeconfig` (default: the admin's).
    pub async fn start_operator(&mut self, kubeconfig: Option<&Path>) -> Result<()> {
        if self.operator.is_some() {
            bail!("the host of {} already runs", self.ns());
        }
        self.operator = Some(Operator::start_with(self.cluster, self.ns(), kubeconfig).await?);
        Ok(())
    }

    /// The running host.
    pub fn operator(&self) -> Result<&Operator> {
        self.operator.as_ref().ok_or_else(|| anyhow!("no host runs for {}", self.ns()))
    }

    /// The namespace's name.
    pub fn ns(&self) -> &str {
        self.namespace.name()
    }

    /// The shared cluster.
    pub fn cluster(&self) -> &'static Cluster {
        self.cluster
    }

    /// DittoServers in the namespace.
    pub fn servers(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), self.ns(), &dittoservers())
    }

    /// PerconaPGClusters in the namespace.
    pub fn perconas(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), self.ns(), &percona_clusters())
    }

    /// ConfigMaps in the namespace.
    pub fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// Services in the namespace.
    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// StatefulSets in the namespace.
    pub fn statefulsets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// Pods in the namespace.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// Secrets in the namespace.
    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// Creates DittoServer `name` with `spec` (as a user would, with a create).
    pub async fn create_server(&self, name: &str, spec: Value) -> Result<DynamicObject> {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": "DittoServer",
            "metadata": {"name": name}, "spec": spec,
        }))?;
        self.servers()
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("cannot create DittoServer {name}"))
    }

    /// Merge-patches DittoServer `name`'s spec with `spec`.
    pub async fn patch_spec(&self, name: &str, spec: Value) -> Result<DynamicObject> {
        self.servers()
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
            .await
            .with_context(|| format!("cannot patch DittoServer {name}"))
    }

    /// Sets an annotation on DittoServer `name`: a metadata-only change, which
    /// triggers a reconcile without changing the spec (no new generation).
    pub async fn touch(&self, name: &str, value: &str) -> Result<DynamicObject> {
        let patch = json!({"metadata": {"annotations": {"e2e.dittofs.dittofs.com/touched": value}}});
        self.servers()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .with_context(|| format!("cannot annotate DittoServer {name}"))
    }

    /// Annotates DittoServer `name` with `value` (see [`Scenario::touch`]) and waits
    /// for a successful reconcile after it; returns the resourceVersion the touch
    /// gave the DittoServer. On a converged server this leaves nothing pending: a
    /// reconcile queued before the touch runs before (or as) the one it triggers.
    pub async fn touch_and_reconcile(&self, name: &str, value: &str) -> Result<Option<String>> {
        let op = self.operator()?;
        let before = op.metrics().await?;
        let (adds, successes) = (before.sum("workqueue_adds_total", &[]), before.reconciles("success"));
        let written = self.touch(name, value).await?.resource_version();
        // The touch's own reconcile, not one that was running already: a key queued
        // after the touch, the queue drained since, no worker busy, one more success.
        wait_until(format!("a reconcile of {name} after touching it"), DEFAULT_TIMEOUT, || async move {
            let now = op.metrics().await?;
            let done = now.sum("workqueue_adds_total", &[]) > adds
                && now.sum("workqueue_depth", &[]) == 0.0
                && now.sum("controller_runtime_active_workers", &[]) == 0.0
                && now.reconciles("success") > successes;
            Ok(done.then_some(()))
        })
        .await
        .with_context(|| self.diagnosis(name))?;
        Ok(written)
    }

    /// Creates (or replaces the data of) Secret `name` with `data` as string data.
    pub async fn put_secret(&self, name: &str, data: &[(&str, &str)]) -> Result<Secret> {
        let data: serde_json::Map<String, Value> =
            data.iter().map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned()))).collect();
        let secret =
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data});
        let patched = self
            .secrets()
            .patch(name, &PatchParams::apply(crate::FIELD_MANAGER).force(), &Patch::Apply(&secret))
            .await
            .with_context(|| format!("cannot apply Secret {name}"))?;
        Ok(patched)
    }

    /// DittoServer `name`, if it exists.
    pub async fn server(&self, name: &str) -> Result<Option<DynamicObject>> {
        Ok(self.servers().get_opt(name).await?)
    }

    /// Waits until DittoServer `name` exists and satisfies `check`; returns it.
    pub async fn wait_server(
        &self,
        what: &str,
        name: &str,
        check: impl Fn(&DynamicObject) -> bool,
    ) -> Result<DynamicObject> {
        let servers = self.servers();
        let check = &check;
        let servers = &servers;
        wait_until(format!("DittoServer {name}: {what}"), DEFAULT_TIMEOUT, || async move {
            Ok(servers.get_opt(name).await?.filter(|s| check(s)))
        })
        .await
        .with_context(|| self.diagnosis(name))
    }

    /// Waits until DittoServer `name` is in `phase`.
    pub async fn wait_phase(&self, name: &str, wanted: &str) -> Result<DynamicObject> {
        self.wait_server(&format!("phase {wanted}"), name, |s| phase(s) == Some(wanted)).await
    }

    /// Waits until DittoServer `name` no longer exists.
    pub async fn wait_server_gone(&self, name: &str, timeout: Duration) -> Result<()> {
        let servers = self.servers();
        let servers = &servers;
        wait_until(format!("DittoServer {name} to be gone"), timeout, || async move {
            Ok(servers.get_opt(name).await?.is_none().then_some(()))
        })
        .await
        .with_context(|| self.diagnosis(name))
    }

    /// Waits until the real StatefulSet controller and kwok (the nodes' kubelet)
    /// have rolled out StatefulSet `name`'s current spec: every desired replica
    /// updated and ready ([`crate::workload::rollout_complete`]).
    pub async fn wait_statefulset_ready(&self, name: &str) -> Result<StatefulSet> {
        crate::workload::wait_rollout(&self.statefulsets(), name).await.with_context(|| self.diagnosis(name))
    }

    /// Plays the Percona operator: sets `status.state` of the PerconaPGCluster of
    /// DittoServer `server`.
    pub async fn set_percona_state(&self, server: &str, state: &str) -> Result<()> {
        let name = names::percona_cluster(server);
        self.perconas()
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"state": state}})))
            .await
            .with_context(|| format!("cannot write the status of PerconaPGCluster {name}"))?;
        Ok(())
    }

    /// Creates DittoServer `name`, waits for its StatefulSet's pods to be ready and
    /// for phase Running.
    pub async fn create_running_server(&self, name: &str, spec: Value) -> Result<DynamicObject> {
        self.create_server(name, spec).await?;
        self.wait_statefulset(name).await?;
        self.wait_statefulset_ready(name).await?;
        self.wait_phase(name, "Running").await
    }

    /// Waits until StatefulSet `name` exists; returns it.
    pub async fn wait_statefulset(&self, name: &str) -> Result<StatefulSet> {
        let api = self.statefulsets();
        let api = &api;
        wait_until(
            format!("StatefulSet {name}"),
            DEFAULT_TIMEOUT,
            || async move { Ok(api.get_opt(name).await?) },
        )
        .await
        .with_context(|| self.diagnosis(name))
    }

    /// Events (events.k8s.io) regarding `name` with `reason`.
    pub async fn events(&self, name: &str, reason: &str) -> Result<Vec<Event>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), self.ns());
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .collect())
    }

    /// Waits for an event regarding `name` with `reason`; returns the first.
    pub async fn wait_event(&self, name: &str, reason: &str) -> Result<Event> {
        wait_until(format!("an event {reason} regarding {name}"), DEFAULT_TIMEOUT, || async move {
            Ok(self.events(name, reason).await?.into_iter().next())
        })
        .await
        .with_context(|| self.diagnosis(name))
    }

    /// A hint for a failed wait: where the host's log is.
    pub fn diagnosis(&self, name: &str) -> String {
        match &self.operator {
            Some(op) => format!(
                "DittoServer {name} in {}; the host's log: {}; its last lines:\n{}",
                self.ns(),
                op.log_path().display(),
                op.log_tail(15)
            ),
            None => format!("DittoServer {name} in {} (no host running)", self.ns()),
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // Killed first, so that nothing reconciles while the namespace goes.
        drop(self.operator.take());
        if std::env::var_os(KEEP_ENV).is_some() {
            return;
        }
        let namespace = self.ns().to_owned();
        let config = self.config.clone();
        // As in TestNamespace: Drop cannot await, so a thread with its own runtime.
        let cleared = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let servers: Api<DynamicObject> =
                    Api::namespaced_with(Client::try_from(config)?, &namespace, &dittoservers());
                for server in servers.list(&ListParams::default()).await?.items {
                    if server.finalizers().is_empty() {
                        continue;
                    }
                    let clear = json!({"metadata": {"finalizers": null}});
                    match servers
                        .patch(&server.name_any(), &PatchParams::default(), &Patch::Merge(clear))
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            })
        })
        .join();
        match cleared {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot clear the finalizers in {}: {e:#}", self.ns()),
            Err(_) => eprintln!("clearing the finalizers in {} panicked", self.ns()),
        }
    }
}
