//! The floor: a bare client that writes what the module would, with the same
//! concurrency as the host, and nothing else: no watch, no module call, no snapshot,
//! no read before a write.
//!
//! The objects and statuses are the DittoFS module's own, computed natively by
//! `dittofs_reconciler::reconcile` from each server as the benchmark last wrote it
//! (no related objects: the first-round answer). Each server's requests go in the
//! order the host would issue them: finalizer, the applies, the status.

use std::collections::HashMap;

use anyhow::{Result, bail};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use kube::ResourceExt as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use reconcile_sdk::{ABI_VERSION, Action, Outcome, Snapshot};
use serde_json::{Value, json};

use crate::fleet::Fleet;

/// What the module writes for one server.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The applied objects, in order.
    pub objects: Vec<Value>,
    /// The status, if it changes.
    pub status: Option<Value>,
}

/// The module's answer for `server` with nothing related to it in the cluster.
pub fn desired(server: &DynamicObject) -> Result<Desired> {
    let object = serde_json::to_value(server)?;
    // The module's clock: any RFC 3339 time does; the server's creation is one.
    let now =
        object.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or_default().to_owned();
    let snapshot = Snapshot {
        abi: ABI_VERSION,
        now,
        object,
        related: Vec::new(),
        required: Vec::new(),
        last_failure: None,
    };
    let actions = match dittofs_reconciler::reconcile(snapshot) {
        Outcome::Actions { actions, .. } => actions,
        Outcome::Error(err) => bail!("the module failed on {}: {}", server.name_any(), err.message),
    };
    let mut desired = Desired { objects: Vec::new(), status: None };
    for action in actions {
        match action {
            Action::Apply { object } => desired.objects.push(object),
            Action::PatchStatus { status } => desired.status = Some(status),
            other => bail!("unexpected action for {}: {other:?}", server.name_any()),
        }
    }
    Ok(desired)
}

/// The bare client over one fleet.
pub struct Bare {
    concurrency: usize,
    field_manager: String,
    /// What was last applied for each server.
    applied: HashMap<String, Desired>,
}

impl Bare {
    /// A client writing `concurrency` servers at a time.
    pub fn new(concurrency: usize) -> Self {
        Self {
            concurrency,
            field_manager: dittofs_reconciler::manifest().field_manager,
            applied: HashMap::new(),
        }
    }

    /// Converges every server: finalizer, objects, status.
    pub async fn converge(&mut self, fleet: &Fleet) -> Result<()> {
        let servers: Vec<DynamicObject> = fleet.objects().cloned().collect();
        self.bring(fleet, &servers, true).await
    }

    /// Brings every server to its changed spec (`servers`, as patched): applies only
    /// the objects that differ from what was applied, and the status.
    pub async fn roll(&mut self, fleet: &Fleet, servers: &[DynamicObject]) -> Result<()> {
        self.bring(fleet, servers, false).await
    }

    /// For each server, `concurrency` at a time: the finalizer first if
    /// `add_finalizer`, then what the module would write for it now.
    async fn bring(&mut self, fleet: &Fleet, servers: &[DynamicObject], add_finalizer: bool) -> Result<()> {
        let api = fleet.servers();
        let this = &*self;
        let done: Vec<(String, Desired)> = stream::iter(servers.iter().cloned())
            .map(|server| {
                let api = api.clone();
                async move {
                    let server = if add_finalizer {
                        set_finalizers(&api, &server, &[dittofs_reconciler::names::FINALIZER]).await?
                    } else {
                        server
                    };
                    let previous = this.applied.get(&server.name_any());
                    let desired = desired(&server)?;
                    this.write(fleet, &server, &desired, previous).await?;
                    Ok::<_, anyhow::Error>((server.name_any(), desired))
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        self.applied.extend(done);
        Ok(())
    }

    /// Removes the finalizer of every server being deleted (`servers`).
    pub async fn finalize(&self, fleet: &Fleet, servers: &[DynamicObject]) -> Result<()> {
        let api = fleet.servers();
        stream::iter(servers.iter().cloned())
            .map(|server| {
                let api = api.clone();
                async move { set_finalizers(&api, &server, &[]).await.map(|_| ()) }
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Applies `desired`'s objects (those that differ from `previous`) and its status.
    async fn write(
        &self,
        fleet: &Fleet,
        server: &DynamicObject,
        desired: &Desired,
        previous: Option<&Desired>,
    ) -> Result<()> {
        let params = PatchParams::apply(&self.field_manager).force();
        for object in &desired.objects {
            if previous.is_some_and(|p| p.objects.contains(object)) {
                continue;
            }
            let api = fleet.api(&resource_of(object)?);
            let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            api.patch(name, &params, &Patch::Apply(object)).await?;
        }
        if let Some(status) = &desired.status {
            fleet
                .servers()
                .patch_status(
                    &server.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await?;
        }
        Ok(())
    }
}

/// Sets the server's finalizers to `finalizers` with the host's guarded JSON patch
/// (tests of the uid and of the current list).
async fn set_finalizers(
    api: &Api<DynamicObject>,
    server: &DynamicObject,
    finalizers: &[&str],
) -> Result<DynamicObject> {
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/uid", "value": server.uid()},
        {"op": "test", "path": "/metadata/finalizers", "value": server.metadata.finalizers},
        {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
    ]))?;
    Ok(api.patch(&server.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await?)
}

/// The API of an object the module applies (core and `apps/v1` kinds: plural is the
/// lowercased kind plus `s` for every kind it makes without Percona).
fn resource_of(object: &Value) -> Result<ApiResource> {
    let field = |f: &str| object.get(f).and_then(Value::as_str).unwrap_or_default();
    let (group, version) = field("apiVersion").split_once('/').unwrap_or(("", field("apiVersion")));
    let kind = field("kind");
    if !matches!(kind, "ConfigMap" | "Service" | "StatefulSet") {
        bail!("the bare client does not know the plural of {kind}");
    }
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Ok(ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase())))
}
