//! The snapshot as the module reads it: the primary parsed, the owned objects
//! reduced to the few fields decisions are made on (see [`crate::meta::Related`]).

use reconcile_sdk::{LastFailure, RawSnapshot, RequiredObject};
use serde_json::Value;

use crate::error::ReconcileError;
use crate::meta::Observed;

/// One reconcile's input.
#[derive(Debug)]
pub struct Input<'a> {
    /// The snapshot's `now`.
    pub now: &'a str,
    /// The primary object.
    pub object: Value,
    /// The owned objects the host observed.
    pub related: Observed<'a>,
    /// Answers to the previous outcome's `requires`.
    pub required: &'a [RequiredObject],
    /// Present while the last attempt failed.
    pub last_failure: Option<&'a LastFailure>,
}

impl<'a> Input<'a> {
    /// Reads a snapshot.
    pub fn read(snapshot: &'a RawSnapshot<'a>) -> Result<Self, ReconcileError> {
        let object = serde_json::from_str(snapshot.object.get())
            .map_err(|err| ReconcileError::InvalidObject(format!("object does not decode: {err}")))?;
        Ok(Input {
            now: &snapshot.now,
            object,
            related: Observed::read(&snapshot.related),
            required: &snapshot.required,
            last_failure: snapshot.last_failure.as_ref(),
        })
    }
}
