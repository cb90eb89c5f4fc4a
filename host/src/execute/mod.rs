//! The executor: turns one confined action into API requests (docs/abi.md, *The outcome*).
//!
//! Guarantees:
//! - `apply` is a forced server-side apply with the manifest's field manager, into the
//!   primary's namespace;
//! - finalizer changes and `orphan` are JSON patches guarded by a `test` of the list
//!   they change (and of the object's uid), never updates carrying a cached
//!   resourceVersion: an unrelated write (e.g. a status update) cannot make them fail,
//!   and a concurrent change of the same list fails the test and comes back as
//!   [`ActionError::Conflict`] for the controller to re-read and reconcile again;
//! - `delete` and `orphan` re-read the object and re-verify that it is associated
//!   with the primary before writing (the cache may lag), and the delete carries the
//!   object's uid as a precondition, so a re-created namesake is never deleted;
//! - [`Executor::check_apply_target`] reads the target of an `apply` the snapshot did
//!   not show as the primary's, so that a forced apply never takes over a foreign
//!   object of the same name (the controller calls it before a batch writes
//!   anything). What it cannot exclude: a foreign namesake created between that read
//!   and the apply;
//! - an action that would change nothing (a finalizer already there, no reference to
//!   remove, an unchanged status, an object already gone) issues no request;
//! - every mutating request is counted in `wasm_operator_writes_total`.

use crate::cluster::index::{Owner, is_associated};
use crate::cluster::{KindKey, KindLookup, KindRegistry, PrimaryTarget};
use crate::observe::Metrics;
use crate::policy::Rejection;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::discovery::ApiResource;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::{Client, Resource as _};
use reconcile_sdk::{Action, EventType, Manifest, PropagationPolicy};
use serde_json::{Value, json};
use std::sync::Arc;

/// The kind and name an `apply` targets (empty strings where the object lacks them;
/// confinement has rejected such objects before they get here).
pub fn apply_target(object: &Value) -> (KindKey, &str) {
    let str_field = |f: &str| object.get(f).and_then(Value::as_str).unwrap_or_default();
    let kind = KindKey::new(str_field("apiVersion"), str_field("kind"));
    let name = object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default();
    (kind, name)
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The action names an optional kind whose CRD is not installed.
    #[error("{op} of {kind} {name:?}: the kind is not served by the cluster (its CRD is not installed)")]
    KindAbsent {
        /// The action.
        op: &'static str,
        /// The kind.
        kind: KindKey,
        /// The object's name.
        name: String,
    },
    /// The host could not build the JSON patch for the action (a host bug).
    #[error("{op}: cannot build the JSON patch")]
    BuildPatch {
        /// The action.
        op: &'static str,
        /// serde's reason.
        #[source]
        source: serde_json::Error,
    },
    /// A fresh read showed the action is outside the module's rights after all.
    #[error(transparent)]
    Rejected(Box<Rejection>),
    /// The guarded state changed underneath: re-read and reconcile again.
    #[error("{op} conflicted with a concurrent change: {message}")]
    Conflict {
        /// The action.
        op: &'static str,
        /// What the API server said.
        message: String,
    },
    /// The API server refused or failed the request.
    #[error("{op} of {target} failed")]
    Api {
        /// The action.
        op: &'static str,
        /// What it was about, e.g. `ConfigMap "x"`.
        target: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Runs actions against the API server.
#[derive(Clone)]
pub struct Executor {
    client: Client,
    kinds: Arc<KindRegistry>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

/// The Kubernetes name of an error's kind, for mapping statuses.
fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

impl Executor {
    /// An executor whose events report as `manifest.fieldManager` from `instance`.
    pub fn new(
        client: Client,
        kinds: Arc<KindRegistry>,
        manifest: &Manifest,
        instance: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter { controller: manifest.field_manager.clone(), instance };
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, kinds, recorder, metrics }
    }

    fn primary_api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, self.kinds.primary())
    }

    fn resource(&self, op: &'static str, kind: &KindKey, name: &str) -> Result<ApiResource, ActionError> {
        match self.kinds.lookup(kind) {
            KindLookup::Served(_, resource) => Ok(resource),
            KindLookup::Absent(_) => {
                Err(ActionError::KindAbsent { op, kind: kind.clone(), name: name.to_owned() })
            }
            // Confinement has already refused undeclared kinds; this is a second line.
            KindLookup::Undeclared => Err(ActionError::Rejected(Box::new(Rejection::KindNotRelated {
                op,
                kind: kind.clone(),
                name: name.to_owned(),
            }))),
        }
    }

    /// Runs one action that confinement allowed. Returns the primary as the API server
    /// answered when the action wrote it (finalizers, status), so that the next
    /// actions of the batch are guarded against what is there now, not against the
    /// cache.
    pub async fn execute(
        &self,
        action: &Action,
        manifest: &Manifest,
        primary: &PrimaryTarget,
    ) -> Result<Option<DynamicObject>, ActionError> {
        match action {
            Action::Apply { object } => self.apply(object, manifest, primary).await.map(|()| None),
            Action::AddFinalizer { finalizer } => self.finalizer(action.op(), finalizer, true, primary).await,
            Action::RemoveFinalizer { finalizer } => {
                self.finalizer(action.op(), finalizer, false, primary).await
            }
            Action::Orphan { api_version, kind, name } => {
                self.orphan(&KindKey::new(api_version, kind), name, manifest, primary).await.map(|()| None)
            }
            Action::Delete { api_version, kind, name, propagation_policy } => self
                .delete(&KindKey::new(api_version, kind), name, *propagation_policy, manifest, primary)
                .await
                .map(|()| None),
            Action::PatchStatus { status } => self.patch_status(status, manifest, primary).await,
            Action::Event { event_type, reason, message } => {
                let event_type = match event_type {
                    EventType::Normal => KubeEventType::Normal,
                    EventType::Warning => KubeEventType::Warning,
                };
                self.event(event_type, reason, message, "Reconcile", manifest, primary).await.map(|()| None)
            }
        }
    }

    /// Checks that the target of an `apply` either does not exist or is associated
    /// with the primary: a forced server-side apply would otherwise take over a
    /// foreign object that shares its name. Issues one read.
    pub async fn check_apply_target(
        &self,
        kind: &KindKey,
        name: &str,
        manifest: &Manifest,
        primary: &PrimaryTarget,
    ) -> Result<(), ActionError> {
        self.fresh_associated("apply", kind, name, manifest, primary).await.map(|_| ())
    }

    async fn apply(
        &self,
        object: &Value,
        manifest: &Manifest,
        primary: &PrimaryTarget,
    ) -> Result<(), ActionError> {
        let op = "apply";
        let (kind, name) = apply_target(object);
        let resource = self.resource(op, &kind, name)?;
        let mut object = object.clone();
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert("namespace".into(), Value::String(primary.key.namespace.clone()));
        }
        let params = PatchParams::apply(&manifest.field_manager).force();
        let api_error = |source| ActionError::Api { op, target: format!("{} {name:?}", kind.kind), source };
        // The answer (the whole object, managed fields and all) is read as text and
        // not parsed: nothing uses it, and the watch brings the object anyway.
        let url = DynamicObject::url_path(&resource, Some(&primary.key.namespace));
        let mut request = kube::core::Request::new(url)
            .patch(name, &params, &Patch::Apply(&object))
            .map_err(|e| api_error(kube::Error::BuildRequest(e)))?;
        request.extensions_mut().insert("patch");
        self.metrics.write(op);
        self.client.request_text(request).await.map_err(api_error)?;
        Ok(())
    }

    async fn finalizer(
        &self,
        op: &'static str,
        finalizer: &str,
        add: bool,
        primary: &PrimaryTarget,
    ) -> Result<Option<DynamicObject>, ActionError> {
        let current = primary.object.metadata.finalizers.clone();
        let list = current.clone().unwrap_or_default();
        let present = list.iter().any(|f| f == finalizer);
        if present == add {
            return Ok(None);
        }
        let new: Vec<String> = if add {
            list.iter().cloned().chain([finalizer.to_owned()]).collect()
        } else {
            list.iter().filter(|f| *f != finalizer).cloned().collect()
        };
        // A `test` against `null` passes when the list is absent (the API server's
        // JSON patch treats a missing member as null), so the guard also covers the
        // first finalizer.
        let patch = json!([
            {"op": "test", "path": "/metadata/uid", "value": primary.uid},
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers", "value": new},
        ]);
        self.guarded_patch(
            op,
            &self.primary_api(&primary.key.namespace),
            &primary.key.name,
            patch,
            "the primary",
        )
        .await
        .map(Some)
    }

    async fn guarded_patch(
        &self,
        op: &'static str,
        api: &Api<DynamicObject>,
        name: &str,
        patch: Value,
        target: &str,
    ) -> Result<DynamicObject, ActionError> {
        // Built from values the host made, so this fails only on a host bug: a
        // failure, never a conflict (which would mean "re-read and decide again").
        let patch: json_patch::Patch =
            serde_json::from_value(patch).map_err(|source| ActionError::BuildPatch { op, source })?;
        self.metrics.write(op);
        match api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
            Ok(object) => Ok(object),
            // 422: a `test` failed (the list changed, or the object was re-created
            // under another uid); 409: a conflicting write; 404: the object went
            // away since the cache saw it. Each means "decide again on a fresh read",
            // which for a deleted primary ends the reconcile as gone, not failed.
            Err(err) if matches!(status_code(&err), Some(404 | 409 | 422)) => {
                Err(ActionError::Conflict { op, message: err.to_string() })
            }
            Err(source) => Err(ActionError::Api { op, target: target.to_owned(), source }),
        }
    }

    /// Reads `kind`/`name` fresh and checks it is still associated with the primary.
    /// Reads only the metadata: association is decided by labels, owner references
    /// and managed fields, and a whole object (a StatefulSet's pod template) would be
    /// parsed for nothing.
    async fn fresh_associated(
        &self,
        op: &'static str,
        kind: &KindKey,
        name: &str,
        manifest: &Manifest,
        primary: &PrimaryTarget,
    ) -> Result<Option<(Api<DynamicObject>, DynamicObject)>, ActionError> {
        let resource = self.resource(op, kind, name)?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &primary.key.namespace, &resource);
        let target = || format!("{} {name:?}", kind.kind);
        let Some(found) = api.get_metadata_opt(name).await.map_err(|source| ActionError::Api {
            op,
            target: target(),
            source,
        })?
        else {
            return Ok(None);
        };
        let obj = DynamicObject { types: found.types, metadata: found.metadata, data: Value::Null };
        let owner = Owner {
            label: &manifest.owner_label,
            field_manager: &manifest.field_manager,
            primary: &primary.key,
            uid: &primary.uid,
        };
        if !is_associated(&obj, &owner) {
            return Err(ActionError::Rejected(Box::new(Rejection::NotAssociated {
                op,
                kind: kind.clone(),
                name: name.to_owned(),
            })));
        }
        Ok(Some((api, obj)))
    }

    async fn orphan(
        &self,
        kind: &KindKey,
        name: &str,
        manifest: &Manifest,
        primary: &PrimaryTarget,
    ) -> Result<(), ActionError> {
        let op = "orphan";
        let Some((api, obj)) = self.fresh_associated(op, kind, name, manifest, primary).await? else {
            return Ok(());
        };
        let refs = obj.metadata.owner_references.clone().unwrap_or_default();
        let kept: Vec<_> = refs.iter().filter(|r| r.uid != primary.uid).cloned().collect();
        if kept.len() == refs.len() {
            return Ok(());
        }
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        let patch = json!([
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "test", "path": "/metadata/ownerReferences", "value": refs},
            {"op": "add", "path": "/metadata/ownerReferences", "value": kept},
        ]);
        self.guarded_patch(op, &api, name, patch, &format!("{} {name:?}", kind.kind)).await.map(|_| ())
    }

    async fn delete(
        &self,
        kind: &KindKey,
        name: &str,
        policy: Option<PropagationPolicy>,
        manifest: &Manifest,
        primary: &PrimaryTarget,
    ) -> Result<(), ActionError> {
        let op = "delete";
        let Some((api, obj)) = self.fresh_associated(op, kind, name, manifest, primary).await? else {
            return Ok(());
        };
        if obj.metadata.deletion_timestamp.is_some() {
            // Already being deleted; deleting again would change nothing.
            return Ok(());
        }
        let params = DeleteParams {
            propagation_policy: policy.map(|p| match p {
                PropagationPolicy::Background => kube::api::PropagationPolicy::Background,
                PropagationPolicy::Foreground => kube::api::PropagationPolicy::Foreground,
                PropagationPolicy::Orphan => kube::api::PropagationPolicy::Orphan,
            }),
            preconditions: Some(Preconditions { uid: obj.metadata.uid.clone(), resource_version: None }),
            ..DeleteParams::default()
        };
        self.metrics.write(op);
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(err) if status_code(&err) == Some(404) => Ok(()),
            Err(err) if status_code(&err) == Some(409) => {
                Err(ActionError::Conflict { op, message: err.to_string() })
            }
            Err(source) => Err(ActionError::Api { op, target: format!("{} {name:?}", kind.kind), source }),
        }
    }

    /// Merge-patches the status under the module's field manager: the watch knows the
    /// echo of this write by that manager's entry, and does not reconcile it again.
    async fn patch_status(
        &self,
        status: &Value,
        manifest: &Manifest,
        primary: &PrimaryTarget,
    ) -> Result<Option<DynamicObject>, ActionError> {
        let op = "patchStatus";
        let current = primary.object.data.get("status").cloned().unwrap_or(Value::Null);
        if &current == status {
            return Ok(None);
        }
        let patch = json!({ "status": replacing_merge_patch(&current, status) });
        self.metrics.write(op);
        let params =
            PatchParams { field_manager: Some(manifest.field_manager.clone()), ..PatchParams::default() };
        match self
            .primary_api(&primary.key.namespace)
            .patch_status(&primary.key.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(object) => Ok(Some(object)),
            // The primary went since the cache saw it (a reconcile queued again by a
            // relist, say): decide again on a fresh read, which ends the reconcile as
            // gone, not as a failure to retry with backoff.
            Err(err) if status_code(&err) == Some(404) => {
                Err(ActionError::Conflict { op, message: err.to_string() })
            }
            Err(source) => Err(ActionError::Api { op, target: "the primary's status".into(), source }),
        }
    }

    /// Publishes an event regarding the primary (events.k8s.io/v1).
    pub async fn event(
        &self,
        event_type: KubeEventType,
        reason: &str,
        message: &str,
        action: &str,
        manifest: &Manifest,
        primary: &PrimaryTarget,
    ) -> Result<(), ActionError> {
        let op = "event";
        let reference = ObjectReference {
            api_version: Some(manifest.primary.api_version.clone()),
            kind: Some(manifest.primary.kind.clone()),
            name: Some(primary.key.name.clone()),
            namespace: Some(primary.key.namespace.clone()),
            uid: Some(primary.uid.clone()),
            resource_version: primary.object.metadata.resource_version.clone(),
            field_path: None,
        };
        let event = Event {
            type_: event_type,
            reason: reason.to_owned(),
            note: Some(event_note(message).to_owned()),
            action: action.to_owned(),
            secondary: None,
        };
        self.metrics.write(op);
        self.recorder.publish(&event, &reference).await.map_err(|source| ActionError::Api {
            op,
            target: format!("event {reason}"),
            source,
        })
    }
}

/// The most bytes of an event's note: the events API refuses a longer one.
pub const MAX_NOTE_BYTES: usize = 1024;

/// `message` cut to [`MAX_NOTE_BYTES`] bytes, on a character boundary.
pub fn event_note(message: &str) -> &str {
    if message.len() <= MAX_NOTE_BYTES {
        return message;
    }
    let mut end = MAX_NOTE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// A JSON merge patch that turns `current` into exactly `desired`: keys of `current`
/// missing from `desired` are set to `null` (deleted), recursively, so "merge patch
/// of the whole status" replaces it rather than merging into it.
pub fn replacing_merge_patch(current: &Value, desired: &Value) -> Value {
    match (current, desired) {
        (Value::Object(current), Value::Object(desired)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in desired {
                let entry = match current.get(key) {
                    Some(old) => replacing_merge_patch(old, value),
                    None => value.clone(),
                };
                patch.insert(key.clone(), entry);
            }
            for key in current.keys() {
                if !desired.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        _ => desired.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_by_bytes_on_a_character_boundary() {
        assert_eq!(event_note("short"), "short");
        let ascii = "a".repeat(2000);
        assert_eq!(event_note(&ascii).len(), MAX_NOTE_BYTES);
        // 'é' is two bytes and '€' three: 1024 is inside a character for both.
        for text in ["é".repeat(1000), format!("a{}", "€".repeat(700))] {
            let note = event_note(&text);
            assert!(note.len() <= MAX_NOTE_BYTES && note.len() > MAX_NOTE_BYTES - 4, "{}", note.len());
            assert!(text.starts_with(note));
        }
    }

    #[test]
    fn merge_patch_replaces_the_whole_status() {
        let current = json!({"phase": "Pending", "old": 1, "nested": {"a": 1, "b": 2}, "list": [1, 2]});
        let desired = json!({"phase": "Running", "nested": {"a": 1}, "list": [3]});
        let patch = replacing_merge_patch(&current, &desired);
        assert_eq!(
            patch,
            json!({"phase": "Running", "old": null, "nested": {"a": 1, "b": null}, "list": [3]})
        );
        assert_eq!(replacing_merge_patch(&Value::Null, &desired), desired);
    }
}
