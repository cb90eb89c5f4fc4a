//! The module against a fake cluster (see `common`): what it creates, that it
//! converges and then stays quiet (idempotence), and the deletion lifecycle.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use dittofs_reconciler::names::{APPLIED_HASH_ANNOTATION, FINALIZER, OWNER_LABEL};
use reconcile_sdk::{Action, LastFailure, Outcome};
use serde_json::{Value, json};

fn with_jwt(mut spec: Value) -> Value {
    spec["identity"] = json!({"jwt": {"secretRef": {"name": "jwt", "key": "secret"}}});
    spec
}

fn cluster(spec: Value) -> Cluster {
    let mut cluster = Cluster::new(spec);
    cluster.secrets.insert("jwt".into(), secret("jwt", &["secret"]));
    cluster.secrets.insert(
        "nas-postgres-pguser-dittofs".into(),
        secret("nas-postgres-pguser-dittofs", &["host", "port", "user", "password", "dbname", "uri"]),
    );
    cluster
}

/// Specs of the idempotence table, and whether Percona gates the StatefulSet.
fn specs() -> Vec<(&'static str, Value, bool)> {
    vec![
        ("plain", plain(), false),
        ("metrics", json!({"storage": {"metadataSize": "10Gi"}, "metrics": {"enabled": true}}), false),
        ("percona", json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true}}), true),
        ("smb", json!({"storage": {"metadataSize": "10Gi"}, "smb": {"enabled": true, "port": 10445}}), false),
        (
            "everything",
            json!({"storage": {"metadataSize": "10Gi", "contentSize": "100Gi"}, "metrics": {"enabled": true},
                "smb": {"enabled": true}, "s3": {"credentialsSecretRef": {"secretName": "jwt"}},
                "service": {"type": "NodePort", "annotations": {"a": "b"}},
                "percona": {"enabled": true, "deleteWithServer": true}}),
            true,
        ),
    ]
}

#[test]
fn first_outcome_is_the_finalizer_alone() {
    for (name, spec, _) in specs() {
        let mut cluster = cluster(with_jwt(spec));
        let outcome = cluster.reconcile();
        assert_eq!(ops(&outcome), ["addFinalizer"], "{name}");
        assert_eq!(cluster.primary()["metadata"]["finalizers"], json!([FINALIZER]));
    }
}

#[test]
fn reconciling_what_was_applied_gives_no_action() {
    for (name, spec, percona) in specs() {
        let mut cluster = cluster(with_jwt(spec));
        cluster.reconcile(); // the finalizer
        let created = cluster.reconcile();
        assert!(ops(&created).contains(&"patchStatus".to_string()), "{name}: {:?}", ops(&created));
        if percona {
            // The server waits for its database.
            assert!(applied(&created, "StatefulSet", NAME).is_none(), "{name}");
            assert!(applied(&created, "PerconaPGCluster", "nas-postgres").is_some(), "{name}");
            assert_eq!(
                ops(&cluster.reconcile()),
                Vec::<String>::new(),
                "{name}: not idempotent while waiting"
            );
            cluster.percona_state("ready");
            let started = cluster.reconcile();
            assert!(applied(&started, "StatefulSet", NAME).is_some(), "{name}: {:?}", ops(&started));
        }
        // Fed back as the API server returns it (uid, resourceVersion, defaults): quiet.
        assert_eq!(ops(&cluster.reconcile()), Vec::<String>::new(), "{name}: not idempotent");

        // Pods become ready: one status write, then quiet again.
        cluster.statefulset_ready();
        let ready = cluster.reconcile();
        assert_eq!(ops(&ready), ["patchStatus"], "{name}");
        assert_eq!(cluster.primary()["status"]["phase"], "Running", "{name}");
        assert_eq!(ops(&cluster.reconcile()), Vec::<String>::new(), "{name}: not idempotent once running");
    }
}

#[test]
fn hand_edits_of_replicas_containers_and_config_are_reverted() {
    type Edit = fn(&mut Cluster);
    let edits: [(&str, &str, &str, Edit); 5] = [
        ("kubectl scale", "StatefulSet", NAME, |c| {
            c.object_mut("StatefulSet", NAME)["spec"]["replicas"] = 3.into()
        }),
        ("kubectl set image", "StatefulSet", NAME, |c| {
            c.object_mut("StatefulSet", NAME)["spec"]["template"]["spec"]["containers"][0]["image"] =
                "attacker/dittofs:evil".into();
        }),
        ("a renamed container", "StatefulSet", NAME, |c| {
            c.object_mut("StatefulSet", NAME)["spec"]["template"]["spec"]["containers"][0]["name"] =
                "other".into();
        }),
        ("kubectl edit configmap", "ConfigMap", "nas-config", |c| {
            c.object_mut("ConfigMap", "nas-config")["data"]["config.yaml"] =
                "logging: {level: DEBUG}\n".into();
        }),
        ("a deleted configuration key", "ConfigMap", "nas-config", |c| {
            c.object_mut("ConfigMap", "nas-config")["data"] = json!({});
        }),
    ];
    for (what, kind, name, edit) in edits {
        let mut cluster = cluster(with_jwt(plain()));
        cluster.converge();
        cluster.statefulset_ready();
        cluster.converge();
        // The edit keeps the applied-hash annotation, as kubectl does.
        edit(&mut cluster);
        let outcome = cluster.reconcile();
        assert!(applied(&outcome, kind, name).is_some(), "{what}: {:?}", ops(&outcome));
        let applies = ops(&outcome).iter().filter(|op| op.starts_with("apply ")).count();
        assert_eq!(applies, 1, "{what}: only the edited object is applied");
        assert_eq!(cluster.converge(), 0, "{what}: quiet once reverted");
    }
    // Other fields, and what other writers add beside the module's (which applying
    // again could not remove), are not compared: no apply.
    let mut cluster = cluster(with_jwt(plain()));
    cluster.converge();
    cluster.object_mut("StatefulSet", NAME)["spec"]["revisionHistoryLimit"] = 3.into();
    let containers = &mut cluster.object_mut("StatefulSet", NAME)["spec"]["template"]["spec"]["containers"];
    containers.as_array_mut().expect("containers").insert(0, json!({"name": "sidecar", "image": "proxy:1"}));
    cluster.object_mut("ConfigMap", "nas-config")["data"]["other.yaml"] = "x: 1".into();
    assert_eq!(ops(&cluster.reconcile()), Vec::<String>::new());
}

#[test]
fn every_owned_object_is_labelled_and_owned() {
    for (name, spec, _) in specs() {
        let mut cluster = cluster(with_jwt(spec));
        cluster.converge();
        if cluster.object("PerconaPGCluster", "nas-postgres").is_some() {
            cluster.percona_state("ready");
            cluster.converge();
        }
        let delete_with_server = cluster.primary()["spec"]["percona"]["deleteWithServer"] == true;
        assert!(cluster.objects.len() >= 5, "{name}");
        for ((kind, object_name), object) in &cluster.objects {
            assert_eq!(object["metadata"]["labels"][OWNER_LABEL], NAME, "{name}: {kind} {object_name}");
            assert_eq!(object["metadata"]["namespace"], NAMESPACE, "{name}: {kind} {object_name}");
            let refs = object["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
            let expected = if kind == "PerconaPGCluster" {
                if delete_with_server { 1 } else { 0 }
            } else {
                assert!(object["metadata"]["annotations"][APPLIED_HASH_ANNOTATION].is_string());
                1
            };
            assert_eq!(refs.len(), expected, "{name}: {kind} {object_name}");
            for owner in refs {
                assert_eq!(
                    owner,
                    json!({"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer", "name": NAME,
                        "uid": UID, "controller": true, "blockOwnerDeletion": true})
                );
            }
        }
    }
}

#[test]
fn spec_changes_reach_the_objects_then_settle() {
    let mut cluster =
        cluster(with_jwt(json!({"storage": {"metadataSize": "10Gi"}, "metrics": {"enabled": true}})));
    cluster.converge();
    assert!(cluster.object("Service", "nas-metrics").is_some());
    let hash = |cluster: &Cluster| {
        cluster.object("StatefulSet", NAME).expect("sts")["spec"]["template"]["metadata"]["annotations"]
            ["dittofs.dittofs.com/config-hash"]
            .clone()
    };
    let before = hash(&cluster);

    // Metrics off: the Service goes, the config and the pod change.
    cluster.edit_spec(|spec| spec["metrics"]["enabled"] = false.into());
    let outcome = cluster.reconcile();
    assert!(ops(&outcome).contains(&"delete Service nas-metrics".to_string()), "{:?}", ops(&outcome));
    assert!(cluster.object("Service", "nas-metrics").is_none());
    assert_ne!(hash(&cluster), before);
    assert_eq!(cluster.converge(), 0);

    // A rotated Secret rolls the pod, and nothing else changes.
    let before = hash(&cluster);
    cluster.secrets.insert("jwt".into(), secret("jwt", &["secret", "next"]));
    let outcome = cluster.reconcile();
    assert_eq!(ops(&outcome), ["apply StatefulSet nas", "patchStatus"]);
    assert_ne!(hash(&cluster), before);
    assert_eq!(cluster.primary()["status"]["configHash"], hash(&cluster));
    assert_eq!(cluster.converge(), 0);

    // Stopping: replicas 0, phase Stopped.
    cluster.statefulset_ready();
    cluster.edit_spec(|spec| spec["replicas"] = 0.into());
    cluster.converge();
    cluster.statefulset_ready();
    cluster.converge();
    assert_eq!(cluster.object("StatefulSet", NAME).expect("sts")["spec"]["replicas"], 0);
    assert_eq!(cluster.primary()["status"]["phase"], "Stopped");
}

#[test]
fn claim_templates_of_an_existing_statefulset_are_kept() {
    let mut cluster = cluster(plain());
    cluster.converge();
    let claims = |cluster: &Cluster| {
        cluster.object("StatefulSet", NAME).expect("sts")["spec"]["volumeClaimTemplates"].clone()
    };
    let before = claims(&cluster);
    cluster.edit_spec(|spec| {
        spec["storage"]["metadataSize"] = "50Gi".into();
        spec["storage"]["contentSize"] = "1Ti".into();
    });
    let outcome = cluster.reconcile();
    let sts = applied(&outcome, "StatefulSet", NAME).expect("the pod still rolls (generation)");
    let sizes: Vec<_> = sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|c| (c["metadata"]["name"].clone(), c["spec"]["resources"]["requests"]["storage"].clone()))
        .collect();
    assert_eq!(sizes, [(json!("metadata"), json!("10Gi")), (json!("cache"), json!("5Gi"))]);
    // No mount for a claim the StatefulSet does not have.
    let mounts = &sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    assert!(!mounts.to_string().contains("/data/content"), "{mounts}");
    assert_eq!(claims(&cluster), before);
}

#[test]
fn percona_is_created_once_and_never_overwritten() {
    let mut cluster = cluster(json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true}}));
    cluster.converge();
    cluster.percona_state("ready");
    // A user tunes the cluster.
    cluster.object_mut("PerconaPGCluster", "nas-postgres")["spec"]["instances"][0]["replicas"] = 3.into();
    cluster.converge();
    cluster.edit_spec(|spec| spec["percona"]["replicas"] = 2.into());
    cluster.converge();
    assert_eq!(
        cluster.object("PerconaPGCluster", "nas-postgres").expect("cluster")["spec"]["instances"][0]["replicas"],
        3
    );
}

#[test]
fn delete_with_server_toggles_only_the_owner_reference() {
    let mut cluster = cluster(json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true}}));
    cluster.converge();
    cluster.percona_state("ready");
    cluster.object_mut("PerconaPGCluster", "nas-postgres")["spec"]["instances"][0]["replicas"] = 3.into();
    cluster.converge();
    let spec_before = cluster.object("PerconaPGCluster", "nas-postgres").expect("cluster")["spec"].clone();
    let refs = |cluster: &Cluster| {
        cluster.object("PerconaPGCluster", "nas-postgres").expect("cluster")["metadata"]["ownerReferences"]
            .clone()
    };
    assert!(refs(&cluster).is_null());

    cluster.edit_spec(|spec| spec["percona"]["deleteWithServer"] = true.into());
    let outcome = cluster.reconcile();
    let adopted = applied(&outcome, "PerconaPGCluster", "nas-postgres").expect("adopted by apply");
    // The observed spec verbatim, so that server-side apply removes nothing.
    assert_eq!(adopted["spec"], spec_before);
    assert_eq!(refs(&cluster).as_array().map(Vec::len), Some(1));
    assert_eq!(cluster.object("PerconaPGCluster", "nas-postgres").expect("cluster")["spec"], spec_before);
    assert_eq!(cluster.converge(), 0);

    cluster.edit_spec(|spec| spec["percona"]["deleteWithServer"] = false.into());
    let outcome = cluster.reconcile();
    assert!(
        ops(&outcome).contains(&"orphan PerconaPGCluster nas-postgres".to_string()),
        "{:?}",
        ops(&outcome)
    );
    assert!(applied(&outcome, "PerconaPGCluster", "nas-postgres").is_none());
    assert_eq!(refs(&cluster), json!([]));
    assert_eq!(cluster.object("PerconaPGCluster", "nas-postgres").expect("cluster")["spec"], spec_before);

    // Disabling Percona leaves the cluster, and without an owner reference.
    cluster.edit_spec(|spec| {
        spec["percona"]["deleteWithServer"] = true.into();
    });
    cluster.converge();
    cluster.edit_spec(|spec| spec["percona"]["enabled"] = false.into());
    cluster.converge();
    assert_eq!(refs(&cluster), json!([]));
    assert!(cluster.primary()["status"]["perconaClusterName"].is_null());
}

fn deleting(spec: Value) -> Cluster {
    let mut cluster = cluster(spec);
    cluster.converge();
    if cluster.object("PerconaPGCluster", "nas-postgres").is_some() {
        cluster.percona_state("ready");
        cluster.converge();
    }
    cluster.delete_primary();
    cluster
}

#[test]
fn deletion_orphans_percona_by_default_and_the_database_survives() {
    let mut cluster = deleting(json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true}}));
    let outcome = cluster.reconcile();
    assert_eq!(
        ops(&outcome),
        [
            "patchStatus",
            "event Deleting",
            "orphan PerconaPGCluster nas-postgres",
            "event PerconaOrphaned",
            "removeFinalizer"
        ]
    );
    assert_eq!(status_of(&outcome).expect("status")["phase"], "Deleting");
    assert!(cluster.primary.is_none(), "the finalizer was the last one");
    // The garbage collector took everything that had an owner reference: only the
    // database is left.
    let left: Vec<_> = cluster.objects.keys().cloned().collect();
    assert_eq!(left, [("PerconaPGCluster".to_string(), "nas-postgres".to_string())]);
}

#[test]
fn deletion_deletes_percona_with_delete_with_server() {
    let mut cluster = deleting(
        json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true, "deleteWithServer": true}}),
    );
    let outcome = cluster.reconcile();
    assert_eq!(
        ops(&outcome),
        [
            "patchStatus",
            "event Deleting",
            "delete PerconaPGCluster nas-postgres",
            "event PerconaDeleted",
            "removeFinalizer"
        ]
    );
    let Outcome::Actions { actions, .. } = &outcome else { unreachable!() };
    assert!(matches!(
        &actions[2],
        Action::Delete { propagation_policy: Some(reconcile_sdk::PropagationPolicy::Background), .. }
    ));
    assert!(cluster.primary.is_none());
    assert!(cluster.objects.is_empty());
    let warning = cluster.events.iter().find(|(reason, _)| reason == "PerconaDeleted").expect("event");
    assert!(warning.1.contains("nas-postgres"));
}

#[test]
fn deleting_is_written_once_and_failures_retry_every_five_seconds() {
    let cluster = deleting(json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true}}));
    // The host ran the status patch and the event, then the orphan failed.
    let mut snapshot = cluster.snapshot(Vec::new());
    snapshot.object["status"]["phase"] = "Deleting".into();
    snapshot.last_failure = Some(LastFailure { message: "orphan: conflict".into(), attempts: 1 });
    snapshot.now = "2026-11-26T12:00:05Z".into();
    let outcome = dittofs_reconciler::reconcile(snapshot.clone());
    assert_eq!(
        ops(&outcome),
        ["orphan PerconaPGCluster nas-postgres", "event PerconaOrphaned", "removeFinalizer"]
    );
    let Outcome::Actions { requeue_after_seconds, .. } = outcome else { unreachable!() };
    assert_eq!(requeue_after_seconds, Some(5));

    // Without a failure, no requeue.
    snapshot.last_failure = None;
    let Outcome::Actions { requeue_after_seconds, .. } = dittofs_reconciler::reconcile(snapshot) else {
        unreachable!()
    };
    assert_eq!(requeue_after_seconds, None);
}

#[test]
fn the_finalizer_is_removed_last_and_after_60_seconds_anyway() {
    let cluster = deleting(json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true}}));
    for (now, expected) in [
        ("2026-11-26T12:00:00Z", None),
        ("2026-11-26T12:00:59Z", None),
        ("2026-11-26T12:01:00Z", None),
        ("2026-11-26T12:01:01Z", Some(["removeFinalizer", "event CleanupTimeout"])),
        ("2026-11-26T13:00:00Z", Some(["removeFinalizer", "event CleanupTimeout"])),
    ] {
        let mut snapshot = cluster.snapshot(Vec::new());
        snapshot.now = now.into();
        snapshot.last_failure = Some(LastFailure { message: "boom".into(), attempts: 7 });
        let outcome = dittofs_reconciler::reconcile(snapshot);
        match expected {
            Some(expected) => assert_eq!(ops(&outcome), expected, "{now}"),
            None => assert_eq!(ops(&outcome).last().map(String::as_str), Some("removeFinalizer"), "{now}"),
        }
    }
}

#[test]
fn a_deleted_server_without_the_finalizer_gets_no_action() {
    let cluster = deleting(plain());
    for finalizers in [json!([]), json!(["someone.else/keep"])] {
        let mut snapshot = cluster.snapshot(Vec::new());
        snapshot.object["metadata"]["finalizers"] = finalizers;
        assert_eq!(ops(&dittofs_reconciler::reconcile(snapshot)), Vec::<String>::new());
    }
}

#[test]
fn without_delete_with_server_the_database_never_has_an_owner_reference() {
    // Foreground deletion cascades to anything with a blocking owner reference while
    // finalizers still run; so the cluster must never carry one.
    let mut cluster = cluster(json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true}}));
    for step in 0..6 {
        cluster.reconcile();
        if step == 2 {
            cluster.percona_state("ready");
        }
        if let Some(pg) = cluster.object("PerconaPGCluster", "nas-postgres") {
            assert!(pg["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty), "step {step}");
        }
    }
}

#[test]
fn a_server_recreated_with_the_same_name_reuses_the_kept_database() {
    let mut cluster = deleting(json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true}}));
    cluster.reconcile();
    assert!(cluster.primary.is_none());
    let kept = cluster.object("PerconaPGCluster", "nas-postgres").expect("kept").clone();
    let mut again = Cluster::new(json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true}}));
    again.secrets = cluster.secrets.clone();
    again.objects = cluster.objects.clone();
    again.converge();
    assert_eq!(again.object("PerconaPGCluster", "nas-postgres"), Some(&kept), "not touched");
    assert!(again.object("StatefulSet", NAME).is_some(), "the server started on the ready database");
}

#[test]
fn a_failing_percona_creation_is_reported_in_the_status_first() {
    // The host fails writes of an optional kind whose CRD is missing.
    let mut cluster = cluster(json!({"storage": {"metadataSize": "10Gi"}, "percona": {"enabled": true}}));
    cluster.reconcile();
    let first = cluster.reconcile();
    let order = ops(&first);
    let position = |op: &str| order.iter().position(|o| o == op).expect(op);
    assert!(position("apply ConfigMap nas-config") < position("apply PerconaPGCluster nas-postgres"));
    assert!(position("apply PerconaPGCluster nas-postgres") < position("patchStatus"));
    assert_eq!(status_of(&first).expect("status")["conditions"][1]["reason"], "PerconaNotReady");

    cluster.objects.remove(&("PerconaPGCluster".to_string(), "nas-postgres".to_string()));
    cluster.last_failure =
        Some(LastFailure { message: "perconapgclusters.pgv2.percona.com not installed".into(), attempts: 1 });
    let retry = cluster.reconcile();
    assert_eq!(ops(&retry), ["patchStatus", "apply PerconaPGCluster nas-postgres"]);
    let condition = &status_of(&retry).expect("status")["conditions"][1];
    assert_eq!(
        (condition["type"].as_str(), condition["reason"].as_str()),
        (Some("DatabaseReady"), Some("PerconaNotFound"))
    );
}
