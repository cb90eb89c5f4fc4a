//! The objects a DittoServer owns, built from its spec, and the rule that decides
//! whether one needs to be applied.
//!
//! Builders are pure functions of the spec and the owner, and return the object as
//! `serde_json::json!` writes it (as [`percona`] always did). [`apply_if_changed`]
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
use crate::hash::object_hash;
use crate::input::Primary;
use crate::meta::Related;
use crate::names::{
    API_VERSION, APP_LABEL_VALUE, APPLIED_HASH_ANNOTATION, CONFIG_FILE_KEY, KIND, OWNER_LABEL,
};

/// With feature `v2-annotation`, an annotation on every owned object: an observably
/// different build for the host's hot-swap tests (`make wasm-v2`); off in real builds.
const V2_ANNOTATION: Option<(&str, &str)> = if cfg!(feature = "v2-annotation") {
    Some(("dittofs.dittofs.com/module-generation", "v2"))
} else {
    None
};

/// The DittoServer is the owner of the objects built from it.
impl Primary {
    /// A controller reference to the DittoServer: the garbage collector deletes the
    /// object after its owner, and foreground deletion of the owner waits for it.
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
    pub fn metadata(&self, name: &str) -> Value {
        let mut metadata = json!({"name": name, "namespace": self.namespace});
        metadata["labels"] = labels(&self.name);
        metadata["ownerReferences"] = Value::Array(vec![self.controller_reference()]);
        if let Some((key, value)) = V2_ANNOTATION {
            annotate(&mut metadata, key, value);
        }
        metadata
    }
}

/// The labels of every object of the server `name` (and of its pods): `app`, the
/// owner label and `instance`.
pub fn labels(name: &str) -> Value {
    json!({"app": APP_LABEL_VALUE, OWNER_LABEL: name, "instance": name})
}

/// The labels that select the pods of the server `name`.
pub fn pod_selector(name: &str) -> Value {
    json!({"app": APP_LABEL_VALUE, "instance": name})
}

/// Sets the annotation `key` in `metadata` (an object's, or a pod template's).
pub fn annotate(metadata: &mut Value, key: &str, value: &str) {
    if let Some(metadata) = metadata.as_object_mut()
        && let Some(annotations) =
            metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new())).as_object_mut()
    {
        annotations.insert(key.into(), value.into());
    }
}

/// Queues an apply of `desired` unless `observed` already carries its hash and was
/// not edited by hand ([`edited_by_hand`]); returns whether it did.
///
/// The hash is taken before the annotation is added, over the object exactly as it is
/// sent, so any change to what the module would send (spec, module version) re-applies.
pub fn apply_if_changed(
    mut desired: Value,
    observed: Option<&Related<'_>>,
    actions: &mut Vec<Action>,
) -> Result<bool, ReconcileError> {
    let hash = object_hash(&desired)?;
    if let Some(observed) = observed
        && observed.applied_hash() == Some(hash.as_str())
        && !edited_by_hand(&desired, observed)
    {
        return Ok(false);
    }
    if let Some(metadata) = desired.get_mut("metadata") {
        annotate(metadata, APPLIED_HASH_ANNOTATION, &hash);
    }
    actions.push(Action::Apply { object: desired });
    Ok(true)
}

/// Whether the observed object was edited by hand away from `desired` in a field
/// people edit (`kubectl scale`, `kubectl set image`, `kubectl edit`): such an edit
/// keeps the applied hash, so it is looked for separately.
///
/// Each field is compared the way server-side apply merges it, so that what another
/// writer added beside the module's own (a sidecar container) never reads as an
/// edit: applying again could not remove it, and the module would apply on every
/// reconcile.
pub fn edited_by_hand(desired: &Value, observed: &Related<'_>) -> bool {
    match desired["kind"].as_str() {
        Some("ConfigMap") => observed.data.config.as_deref() != desired["data"][CONFIG_FILE_KEY].as_str(),
        Some("StatefulSet") => {
            let observed = observed.hand_edits();
            // Each of the module's containers, by name, with its image; other
            // writers' containers do not count.
            let containers = desired["spec"]["template"]["spec"]["containers"].as_array();
            let containers_kept = containers.into_iter().flatten().all(|container| {
                observed.containers().iter().any(|o| {
                    o.name.as_deref() == container["name"].as_str()
                        && o.image.as_deref() == container["image"].as_str()
                })
            });
            observed.replicas != desired["spec"]["replicas"].as_i64() || !containers_kept
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::APPLIED_HASH_ANNOTATION;
    use serde_json::json;
    use serde_json::value::RawValue;

    fn owner() -> &'static Primary {
        static OWNER: std::sync::OnceLock<Primary> = std::sync::OnceLock::new();
        OWNER.get_or_init(|| Primary {
            name: "nas".into(),
            namespace: "files".into(),
            uid: "u-1".into(),
            ..Primary::default()
        })
    }

    fn config_map(text: &str) -> Value {
        configmap::build(owner(), text.into())
    }

    #[test]
    fn owned_metadata() {
        assert_eq!(
            owner().metadata("nas-x"),
            json!({
                "name": "nas-x", "namespace": "files",
                "labels": {"app": "dittofs-server", "instance": "nas", "dittofs.dittofs.com/server": "nas"},
                "ownerReferences": [{"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                    "name": "nas", "uid": "u-1", "controller": true, "blockOwnerDeletion": true}]
            })
        );
    }

    #[test]
    fn applies_only_what_changed() {
        let mut actions = Vec::new();
        assert!(apply_if_changed(config_map("v"), None, &mut actions).expect("plans"));
        let Some(Action::Apply { object }) = actions.pop() else { panic!("no apply") };
        let hash =
            object["metadata"]["annotations"][APPLIED_HASH_ANNOTATION].as_str().expect("hash").to_string();
        assert_eq!(hash, object_hash(&config_map("v")).expect("hashes"));

        // Observed as the API server returns it: extra fields do not matter, the hash does.
        let mut observed = object.clone();
        observed["metadata"]["uid"] = "cm-uid".into();
        observed["metadata"]["resourceVersion"] = "7".into();
        let raw = RawValue::from_string(observed.to_string()).expect("raw");
        let view = Related::read(&raw).expect("decodes");
        assert!(!apply_if_changed(config_map("v"), Some(&view), &mut actions).expect("plans"));
        assert!(actions.is_empty());

        // A changed object, or a lost annotation, is applied again.
        assert!(apply_if_changed(config_map("w"), Some(&view), &mut actions).expect("plans"));
        observed["metadata"]["annotations"] = json!({});
        let raw = RawValue::from_string(observed.to_string()).expect("raw");
        let view = Related::read(&raw).expect("decodes");
        assert!(apply_if_changed(config_map("v"), Some(&view), &mut actions).expect("plans"));
        assert_eq!(actions.len(), 2);
    }

    #[test]
    fn the_applied_hash_wins_over_a_user_annotation_of_the_same_name() {
        let spec: crate::api::DittoServerSpec = serde_json::from_value(json!({
            "storage": {"metadataSize": "1Gi", "cacheSize": "1Gi"},
            "service": {"annotations": {APPLIED_HASH_ANNOTATION: "forged", "a": "b"}},
        }))
        .expect("a spec");
        let mut actions = Vec::new();
        assert!(apply_if_changed(services::file(owner(), &spec), None, &mut actions).expect("plans"));
        let Some(Action::Apply { object }) = actions.pop() else { panic!("no apply") };
        let annotations = &object["metadata"]["annotations"];
        assert_eq!(annotations["a"], "b");
        assert_eq!(
            annotations[APPLIED_HASH_ANNOTATION],
            object_hash(&services::file(owner(), &spec)).expect("hashes")
        );
    }
}
