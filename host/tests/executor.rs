//! The executor against the real control plane (no mock API server): server-side
//! apply, guarded finalizer patches under concurrent writes, orphan, delete with
//! re-verification, status replacement and events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use anyhow::Result;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use operator_support::*;
use reconcile_sdk::{Action, EventType, Manifest, PropagationPolicy};
use serde_json::json;
use std::sync::Arc;
use wasm_operator::{ActionError, Executor, KindRegistry, Metrics, PrimaryTarget, Rejection};

const FINALIZER: &str = configmap_mirror::FINALIZER;
const LABEL: &str = configmap_mirror::OWNER_LABEL;

struct Setup {
    client: kube::Client,
    ns: TestNamespace,
    manifest: Manifest,
    executor: Executor,
    metrics: Arc<Metrics>,
}

async fn setup(prefix: &str) -> Result<Setup> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, prefix).await?;
    let manifest = configmap_mirror::manifest();
    let kinds = Arc::new(KindRegistry::discover(&client, "the test cluster", &manifest).await?);
    let metrics = Arc::new(Metrics::new());
    let executor =
        Executor::new(client.clone(), kinds, &manifest, Some("executor-test".into()), metrics.clone());
    Ok(Setup { client, ns, manifest, executor, metrics })
}

impl Setup {
    fn ns(&self) -> &str {
        self.ns.name()
    }

    async fn mirror(&self, name: &str) -> Result<PrimaryTarget> {
        create_mirror(&self.client, self.ns(), name, json!({"data": {"a": "1"}})).await?;
        self.fresh(name).await
    }

    async fn fresh(&self, name: &str) -> Result<PrimaryTarget> {
        let object = mirror_api(&self.client, self.ns()).get(name).await?;
        some(PrimaryTarget::new(Arc::new(object)), "the Mirror's uid")
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    async fn run(&self, action: Action, primary: &PrimaryTarget) -> Result<(), ActionError> {
        self.executor.execute(&action, &self.manifest, primary).await.map(|_| ())
    }

    /// Removes every finalizer so the namespace can go away.
    async fn clear_finalizers(&self, name: &str) -> Result<()> {
        let patch = json!({"metadata": {"finalizers": null}});
        mirror_api(&self.client, self.ns())
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }
}

fn owned_config_map(name: &str, primary: &PrimaryTarget, data: serde_json::Value) -> Action {
    Action::Apply {
        object: json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {LABEL: primary.key.name},
                "ownerReferences": [{"apiVersion": "mirror.example.com/v1", "kind": "Mirror",
                    "name": primary.key.name, "uid": primary.uid, "controller": true}]},
            "data": data
        }),
    }
}

#[tokio::test]
async fn apply_is_a_forced_server_side_apply_with_the_field_manager() -> Result<()> {
    let s = setup("exec-apply").await?;
    let primary = s.mirror("m").await?;
    s.run(owned_config_map("m-mirror", &primary, json!({"a": "1"})), &primary).await?;
    let cm = s.config_maps().get("m-mirror").await?;
    assert_eq!(cm.data.clone().unwrap_or_default().get("a").map(String::as_str), Some("1"));
    let managers: Vec<_> = cm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone().unwrap_or_default(), m.operation.clone().unwrap_or_default()))
        .collect();
    assert!(managers.contains(&("configmap-mirror".into(), "Apply".into())), "{managers:?}");

    // Someone else takes ownership of the field; the forced apply takes it back.
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m-mirror"}, "data": {"a": "theirs"}});
    s.config_maps()
        .patch("m-mirror", &PatchParams::apply("someone-else").force(), &Patch::Apply(&other))
        .await?;
    s.run(owned_config_map("m-mirror", &primary, json!({"a": "2"})), &primary).await?;
    let cm = s.config_maps().get("m-mirror").await?;
    assert_eq!(cm.data.unwrap_or_default().get("a").map(String::as_str), Some("2"));
    assert_eq!(s.metrics.writes_total(), 2);
    Ok(())
}

#[tokio::test]
async fn finalizer_patches_survive_concurrent_status_writes_and_detect_list_changes() -> Result<()> {
    let s = setup("exec-finalizer").await?;
    let stale = s.mirror("m").await?;
    assert!(stale.object.metadata.finalizers.is_none(), "a new Mirror has no finalizers");
    let api = mirror_api(&s.client, s.ns());

    // A status write bumps the resourceVersion: a guard on it would 409 forever.
    api.patch_status("m", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Busy"}})))
        .await?;
    s.run(Action::AddFinalizer { finalizer: FINALIZER.into() }, &stale).await?;
    let now = api.get("m").await?;
    assert_eq!(now.metadata.finalizers, Some(vec![FINALIZER.to_owned()]));
    // Adding again changes nothing and writes nothing.
    let writes = s.metrics.writes_total();
    s.run(Action::AddFinalizer { finalizer: FINALIZER.into() }, &s.fresh("m").await?).await?;
    assert_eq!(s.metrics.writes_total(), writes);

    // Another controller adds its own finalizer; our copy still shows the old list.
    let with_ours = s.fresh("m").await?;
    let foreign = json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/other"}]);
    api.patch("m", &PatchParams::default(), &Patch::<()>::Json(serde_json::from_value(foreign)?)).await?;
    api.patch_status("m", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Busier"}})))
        .await?;
    let err = s.run(Action::RemoveFinalizer { finalizer: FINALIZER.into() }, &with_ours).await;
    assert!(matches!(err, Err(ActionError::Conflict { .. })), "{err:?}");
    assert_eq!(api.get("m").await?.metadata.finalizers.unwrap_or_default().len(), 2, "nothing was removed");

    // Re-read, try again: only ours goes, and the answer is the primary as written, so
    // a later action of the same batch is guarded against the new list.
    let written = s
        .executor
        .execute(&Action::RemoveFinalizer { finalizer: FINALIZER.into() }, &s.manifest, &s.fresh("m").await?)
        .await?;
    let written = some(written.and_then(|o| PrimaryTarget::new(Arc::new(o))), "the written primary")?;
    assert_eq!(written.object.metadata.finalizers, Some(vec!["example.com/other".to_owned()]));
    s.run(Action::AddFinalizer { finalizer: FINALIZER.into() }, &written).await?;
    s.run(Action::RemoveFinalizer { finalizer: FINALIZER.into() }, &s.fresh("m").await?).await?;
    assert_eq!(api.get("m").await?.metadata.finalizers, Some(vec!["example.com/other".to_owned()]));
    s.clear_finalizers("m").await
}

#[tokio::test]
async fn orphan_removes_only_the_references_to_the_primary() -> Result<()> {
    let s = setup("exec-orphan").await?;
    let primary = s.mirror("m").await?;
    let other = s.mirror("other").await?;
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kept", "labels": {LABEL: "m"}, "ownerReferences": [
            {"apiVersion": "mirror.example.com/v1", "kind": "Mirror", "name": "m", "uid": primary.uid, "controller": true},
            {"apiVersion": "mirror.example.com/v1", "kind": "Mirror", "name": "other", "uid": other.uid}
        ]},
    });
    // Made by the module (its field manager), so it stays the module's once orphaned.
    let made_by_module =
        PostParams { field_manager: Some(s.manifest.field_manager.clone()), ..PostParams::default() };
    s.config_maps().create(&made_by_module, &serde_json::from_value(cm)?).await?;
    let orphan = Action::Orphan { api_version: "v1".into(), kind: "ConfigMap".into(), name: "kept".into() };
    s.run(orphan.clone(), &primary).await?;
    let refs = s.config_maps().get("kept").await?.metadata.owner_references.unwrap_or_default();
    let uids: Vec<_> = refs.iter().map(|r| r.uid.as_str()).collect();
    assert_eq!(uids, [other.uid.as_str()]);
    // Orphaning again writes nothing; a missing object is fine.
    let writes = s.metrics.writes_total();
    s.run(orphan, &primary).await?;
    s.run(
        Action::Orphan { api_version: "v1".into(), kind: "ConfigMap".into(), name: "gone".into() },
        &primary,
    )
    .await?;
    assert_eq!(s.metrics.writes_total(), writes);
    Ok(())
}

#[tokio::test]
async fn delete_reverifies_association_on_a_fresh_read() -> Result<()> {
    let s = setup("exec-delete").await?;
    let primary = s.mirror("m").await?;
    s.run(owned_config_map("owned", &primary, json!({})), &primary).await?;
    // Labelled for m, but controlled by someone else (an existing object, or the
    // garbage collector would delete it): not associated.
    let anchor = s
        .config_maps()
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "anchor"}}))?)
        .await?;
    let foreign = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "foreign", "labels": {LABEL: "m"}, "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "anchor", "uid": some(anchor.metadata.uid, "uid")?, "controller": true}
        ]},
    });
    s.config_maps().create(&PostParams::default(), &serde_json::from_value(foreign)?).await?;
    let delete = |name: &str| Action::Delete {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: name.into(),
        propagation_policy: Some(PropagationPolicy::Background),
    };
    let err = s.run(delete("foreign"), &primary).await;
    assert!(
        matches!(&err, Err(ActionError::Rejected(r)) if matches!(**r, Rejection::NotAssociated { .. })),
        "{err:?}"
    );
    assert!(s.config_maps().get_opt("foreign").await?.is_some(), "the foreign object is untouched");

    s.run(delete("owned"), &primary).await?;
    assert!(s.config_maps().get_opt("owned").await?.is_none());
    s.run(delete("owned"), &primary).await?; // already gone: fine
    Ok(())
}

#[tokio::test]
async fn patch_status_replaces_the_whole_status_and_events_regard_the_primary() -> Result<()> {
    let s = setup("exec-status").await?;
    let api = mirror_api(&s.client, s.ns());
    s.mirror("m").await?;
    api.patch_status(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"old": "x", "phase": "A"}})),
    )
    .await?;
    let primary = s.fresh("m").await?;
    s.run(Action::PatchStatus { status: json!({"phase": "B", "keys": 1}) }, &primary).await?;
    let status: DynamicObject = api.get_status("m").await?;
    assert_eq!(status.data["status"], json!({"phase": "B", "keys": 1}));

    let event = Action::Event {
        event_type: EventType::Warning,
        reason: "Tested".into(),
        message: "from the executor".into(),
    };
    s.run(event, &primary).await?;
    let found = eventually("the Tested event", || async {
        let events = events(&s.client, s.ns(), "m", "Tested").await?;
        Ok((!events.is_empty()).then_some(events))
    })
    .await?;
    assert_eq!(found[0], ("Warning".to_owned(), "from the executor".to_owned()));
    Ok(())
}

#[tokio::test]
async fn a_status_write_to_a_primary_deleted_meanwhile_is_a_conflict_not_a_failure() -> Result<()> {
    let s = setup("exec-status-gone").await?;
    let api = mirror_api(&s.client, s.ns());
    // As a cache holds it: read, then deleted by someone else.
    let primary = s.mirror("m").await?;
    api.delete("m", &Default::default()).await?;
    eventually("the Mirror to be gone", || async { Ok(api.get_opt("m").await?.is_none().then_some(())) })
        .await?;
    let err = s
        .run(Action::PatchStatus { status: json!({"phase": "Ready"}) }, &primary)
        .await
        .expect_err("the primary is gone");
    assert!(
        matches!(err, ActionError::Conflict { op: "patchStatus", .. }),
        "a 404 must mean 'decide again' (which ends the reconcile as gone): {err:?}"
    );
    Ok(())
}
