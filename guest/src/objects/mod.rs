//! The objects a DittoServer owns, built from its spec, and the rule that decides
//! whether one needs to be applied.
//!
//! Builders are pure functions of the spec and the owner. [`apply_if_changed`]
//! hashes each desired object and compares the hash with the annotation the last
//! apply left on the observed object: the API server adds defaults and bookkeeping
//! to every object, so comparing whole objects would never converge.

pub mod configmap;
pub mod model;
pub mod percona;
pub mod services;
pub mod statefulset;

use reconcile_sdk::Action;

use crate::error::ReconcileError;
use crate::hash::object_hash;
use crate::input::Primary;
use crate::meta::Related;
use model::{Annotations, Labels, Meta, Owned, OwnerReference};

/// The DittoServer is the owner of the objects built from it.
impl Primary {
    /// A controller reference to the DittoServer: the garbage collector deletes the
    /// object after its owner.
    pub fn controller_reference(&self) -> OwnerReference<'_> {
        OwnerReference::controller(&self.name, &self.uid)
    }

    /// Metadata of an owned object named `name`: namespace, labels, controller reference.
    pub fn metadata(&self, name: String) -> Meta<'_> {
        Meta {
            name,
            namespace: &self.namespace,
            labels: Labels::of(&self.name),
            annotations: Annotations::default(),
            owner_references: [self.controller_reference()],
        }
    }
}

/// Queues an apply of `desired` unless `observed` already carries its hash and was
/// not edited by hand ([`Owned::edited_by_hand`]); returns whether it did.
///
/// The hash is taken before the annotation is added, over the object exactly as it is
/// sent, so any change to what the module would send (spec, module version) re-applies.
/// Only an object that is applied becomes a JSON value.
pub fn apply_if_changed<K: Owned>(
    mut desired: K,
    observed: Option<&Related<'_>>,
    actions: &mut Vec<Action>,
) -> Result<bool, ReconcileError> {
    let hash = object_hash(&desired)?;
    if let Some(observed) = observed
        && observed.applied_hash() == Some(hash.as_str())
        && !desired.edited_by_hand(observed)
    {
        return Ok(false);
    }
    desired.set_applied_hash(hash);
    actions.push(Action::Apply { object: serde_json::to_value(&desired)? });
    Ok(true)
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

    fn config_map(text: &str) -> model::ConfigMap<'static> {
        model::ConfigMap {
            api_version: "v1",
            kind: "ConfigMap",
            metadata: owner().metadata("nas-config".into()),
            data: model::ConfigData { config: text.into() },
        }
    }

    #[test]
    fn owned_metadata() {
        assert_eq!(
            serde_json::to_value(owner().metadata("nas-x".into())).expect("encodes"),
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
}
