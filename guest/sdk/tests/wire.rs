//! The documents of docs/abi.md decode into the ABI types and encode back unchanged,
//! and outcomes a module could forge are refused with a clear reason.

use reconcile_sdk::{Action, EventType, Manifest, Outcome, PropagationPolicy, Snapshot};
use serde_json::{Value, json};

#[test]
fn design_manifest_round_trips() {
    let doc = json!({ "abi": 1, "name": "dittofs-reconciler", "version": "0.1.0",
      "primary": {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer", "plural": "dittoservers"},
      "related": [ {"apiVersion": "v1", "kind": "ConfigMap", "plural": "configmaps"},
                   {"apiVersion": "pgv2.percona.com/v2", "kind": "PerconaPGCluster",
                    "plural": "perconapgclusters", "optional": true} ],
      "reads": [ {"apiVersion": "v1", "kind": "Secret", "plural": "secrets", "digestOnly": true} ],
      "ownerLabel": "dittofs.dittofs.com/server",
      "fieldManager": "dittofs-operator",
      "finalizers": ["dittofs.dittofs.com/finalizer"] });
    let manifest: Manifest = serde_json::from_value(doc.clone()).expect("manifest decodes");
    assert!(manifest.related[1].optional && manifest.reads[0].digest_only);
    assert_eq!(serde_json::to_value(&manifest).expect("encodes"), doc);
}

#[test]
fn design_snapshot_round_trips() {
    let doc = json!({ "abi": 1, "now": "2026-11-26T12:00:00Z",
      "object": {"metadata": {"name": "a"}},
      "related": [ {"kind": "ConfigMap"} ],
      "required": [ {"apiVersion": "v1", "kind": "Secret", "name": "jwt", "object": null} ],
      "lastFailure": {"message": "boom", "attempts": 2} });
    let snapshot: Snapshot = serde_json::from_value(doc.clone()).expect("snapshot decodes");
    assert_eq!(snapshot.required[0].object, None);
    assert_eq!(serde_json::to_value(&snapshot).expect("encodes"), doc);
}

#[test]
fn every_action_round_trips() {
    let actions = json!([
        {"op": "addFinalizer",    "finalizer": "dittofs.dittofs.com/finalizer"},
        {"op": "removeFinalizer", "finalizer": "dittofs.dittofs.com/finalizer"},
        {"op": "apply",  "object": {"kind": "ConfigMap"}},
        {"op": "delete", "apiVersion": "v1", "kind": "Service", "name": "x-metrics", "propagationPolicy": "Background"},
        {"op": "orphan", "apiVersion": "pgv2.percona.com/v2", "kind": "PerconaPGCluster", "name": "x-postgres"},
        {"op": "patchStatus", "status": {"phase": "Running"}},
        {"op": "event", "eventType": "Normal", "reason": "PerconaOrphaned", "message": "kept"}
    ]);
    let doc = json!({"actions": actions, "requires": [{"apiVersion": "v1", "kind": "Secret", "name": "jwt"}],
                     "requeueAfterSeconds": 30});
    let outcome: Outcome = serde_json::from_value(doc.clone()).expect("outcome decodes");
    let Outcome::Actions { actions, requires, requeue_after_seconds } = &outcome else {
        panic!("not actions")
    };
    assert_eq!(actions.len(), 7);
    assert_eq!(requires.len(), 1);
    assert_eq!(*requeue_after_seconds, Some(30));
    assert!(matches!(
        &actions[3],
        Action::Delete { propagation_policy: Some(PropagationPolicy::Background), .. }
    ));
    assert!(matches!(&actions[6], Action::Event { event_type: EventType::Normal, .. }));
    assert_eq!(serde_json::to_value(&outcome).expect("encodes"), doc);
}

#[test]
fn error_outcome_round_trips() {
    let doc = json!({"error": {"message": "spec.storage: missing field", "retryable": true}});
    let outcome: Outcome = serde_json::from_value(doc.clone()).expect("decodes");
    assert_eq!(outcome, Outcome::error("spec.storage: missing field", true));
    assert_eq!(serde_json::to_value(&outcome).expect("encodes"), doc);
}

#[test]
fn forged_outcomes_are_refused() {
    let cases: [(Value, &str); 6] = [
        (json!({}), "must carry `actions`"),
        (json!({"actions": [], "error": {"message": "m", "retryable": false}}), "must not also carry"),
        (json!({"actions": [{"op": "exec", "command": "rm"}]}), "unknown variant `exec`"),
        (
            json!({"actions": [{"op": "apply", "object": {}, "namespace": "kube-system"}]}),
            "unknown field `namespace`",
        ),
        (json!({"actions": [], "sideChannel": 1}), "unknown field `sideChannel`"),
        (
            json!({"actions": [{"op": "event", "eventType": "Fatal", "reason": "r", "message": "m"}]}),
            "unknown variant `Fatal`",
        ),
    ];
    for (doc, expected) in cases {
        let err = serde_json::from_value::<Outcome>(doc.clone()).expect_err("must be refused");
        assert!(err.to_string().contains(expected), "{doc}: {err} lacks {expected:?}");
    }
}
