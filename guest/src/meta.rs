//! Reading the snapshot's objects: the primary's metadata, and the owned objects the
//! host observed.
//!
//! Only the few fields the module decides on are read, straight from the snapshot's
//! JSON (borrowed, never copied): the API server adds defaults and bookkeeping to
//! every object, so whole objects are never compared.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::ReconcileError;
use crate::lenient;
use crate::names::{FINALIZER, PERCONA_KIND};

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

/// The primary's metadata as decoded from the snapshot, strings borrowed from it
/// where they need no unescaping. [`PrimaryMeta::primary`] gives the [`Primary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryMeta<'a> {
    name: Cow<'a, str>,
    namespace: Cow<'a, str>,
    uid: Cow<'a, str>,
    generation: Option<i64>,
    deletion_timestamp: Option<Cow<'a, str>>,
    has_finalizer: bool,
}

/// The JSON shape of the primary's metadata, read in the snapshot's own pass; a
/// field of the wrong type is kept as such and reported by [`PrimaryMeta::read`].
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WirePrimaryMeta<'a> {
    #[serde(borrow, default)]
    name: lenient::Field<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: lenient::Field<Cow<'a, str>>,
    #[serde(borrow, default)]
    uid: lenient::Field<Cow<'a, str>>,
    #[serde(default)]
    generation: lenient::Field<i64>,
    #[serde(borrow, default)]
    deletion_timestamp: lenient::Field<Cow<'a, str>>,
    #[serde(borrow, default)]
    finalizers: lenient::List<lenient::Str<'a>>,
}

impl<'a> PrimaryMeta<'a> {
    /// Checks the primary's `metadata`, naming the field that is missing or of the
    /// wrong type.
    pub fn read(metadata: lenient::ObjectField<WirePrimaryMeta<'a>>) -> Result<Self, ReconcileError> {
        let wrong = |field: &str, expected: &str, found: &str| {
            ReconcileError::InvalidObject(format!(
                "{field} does not decode: expected {expected}, found {found}"
            ))
        };
        let wire = metadata
            .0
            .get()
            .map_err(|found| wrong("metadata", "an object", found))?
            .ok_or(ReconcileError::MissingField("metadata"))?;
        let string = |value: lenient::Field<Cow<'a, str>>, field: &'static str| {
            value.get().map_err(|found| wrong(field, "a string", found))
        };
        let required = |value, field| {
            string(value, field)?
                .filter(|v: &Cow<'a, str>| !v.is_empty())
                .ok_or(ReconcileError::MissingField(field))
        };
        Ok(PrimaryMeta {
            name: required(wire.name, "metadata.name")?,
            namespace: required(wire.namespace, "metadata.namespace")?,
            uid: required(wire.uid, "metadata.uid")?,
            generation: wire
                .generation
                .get()
                .map_err(|found| wrong("metadata.generation", "an integer", found))?,
            deletion_timestamp: string(wire.deletion_timestamp, "metadata.deletionTimestamp")?,
            has_finalizer: wire
                .finalizers
                .0
                .unwrap_or_default()
                .iter()
                .any(|f| f.as_present().map(|f| &**f) == Some(FINALIZER)),
        })
    }

    /// The metadata as the reconcile reads it.
    pub fn primary(&self) -> Primary<'_> {
        Primary {
            name: &self.name,
            namespace: &self.namespace,
            uid: &self.uid,
            generation: self.generation,
            deletion_timestamp: self.deletion_timestamp.as_deref(),
            has_finalizer: self.has_finalizer,
        }
    }
}

/// What the module reads of an owned object the host observed: identity, the
/// applied hash, owner references, and the status fields it decides on.
///
/// Decoded straight from the snapshot, in the same pass that reads the snapshot
/// itself: strings are borrowed from the input, and everything else (managedFields,
/// defaults, most of the spec) is skipped without being built. Every field is read
/// leniently ([`crate::lenient`]): one of an unexpected type reads as absent, and the
/// rest of the object still counts (so that, say, a Percona cluster with an odd
/// status is never taken for missing and created again).
#[derive(Debug, Default)]
pub struct Related<'a> {
    /// `apiVersion`.
    pub api_version: Cow<'a, str>,
    /// `kind`.
    pub kind: Cow<'a, str>,
    /// `metadata.name`.
    pub name: Cow<'a, str>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The module's annotation ([`crate::names::APPLIED_HASH_ANNOTATION`]).
    pub applied_hash: Option<Cow<'a, str>>,
    /// The uids the object's owner references point to.
    pub owner_uids: Vec<Cow<'a, str>>,
    /// The `spec` fields the module reads of this kind, unparsed: a StatefulSet's
    /// `volumeClaimTemplates`, all of a Percona cluster's; none of other kinds.
    pub spec: lenient::RawFields<'a>,
    /// What people edit by hand, compared with the desired object on every
    /// reconcile (the applied-hash annotation survives such edits).
    pub hand_edits: HandEditable<'a>,
    /// `status`.
    pub status: RelatedStatus<'a>,
}

/// The fields of an owned object that people change by hand (`kubectl scale`,
/// `kubectl set image`, `kubectl edit`), read so that such an edit is reverted
/// although the object still carries the hash of what was applied.
///
/// Each is compared the way server-side apply merges it, so that what another
/// writer added beside the module's own (a sidecar container) never reads as an
/// edit: applying again could not remove it, and the module would apply on every
/// reconcile.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HandEditable<'a> {
    /// A StatefulSet's `spec.replicas`.
    pub replicas: Option<i64>,
    /// A StatefulSet's containers (a list keyed by name).
    pub containers: Option<Vec<ObservedContainer<'a>>>,
    /// The digest ([`lenient::StrDigest`]) of a ConfigMap's configuration file
    /// ([`crate::names::CONFIG_FILE_KEY`]).
    pub config: Option<u64>,
}

/// A container of an observed StatefulSet's pod template.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ObservedContainer<'a> {
    /// `name`.
    pub name: Option<Cow<'a, str>>,
    /// `image`.
    pub image: Option<Cow<'a, str>>,
}

/// The status fields the module reads (StatefulSet counts and revisions, the
/// Percona cluster's `state`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelatedStatus<'a> {
    /// `observedGeneration`.
    pub observed_generation: Option<i64>,
    /// `replicas`.
    pub replicas: Option<i64>,
    /// `readyReplicas`.
    pub ready_replicas: Option<i64>,
    /// `availableReplicas`.
    pub available_replicas: Option<i64>,
    /// `currentRevision`.
    pub current_revision: Option<Cow<'a, str>>,
    /// `updateRevision`.
    pub update_revision: Option<Cow<'a, str>>,
    /// `state` (PerconaPGCluster).
    pub state: Option<Cow<'a, str>>,
}

/// The JSON shape of an observed object, as far as the module reads it.
#[derive(Default)]
struct WireObject<'a> {
    api_version: lenient::Str<'a>,
    kind: lenient::Str<'a>,
    metadata: lenient::Object<WireMeta<'a>>,
    spec: lenient::RawFields<'a>,
    status: lenient::Object<WireStatus<'a>>,
    hand_edits: HandEditable<'a>,
}

/// How much of an observed object's `spec` the module reads, by kind: of a
/// StatefulSet, the claim templates and what is edited by hand ([`HandEditable`]);
/// all of a Percona cluster (to adopt it with its spec verbatim); nothing of the
/// others. Skipped specs are scanned, never kept: most of a snapshot's bytes are
/// specs.
fn spec_read(kind: &str) -> SpecRead {
    match kind {
        "StatefulSet" => SpecRead::StatefulSet,
        PERCONA_KIND => SpecRead::Everything,
        _ => SpecRead::Nothing,
    }
}

/// See [`spec_read`].
enum SpecRead {
    Nothing,
    StatefulSet,
    Everything,
}

/// What the module reads of a StatefulSet's spec: the claim templates as text, the
/// replicas and the containers' names and images.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatefulSetSpec<'a> {
    #[serde(borrow, default)]
    volume_claim_templates: Option<&'a RawValue>,
    #[serde(default)]
    replicas: lenient::Int,
    #[serde(borrow, default)]
    template: lenient::Object<WirePodTemplate<'a>>,
}

#[derive(Default, Deserialize)]
struct WirePodTemplate<'a> {
    #[serde(borrow, default)]
    spec: lenient::Object<WirePodSpec<'a>>,
}

#[derive(Default, Deserialize)]
struct WirePodSpec<'a> {
    #[serde(borrow, default)]
    containers: lenient::List<lenient::Object<WireContainer<'a>>>,
}

#[derive(Default, Deserialize)]
struct WireContainer<'a> {
    #[serde(borrow, default)]
    name: lenient::Str<'a>,
    #[serde(borrow, default)]
    image: lenient::Str<'a>,
}

impl<'a> WirePodTemplate<'a> {
    fn containers(self) -> Option<Vec<ObservedContainer<'a>>> {
        let containers = self.spec.0?.containers.0?;
        Some(
            containers
                .into_iter()
                .map(|c| c.0.unwrap_or_default())
                .map(|c| ObservedContainer { name: c.name.present(), image: c.image.present() })
                .collect(),
        )
    }
}

/// A ConfigMap's `data`, as far as the module reads it.
#[derive(Default, Deserialize)]
struct WireConfigData {
    #[serde(default, rename = "config.yaml")]
    config: lenient::StrDigest,
}

impl<'de: 'a, 'a> Deserialize<'de> for WireObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(WireObjectVisitor(std::marker::PhantomData))
    }
}

struct WireObjectVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for WireObjectVisitor<'a> {
    type Value = WireObject<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = WireObject::default();
        while let Some(key) = map.next_key::<lenient::Str<'de>>()? {
            match key.present().as_deref() {
                Some("apiVersion") => object.api_version = map.next_value()?,
                Some("kind") => object.kind = map.next_value()?,
                Some("metadata") => object.metadata = map.next_value()?,
                Some("status") => object.status = map.next_value()?,
                Some("spec") => {
                    // The API server writes `kind` before `spec`; should a snapshot
                    // not, the whole spec is kept, which reads the same.
                    let read = object.kind.as_present().map_or(SpecRead::Everything, |kind| spec_read(kind));
                    object.spec = match read {
                        SpecRead::Nothing => {
                            map.next_value::<IgnoredAny>()?;
                            lenient::RawFields::default()
                        }
                        SpecRead::StatefulSet => {
                            let lenient::Object(spec) =
                                map.next_value::<lenient::Object<WireStatefulSetSpec<'a>>>()?;
                            let spec = spec.unwrap_or_default();
                            object.hand_edits.replicas = spec.replicas.present();
                            object.hand_edits.containers =
                                spec.template.0.and_then(WirePodTemplate::containers);
                            let templates = spec.volume_claim_templates;
                            lenient::RawFields(Some(
                                templates
                                    .map(|t| (Cow::Borrowed("volumeClaimTemplates"), t))
                                    .into_iter()
                                    .collect(),
                            ))
                        }
                        SpecRead::Everything => {
                            let fields: lenient::RawFields<'a> = map.next_value()?;
                            // A StatefulSet whose spec came before its kind.
                            object.hand_edits.replicas =
                                fields.get("replicas").and_then(|raw| serde_json::from_str(raw.get()).ok());
                            object.hand_edits.containers = fields
                                .get("template")
                                .and_then(|raw| serde_json::from_str::<WirePodTemplate<'a>>(raw.get()).ok())
                                .and_then(WirePodTemplate::containers);
                            fields
                        }
                    }
                }
                // Read whatever the kind: `data` sorts before `kind` in the host's
                // JSON. Only ConfigMaps have it among the related kinds.
                Some("data") => {
                    let lenient::Object(data) = map.next_value::<lenient::Object<WireConfigData>>()?;
                    object.hand_edits.config = data.and_then(|data| data.config.0);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(object)
    }
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta<'a> {
    #[serde(borrow, default)]
    name: lenient::Str<'a>,
    #[serde(default)]
    generation: lenient::Int,
    #[serde(borrow, default)]
    annotations: lenient::Object<WireAnnotations<'a>>,
    #[serde(borrow, default)]
    owner_references: lenient::List<lenient::Object<WireOwner<'a>>>,
}

#[derive(Default, Deserialize)]
struct WireAnnotations<'a> {
    #[serde(borrow, default, rename = "dittofs.dittofs.com/applied-hash")]
    applied_hash: lenient::Str<'a>,
}

#[derive(Default, Deserialize)]
struct WireOwner<'a> {
    #[serde(borrow, default)]
    uid: lenient::Str<'a>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus<'a> {
    #[serde(default)]
    observed_generation: lenient::Int,
    #[serde(default)]
    replicas: lenient::Int,
    #[serde(default)]
    ready_replicas: lenient::Int,
    #[serde(default)]
    available_replicas: lenient::Int,
    #[serde(borrow, default)]
    current_revision: lenient::Str<'a>,
    #[serde(borrow, default)]
    update_revision: lenient::Str<'a>,
    #[serde(borrow, default)]
    state: lenient::Str<'a>,
}

/// One entry of the snapshot's `related` list: the object, or `None` for an entry
/// that is not a JSON object.
#[derive(Debug, Default)]
pub struct RelatedEntry<'a>(pub Option<Related<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for RelatedEntry<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let lenient::Object(wire) = lenient::Object::<WireObject<'a>>::deserialize(deserializer)?;
        Ok(RelatedEntry(wire.map(Related::from_wire)))
    }
}

impl<'a> Related<'a> {
    fn from_wire(wire: WireObject<'a>) -> Self {
        let metadata = wire.metadata.0.unwrap_or_default();
        let status = wire.status.0.unwrap_or_default();
        Related {
            api_version: wire.api_version.present().unwrap_or_default(),
            kind: wire.kind.present().unwrap_or_default(),
            name: metadata.name.present().unwrap_or_default(),
            generation: metadata.generation.present(),
            applied_hash: metadata.annotations.0.and_then(|annotations| annotations.applied_hash.present()),
            owner_uids: metadata
                .owner_references
                .0
                .unwrap_or_default()
                .into_iter()
                .filter_map(|owner| owner.0?.uid.present())
                .collect(),
            spec: wire.spec,
            hand_edits: wire.hand_edits,
            status: RelatedStatus {
                observed_generation: status.observed_generation.present(),
                replicas: status.replicas.present(),
                ready_replicas: status.ready_replicas.present(),
                available_replicas: status.available_replicas.present(),
                current_revision: status.current_revision.present(),
                update_revision: status.update_revision.present(),
                state: status.state.present(),
            },
        }
    }

    /// Decodes one observed object on its own (tests and tools; the snapshot's
    /// `related` list decodes as [`RelatedEntry`]s in the snapshot's own pass).
    pub fn read(raw: &'a RawValue) -> Option<Related<'a>> {
        serde_json::from_str::<RelatedEntry<'a>>(raw.get()).ok()?.0
    }

    /// The hash the module's last apply left on the object.
    pub fn applied_hash(&self) -> Option<&str> {
        self.applied_hash.as_deref()
    }

    /// Whether the object has an owner reference to `uid`.
    pub fn has_owner_reference(&self, uid: &str) -> bool {
        self.owner_uids.iter().any(|owner| owner == uid)
    }
}

/// The owned objects the host observed (the snapshot's `related`).
#[derive(Debug, Default)]
pub struct Observed<'a> {
    objects: Vec<Related<'a>>,
}

impl<'a> Observed<'a> {
    /// The objects among the snapshot's `related` entries.
    pub fn new(entries: Vec<RelatedEntry<'a>>) -> Self {
        Observed { objects: entries.into_iter().filter_map(|entry| entry.0).collect() }
    }

    /// The observed object of this kind and name, if any.
    pub fn find(&self, api_version: &str, kind: &str, name: &str) -> Option<&Related<'a>> {
        self.objects.iter().find(|o| o.kind == kind && o.api_version == api_version && o.name == name)
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
            generation: object.generation,
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

    fn read_meta(object: &str) -> Result<PrimaryMeta<'_>, ReconcileError> {
        let object: crate::input::PrimaryObject<'_> =
            serde_json::from_str(object).expect("any object decodes");
        PrimaryMeta::read(object.metadata)
    }

    #[test]
    fn reads_primary_metadata() {
        let object = json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u", "generation": 3,
            "finalizers": ["other", FINALIZER], "deletionTimestamp": "2026-11-26T12:00:00Z"}});
        let object = object.to_string();
        let meta = read_meta(&object).expect("reads");
        assert_eq!(
            meta.primary(),
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
                "metadata.generation does not decode: expected an integer, found a string",
            ),
            (
                json!({"metadata": {"name": 7}}),
                "metadata.name does not decode: expected a string, found a number",
            ),
            (
                json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u", "deletionTimestamp": {}}}),
                "metadata.deletionTimestamp does not decode",
            ),
            (json!({"metadata": "text"}), "metadata does not decode: expected an object, found a string"),
            (json!({"metadata": null}), "metadata"),
        ];
        for (object, expected) in cases {
            let text = object.to_string();
            let err = read_meta(&text).expect_err("fails").to_string();
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
        let list = format!("[{}]", texts.join(","));
        let entries: Vec<RelatedEntry<'_>> = serde_json::from_str(&list).expect("any list decodes");
        assert_eq!(entries.len(), texts.len());
        let observed = Observed::new(entries);
        let service = observed.find("v1", "Service", "a").expect("found");
        assert_eq!(service.applied_hash(), Some("hA"));
        assert!(service.has_owner_reference("u") && !service.has_owner_reference("v"));
        assert!(service.spec.0.is_none(), "a Service's spec is not read");

        // A StatefulSet's claim templates only; all of its spec when `kind` comes
        // after it (not from the API server, but the result is the same).
        let claims = r#"[{"metadata":{"name":"x"},"spec":{"resources":{"requests":{"storage":"1Gi"}}}}]"#;
        let spec = format!(
            r#"{{"replicas":1,"volumeClaimTemplates":{claims},"template":{{"spec":{{"containers":[{{"name":"c","image":"i"}},7]}}}}}}"#
        );
        let kind_first = format!(r#"{{"kind":"StatefulSet","spec":{spec}}}"#);
        let spec_first = format!(r#"{{"spec":{spec},"kind":"StatefulSet"}}"#);
        for (text, fields) in [(kind_first, 1), (spec_first, 3)] {
            let raw = RawValue::from_string(text).expect("raw");
            let sts = Related::read(&raw).expect("decodes");
            assert_eq!(sts.spec.get("volumeClaimTemplates").map(RawValue::get), Some(claims));
            assert_eq!(sts.spec.0.map(|f| f.len()), Some(fields));
            assert_eq!(sts.hand_edits.replicas, Some(1));
            let container = ObservedContainer { name: Some("c".into()), image: Some("i".into()) };
            assert_eq!(sts.hand_edits.containers, Some(vec![container, ObservedContainer::default()]));
        }
        assert_eq!(observed.find("v1", "ConfigMap", "b").and_then(Related::applied_hash), None);
        assert!(observed.find("v1", "Service", "b").is_none());
        // Odd field types read as absent; the object is still known to exist.
        let cluster = observed.find("pgv2.percona.com/v2", "PerconaPGCluster", "c").expect("known");
        assert!(cluster.status.state.is_none() && !cluster.has_owner_reference("u"));
        assert_eq!(cluster.generation, None);
        assert!(observed.find("", "ConfigMap", "").is_some(), "an object without identity is kept, unnamed");
        assert!(Related::read(&RawValue::from_string("[1]".into()).expect("raw")).is_none());
    }
}
