//! Why a reconcile produced an error outcome instead of actions.

/// A snapshot the module cannot act on.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The primary lacks a field every object of its kind has.
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// The primary or the snapshot is malformed; the message names the field.
    #[error("{0}")]
    InvalidObject(String),
    /// Encoding a desired object failed (cannot happen with these types).
    #[error("could not encode a desired object: {0}")]
    Encode(#[from] serde_json::Error),
}
