//! Table-driven tests of the module's rules, one snapshot at a time: bad input, the
//! objects' contents, secrets, the config hash and the status.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use dittofs_reconciler::reconcile;
use reconcile_sdk::{Outcome, RequiredObject, run_json};
use serde_json::{Value, json};

/// A snapshot of `spec` with the finalizer, no owned object yet, and every Secret
/// the module asks for answered (as existing).
fn first(spec: Value) -> Outcome {
    let mut snapshot = snapshot(server(spec), Vec::new(), Vec::new());
    if let Outcome::Actions { requires, .. } = reconcile(snapshot.clone()) {
        snapshot.required = requires
            .into_iter()
            .map(|r| RequiredObject {
                object: Some(secret(&r.name, &["k"])),
                api_version: r.api_version,
                kind: r.kind,
                name: r.name,
            })
            .collect();
    }
    reconcile(snapshot)
}

fn error_message(outcome: Outcome) -> String {
    match outcome {
        Outcome::Error(err) => {
            assert!(!err.retryable, "{}: bad input is not retryable", err.message);
            err.message
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn bad_input_becomes_an_error_that_names_the_problem() {
    let valid = serde_json::to_string(&snapshot(server(plain()), vec![], vec![])).expect("encodes");
    let mut cases: Vec<(String, &str)> = vec![
        ("{\"abi\": 1, ".into(), "snapshot is not valid JSON"),
        ("\u{0}\u{1}binary".into(), "snapshot is not valid JSON"),
        (valid.replacen("\"abi\":1", "\"abi\":3", 1), "snapshot has abi 3"),
        (r#"{"abi":1,"now":"2026-11-26T12:00:00Z"}"#.into(), "missing field `object`"),
        (
            valid.replacen("2026-11-26T12:00:00Z", "noon", 1),
            "snapshot now \"noon\" is not an RFC 3339 timestamp",
        ),
    ];
    let mut edit = |edit: &dyn Fn(&mut Value), expected: &'static str| {
        let mut object = server(plain());
        edit(&mut object);
        cases.push((serde_json::to_string(&snapshot(object, vec![], vec![])).expect("encodes"), expected));
    };
    edit(
        &|o| o["spec"]["metrics"]["port"] = "9090".into(),
        "spec.metrics.port does not decode: invalid type: string",
    );
    edit(&|o| o["spec"]["storage"] = json!({}), "spec.storage does not decode: missing field `metadataSize`");
    edit(
        &|o| o["spec"]["service"]["type"] = "Ingress".into(),
        "spec.service.type does not decode: unknown variant `Ingress`",
    );
    edit(&|o| o["spec"]["percona"]["replicas"] = 1.5.into(), "spec.percona.replicas does not decode");
    edit(&|o| o["spec"]["securityContext"] = "root".into(), "spec.securityContext does not decode");
    edit(&|o| o["spec"] = Value::Null, "spec does not decode");
    edit(
        &|o| {
            o.as_object_mut().expect("object").remove("spec");
        },
        "object has no spec",
    );
    edit(&|o| o["metadata"] = json!({"name": "nas", "namespace": "files"}), "object has no metadata.uid");
    edit(
        &|o| o["metadata"]["deletionTimestamp"] = "soon".into(),
        "metadata.deletionTimestamp \"soon\" is not an RFC 3339",
    );
    edit(&|o| *o = json!([1, 2]), "object has no metadata");
    for (input, expected) in cases {
        // run_json is what every build's exports call.
        let output = run_json(input.as_bytes(), reconcile);
        let outcome: Outcome = serde_json::from_str(&output).expect("the output is an outcome");
        let message = error_message(outcome);
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
}

#[test]
fn an_unusable_spec_fails_without_applying_anything() {
    for (edit, field) in [
        (json!({"storage": {"metadataSize": "ten"}}), "spec.storage.metadataSize"),
        (json!({"storage": {"metadataSize": "1Gi"}, "nfsPort": 0}), "spec.nfsPort"),
        (
            json!({"storage": {"metadataSize": "1Gi"}, "controlPlane": {"port": 65536}}),
            "spec.controlPlane.port",
        ),
        (
            json!({"storage": {"metadataSize": "1Gi"}, "resources": {"limits": {"memory": "lots"}}}),
            "spec.resources.limits.memory",
        ),
    ] {
        let outcome = reconcile(snapshot(server(edit.clone()), vec![], vec![]));
        assert_eq!(ops(&outcome), ["patchStatus", "event InvalidSpec"], "{field}");
        let status = status_of(&outcome).expect("status");
        assert_eq!(status["phase"], "Failed");
        let ready = status["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("InvalidSpec"))
        );
        assert!(ready["message"].as_str().expect("message").contains(field), "{ready}");
        assert_eq!(ready["observedGeneration"], 1);

        // Written once: the same snapshot with that status gives nothing.
        let mut object = server(edit);
        object["status"] = status.clone();
        assert_eq!(ops(&reconcile(snapshot(object, vec![], vec![]))), Vec::<String>::new(), "{field}");
    }
}

#[test]
fn secrets_reach_the_pod_by_reference_only() {
    let outcome = first(json!({
        "storage": {"metadataSize": "1Gi"},
        "identity": {"jwt": {"secretRef": {"name": "sec-jwt", "key": "k-signing"}},
                     "admin": {"passwordSecretRef": {"name": "sec-admin", "key": "k-pw"}}},
        "database": {"postgresSecretRef": {"name": "sec-pg", "key": "k-dsn"}},
        "s3": {"credentialsSecretRef": {"secretName": "sec-s3", "endpointKey": "k-url"}, "region": "us-east-2"}
    }));
    let config = applied(&outcome, "ConfigMap", "nas-config").expect("configmap");
    let yaml = config["data"]["config.yaml"].as_str().expect("yaml");
    for secret_word in ["sec-", "k-", "password", "secret:", "sha256"] {
        assert!(!yaml.contains(secret_word), "config.yaml mentions {secret_word:?}:\n{yaml}");
    }
    assert!(yaml.contains("type: \"postgres\""));
    let sts = applied(&outcome, "StatefulSet", NAME).expect("statefulset");
    let env = &sts["spec"]["template"]["spec"]["containers"][0]["env"];
    let from = |name: &str| env.as_array().expect("env").iter().find(|e| e["name"] == name).cloned();
    let secret_ref = |name: &str| from(name).map(|e| e["valueFrom"]["secretKeyRef"].clone());
    assert_eq!(
        secret_ref("DITTOFS_CONTROLPLANE_SECRET"),
        Some(json!({"name": "sec-jwt", "key": "k-signing"}))
    );
    assert_eq!(
        secret_ref("DITTOFS_ADMIN_INITIAL_PASSWORD"),
        Some(json!({"name": "sec-admin", "key": "k-pw"}))
    );
    for (var, key) in [("HOST", "host"), ("DATABASE", "database"), ("USER", "user"), ("PASSWORD", "password")]
    {
        assert_eq!(
            secret_ref(&format!("DITTOFS_DATABASE_POSTGRES_{var}")),
            Some(json!({"name": "sec-pg", "key": key}))
        );
    }
    for (var, key) in [("PORT", "port"), ("SSLMODE", "sslmode")] {
        assert_eq!(
            secret_ref(&format!("DITTOFS_DATABASE_POSTGRES_{var}")),
            Some(json!({"name": "sec-pg", "key": key, "optional": true}))
        );
    }
    assert_eq!(secret_ref("AWS_ACCESS_KEY_ID"), Some(json!({"name": "sec-s3", "key": "accessKeyId"})));
    assert_eq!(
        secret_ref("AWS_SECRET_ACCESS_KEY"),
        Some(json!({"name": "sec-s3", "key": "secretAccessKey"}))
    );
    assert_eq!(
        secret_ref("AWS_ENDPOINT_URL"),
        Some(json!({"name": "sec-s3", "key": "k-url", "optional": true}))
    );
    assert_eq!(from("AWS_REGION"), Some(json!({"name": "AWS_REGION", "value": "us-east-2"})));
    assert_eq!(from("DATABASE_URL"), None);
    // Every value that is not a plain setting comes from a Secret.
    for var in env.as_array().expect("env") {
        assert!(var["value"].is_null() || var["name"] == "AWS_REGION", "{var}");
    }
}

#[test]
fn percona_provides_the_database_url_and_an_init_container() {
    let mut snapshot = snapshot(
        server(json!({"storage": {"metadataSize": "1Gi"}, "percona": {"enabled": true},
        "database": {"postgresSecretRef": {"name": "pg", "key": "dsn"}}})),
        vec![],
        vec![],
    );
    with_ready_percona(&mut snapshot);
    let outcome = reconcile(snapshot);
    let pod = &applied(&outcome, "StatefulSet", NAME).expect("statefulset")["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"].to_string();
    assert!(env.contains(r#"{"name":"DATABASE_URL","valueFrom":{"secretKeyRef":{"key":"uri","name":"nas-postgres-pguser-dittofs"}}}"#), "{env}");
    assert!(!env.contains("DITTOFS_DATABASE_POSTGRES"), "Percona wins over postgresSecretRef: {env}");
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "wait-for-postgres");
    assert_eq!(init["image"], "postgres:16-alpine");
    assert!(init["command"][2].as_str().expect("script").contains("pg_isready"));
    let names: Vec<_> = init["env"].as_array().expect("env").iter().map(|e| e["name"].clone()).collect();
    assert_eq!(names, ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"]);
    assert!(init["securityContext"].is_null(), "a security context nobody asked for: {init}");
}

/// A ready PerconaPGCluster among the related objects, and its user Secret asked for
/// (absent): the state in which the module wires the database in.
fn with_ready_percona(snapshot: &mut reconcile_sdk::Snapshot) {
    snapshot.related.push(json!({"apiVersion": "pgv2.percona.com/v2", "kind": "PerconaPGCluster",
        "metadata": {"name": "nas-postgres", "labels": {"dittofs.dittofs.com/server": "nas"}},
        "spec": {}, "status": {"state": "ready"}}));
    snapshot.required = vec![RequiredObject {
        api_version: "v1".into(),
        kind: "Secret".into(),
        name: "nas-postgres-pguser-dittofs".into(),
        object: None,
    }];
}

/// A namespace enforcing Pod Security `restricted` admits the pod only if the init
/// container meets it too, so it gets the server container's security context.
#[test]
fn the_init_container_runs_under_the_containers_security_context() {
    let restricted = json!({"allowPrivilegeEscalation": false, "runAsNonRoot": true,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}});
    let mut snapshot = snapshot(
        server(json!({"storage": {"metadataSize": "1Gi"}, "percona": {"enabled": true},
                      "securityContext": restricted})),
        vec![],
        vec![],
    );
    with_ready_percona(&mut snapshot);
    let outcome = reconcile(snapshot);
    let pod = &applied(&outcome, "StatefulSet", NAME).expect("statefulset")["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["securityContext"], restricted);
    assert_eq!(pod["initContainers"][0]["securityContext"], restricted);
}

#[test]
fn the_percona_cluster_as_created() {
    let outcome = first(
        json!({"storage": {"metadataSize": "1Gi"}, "percona": {"enabled": true, "replicas": 3,
        "storageSize": "20Gi", "storageClassName": "db", "databaseName": "files",
        "backup": {"enabled": true, "bucket": "b", "endpoint": "https://s3", "credentialsSecretRef": {"name": "bk"},
                   "retentionDays": 14}}}),
    );
    let cluster = applied(&outcome, "PerconaPGCluster", "nas-postgres").expect("created");
    assert!(cluster["metadata"]["ownerReferences"].is_null(), "no owner reference without deleteWithServer");
    assert_eq!(cluster["metadata"]["labels"], json!({"dittofs.dittofs.com/server": "nas"}));
    let spec = &cluster["spec"];
    assert_eq!((spec["crVersion"].as_str(), spec["postgresVersion"].as_i64()), (Some("2.8.0"), Some(16)));
    assert_eq!(
        spec["instances"],
        json!([{"name": "instance1", "replicas": 3, "dataVolumeClaimSpec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}, "storageClassName": "db"}}])
    );
    assert_eq!(spec["users"], json!([{"name": "dittofs", "databases": ["files"]}]));
    let pgbackrest = &spec["backups"]["pgbackrest"];
    assert_eq!(pgbackrest["global"]["repo1-path"], "/pgbackrest/nas/repo1");
    assert_eq!(pgbackrest["global"]["repo1-retention-full"], "14");
    assert_eq!(
        pgbackrest["repos"][0]["s3"],
        json!({"bucket": "b", "endpoint": "https://s3", "region": "eu-west-1"})
    );
    assert_eq!(pgbackrest["repos"][0]["schedules"], json!({"full": "0 2 * * *", "incremental": "0 * * * *"}));
    assert_eq!(pgbackrest["configuration"], json!([{"secret": {"name": "bk"}}]));
    // The server waits for the cluster.
    assert!(applied(&outcome, "StatefulSet", NAME).is_none());
    assert_eq!(status_of(&outcome).expect("status")["perconaClusterName"], "nas-postgres");
}

#[test]
fn services() {
    let outcome = first(
        json!({"storage": {"metadataSize": "1Gi"}, "nfsPort": 12049, "smb": {"enabled": true, "port": 12445},
        "controlPlane": {"port": 8081}, "metrics": {"enabled": true, "port": 9100},
        "service": {"type": "LoadBalancer", "annotations": {"lb.example.com/internal": "true"}}}),
    );
    let selector = json!({"app": "dittofs-server", "instance": "nas"});
    let port = |name: &str, number: i32| json!({"name": name, "port": number, "targetPort": name, "protocol": "TCP"});
    let headless = applied(&outcome, "Service", "nas-headless").expect("headless");
    assert_eq!(
        headless["spec"],
        json!({"clusterIP": "None", "selector": selector, "ports": [port("nfs", 12049)]})
    );
    let file = applied(&outcome, "Service", "nas-file").expect("file");
    assert_eq!(
        file["spec"],
        json!({"type": "LoadBalancer", "selector": selector,
        "ports": [port("nfs", 12049), port("smb", 12445)]})
    );
    assert_eq!(file["metadata"]["annotations"]["lb.example.com/internal"], "true");
    let api = applied(&outcome, "Service", "nas-api").expect("api");
    assert_eq!(api["spec"]["ports"], json!([port("api", 8081)]));
    let metrics = applied(&outcome, "Service", "nas-metrics").expect("metrics");
    assert_eq!(metrics["spec"]["ports"], json!([port("metrics", 9100)]));
    let sts = applied(&outcome, "StatefulSet", NAME).expect("sts");
    let ports: Vec<_> = sts["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["name"].clone(), p["containerPort"].clone()))
        .collect();
    assert_eq!(
        ports,
        [
            (json!("nfs"), json!(12049)),
            (json!("api"), json!(8081)),
            (json!("metrics"), json!(9100)),
            (json!("smb"), json!(12445))
        ]
    );
    assert_eq!(status_of(&outcome).expect("status")["nfsEndpoint"], "nas-file.files.svc.cluster.local:12049");

    let quiet = first(plain());
    assert!(applied(&quiet, "Service", "nas-metrics").is_none());
    assert_eq!(
        applied(&quiet, "Service", "nas-file").expect("file")["spec"]["ports"],
        json!([port("nfs", 2049)])
    );
}

#[test]
fn the_statefulset() {
    let outcome =
        first(json!({"image": "dittofs:1", "storage": {"metadataSize": "1Gi", "contentSize": "9Gi",
        "cacheSize": "2Gi", "storageClassName": "ssd"},
        "resources": {"limits": {"memory": "1Gi"}}, "securityContext": {"runAsNonRoot": true},
        "podSecurityContext": {"fsGroup": 1000, "runAsUser": 1000}}));
    let sts = applied(&outcome, "StatefulSet", NAME).expect("sts");
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["serviceName"], "nas-headless");
    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "dittofs-server", "instance": "nas"}}));
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    let claims: Vec<_> = spec["volumeClaimTemplates"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|c| (c["metadata"]["name"].clone(), c["spec"].clone()))
        .collect();
    let claim = |size: &str| json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, "storageClassName": "ssd"});
    assert_eq!(
        claims,
        [(json!("metadata"), claim("1Gi")), (json!("cache"), claim("2Gi")), (json!("content"), claim("9Gi"))]
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"], json!({"fsGroup": 1000, "runAsUser": 1000}));
    assert_eq!(pod["volumes"], json!([{"name": "config", "configMap": {"name": "nas-config"}}]));
    assert!(pod["initContainers"].is_null());
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "dittofs");
    assert_eq!(container["image"], "dittofs:1");
    assert_eq!(container["command"], json!(["/app/dittofs"]));
    assert_eq!(container["args"], json!(["start", "--config", "/config/config.yaml"]));
    assert_eq!(
        container["livenessProbe"],
        json!({"tcpSocket": {"port": "nfs"}, "initialDelaySeconds": 30, "periodSeconds": 10})
    );
    assert_eq!(
        container["readinessProbe"],
        json!({"tcpSocket": {"port": "nfs"}, "initialDelaySeconds": 10, "periodSeconds": 5})
    );
    assert_eq!(container["resources"], json!({"limits": {"memory": "1Gi"}}));
    assert_eq!(container["securityContext"], json!({"runAsNonRoot": true}));
    let mounts: Vec<_> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["mountPath"].clone())
        .collect();
    assert_eq!(
        mounts,
        [json!("/config"), json!("/data/metadata"), json!("/data/cache"), json!("/data/content")]
    );
    assert_eq!(
        spec["template"]["metadata"]["labels"],
        json!({"app": "dittofs-server", "instance": "nas", "dittofs.dittofs.com/server": "nas"})
    );
    // The default pod security context.
    let plain = first(plain());
    assert_eq!(
        applied(&plain, "StatefulSet", NAME).expect("sts")["spec"]["template"]["spec"]["securityContext"],
        json!({"fsGroup": 65532})
    );
}

fn config_hash(outcome: &Outcome) -> Value {
    applied(outcome, "StatefulSet", NAME).expect("sts")["spec"]["template"]["metadata"]["annotations"]
        ["dittofs.dittofs.com/config-hash"].clone()
}

#[test]
fn the_config_hash_follows_config_secrets_and_generation() {
    let spec = json!({"storage": {"metadataSize": "1Gi"}, "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "k"}}}});
    let run = |edit: &dyn Fn(&mut reconcile_sdk::Snapshot)| {
        let mut snapshot = snapshot(
            server(spec.clone()),
            vec![],
            vec![RequiredObject {
                api_version: "v1".into(),
                kind: "Secret".into(),
                name: "jwt".into(),
                object: Some(secret("jwt", &["k"])),
            }],
        );
        edit(&mut snapshot);
        config_hash(&reconcile(snapshot))
    };
    let base = run(&|_| {});
    assert_eq!(base, run(&|_| {}), "deterministic");
    assert_eq!(base, run(&|s| s.now = "2030-01-01T00:00:00Z".into()), "not time-dependent");
    assert_eq!(base, run(&|s| s.object["spec"]["replicas"] = 1.into()), "unchanged spec");
    assert_eq!(
        base,
        run(&|s| s.required[0].object.as_mut().expect("secret")["metadata"]["resourceVersion"] = "99".into())
    );
    for (what, edit) in [
        (
            "config",
            &(|s: &mut reconcile_sdk::Snapshot| s.object["spec"]["cache"] = json!({"size": "2GB"}))
                as &dyn Fn(&mut reconcile_sdk::Snapshot),
        ),
        ("secret digest", &|s| {
            s.required[0].object.as_mut().expect("secret")["data"]["k"] = "sha256:other".into()
        }),
        ("secret gone", &|s| s.required[0].object = None),
        ("generation", &|s| s.object["metadata"]["generation"] = 2.into()),
    ] {
        assert_ne!(base, run(edit), "{what} must change the hash");
    }
}

#[test]
fn missing_secrets_are_required_first() {
    let spec = json!({"storage": {"metadataSize": "1Gi"}, "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "k"}},
        "admin": {"passwordSecretRef": {"name": "admin", "key": "k"}}}});
    let outcome = reconcile(snapshot(server(spec.clone()), vec![], vec![]));
    let Outcome::Actions { actions, requires, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(actions.is_empty(), "nothing before the requirements are answered");
    let names: Vec<_> = requires.iter().map(|r| (r.kind.as_str(), r.name.as_str())).collect();
    assert_eq!(names, [("Secret", "admin"), ("Secret", "jwt")]);
    // A Secret that does not exist is an answer too.
    let answered = requires
        .iter()
        .map(|r| RequiredObject {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            object: None,
        })
        .collect();
    let outcome = reconcile(snapshot(server(spec), vec![], answered));
    assert!(applied(&outcome, "StatefulSet", NAME).is_some());
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or(&Value::Null)
}

#[test]
fn conditions_keep_their_transition_time_until_their_status_changes() {
    let mut cluster = Cluster::new(plain());
    cluster.converge();
    let status = cluster.primary()["status"].clone();
    assert_eq!(condition(&status, "Available")["status"], "False");
    assert_eq!(condition(&status, "Available")["lastTransitionTime"], NOW);

    cluster.now = "2026-11-26T12:05:00Z".into();
    cluster.statefulset_ready();
    cluster.reconcile();
    let status = cluster.primary()["status"].clone();
    let available = condition(&status, "Available");
    assert_eq!(
        (available["status"].as_str(), available["reason"].as_str()),
        (Some("True"), Some("MinimumReplicasAvailable"))
    );
    assert_eq!(available["lastTransitionTime"], "2026-11-26T12:05:00Z", "changed status, new time");
    assert_eq!(condition(&status, "ConfigReady")["lastTransitionTime"], NOW, "unchanged status, old time");
    assert_eq!(condition(&status, "Ready")["reason"], "AllConditionsMet");
    assert_eq!(condition(&status, "Progressing")["reason"], "ReconcileComplete");
    assert_eq!(status["phase"], "Running");
    for c in status["conditions"].as_array().expect("conditions") {
        assert_eq!(c["observedGeneration"], 1, "{c}");
    }

    // A new generation: the reason and observedGeneration move, the time does not
    // where the status holds.
    cluster.now = "2026-11-26T12:10:00Z".into();
    cluster.edit_spec(|spec| spec["cache"] = json!({"size": "3GB"}));
    cluster.reconcile();
    let status = cluster.primary()["status"].clone();
    assert_eq!(status["observedGeneration"], 2);
    let progressing = condition(&status, "Progressing");
    assert_eq!(
        (progressing["reason"].as_str(), progressing["lastTransitionTime"].as_str()),
        (Some("StatefulSetUpdating"), Some("2026-11-26T12:10:00Z"))
    );
    assert_eq!(condition(&status, "Available")["lastTransitionTime"], "2026-11-26T12:05:00Z");
    assert_eq!(condition(&status, "Ready")["message"], "not met: Progressing");
    assert_eq!(condition(&status, "Ready")["observedGeneration"], 2);
}

#[test]
fn database_readiness_in_the_status() {
    let mut cluster = Cluster::new(json!({"storage": {"metadataSize": "1Gi"}, "percona": {"enabled": true}}));
    cluster
        .secrets
        .insert("nas-postgres-pguser-dittofs".into(), secret("nas-postgres-pguser-dittofs", &["uri"]));
    cluster.converge();
    let reason =
        |cluster: &Cluster| condition(&cluster.primary()["status"], "DatabaseReady")["reason"].clone();
    assert_eq!(reason(&cluster), "PerconaNotReady");
    assert_eq!(cluster.primary()["status"]["phase"], "Pending");
    assert!(
        condition(&cluster.primary()["status"], "Ready")["message"]
            .as_str()
            .expect("message")
            .contains("DatabaseReady")
    );
    cluster.percona_state("initializing");
    cluster.converge();
    assert_eq!(
        condition(&cluster.primary()["status"], "DatabaseReady")["message"],
        "PerconaPGCluster nas-postgres is initializing"
    );
    cluster.percona_state("ready");
    cluster.converge();
    cluster.statefulset_ready();
    cluster.converge();
    assert_eq!(reason(&cluster), "PerconaReady");
    assert_eq!(condition(&cluster.primary()["status"], "Ready")["status"], "True");
    // Without Percona there is no DatabaseReady condition.
    let mut plain_cluster = Cluster::new(plain());
    plain_cluster.converge();
    assert!(condition(&plain_cluster.primary()["status"], "DatabaseReady").is_null());
}

#[test]
fn the_manifest_declares_what_the_module_touches() {
    let manifest = serde_json::to_value(dittofs_reconciler::manifest()).expect("encodes");
    assert_eq!(
        manifest,
        json!({
            "abi": 1, "name": "dittofs-reconciler", "version": env!("CARGO_PKG_VERSION"),
            "primary": {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer", "plural": "dittoservers"},
            "related": [
                {"apiVersion": "v1", "kind": "ConfigMap", "plural": "configmaps"},
                {"apiVersion": "v1", "kind": "Service", "plural": "services"},
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "plural": "statefulsets"},
                {"apiVersion": "pgv2.percona.com/v2", "kind": "PerconaPGCluster", "plural": "perconapgclusters", "optional": true}
            ],
            "reads": [{"apiVersion": "v1", "kind": "Secret", "plural": "secrets", "digestOnly": true}],
            "ownerLabel": "dittofs.dittofs.com/server",
            "fieldManager": "dittofs-operator",
            "finalizers": ["dittofs.dittofs.com/finalizer"]
        })
    );
}
