//! Building the ABI v1 snapshot of one primary from the watch caches.
//!
//! Guarantees:
//! - objects appear as the API returns them (with `apiVersion` and `kind` filled in
//!   where a list omitted them), minus `metadata.managedFields`, which is bookkeeping
//!   of the API server that no pure reconcile needs and that would only bloat the
//!   module's input;
//! - `related` holds exactly the objects associated with the primary, read through the
//!   association index (never a scan of the cache), in a stable order;
//! - objects of a `digestOnly` kind carry `sha256:<hex>` digests instead of their
//!   `data`/`stringData`/`binaryData` values and lose the
//!   `kubectl.kubernetes.io/last-applied-configuration` annotation (which repeats the
//!   values), so secret values never enter the sandbox;
//! - `now` is the host's clock in RFC 3339 UTC, whole seconds.

use reconcile_sdk::{ABI_VERSION, KindRef, LastFailure, RequiredObject, Snapshot};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The annotation `kubectl apply` uses to remember the whole applied object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object as the snapshot shows it: `obj` (a serialized `DynamicObject` or any
/// API object), with `apiVersion`/`kind` set from `kind` when missing, without
/// managed fields, and digested if `kind` is `digestOnly`.
pub fn object_value(mut obj: Value, kind: &KindRef) -> Value {
    if let Some(map) = obj.as_object_mut() {
        map.entry("apiVersion").or_insert_with(|| Value::String(kind.api_version.clone()));
        map.entry("kind").or_insert_with(|| Value::String(kind.kind.clone()));
        if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
    }
    if kind.digest_only {
        digest_values(&mut obj, kind);
    }
    obj
}

/// Replaces every value under `data`, `stringData` and `binaryData` with
/// `sha256:<hex>` of the value, and drops the last-applied annotation.
///
/// The digest is of the decoded bytes wherever the API encodes them in base64 (a core
/// Secret's `data`, any `binaryData`), so it equals the digest of the secret as a user
/// wrote it and does not change with the encoding. Other values are hashed as their
/// UTF-8 string, or as their JSON text when they are not strings.
pub fn digest_values(obj: &mut Value, kind: &KindRef) {
    let Some(map) = obj.as_object_mut() else { return };
    let core_secret = kind.api_version == "v1" && kind.kind == "Secret";
    for (field, base64) in [("data", core_secret), ("stringData", false), ("binaryData", true)] {
        if let Some(values) = map.get_mut(field).and_then(Value::as_object_mut) {
            for value in values.values_mut() {
                *value = Value::String(digest_of(value, base64));
            }
        }
    }
    if let Some(annotations) =
        map.get_mut("metadata").and_then(|m| m.get_mut("annotations")).and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED);
    }
}

fn digest_of(value: &Value, base64: bool) -> String {
    let bytes = match value {
        Value::String(text) if base64 => {
            // k8s-openapi's ByteString is the API's own base64 decoding; a value that
            // does not decode is hashed as it stands rather than leaked.
            serde_json::from_value::<k8s_openapi::ByteString>(value.clone())
                .map(|b| b.0)
                .unwrap_or_else(|_| text.as_bytes().to_vec())
        }
        Value::String(text) => text.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    };
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

/// The snapshot's `now`: `time` in RFC 3339 UTC, whole seconds.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let seconds = jiff::Timestamp::try_from(time).map(|t| t.as_second()).unwrap_or_default();
    jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH).to_string()
}

/// Sorts objects by kind and name so that the same cluster state always gives the same
/// snapshot bytes.
pub fn sort_objects(objects: &mut [Value]) {
    fn key(v: &Value) -> (String, String, String) {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        (s(v.get("apiVersion")), s(v.get("kind")), s(v.get("metadata").and_then(|m| m.get("name"))))
    }
    objects.sort_by_key(key);
}

/// Assembles a snapshot.
pub fn build(
    now: String,
    object: Value,
    related: Vec<Value>,
    required: Vec<RequiredObject>,
    last_failure: Option<LastFailure>,
) -> Snapshot {
    Snapshot { abi: ABI_VERSION, now, object, related, required, last_failure }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(api_version: &str, kind: &str, digest_only: bool) -> KindRef {
        KindRef {
            api_version: api_version.into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
            optional: false,
            digest_only,
        }
    }

    fn sha(text: &str) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
    }

    #[test]
    fn secret_values_become_digests_of_the_decoded_value() {
        let secret = json!({
            "metadata": {"name": "jwt", "annotations": {
                LAST_APPLIED: "{\"data\":{\"token\":\"c2VjcmV0\"}}", "keep": "me"}},
            "data": {"token": "c2VjcmV0", "broken": "%%%"},
            "stringData": {"plain": "hunter2"},
            "type": "Opaque"
        });
        let out = object_value(secret, &kind("v1", "Secret", true));
        assert_eq!(out["data"]["token"], json!(sha("secret")));
        assert_eq!(out["data"]["broken"], json!(sha("%%%")));
        assert_eq!(out["stringData"]["plain"], json!(sha("hunter2")));
        assert_eq!(out["metadata"]["annotations"], json!({"keep": "me"}));
        assert_eq!(out["apiVersion"], "v1");
        assert_eq!(out["kind"], "Secret");
        assert_eq!(out["type"], "Opaque");
        assert!(!out.to_string().contains("c2VjcmV0") && !out.to_string().contains("hunter2"));
    }

    #[test]
    fn other_digest_only_kinds_hash_the_text_and_binary_data_decoded() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "secret", "n": 1}, "binaryData": {"b": "c2VjcmV0"}});
        let out = object_value(cm, &kind("v1", "ConfigMap", true));
        assert_eq!(out["data"]["a"], json!(sha("secret")));
        assert_eq!(out["data"]["n"], json!(sha("1")));
        assert_eq!(out["binaryData"]["b"], json!(sha("secret")));
    }

    #[test]
    fn plain_kinds_keep_their_values_but_lose_managed_fields() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "managedFields": [{"manager": "x"}]}, "data": {"a": "b"}});
        let out = object_value(cm, &kind("v1", "ConfigMap", false));
        assert_eq!(
            out,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn now_is_rfc3339_utc_whole_seconds() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_694_400_250);
        assert_eq!(rfc3339(t), "2026-11-26T12:00:00Z");
    }

    #[test]
    fn snapshots_are_ordered_and_serialize_as_abi_v1() {
        let mut related = vec![
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
        ];
        sort_objects(&mut related);
        let names: Vec<_> =
            related.iter().map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"])).collect();
        assert_eq!(names, ["\"ConfigMap\"/\"a\"", "\"ConfigMap\"/\"b\"", "\"Service\"/\"a\""]);
        let snapshot = build(
            "2026-11-26T12:00:00Z".into(),
            json!({"metadata": {"name": "p"}}),
            related,
            Vec::new(),
            Some(LastFailure { message: "boom".into(), attempts: 2 }),
        );
        let text = serde_json::to_value(&snapshot).expect("serializes");
        assert_eq!(text["abi"], 1);
        assert_eq!(text["lastFailure"], json!({"message": "boom", "attempts": 2}));
        let back = reconcile_sdk::decode_snapshot(text.to_string().as_bytes()).expect("decodes");
        assert_eq!(back, snapshot);
    }
}
