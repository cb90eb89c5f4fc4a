//! `configmap-mirror`: a tiny ABI v1 reconcile module for the test kind `Mirror`
//! (`mirror.example.com/v1`, CRD in `tests/fixtures/mirrors.yaml`).
//!
//! It exists to prove that `wasm-operator` is generic: the same host runs it
//! unchanged. For each `Mirror` it keeps a ConfigMap `<name>-mirror` whose `data` is
//! the Mirror's `spec.data`, owned by the Mirror (controller ownerReference and the
//! label `mirror.example.com/name`), so the garbage collector removes it after the
//! Mirror. It exercises every part of the ABI:
//! - a finalizer, added before anything else, removed on deletion after a Normal
//!   event `Deleting`;
//! - `requires`: with `spec.secretName` set, the module asks for that Secret (a
//!   `digestOnly` read) and records the digest of its values in the ConfigMap's
//!   annotation `mirror.example.com/secret-digest`, so a Secret change rolls the
//!   ConfigMap without the value ever entering the sandbox;
//! - `delete`: any other ConfigMap carrying its label is deleted;
//! - `patchStatus` and `requeueAfterSeconds`.
//!
//! The reconcile is pure and idempotent: on a converged Mirror it returns no action
//! at all (it compares what it wants with what the snapshot shows).
#![forbid(unsafe_code)]

use reconcile_sdk::{
    Action, EventType, KindRef, Manifest, Outcome, PropagationPolicy, Requirement, Snapshot,
};
use serde_json::{Map, Value, json};

/// The Mirror's API version.
pub const API_VERSION: &str = "mirror.example.com/v1";
/// The owner label on every ConfigMap a Mirror owns.
pub const OWNER_LABEL: &str = "mirror.example.com/name";
/// The finalizer.
pub const FINALIZER: &str = "mirror.example.com/cleanup";
/// The annotation holding the digest of the referenced Secret's values.
pub const SECRET_DIGEST: &str = "mirror.example.com/secret-digest";
/// How often a converged Mirror is looked at again.
pub const RESYNC_SECONDS: u64 = 300;

fn kind(api_version: &str, kind: &str, plural: &str) -> KindRef {
    KindRef {
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
        optional: false,
        digest_only: false,
    }
}

/// The module's manifest.
pub fn manifest() -> Manifest {
    Manifest {
        abi: reconcile_sdk::ABI_VERSION,
        name: "configmap-mirror".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        primary: kind(API_VERSION, "Mirror", "mirrors"),
        related: if cfg!(feature = "services") {
            vec![kind("v1", "ConfigMap", "configmaps"), kind("v1", "Service", "services")]
        } else {
            vec![kind("v1", "ConfigMap", "configmaps")]
        },
        reads: vec![KindRef { digest_only: true, ..kind("v1", "Secret", "secrets") }],
        owner_label: OWNER_LABEL.into(),
        field_manager: "configmap-mirror".into(),
        finalizers: vec![FINALIZER.into()],
    }
}

/// The name of a Mirror's ConfigMap.
pub fn config_map_name(mirror: &str) -> String {
    format!("{mirror}-mirror")
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(key)).and_then(Value::as_str)
}

/// Reconciles one Mirror. Pure and idempotent.
pub fn reconcile(snapshot: Snapshot) -> Outcome {
    let mirror = &snapshot.object;
    let (Some(name), Some(uid)) =
        (str_at(mirror, &["metadata", "name"]), str_at(mirror, &["metadata", "uid"]))
    else {
        return Outcome::error("the Mirror has no metadata.name or metadata.uid", false);
    };
    let finalizers: Vec<&str> = mirror
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let has_finalizer = finalizers.contains(&FINALIZER);

    if mirror.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        if !has_finalizer {
            return Outcome::actions(Vec::new());
        }
        // The ConfigMap goes with the Mirror through its ownerReference.
        return Outcome::actions(vec![
            Action::Event {
                event_type: EventType::Normal,
                reason: "Deleting".into(),
                message: format!("Mirror {name} is being deleted"),
            },
            Action::RemoveFinalizer { finalizer: FINALIZER.into() },
        ]);
    }

    let mut actions = Vec::new();
    if !has_finalizer {
        actions.push(Action::AddFinalizer { finalizer: FINALIZER.into() });
    }

    let mut requires = Vec::new();
    let mut secret_digest = None;
    if let Some(secret) = str_at(mirror, &["spec", "secretName"]) {
        let requirement =
            Requirement { api_version: "v1".into(), kind: "Secret".into(), name: secret.into() };
        match snapshot.required.iter().find(|r| r.answers(&requirement)) {
            None => {
                // Ask first; the host answers and calls again before acting.
                return Outcome::Actions {
                    actions: Vec::new(),
                    requires: vec![requirement],
                    requeue_after_seconds: None,
                };
            }
            Some(answer) => {
                requires.push(requirement);
                secret_digest = Some(match &answer.object {
                    Some(secret) => digest_summary(secret),
                    None => "missing".to_owned(),
                });
            }
        }
    }

    let desired_name = config_map_name(name);
    let data = mirror.pointer("/spec/data").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let mut annotations = Map::new();
    if let Some(digest) = &secret_digest {
        annotations.insert(SECRET_DIGEST.into(), Value::String(digest.clone()));
    }
    let desired = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": desired_name,
            "labels": {OWNER_LABEL: name},
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": "Mirror", "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "data": data,
    });

    let mut current = None;
    let is_service = |o: &Value| str_at(o, &["kind"]) == Some("Service");
    let services = snapshot.related.iter().filter(|o| is_service(o)).count();
    for object in snapshot.related.iter().filter(|o| !is_service(o)) {
        match str_at(object, &["metadata", "name"]) {
            Some(n) if n == desired_name => current = Some(object),
            Some(other) => actions.push(Action::Delete {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: other.into(),
                propagation_policy: Some(PropagationPolicy::Background),
            }),
            None => {}
        }
    }
    if !converged(current, &desired) {
        actions.push(Action::Apply { object: desired });
    }

    let keys = data.as_object().map_or(0, Map::len);
    let mut status = json!({
        "observedGeneration": mirror.pointer("/metadata/generation").cloned().unwrap_or(Value::Null),
        "phase": "Ready",
        "configMap": desired_name,
        "keys": keys,
    });
    if cfg!(feature = "services") {
        status["services"] = json!(services);
    }
    if mirror.get("status") != Some(&status) {
        actions.push(Action::PatchStatus { status });
    }
    Outcome::Actions { actions, requires, requeue_after_seconds: Some(RESYNC_SECONDS) }
}

/// Whether the observed ConfigMap already has everything `desired` sets.
fn converged(current: Option<&Value>, desired: &Value) -> bool {
    let Some(current) = current else { return false };
    let data = |v: &Value| v.get("data").cloned().unwrap_or_else(|| json!({}));
    let annotation = |v: &Value| {
        v.pointer(&format!("/metadata/annotations/{}", SECRET_DIGEST.replace('/', "~1"))).cloned()
    };
    let controller_uid = |v: &Value| {
        v.pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|r| r.get("controller") == Some(&Value::Bool(true))))
            .and_then(|r| r.get("uid"))
            .cloned()
    };
    data(current) == data(desired)
        && annotation(current) == annotation(desired)
        && controller_uid(current) == controller_uid(desired)
}

/// One string standing for every value of a (digested) Secret: its sorted
/// `key=digest` pairs. The host has already replaced every value with its digest.
fn digest_summary(secret: &Value) -> String {
    let mut pairs: Vec<String> = secret
        .get("data")
        .and_then(Value::as_object)
        .map(|data| data.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    pairs.sort();
    // Label and annotation values have limits; the digest list stays short for a
    // test Secret, and a longer one is cut rather than rejected.
    let mut summary = pairs.join(",");
    summary.truncate(1024);
    summary
}

reconcile_sdk::export_module!(manifest = manifest, reconcile = reconcile);

#[cfg(test)]
mod tests {
    use super::*;
    use reconcile_sdk::RequiredObject;

    fn snapshot(object: Value, related: Vec<Value>, required: Vec<RequiredObject>) -> Snapshot {
        Snapshot { abi: 1, now: "2026-11-26T12:00:00Z".into(), object, related, required, last_failure: None }
    }

    fn mirror(extra: Value) -> Value {
        let mut m = json!({
            "apiVersion": API_VERSION, "kind": "Mirror",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u1", "generation": 1, "finalizers": [FINALIZER]},
            "spec": {"data": {"a": "1"}}
        });
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        m
    }

    fn ops(outcome: &Outcome) -> Vec<&'static str> {
        match outcome {
            Outcome::Actions { actions, .. } => actions.iter().map(Action::op).collect(),
            Outcome::Error(e) => panic!("error outcome: {e:?}"),
        }
    }

    #[test]
    fn a_new_mirror_gets_its_finalizer_first_then_its_config_map_and_status() {
        let mut object = mirror(json!({}));
        object["metadata"]["finalizers"] = json!([]);
        let outcome = reconcile(snapshot(object, Vec::new(), Vec::new()));
        assert_eq!(ops(&outcome), ["addFinalizer", "apply", "patchStatus"]);
    }

    #[test]
    fn a_converged_mirror_needs_no_action() {
        let status = json!({"observedGeneration": 1, "phase": "Ready", "configMap": "m-mirror", "keys": 1});
        let object = mirror(json!({"status": status}));
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "m-mirror", "labels": {OWNER_LABEL: "m"},
                "ownerReferences": [{"apiVersion": API_VERSION, "kind": "Mirror", "name": "m", "uid": "u1", "controller": true}]},
            "data": {"a": "1"}});
        let outcome = reconcile(snapshot(object, vec![cm], Vec::new()));
        assert_eq!(ops(&outcome), Vec::<&str>::new());
    }

    #[test]
    fn stray_config_maps_are_deleted() {
        let stray = json!({"metadata": {"name": "old"}});
        let outcome = reconcile(snapshot(mirror(json!({})), vec![stray], Vec::new()));
        assert_eq!(ops(&outcome), ["delete", "apply", "patchStatus"]);
    }

    #[test]
    fn deletion_removes_the_finalizer_after_an_event() {
        let object = mirror(json!({}));
        let mut deleting = object.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-11-26T12:00:00Z");
        assert_eq!(ops(&reconcile(snapshot(deleting, Vec::new(), Vec::new()))), ["event", "removeFinalizer"]);
    }

    #[test]
    fn a_secret_is_required_before_acting_and_its_digest_lands_in_the_annotation() {
        let object = mirror(json!({"spec": {"data": {}, "secretName": "s"}}));
        match reconcile(snapshot(object.clone(), Vec::new(), Vec::new())) {
            Outcome::Actions { actions, requires, .. } => {
                assert!(actions.is_empty());
                assert_eq!(requires.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        let answer = RequiredObject {
            api_version: "v1".into(),
            kind: "Secret".into(),
            name: "s".into(),
            object: Some(json!({"data": {"k": "sha256:ab"}})),
        };
        match reconcile(snapshot(object, Vec::new(), vec![answer])) {
            Outcome::Actions { actions, requires, .. } => {
                assert_eq!(requires.len(), 1);
                let applied = actions.iter().find_map(|a| match a {
                    Action::Apply { object } => Some(object.clone()),
                    _ => None,
                });
                let applied = applied.expect("an apply");
                assert_eq!(applied["metadata"]["annotations"][SECRET_DIGEST], "k=sha256:ab");
            }
            other => panic!("{other:?}"),
        }
    }
}
