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

impl ReconcileError {
    /// `part` (`spec`, `metadata`, ...) of the primary does not decode as `T`: the
    /// error names the field inside it, as `part.field.path does not decode: why`.
    ///
    /// Only called once decoding failed, so it can afford to decode again, from a
    /// JSON tree, just to find the path: the message then carries no line and column
    /// of a text the user never wrote.
    pub fn undecodable<T: serde::de::DeserializeOwned>(part: &str, json: &str) -> Self {
        let tree: serde_json::Value = match serde_json::from_str(json) {
            Ok(tree) => tree,
            Err(err) => return ReconcileError::InvalidObject(format!("{part} does not decode: {err}")),
        };
        match serde_path_to_error::deserialize::<_, T>(&tree) {
            Err(err) => {
                let path = err.path().to_string();
                let field = if path == "." { part.to_string() } else { format!("{part}.{path}") };
                ReconcileError::InvalidObject(format!("{field} does not decode: {}", err.inner()))
            }
            // It decodes from a tree but not from the text (cannot happen with serde_json).
            Ok(_) => ReconcileError::InvalidObject(format!("{part} does not decode")),
        }
    }
}
