//! The snapshot as the module reads it, decoded in one pass over the input: the
//! primary's metadata, its `spec` and `status` left as JSON text until they are
//! needed, and each owned object reduced to the few fields decisions are made on
//! ([`Related`]).

use reconcile_sdk::{LastFailure, RequiredObject, SnapshotOf};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ReconcileError;
use crate::lenient::Object;
use crate::meta::Related;
use crate::names::FINALIZER;
use crate::time::parse_rfc3339;

/// The snapshot's wire form, as the module's exports decode it.
pub type Snapshot<'a> = SnapshotOf<'a, Object<PrimaryObject<'a>>, Object<Related<'a>>>;

/// The parts of the primary object the module reads, as JSON text borrowed from the
/// snapshot (decoded when needed, with errors that name the field). An absent part
/// is `None`; a `spec` or `status` that is `null` is the text `null` (and fails to
/// decode, as a spec must).
#[derive(Debug, Default, Deserialize)]
pub struct PrimaryObject<'a> {
    /// `metadata` (`None` when `null` too).
    #[serde(borrow, default)]
    pub metadata: Option<&'a RawValue>,
    /// `spec`.
    #[serde(borrow, default, deserialize_with = "present")]
    pub spec: Option<&'a RawValue>,
    /// `status`.
    #[serde(borrow, default, deserialize_with = "present")]
    pub status: Option<&'a RawValue>,
}

/// A part that is present, whatever its value (`Option`'s own decoding would read
/// `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// The primary's metadata, as the module needs it; also the owner of every object it
/// builds ([`crate::objects`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Primary {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, which is every owned object's.
    pub namespace: String,
    /// `metadata.uid`, the target of owner references.
    pub uid: String,
    /// `metadata.generation` (absent in hand-made snapshots).
    pub generation: Option<i64>,
    /// `metadata.deletionTimestamp`, when the object is being deleted.
    pub deletion_timestamp: Option<String>,
    /// Whether the module's finalizer is present.
    pub has_finalizer: bool,
}

/// The JSON shape of the primary's metadata: each field as text, so that one of the
/// wrong type is reported by name ([`Primary::read`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrimaryMeta<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    namespace: Option<&'a RawValue>,
    #[serde(borrow)]
    uid: Option<&'a RawValue>,
    #[serde(borrow)]
    generation: Option<&'a RawValue>,
    #[serde(borrow)]
    deletion_timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    finalizers: Option<&'a RawValue>,
}

impl Primary {
    /// Reads the primary's `metadata`, naming the field that is missing or of the
    /// wrong type.
    pub fn read(metadata: Option<&RawValue>) -> Result<Self, ReconcileError> {
        let metadata = metadata.ok_or(ReconcileError::MissingField("metadata"))?;
        if !metadata.get().starts_with('{') {
            return Err(wrong_type("metadata", "an object", metadata));
        }
        let meta: PrimaryMeta<'_> = serde_json::from_str(metadata.get())
            .map_err(|err| ReconcileError::InvalidObject(format!("metadata does not decode: {err}")))?;
        let required = |raw, field| {
            typed::<String>(raw, field, "a string")?
                .filter(|value| !value.is_empty())
                .ok_or(ReconcileError::MissingField(field))
        };
        let finalizers =
            meta.finalizers.and_then(|list| serde_json::from_str::<Vec<&RawValue>>(list.get()).ok());
        Ok(Primary {
            name: required(meta.name, "metadata.name")?,
            namespace: required(meta.namespace, "metadata.namespace")?,
            uid: required(meta.uid, "metadata.uid")?,
            generation: typed(meta.generation, "metadata.generation", "an integer")?,
            deletion_timestamp: typed(meta.deletion_timestamp, "metadata.deletionTimestamp", "a string")?,
            has_finalizer: finalizers
                .unwrap_or_default()
                .iter()
                .any(|f| serde_json::from_str::<String>(f.get()).is_ok_and(|f| f == FINALIZER)),
        })
    }
}

/// `field` read as `T` (`expected` in the error when it is of another type).
fn typed<T: serde::de::DeserializeOwned>(
    raw: Option<&RawValue>,
    field: &str,
    expected: &str,
) -> Result<Option<T>, ReconcileError> {
    raw.map(|raw| serde_json::from_str(raw.get()).map_err(|_| wrong_type(field, expected, raw))).transpose()
}

fn wrong_type(field: &str, expected: &str, raw: &RawValue) -> ReconcileError {
    let text = raw.get();
    let found = match text.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        _ if expected == "an integer" && text.parse::<u64>().is_ok() => "a number out of range",
        _ => "a number",
    };
    ReconcileError::InvalidObject(format!("{field} does not decode: expected {expected}, found {found}"))
}

/// One reconcile's input.
#[derive(Debug)]
pub struct Input<'a> {
    /// The snapshot's `now`, in seconds since the Unix epoch.
    pub now: i64,
    /// The primary's metadata.
    pub primary: Primary,
    /// The primary's `spec` and `status`.
    pub object: PrimaryObject<'a>,
    /// The owned objects the host observed.
    pub related: Vec<Related<'a>>,
    /// Answers to the previous outcome's `requires`.
    pub required: Vec<RequiredObject>,
    /// Present while the last attempt failed.
    pub last_failure: Option<LastFailure>,
}

impl<'a> Input<'a> {
    /// Reads a decoded snapshot; fails when `now` is not a timestamp, or when the
    /// primary's metadata is missing or malformed (a primary that is not a JSON
    /// object has no metadata).
    pub fn read(snapshot: Snapshot<'a>) -> Result<Self, ReconcileError> {
        let now = parse_rfc3339(&snapshot.now).ok_or_else(|| {
            ReconcileError::InvalidObject(format!(
                "snapshot now {:?} is not an RFC 3339 timestamp",
                snapshot.now
            ))
        })?;
        let object = snapshot.object.0.unwrap_or_default();
        Ok(Input {
            now,
            primary: Primary::read(object.metadata)?,
            object,
            related: snapshot.related.into_iter().filter_map(|entry| entry.0).collect(),
            required: snapshot.required,
            last_failure: snapshot.last_failure,
        })
    }

    /// The observed object of this kind and name, if any.
    pub fn find(&self, api_version: &str, kind: &str, name: &str) -> Option<&Related<'a>> {
        self.related.iter().find(|object| object.is(api_version, kind, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_meta(object: &str) -> Result<Primary, ReconcileError> {
        let object: Object<PrimaryObject<'_>> = serde_json::from_str(object).expect("any object decodes");
        Primary::read(object.0.unwrap_or_default().metadata)
    }

    #[test]
    fn reads_primary_metadata() {
        let object = json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u", "generation": 3,
            "finalizers": ["other", FINALIZER], "deletionTimestamp": "2026-11-26T12:00:00Z"}});
        let object = object.to_string();
        let meta = read_meta(&object).expect("reads");
        assert_eq!(
            meta,
            Primary {
                name: "a".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                generation: Some(3),
                deletion_timestamp: Some("2026-11-26T12:00:00Z".into()),
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

    #[test]
    fn wrong_types_are_named_exactly() {
        let base = json!({"name": "a", "namespace": "ns", "uid": "u"});
        let cases = [
            (
                "generation",
                json!(1.5),
                "metadata.generation does not decode: expected an integer, found a number",
            ),
            (
                "generation",
                json!(u64::MAX),
                "metadata.generation does not decode: expected an integer, found a number out of range",
            ),
            ("uid", json!(u64::MAX), "metadata.uid does not decode: expected a string, found a number"),
            ("name", json!([1]), "metadata.name does not decode: expected a string, found an array"),
            (
                "namespace",
                json!(true),
                "metadata.namespace does not decode: expected a string, found a boolean",
            ),
            (
                "deletionTimestamp",
                json!({}),
                "metadata.deletionTimestamp does not decode: expected a string, found an object",
            ),
        ];
        for (field, value, expected) in cases {
            let mut metadata = base.clone();
            metadata[field] = value;
            let text = json!({ "metadata": metadata }).to_string();
            assert_eq!(read_meta(&text).expect_err("fails").to_string(), expected);
        }
        let text = json!({"metadata": [1]}).to_string();
        assert_eq!(
            read_meta(&text).expect_err("fails").to_string(),
            "metadata does not decode: expected an object, found an array"
        );
        let text =
            json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u", "finalizers": "x"}}).to_string();
        assert!(!read_meta(&text).expect("reads").has_finalizer);
    }
}
