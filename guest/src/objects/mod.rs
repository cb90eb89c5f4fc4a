//! The objects a DittoServer owns, built from its spec, and the rule that decides
//! whether one needs to be applied.
//!
//! Builders are pure functions of the spec and the owner. [`apply_if_changed`]
//! hashes each desired object and compares the hash with the annotation the last
//! apply left on the observed object: the API server adds defaults and bookkeeping
//! to every object, so comparing whole objects would never converge.

pub mod configmap;
pub mod percona;
pub mod services;
pub mod statefulset;

use reconcile_sdk::Action;
use serde_json::{Map, Value, json};

use crate::error::ReconcileError;
use crate::hash::ObjectHasher;
use crate::meta::{Primary, annotation};
use crate::names::{API_VERSION, APP_LABEL_VALUE, APPLIED_HASH_ANNOTATION, KIND, OWNER_LABEL};

/// The DittoServer that owns the objects being built.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its namespace, which is every owned object's.
    pub namespace: &'a str,
    /// Its uid, the target of owner references.
    pub uid: &'a str,
}

impl<'a> From<&Primary<'a>> for Owner<'a> {
    fn from(primary: &Primary<'a>) -> Self {
        Owner { name: primary.name, namespace: primary.namespace, uid: primary.uid }
    }
}

impl Owner<'_> {
    /// The labels that select the server's pods.
    pub fn pod_selector(&self) -> Value {
        json!({"app": APP_LABEL_VALUE, "instance": self.name})
    }

    /// The labels of every owned object: the owner label and the pod labels.
    pub fn labels(&self) -> Value {
        json!({"app": APP_LABEL_VALUE, "instance": self.name, OWNER_LABEL: self.name})
    }

    /// A controller reference to the DittoServer: the garbage collector deletes the
    /// object after its owner.
    pub fn controller_reference(&self) -> Value {
        json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        })
    }

    /// Metadata of an owned object named `name`: namespace, labels, controller reference.
    pub fn metadata(&self, name: String) -> Value {
        #[allow(unused_mut)]
        let mut metadata = json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(),
            "ownerReferences": [self.controller_reference()],
        });
        // A build that differs observably from the default one, for the host's
        // hot-swap tests and benchmark (`make wasm-v2`); off in every real build.
        #[cfg(feature = "v2-annotation")]
        set(&mut metadata, "annotations", Some(json!({"dittofs.dittofs.com/module-generation": "v2"})));
        metadata
    }
}

/// Inserts `key: value` into `object` when both are what they should be (an object,
/// and a value that is present).
pub fn set(object: &mut Value, key: &str, value: Option<Value>) {
    if let (Some(object), Some(value)) = (object.as_object_mut(), value) {
        object.insert(key.into(), value);
    }
}

/// Queues an apply of `desired` unless `observed` already carries its hash; returns
/// whether it did.
///
/// The hash is taken before the annotation is added, over the object exactly as it is
/// sent, so any change to what the module would send (spec, module version) re-applies.
pub fn apply_if_changed(
    mut desired: Value,
    observed: Option<&Value>,
    hasher: &mut ObjectHasher,
    actions: &mut Vec<Action>,
) -> Result<bool, ReconcileError> {
    let hash = hasher.hash(&desired)?;
    if observed.and_then(|object| annotation(object, APPLIED_HASH_ANNOTATION)) == Some(hash.as_str()) {
        return Ok(false);
    }
    if let Some(metadata) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(APPLIED_HASH_ANNOTATION.into(), hash.into());
        }
    }
    actions.push(Action::Apply { object: desired });
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner<'static> {
        Owner { name: "nas", namespace: "files", uid: "u-1" }
    }

    #[test]
    fn owned_metadata() {
        assert_eq!(
            owner().metadata("nas-x".into()),
            serde_json::json!({
                "name": "nas-x", "namespace": "files",
                "labels": {"app": "dittofs-server", "instance": "nas", "dittofs.dittofs.com/server": "nas"},
                "ownerReferences": [{"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                    "name": "nas", "uid": "u-1", "controller": true, "blockOwnerDeletion": true}]
            })
        );
    }

    #[test]
    fn applies_only_what_changed() {
        let mut hasher = ObjectHasher::new();
        let desired = || {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": owner().metadata("nas-config".into()), "data": {"k": "v"}})
        };
        let mut actions = Vec::new();
        assert!(apply_if_changed(desired(), None, &mut hasher, &mut actions).expect("plans"));
        let Some(Action::Apply { object }) = actions.pop() else { panic!("no apply") };
        let hash =
            object["metadata"]["annotations"][APPLIED_HASH_ANNOTATION].as_str().expect("hash").to_string();

        // Observed as the API server returns it: extra fields do not matter, the hash does.
        let mut observed = object.clone();
        observed["metadata"]["uid"] = "cm-uid".into();
        observed["metadata"]["resourceVersion"] = "7".into();
        assert!(!apply_if_changed(desired(), Some(&observed), &mut hasher, &mut actions).expect("plans"));
        assert!(actions.is_empty());

        observed["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = "stale".into();
        assert!(apply_if_changed(desired(), Some(&observed), &mut hasher, &mut actions).expect("plans"));
        let Some(Action::Apply { object }) = actions.pop() else { panic!("no apply") };
        assert_eq!(object["metadata"]["annotations"][APPLIED_HASH_ANNOTATION], hash.as_str());
    }
}
