//! Reading the owned objects the host observed (the snapshot's `related`).
//!
//! Only the few fields the module decides on are read: the API server adds defaults
//! and bookkeeping to every object, so whole objects are never compared. Each is read
//! leniently ([`crate::lenient`]): one of an unexpected type reads as absent, and the
//! rest of the object still counts (so that, say, a Percona cluster with an odd
//! status is never taken for missing and created again).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::lenient::{self, Object};

/// What the module reads of an owned object the host observed: identity, the
/// applied hash, owner references, the status fields it decides on, and its `spec`
/// as JSON text borrowed from the snapshot (read when needed: a StatefulSet's claim
/// templates and what is edited by hand, a Percona cluster's whole spec).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Related<'a> {
    /// `apiVersion`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub api_version: Option<String>,
    /// `kind`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub kind: Option<String>,
    /// `metadata`.
    #[serde(default, deserialize_with = "lenient::object")]
    pub metadata: RelatedMeta,
    /// `spec`, unparsed.
    #[serde(borrow, default)]
    pub spec: Option<&'a RawValue>,
    /// `status`.
    #[serde(default, deserialize_with = "lenient::object")]
    pub status: RelatedStatus,
    /// `data` (a ConfigMap's).
    #[serde(default, deserialize_with = "lenient::object")]
    pub data: ConfigData,
}

/// The `metadata` fields the module reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelatedMeta {
    /// `name`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub name: Option<String>,
    /// `generation`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub generation: Option<i64>,
    /// The module's annotation.
    #[serde(default, deserialize_with = "lenient::object")]
    pub annotations: AppliedHash,
    /// `ownerReferences`.
    #[serde(default, deserialize_with = "lenient::list")]
    pub owner_references: Vec<OwnerUid>,
}

/// The annotation holding what was applied ([`crate::names::APPLIED_HASH_ANNOTATION`]).
#[derive(Debug, Default, Deserialize)]
pub struct AppliedHash {
    /// Its value.
    #[serde(default, deserialize_with = "lenient::value", rename = "dittofs.dittofs.com/applied-hash")]
    pub hash: Option<String>,
}

/// The uid an owner reference points to.
#[derive(Debug, Default, Deserialize)]
pub struct OwnerUid {
    /// `uid`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub uid: Option<String>,
}

/// The status fields the module reads (StatefulSet counts and revisions, the
/// Percona cluster's `state`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelatedStatus {
    /// `observedGeneration`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub observed_generation: Option<i64>,
    /// `replicas`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub replicas: Option<i64>,
    /// `readyReplicas`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub ready_replicas: Option<i64>,
    /// `availableReplicas`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub available_replicas: Option<i64>,
    /// `currentRevision`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub current_revision: Option<String>,
    /// `updateRevision`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub update_revision: Option<String>,
    /// `state` (PerconaPGCluster).
    #[serde(default, deserialize_with = "lenient::value")]
    pub state: Option<String>,
}

/// A ConfigMap's `data`, as far as the module reads it.
#[derive(Debug, Default, Deserialize)]
pub struct ConfigData {
    /// The configuration file ([`crate::names::CONFIG_FILE_KEY`]).
    #[serde(default, deserialize_with = "lenient::value", rename = "config.yaml")]
    pub config: Option<String>,
}

/// The fields of an observed StatefulSet's spec that people change by hand
/// (`kubectl scale`, `kubectl set image`, `kubectl edit`), read so that such an edit
/// is reverted although the object still carries the hash of what was applied.
#[derive(Debug, Default, Deserialize)]
pub struct HandEdits {
    /// `spec.replicas`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub replicas: Option<i64>,
    #[serde(default, deserialize_with = "lenient::object")]
    template: PodTemplate,
}

#[derive(Debug, Default, Deserialize)]
struct PodTemplate {
    #[serde(default, deserialize_with = "lenient::object")]
    spec: PodSpec,
}

#[derive(Debug, Default, Deserialize)]
struct PodSpec {
    #[serde(default, deserialize_with = "lenient::list")]
    containers: Vec<ObservedContainer>,
}

/// A container of an observed StatefulSet's pod template.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct ObservedContainer {
    /// `name`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub name: Option<String>,
    /// `image`.
    #[serde(default, deserialize_with = "lenient::value")]
    pub image: Option<String>,
}

impl HandEdits {
    /// The pod template's containers (a list keyed by name).
    pub fn containers(&self) -> &[ObservedContainer] {
        &self.template.spec.containers
    }
}

impl<'a> Related<'a> {
    /// Decodes one observed object on its own (tests and tools; the snapshot's
    /// `related` entries decode in the snapshot's own pass); `None` for a JSON value
    /// that is not an object.
    pub fn read(raw: &'a RawValue) -> Option<Related<'a>> {
        serde_json::from_str::<Object<Related<'a>>>(raw.get()).ok()?.0
    }

    /// Whether this is the object of this kind and name.
    pub fn is(&self, api_version: &str, kind: &str, name: &str) -> bool {
        let has = |field: &Option<String>, value: &str| field.as_deref().unwrap_or_default() == value;
        has(&self.kind, kind) && has(&self.api_version, api_version) && has(&self.metadata.name, name)
    }

    /// The hash the module's last apply left on the object.
    pub fn applied_hash(&self) -> Option<&str> {
        self.metadata.annotations.hash.as_deref()
    }

    /// Whether the object has an owner reference to `uid`.
    pub fn has_owner_reference(&self, uid: &str) -> bool {
        self.metadata.owner_references.iter().any(|owner| owner.uid.as_deref() == Some(uid))
    }

    /// What was edited by hand in the spec (of a StatefulSet; nothing when the spec
    /// is not an object).
    pub fn hand_edits(&self) -> HandEdits {
        self.spec
            .and_then(|spec| serde_json::from_str::<Object<HandEdits>>(spec.get()).ok()?.0)
            .unwrap_or_default()
    }
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
    pub fn read(object: &'a Related<'_>) -> Self {
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
    use serde_json::{Value, json};

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
        let list = format!("[{}]", texts.join(","));
        let entries: Vec<Object<Related<'_>>> = serde_json::from_str(&list).expect("any list decodes");
        assert_eq!(entries.len(), texts.len());
        let observed: Vec<Related<'_>> = entries.into_iter().filter_map(|entry| entry.0).collect();
        let find = |api_version, kind, name| observed.iter().find(|o| o.is(api_version, kind, name));
        let service = find("v1", "Service", "a").expect("found");
        assert_eq!(service.applied_hash(), Some("hA"));
        assert!(service.has_owner_reference("u") && !service.has_owner_reference("v"));
        assert_eq!(service.spec.map(RawValue::get), Some(r#"{"ports":[]}"#), "kept as text");

        // A StatefulSet's spec is kept whole, whatever the order of its fields.
        let claims = r#"[{"metadata":{"name":"x"},"spec":{"resources":{"requests":{"storage":"1Gi"}}}}]"#;
        let spec = format!(
            r#"{{"replicas":1,"volumeClaimTemplates":{claims},"template":{{"spec":{{"containers":[{{"name":"c","image":"i"}},7]}}}}}}"#
        );
        let kind_first = format!(r#"{{"kind":"StatefulSet","spec":{spec}}}"#);
        let spec_first = format!(r#"{{"spec":{spec},"kind":"StatefulSet"}}"#);
        for text in [kind_first, spec_first] {
            let raw = RawValue::from_string(text).expect("raw");
            let sts = Related::read(&raw).expect("decodes");
            assert_eq!(sts.spec.map(RawValue::get), Some(spec.as_str()));
            let edits = sts.hand_edits();
            assert_eq!(edits.replicas, Some(1));
            let container = ObservedContainer { name: Some("c".into()), image: Some("i".into()) };
            assert_eq!(edits.containers(), [container, ObservedContainer::default()]);
        }
        assert_eq!(find("v1", "ConfigMap", "b").and_then(Related::applied_hash), None);
        assert!(find("v1", "Service", "b").is_none());
        // Odd field types read as absent; the object is still known to exist.
        let cluster = find("pgv2.percona.com/v2", "PerconaPGCluster", "c").expect("known");
        assert!(cluster.status.state.is_none() && !cluster.has_owner_reference("u"));
        assert_eq!(cluster.metadata.generation, None);
        assert!(find("", "ConfigMap", "").is_some(), "an object without identity is kept, unnamed");
        assert!(Related::read(&RawValue::from_string("[1]".into()).expect("raw")).is_none());
    }

    #[test]
    fn a_configmap_file_and_odd_specs() {
        let raw = RawValue::from_string(
            json!({"kind": "ConfigMap", "data": {"config.yaml": "a\nb", "other": 1}}).to_string(),
        )
        .expect("raw");
        let config_map = Related::read(&raw).expect("decodes");
        assert_eq!(config_map.data.config.as_deref(), Some("a\nb"));
        for spec in
            [json!([1]), json!("x"), json!({"replicas": "1", "template": {"spec": {"containers": {}}}})]
        {
            let raw =
                RawValue::from_string(json!({"kind": "StatefulSet", "spec": spec}).to_string()).expect("raw");
            let edits = Related::read(&raw).expect("decodes").hand_edits();
            assert_eq!((edits.replicas, edits.containers()), (None, &[][..]), "{spec}");
        }
    }
}
