//! The snapshot as the module reads it, decoded in one pass over the input: the
//! primary's metadata, its `spec` and `status` left as JSON text until they are
//! needed, and each owned object reduced to the few fields decisions are made on
//! ([`crate::meta::Related`]). Nothing is built that the reconcile does not read.

use reconcile_sdk::{LastFailure, RequiredObject, SnapshotOf};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ReconcileError;
use crate::lenient;
use crate::meta::{Observed, Primary, PrimaryMeta, RelatedEntry, WirePrimaryMeta};
use crate::time::parse_rfc3339;

/// The snapshot's wire form, as the module's exports decode it.
pub type Snapshot<'a> = SnapshotOf<'a, lenient::Object<PrimaryObject<'a>>, RelatedEntry<'a>>;

/// The parts of the primary object the module reads: its metadata, and `spec` and
/// `status` as JSON text borrowed from the snapshot (decoded when needed, with
/// errors that name the field). An absent part is `None`; one that is `null` is
/// the text `null` (and fails to decode, as a spec must).
#[derive(Debug, Default, Deserialize)]
pub struct PrimaryObject<'a> {
    /// `metadata`, read in the snapshot's pass.
    #[serde(borrow, default)]
    pub metadata: lenient::ObjectField<WirePrimaryMeta<'a>>,
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

/// One reconcile's input.
#[derive(Debug)]
pub struct Input<'a> {
    /// The snapshot's `now`, in seconds since the Unix epoch.
    pub now: i64,
    /// The primary's metadata.
    pub meta: PrimaryMeta<'a>,
    /// The primary's other parts.
    pub object: PrimaryObject<'a>,
    /// The owned objects the host observed.
    pub related: Observed<'a>,
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
        let mut object = snapshot.object.0.unwrap_or_default();
        Ok(Input {
            now,
            meta: PrimaryMeta::read(std::mem::take(&mut object.metadata))?,
            object,
            related: Observed::new(snapshot.related),
            required: snapshot.required,
            last_failure: snapshot.last_failure,
        })
    }

    /// The primary's metadata.
    pub fn primary(&self) -> Primary<'_> {
        self.meta.primary()
    }
}
