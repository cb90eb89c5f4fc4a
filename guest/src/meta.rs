//! Reading the snapshot's objects: the primary's metadata, and the owned objects the
//! host observed.
//!
//! Only the few fields the module decides on are read, straight from the snapshot's
//! JSON (borrowed, never copied): the API server adds defaults and bookkeeping to
//! every object, so whole objects are never compared.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

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

/// What the module reads of an owned object the host observed: identity, the
/// applied hash, owner references, and the status fields it decides on. Decoded
/// straight from the snapshot's JSON, borrowing its strings and skipping the rest
/// (managedFields, defaults, most of the spec) without building anything.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Related<'a> {
    /// `apiVersion`.
    #[serde(borrow, default)]
    pub api_version: Cow<'a, str>,
    /// `kind`.
    #[serde(borrow, default)]
    pub kind: Cow<'a, str>,
    /// `metadata`.
    #[serde(borrow, default)]
    pub metadata: RelatedMeta<'a>,
    /// `spec`, unparsed (read for StatefulSet claims and to adopt a Percona cluster).
    #[serde(borrow, default)]
    pub spec: Option<&'a RawValue>,
    /// `status`.
    #[serde(borrow, default)]
    pub status: RelatedStatus<'a>,
}

/// The metadata of an observed object.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelatedMeta<'a> {
    /// `metadata.name`.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// `metadata.generation`.
    #[serde(default)]
    pub generation: Option<i64>,
    /// The module's annotation, if present.
    #[serde(borrow, default)]
    pub annotations: Option<AppliedHash<'a>>,
    /// The uids the object's owner references point to.
    #[serde(borrow, default)]
    pub owner_references: Option<Vec<OwnerUid<'a>>>,
}

/// The module's annotation on an owned object.
#[derive(Debug, Default, Deserialize)]
pub struct AppliedHash<'a> {
    /// [`crate::names::APPLIED_HASH_ANNOTATION`].
    #[serde(borrow, default, rename = "dittofs.dittofs.com/applied-hash")]
    pub hash: Option<Cow<'a, str>>,
}

/// The uid of an owner reference.
#[derive(Debug, Default, Deserialize)]
pub struct OwnerUid<'a> {
    /// The owner's uid.
    #[serde(borrow, default)]
    pub uid: Cow<'a, str>,
}

/// The status fields the module reads (StatefulSet counts and revisions, the
/// Percona cluster's `state`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelatedStatus<'a> {
    /// `observedGeneration`.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// `replicas`.
    #[serde(default)]
    pub replicas: Option<i64>,
    /// `readyReplicas`.
    #[serde(default)]
    pub ready_replicas: Option<i64>,
    /// `availableReplicas`.
    #[serde(default)]
    pub available_replicas: Option<i64>,
    /// `currentRevision`.
    #[serde(borrow, default)]
    pub current_revision: Option<Cow<'a, str>>,
    /// `updateRevision`.
    #[serde(borrow, default)]
    pub update_revision: Option<Cow<'a, str>>,
    /// `state` (PerconaPGCluster).
    #[serde(borrow, default)]
    pub state: Option<Cow<'a, str>>,
}

impl Related<'_> {
    /// Decodes one observed object. One whose fields have unexpected types is still
    /// known by its identity (so that, say, a Percona cluster is never taken for
    /// missing and created again); `None` for one without even that.
    pub fn read(raw: &RawValue) -> Option<Related<'_>> {
        if let Ok(related) = serde_json::from_str(raw.get()) {
            return Some(related);
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Identity<'a> {
            #[serde(borrow)]
            api_version: Cow<'a, str>,
            #[serde(borrow)]
            kind: Cow<'a, str>,
            #[serde(borrow)]
            metadata: Name<'a>,
        }
        #[derive(Deserialize)]
        struct Name<'a> {
            #[serde(borrow)]
            name: Cow<'a, str>,
        }
        let identity: Identity<'_> = serde_json::from_str(raw.get()).ok()?;
        Some(Related {
            api_version: identity.api_version,
            kind: identity.kind,
            metadata: RelatedMeta { name: identity.metadata.name, ..RelatedMeta::default() },
            ..Related::default()
        })
    }

    /// The hash the module's last apply left on the object.
    pub fn applied_hash(&self) -> Option<&str> {
        self.metadata.annotations.as_ref()?.hash.as_deref()
    }

    /// Whether the object has an owner reference to `uid`.
    pub fn has_owner_reference(&self, uid: &str) -> bool {
        self.metadata.owner_references.iter().flatten().any(|owner| owner.uid == uid)
    }
}

/// The owned objects the host observed (the snapshot's `related`).
#[derive(Debug, Default)]
pub struct Observed<'a> {
    objects: Vec<Related<'a>>,
}

impl<'a> Observed<'a> {
    /// The decodable objects of the snapshot's `related` list.
    pub fn read(related: &[&'a RawValue]) -> Self {
        Observed { objects: related.iter().filter_map(|raw| Related::read(raw)).collect() }
    }

    /// The observed object of this kind and name, if any.
    pub fn find(&self, api_version: &str, kind: &str, name: &str) -> Option<&Related<'a>> {
        self.objects
            .iter()
            .find(|o| o.kind == kind && o.api_version == api_version && o.metadata.name == name)
    }
}

/// The string at `path` in `value`, if there is one.
pub fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path)?.as_str()
}

/// The value at `path` in `value`, if there is one.
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(key))
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
    pub fn read(object: &'a Related<'a>) -> Self {
        let count = |n: Option<i64>| n.and_then(|n| i32::try_from(n).ok()).unwrap_or(0).max(0);
        let status = &object.status;
        StatefulSetState {
            generation: object.metadata.generation,
            observed_generation: status.observed_generation,
            replicas: count(status.replicas),
            ready_replicas: count(status.ready_replicas),
            available_replicas: count(status.available_replicas),
            current_revision: status.current_revision.as_deref(),
            update_revision: status.update_revision.as_deref(),
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

    fn related(value: Value) -> String {
        value.to_string()
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
            let text = related(object.clone());
            let raw = RawValue::from_string(text).expect("raw");
            let view = Related::read(&raw).expect("decodes");
            assert_eq!(StatefulSetState::read(&view).is_updating(), updating, "{object}");
        }
        let raw = RawValue::from_string(related(
            json!({"status": {"replicas": 1, "readyReplicas": -4, "availableReplicas": 99999999999_i64}}),
        ))
        .expect("raw");
        let view = Related::read(&raw).expect("decodes");
        let state = StatefulSetState::read(&view);
        assert_eq!((state.replicas, state.ready_replicas, state.available_replicas), (1, 0, 0));
    }

    #[test]
    fn observed_objects_are_read_leniently() {
        let texts = [
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","annotations":{"x":"y",
               "dittofs.dittofs.com/applied-hash":"h\u0041"},"ownerReferences":[{"uid":"u","kind":"K"}],
               "managedFields":[{"manager":"m"}]},"spec":{"ports":[]},"status":{"loadBalancer":{}}}"#,
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}"#,
            r#"[1,2,3]"#,
            r#"{"kind":"ConfigMap","metadata":{"name":7}}"#,
            r#"{"apiVersion":"pgv2.percona.com/v2","kind":"PerconaPGCluster","metadata":{"name":"c","generation":"x",
               "ownerReferences":null},"status":{"state":5}}"#,
        ];
        let raws: Vec<Box<RawValue>> =
            texts.iter().map(|t| RawValue::from_string(t.to_string()).expect("raw")).collect();
        let refs: Vec<&RawValue> = raws.iter().map(|r| &**r).collect();
        let observed = Observed::read(&refs);
        let service = observed.find("v1", "Service", "a").expect("found");
        assert_eq!(service.applied_hash(), Some("hA"));
        assert!(service.has_owner_reference("u") && !service.has_owner_reference("v"));
        assert!(service.spec.is_some());
        assert_eq!(observed.find("v1", "ConfigMap", "b").and_then(Related::applied_hash), None);
        assert!(observed.find("v1", "Service", "b").is_none());
        // Odd field types: still known to exist.
        let cluster = observed.find("pgv2.percona.com/v2", "PerconaPGCluster", "c").expect("known");
        assert!(cluster.status.state.is_none() && !cluster.has_owner_reference("u"));
    }
}
