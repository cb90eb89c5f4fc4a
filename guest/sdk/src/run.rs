//! The pure JSON-in, JSON-out entry point shared by every build of a module.
//!
//! Native tests, the plain wasm exports and the wasm-bindgen exports all go through
//! [`run_json`], so the three produce byte-for-byte the same output for the same
//! input. Input that is not a valid ABI v1 snapshot becomes an error [`Outcome`] that
//! names the problem; nothing here panics on bad input.

use crate::abi::{ABI_VERSION, Manifest, Outcome, RawSnapshot, Snapshot, SnapshotOf};
use serde::Deserialize;
use serde_json::error::Category;

/// Why a snapshot could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not JSON at all.
    #[error("snapshot is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The snapshot declares another ABI version.
    #[error("snapshot has abi {found}, but this module implements abi {ABI_VERSION}")]
    WrongAbi {
        /// The version the snapshot declared.
        found: u64,
    },
    /// The JSON does not have the shape of an ABI v1 snapshot.
    #[error("snapshot does not match abi {ABI_VERSION}: {0}")]
    Invalid(#[source] serde_json::Error),
}

/// Decodes an ABI v1 snapshot, telling malformed JSON, a wrong ABI version and a wrong
/// shape apart.
pub fn decode_snapshot(input: &[u8]) -> Result<Snapshot, SnapshotError> {
    match serde_json::from_slice::<Snapshot>(input) {
        Ok(snapshot) if snapshot.abi == ABI_VERSION => Ok(snapshot),
        Ok(snapshot) => Err(SnapshotError::WrongAbi { found: snapshot.abi.into() }),
        Err(err) if matches!(err.classify(), Category::Syntax | Category::Eof | Category::Io) => {
            Err(SnapshotError::NotJson(err))
        }
        Err(err) => {
            // A snapshot of another ABI may have another shape; say so rather than
            // report the first field that differs.
            #[derive(Deserialize)]
            struct AbiOnly {
                abi: Option<u64>,
            }
            match serde_json::from_slice::<AbiOnly>(input) {
                Ok(AbiOnly { abi: Some(found) }) if found != u64::from(ABI_VERSION) => {
                    Err(SnapshotError::WrongAbi { found })
                }
                _ => Err(SnapshotError::Invalid(err)),
            }
        }
    }
}

/// Decodes an ABI v1 snapshot without parsing its objects: `object` and each of
/// `related` stay borrowed, unparsed JSON ([`RawSnapshot`]). Errors are the same as
/// [`decode_snapshot`]'s for the same input.
pub fn decode_raw_snapshot(input: &[u8]) -> Result<RawSnapshot<'_>, SnapshotError> {
    decode_snapshot_of(input)
}

/// Decodes an ABI v1 snapshot whose objects decode as the module's own types
/// ([`SnapshotOf`]), in one pass over the input. Malformed JSON and a wrong ABI
/// version give the same errors as [`decode_snapshot`]; a document that is an ABI v1
/// snapshot but whose objects `O` or `R` reject gives [`SnapshotError::Invalid`].
pub fn decode_snapshot_of<'a, O, R>(input: &'a [u8]) -> Result<SnapshotOf<'a, O, R>, SnapshotError>
where
    O: Deserialize<'a>,
    R: Deserialize<'a>,
{
    match serde_json::from_slice::<SnapshotOf<'a, O, R>>(input) {
        Ok(snapshot) if snapshot.abi == ABI_VERSION => Ok(snapshot),
        Ok(snapshot) => Err(SnapshotError::WrongAbi { found: snapshot.abi.into() }),
        // Classified as `decode_snapshot` does, so that every decoder accepts and
        // rejects the same documents for the same reasons.
        Err(typed) => match decode_snapshot(input) {
            Err(err) => Err(err),
            Ok(_) => Err(SnapshotError::Invalid(typed)),
        },
    }
}

/// Runs `reconcile` on a JSON snapshot and returns the JSON outcome.
///
/// A snapshot that does not decode gives a non-retryable error outcome: the same
/// input would fail the same way again.
pub fn run_json(input: &[u8], reconcile: fn(Snapshot) -> Outcome) -> String {
    let outcome = match decode_snapshot(input) {
        Ok(snapshot) => reconcile(snapshot),
        Err(err) => Outcome::error(err.to_string(), false),
    };
    encode(&outcome)
}

/// [`run_json`] for modules that decode the snapshot's objects themselves
/// ([`RawSnapshot`], or any [`SnapshotOf`]): same errors, same encoding.
pub fn run_json_raw<'a, O, R>(
    input: &'a [u8],
    reconcile: impl FnOnce(SnapshotOf<'a, O, R>) -> Outcome,
) -> String
where
    O: Deserialize<'a>,
    R: Deserialize<'a>,
{
    let outcome = match decode_snapshot_of(input) {
        Ok(snapshot) => reconcile(snapshot),
        Err(err) => Outcome::error(err.to_string(), false),
    };
    encode(&outcome)
}

/// The manifest as JSON.
pub fn manifest_json(manifest: fn() -> Manifest) -> String {
    encode(&manifest())
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    // Serializing these types cannot fail: they hold only strings, numbers and JSON
    // values with string keys. Should it ever, an error outcome still goes out.
    serde_json::to_string(value).unwrap_or_else(|err| {
        let message = format!("module could not encode its output: {err}");
        serde_json::json!({ "error": { "message": message, "retryable": false } }).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Action;

    fn echo(snapshot: Snapshot) -> Outcome {
        Outcome::actions(vec![Action::PatchStatus { status: snapshot.object }])
    }

    fn run(input: &str) -> String {
        run_json(input.as_bytes(), echo)
    }

    #[test]
    fn valid_snapshot_reaches_reconcile() {
        let out = run(r#"{"abi":1,"now":"2026-11-26T12:00:00Z","object":{"a":1}}"#);
        assert_eq!(out, r#"{"actions":[{"op":"patchStatus","status":{"a":1}}]}"#);
    }

    fn echo_raw(snapshot: RawSnapshot<'_>) -> Outcome {
        let object = serde_json::from_str(snapshot.object.get()).unwrap_or_default();
        Outcome::actions(vec![Action::PatchStatus { status: object }])
    }

    #[test]
    fn the_raw_decoder_agrees_with_the_owned_one() {
        let inputs = [
            r#"{"abi":1,"now":"2026-11-26T12:00:00Z","object":{"a":1}}"#,
            r#"{"abi":1,"now":"x","object":{"b":[1,{"c":"\u00e9"}]},"related":[{"k":1},[2]],
                "required":[{"apiVersion":"v1","kind":"Secret","name":"s","object":null}],
                "lastFailure":{"message":"m","attempts":1}}"#,
            "not json",
            "",
            r#"{"abi":1,"now":"x","object":{}"#,
            r#"{"abi":2,"now":"x","object":{}}"#,
            r#"{"abi":7,"something":"else"}"#,
            r#"{"abi":1,"now":"x"}"#,
            r#"{"abi":1,"object":{}}"#,
            r#"[1,2]"#,
            r#"{"abi":1,"now":"x","object":{},"extra":1}"#,
            r#"{"abi":1,"now":"x","object":{},"related":{}}"#,
            r#"{"abi":1,"now":"x","object":{},"required":[{"name":1}]}"#,
        ];
        for input in inputs {
            assert_eq!(run_json_raw(input.as_bytes(), echo_raw), run(input), "{input}");
        }
    }

    #[test]
    fn objects_decode_as_the_module_types_in_one_pass() {
        #[derive(Debug, Deserialize)]
        struct Name<'a> {
            #[serde(borrow)]
            name: &'a str,
        }
        let input =
            br#"{"abi":1,"now":"x","object":{"name":"p","x":[1]},"related":[{"name":"a"},{"name":"b"}]}"#;
        let snapshot = decode_snapshot_of::<Name<'_>, Name<'_>>(input).expect("decodes");
        assert_eq!(snapshot.object.name, "p");
        let names: Vec<&str> = snapshot.related.iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b"]);

        // A valid ABI v1 snapshot whose objects the module's types reject is invalid,
        // with serde's reason; other errors are classified as for any decoder.
        let rejected = br#"{"abi":1,"now":"x","object":{"name":7}}"#;
        let err = decode_snapshot_of::<Name<'_>, Name<'_>>(rejected).expect_err("rejected");
        assert!(matches!(err, SnapshotError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("invalid type: integer `7`"), "{err}");
        let wrong_abi = br#"{"abi":2,"now":"x","object":{"name":7}}"#;
        let err = decode_snapshot_of::<Name<'_>, Name<'_>>(wrong_abi).expect_err("rejected");
        assert!(matches!(err, SnapshotError::WrongAbi { found: 2 }), "{err}");
        let err = decode_snapshot_of::<Name<'_>, Name<'_>>(b"{").expect_err("rejected");
        assert!(matches!(err, SnapshotError::NotJson(_)), "{err}");
    }

    #[test]
    fn bad_snapshots_become_errors_that_name_the_problem() {
        let cases = [
            ("not json", "snapshot is not valid JSON"),
            ("", "snapshot is not valid JSON"),
            (r#"{"abi":1,"now":"x","object":{}"#, "snapshot is not valid JSON"),
            (r#"{"abi":2,"now":"x","object":{}}"#, "snapshot has abi 2"),
            (r#"{"abi":7,"something":"else"}"#, "snapshot has abi 7"),
            (r#"{"abi":1,"now":"x"}"#, "missing field `object`"),
            (r#"{"abi":1,"object":{}}"#, "missing field `now`"),
            (r#"[1,2]"#, "snapshot does not match abi 1"),
            (r#"{"abi":1,"now":"x","object":{},"extra":1}"#, "unknown field `extra`"),
        ];
        for (input, expected) in cases {
            let out: Outcome = serde_json::from_str(&run(input)).expect("outcome parses");
            match out {
                Outcome::Error(err) => {
                    assert!(
                        err.message.contains(expected),
                        "{input:?}: {:?} lacks {expected:?}",
                        err.message
                    );
                    assert!(!err.retryable, "{input:?}: a bad snapshot is not retryable");
                }
                other => panic!("{input:?}: expected an error, got {other:?}"),
            }
        }
    }
}
