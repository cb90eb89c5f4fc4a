//! Reading the snapshot's objects: the primary's metadata, and the owned objects the
//! host observed.
//!
//! Only the few fields the module decides on are read, straight from the snapshot's
//! JSON (borrowed, never copied): the API server adds defaults and bookkeeping to
//! every object, so whole objects are never compared.

use serde::Deserialize;
use serde_json::Value;

use crate::error::ReconcileError;
use crate::names::FINALIZER;

/// The primary's metadata, as the module needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Primary<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// `metadata.uid`, the target of owner references.
    pub uid: &'a str,
    /// `metadata.generation` (absent in hand-made snapshots).
    pub generation: Option<i64>,
    /// `metadata.deletionTimestamp`, when the object is being deleted.
    pub deletion_timestamp: Option<&'a str>,
    /// Whether the module's finalizer is present.
    pub has_finalizer: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta<'a> {
    #[serde(borrow, default)]
    name: Option<&'a str>,
    #[serde(borrow, default)]
    namespace: Option<&'a str>,
    #[serde(borrow, default)]
    uid: Option<&'a str>,
    #[serde(default)]
    generation: Option<i64>,
    #[serde(borrow, default)]
    deletion_timestamp: Option<&'a str>,
    #[serde(borrow, default)]
    finalizers: Option<Vec<&'a str>>,
}

impl<'a> Primary<'a> {
    /// Reads the primary's metadata from the snapshot's `object`.
    pub fn read(object: &'a Value) -> Result<Self, ReconcileError> {
        let metadata = object.get("metadata").ok_or(ReconcileError::MissingField("metadata"))?;
        let raw: RawMeta<'a> = serde_path_to_error::deserialize(metadata).map_err(|err| {
            ReconcileError::InvalidObject(format!("metadata.{} does not decode: {}", err.path(), err.inner()))
        })?;
        let name = raw.name.filter(|n| !n.is_empty()).ok_or(ReconcileError::MissingField("metadata.name"))?;
        let namespace = raw
            .namespace
            .filter(|n| !n.is_empty())
            .ok_or(ReconcileError::MissingField("metadata.namespace"))?;
        let uid = raw.uid.filter(|n| !n.is_empty()).ok_or(ReconcileError::MissingField("metadata.uid"))?;
        Ok(Primary {
            name,
            namespace,
            uid,
            generation: raw.generation,
            deletion_timestamp: raw.deletion_timestamp,
            has_finalizer: raw.finalizers.unwrap_or_default().contains(&FINALIZER),
        })
    }
}

/// The owned objects the host observed (the snapshot's `related`).
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    objects: &'a [Value],
}

impl<'a> Observed<'a> {
    /// Wraps the snapshot's `related` list.
    pub fn new(objects: &'a [Value]) -> Self {
        Observed { objects }
    }

    /// The observed object of this kind and name, if any.
    pub fn find(&self, api_version: &str, kind: &str, name: &str) -> Option<&'a Value> {
        self.objects.iter().find(|object| {
            str_at(object, &["kind"]) == Some(kind)
                && str_at(object, &["apiVersion"]) == Some(api_version)
                && str_at(object, &["metadata", "name"]) == Some(name)
        })
    }
}

/// The string at `path` in `value`, if there is one.
pub fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path)?.as_str()
}

/// The integer at `path` in `value`, if there is one.
pub fn int_at(value: &Value, path: &[&str]) -> Option<i64> {
    at(value, path)?.as_i64()
}

/// The value at `path` in `value`, if there is one.
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(key))
}

/// The value of annotation `key` on `object`.
pub fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    at(object, &["metadata", "annotations", key])?.as_str()
}

/// Whether `object` has an ownerReference to `uid`.
pub fn has_owner_reference(object: &Value, uid: &str) -> bool {
    at(object, &["metadata", "ownerReferences"])
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r.get("uid").and_then(Value::as_str) == Some(uid)))
}

/// What the module reads of an observed StatefulSet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatefulSetState<'a> {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status.observedGeneration`.
    pub observed_generation: Option<i64>,
    /// `status.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// `status.availableReplicas`.
    pub available_replicas: i32,
    /// `status.currentRevision`.
    pub current_revision: Option<&'a str>,
    /// `status.updateRevision`.
    pub update_revision: Option<&'a str>,
}

impl<'a> StatefulSetState<'a> {
    /// Reads an observed StatefulSet.
    pub fn read(object: &'a Value) -> Self {
        let count = |field| {
            int_at(object, &["status", field]).and_then(|n| i32::try_from(n).ok()).unwrap_or(0).max(0)
        };
        StatefulSetState {
            generation: int_at(object, &["metadata", "generation"]),
            observed_generation: int_at(object, &["status", "observedGeneration"]),
            replicas: count("replicas"),
            ready_replicas: count("readyReplicas"),
            available_replicas: count("availableReplicas"),
            current_revision: str_at(object, &["status", "currentRevision"]),
            update_revision: str_at(object, &["status", "updateRevision"]),
        }
    }

    /// Whether the StatefulSet controller has not caught up with the spec, or is
    /// still rolling pods to a new revision.
    pub fn is_updating(&self) -> bool {
        let lags = match (self.generation, self.observed_generation) {
            (Some(generation), Some(observed)) => observed < generation,
            (Some(_), None) => true,
            (None, _) => false,
        };
        lags || (self.update_revision.is_some() && self.current_revision != self.update_revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_primary_metadata() {
        let object = json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u", "generation": 3,
            "finalizers": ["other", FINALIZER], "deletionTimestamp": "2026-11-26T12:00:00Z"}});
        let primary = Primary::read(&object).expect("reads");
        assert_eq!(
            primary,
            Primary {
                name: "a",
                namespace: "ns",
                uid: "u",
                generation: Some(3),
                deletion_timestamp: Some("2026-11-26T12:00:00Z"),
                has_finalizer: true
            }
        );
    }

    #[test]
    fn names_what_is_missing_or_malformed() {
        let cases = [
            (json!({}), "metadata"),
            (json!({"metadata": {"namespace": "ns", "uid": "u"}}), "metadata.name"),
            (json!({"metadata": {"name": "a", "uid": "u"}}), "metadata.namespace"),
            (json!({"metadata": {"name": "a", "namespace": "ns"}}), "metadata.uid"),
            (
                json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u", "generation": "x"}}),
                "generation",
            ),
            (json!({"metadata": {"name": 7}}), "metadata.name does not decode"),
            (json!("text"), "metadata"),
        ];
        for (object, expected) in cases {
            let err = Primary::read(&object).expect_err("fails").to_string();
            assert!(err.contains(expected), "{object}: {err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn statefulset_progress() {
        let cases = [
            (json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 1}}), true),
            (json!({"metadata": {"generation": 2}}), true),
            (json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2}}), false),
            (
                json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2,
                    "currentRevision": "a", "updateRevision": "b"}}),
                true,
            ),
            (
                json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2,
                    "currentRevision": "b", "updateRevision": "b", "readyReplicas": 1}}),
                false,
            ),
        ];
        for (object, updating) in cases {
            assert_eq!(StatefulSetState::read(&object).is_updating(), updating, "{object}");
        }
        let object =
            json!({"status": {"replicas": 1, "readyReplicas": -4, "availableReplicas": 99999999999_i64}});
        let state = StatefulSetState::read(&object);
        assert_eq!((state.replicas, state.ready_replicas, state.available_replicas), (1, 0, 0));
    }
}
