//! Driving DittoServers to convergence and deletion while a host reconciles them.
//! The StatefulSet controller and kwok's nodes run the pods; the tests play the one
//! actor the cluster lacks, the Percona operator (a PerconaPGCluster's
//! `status.state`). Used by the deploy and leader-election tests,
//! which care that a host converges and deletes, not about every detail of the
//! lifecycle (that is `tests/tests/lifecycle*`).

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

use crate::dittofs::{dittoservers, percona_clusters};
use crate::objects::apply;
use crate::wait::{DEFAULT_TIMEOUT, wait_until};

/// The finalizer the module puts on every DittoServer.
pub const FINALIZER: &str = "dittofs.dittofs.com/finalizer";

/// How a DittoServer uses Percona.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Percona {
    /// Not at all (SQLite).
    Off,
    /// A PerconaPGCluster kept (orphaned) when the server is deleted.
    Keep,
    /// A PerconaPGCluster deleted with the server.
    DeleteWithServer,
}

/// The DittoServers of one namespace, as the admin sees them.
#[derive(Clone)]
pub struct Servers {
    client: Client,
    namespace: String,
    restricted: bool,
}

/// A pod and container security context that Pod Security `restricted` admits, for
/// DittoServers in a namespace that enforces it (as `deploy/` labels its own).
pub fn restricted_security() -> (Value, Value) {
    let pod = json!({"runAsNonRoot": true, "runAsUser": 65532, "fsGroup": 65532,
                     "seccompProfile": {"type": "RuntimeDefault"}});
    let container = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    (pod, container)
}

impl Servers {
    /// The servers of `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self { client, namespace: namespace.to_owned(), restricted: false }
    }

    /// The same, created with [`restricted_security`]: the namespace enforces Pod
    /// Security `restricted`, and admission refuses the pods of any other spec.
    pub fn restricted(mut self) -> Self {
        self.restricted = true;
        self
    }

    /// The DittoServer API of the namespace.
    pub fn api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &dittoservers())
    }

    /// The PerconaPGCluster API of the namespace.
    pub fn perconas(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &percona_clusters())
    }

    fn statefulsets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates DittoServer `name`.
    pub async fn create(&self, name: &str, percona: Percona) -> Result<DynamicObject> {
        let mut spec = json!({"storage": {"metadataSize": "1Gi"}});
        match percona {
            Percona::Off => {}
            Percona::Keep => spec["percona"] = json!({"enabled": true, "deleteWithServer": false}),
            Percona::DeleteWithServer => spec["percona"] = json!({"enabled": true, "deleteWithServer": true}),
        }
        if self.restricted {
            let (pod, container) = restricted_security();
            spec["podSecurityContext"] = pod;
            spec["securityContext"] = container;
        }
        let object = json!({
            "apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": name}, "spec": spec,
        });
        apply(&self.client, Some(&self.namespace), &object).await
    }

    /// Waits until `name` runs: plays Percona (state `ready`) when the server has a
    /// PerconaPGCluster, waits for its StatefulSet's pods to be ready, and for phase
    /// Running.
    pub async fn wait_running(&self, name: &str, percona: Percona) -> Result<DynamicObject> {
        if percona != Percona::Off {
            let cluster = format!("{name}-postgres");
            let perconas = self.perconas();
            wait_until(format!("PerconaPGCluster {cluster}"), DEFAULT_TIMEOUT, || async {
                Ok(perconas.get_opt(&cluster).await?)
            })
            .await?;
            perconas
                .patch_status(
                    &cluster,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"state": "ready"}})),
                )
                .await
                .with_context(|| format!("cannot mark PerconaPGCluster {cluster} ready"))?;
        }
        let statefulsets = self.statefulsets();
        wait_until(format!("StatefulSet {name}"), DEFAULT_TIMEOUT, || async {
            Ok(statefulsets.get_opt(name).await?)
        })
        .await?;
        crate::workload::wait_rollout(&statefulsets, name).await?;
        self.wait_phase(name, "Running").await
    }

    /// Waits until `name` has `status.phase == phase` (and the finalizer).
    pub async fn wait_phase(&self, name: &str, phase: &str) -> Result<DynamicObject> {
        let api = self.api();
        wait_until(format!("DittoServer {name} to be {phase}"), DEFAULT_TIMEOUT, || async {
            let server = api.get(name).await?;
            let current = server.data.pointer("/status/phase").and_then(Value::as_str);
            let finalized = server.finalizers().iter().any(|f| f == FINALIZER);
            Ok((current == Some(phase) && finalized).then_some(server))
        })
        .await
    }

    /// Deletes `name` (background propagation) and waits until it is gone.
    pub async fn delete_and_wait_gone(&self, name: &str) -> Result<()> {
        let api = self.api();
        api.delete(name, &DeleteParams::background())
            .await
            .with_context(|| format!("cannot delete {name}"))?;
        wait_until(format!("DittoServer {name} to be gone"), DEFAULT_TIMEOUT, || async {
            Ok(api.get_opt(name).await?.is_none().then_some(()))
        })
        .await
    }

    /// The reasons of the events regarding DittoServer `name`.
    pub async fn event_reasons(&self, name: &str) -> Result<Vec<String>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("DittoServer") && r.name.as_deref() == Some(name)
                })
            })
            .filter_map(|e| e.reason)
            .collect())
    }
}
