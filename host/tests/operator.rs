//! The whole operator against the real control plane: the configmap-mirror module
//! (built to wasm, loaded by the runtime) end to end, hostile modules confined,
//! requirements with digestOnly reads, optional kinds appearing later, `snapshot`
//! capture, and leader election. Waits are generous; nothing asserts a duration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use operator_support::*;
use reconcile_sdk::{Action, KindRef, Manifest, Outcome, PropagationPolicy, Requirement, Snapshot};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use wasm_operator::{Metrics, ObjectKey, ResultLabels};

const LABEL: &str = configmap_mirror::OWNER_LABEL;
const FINALIZER: &str = configmap_mirror::FINALIZER;

fn successes(metrics: &Metrics) -> u64 {
    metrics.reconciles.get_or_create(&ResultLabels { result: "success".into() }).get()
}

/// Waits until the host has neither written nor finished a reconcile for a second.
async fn wait_quiet(metrics: &Metrics) -> Result<()> {
    let reading = || (metrics.writes_total(), successes(metrics));
    let mut last = reading();
    let mut unchanged = 0;
    eventually("the host to be quiet", || {
        let now = reading();
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
        let quiet = unchanged >= 3;
        async move {
            if !quiet {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            Ok(quiet.then_some(()))
        }
    })
    .await
}

fn sha(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

async fn wait_ready(op: &wasm_operator::RunningOperator) -> Result<()> {
    eventually("the caches to sync", || async { Ok(op.ready().then_some(())) }).await
}

async fn config_map_data(api: &Api<ConfigMap>, name: &str) -> Result<Option<(ConfigMap, Value)>> {
    Ok(api.get_opt(name).await?.map(|cm| {
        let data = serde_json::to_value(cm.data.clone().unwrap_or_default()).unwrap_or(Value::Null);
        (cm, data)
    }))
}

#[tokio::test]
async fn configmap_mirror_runs_end_to_end_in_the_host() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "op-mirror").await?;
    let ns = ns.name().to_owned();
    let module = mirror_module().await?;
    let op = start_operator(&client, module, &ns).await?;
    wait_ready(&op).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mirrors = mirror_api(&client, &ns);

    // Create: the ConfigMap appears, owned and labelled; finalizer and status follow.
    let created = create_mirror(&client, &ns, "m", json!({"data": {"a": "1"}})).await?;
    let uid = some(created.metadata.uid.clone(), "uid")?;
    let cm = eventually("the mirrored ConfigMap", || async {
        Ok(config_map_data(&cms, "m-mirror")
            .await?
            .filter(|(_, d)| *d == json!({"a": "1"}))
            .map(|(cm, _)| cm))
    })
    .await?;
    assert_eq!(cm.metadata.labels.unwrap_or_default().get(LABEL).map(String::as_str), Some("m"));
    let owner = cm.metadata.owner_references.unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!((owner[0].uid.as_str(), owner[0].controller), (uid.as_str(), Some(true)));
    eventually("the finalizer and a Ready status", || async {
        let m = mirrors.get("m").await?;
        let finalized = m.metadata.finalizers.unwrap_or_default().contains(&FINALIZER.to_owned());
        Ok((finalized && m.data["status"]["phase"] == "Ready" && m.data["status"]["keys"] == 1).then_some(()))
    })
    .await?;

    // Update: the ConfigMap follows.
    patch_spec(&client, &ns, "m", json!({"data": {"a": "2", "b": "3"}})).await?;
    eventually("the ConfigMap to follow the update", || async {
        Ok(config_map_data(&cms, "m-mirror").await?.filter(|(_, d)| *d == json!({"a": "2", "b": "3"})))
    })
    .await?;
    eventually("the status to count two keys", || async {
        Ok((mirrors.get("m").await?.data["status"]["keys"] == 2).then_some(()))
    })
    .await?;

    // Idle: a reconcile of the converged Mirror (triggered by a metadata change)
    // writes nothing. The echoes of the update's own writes settle first.
    wait_quiet(&op.metrics).await?;
    let writes = op.metrics.writes_total();
    let reconciles = successes(&op.metrics);
    let touch = json!({"metadata": {"annotations": {"example.com/touched": "yes"}}});
    mirrors.patch("m", &PatchParams::default(), &Patch::Merge(touch)).await?;
    eventually("a reconcile after the touch", || async {
        Ok((successes(&op.metrics) > reconciles).then_some(()))
    })
    .await?;
    assert_eq!(op.metrics.writes_total(), writes, "a converged reconcile must not write");

    // Requirement with a digestOnly read: the Secret's digest, never its value,
    // reaches the module, and a Secret change reconciles the Mirror.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = |value: &str| -> Result<Secret> {
        Ok(serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": value}}))?)
    };
    secrets.create(&PostParams::default(), &secret("first-value")?).await?;
    patch_spec(&client, &ns, "m", json!({"secretName": "s"})).await?;
    let annotation = |cm: &ConfigMap| {
        cm.metadata.annotations.clone().unwrap_or_default().get(configmap_mirror::SECRET_DIGEST).cloned()
    };
    let expected = format!("k={}", sha("first-value"));
    eventually("the Secret's digest on the ConfigMap", || async {
        Ok(cms.get_opt("m-mirror").await?.filter(|cm| annotation(cm).as_ref() == Some(&expected)))
    })
    .await?;
    secrets.replace("s", &PostParams::default(), &secret("second-value")?).await?;
    let expected = format!("k={}", sha("second-value"));
    eventually("the ConfigMap to follow the Secret change", || async {
        Ok(cms.get_opt("m-mirror").await?.filter(|cm| annotation(cm).as_ref() == Some(&expected)))
    })
    .await?;

    // A stray ConfigMap claiming the Mirror, made by the module (its field manager:
    // left over from an older version, say), is deleted; one a user made with the
    // same label is not the module's and is left alone.
    let labelled = |name: &str| -> Result<ConfigMap> {
        Ok(serde_json::from_value(json!({"metadata": {"name": name, "labels": {LABEL: "m"}}}))?)
    };
    let as_module = PostParams {
        field_manager: Some(configmap_mirror::manifest().field_manager),
        ..PostParams::default()
    };
    cms.create(&PostParams::default(), &labelled("users")?).await?;
    cms.create(&as_module, &labelled("stray")?).await?;
    eventually("the stray ConfigMap to be deleted", || async {
        Ok(cms.get_opt("stray").await?.is_none().then_some(()))
    })
    .await?;
    assert!(cms.get_opt("users").await?.is_some(), "a user's labelled ConfigMap was deleted");

    // Delete: the finalizer goes, then the garbage collector takes the ConfigMap.
    mirrors.delete("m", &DeleteParams::default()).await?;
    eventually("the Mirror to be gone", || async { Ok(mirrors.get_opt("m").await?.is_none().then_some(())) })
        .await?;
    eventually("the ConfigMap to be garbage collected", || async {
        Ok(cms.get_opt("m-mirror").await?.is_none().then_some(()))
    })
    .await?;
    assert!(!events(&client, &ns, "m", "Deleting").await?.is_empty(), "the module's Deleting event");
    assert_eq!(op.metrics.rejections_total(), 0);
    op.shutdown().await;
    Ok(())
}

/// The Mirror manifest, as a hostile module would declare it.
fn mirror_manifest() -> Manifest {
    Manifest { name: "hostile".into(), field_manager: "hostile".into(), ..configmap_mirror::manifest() }
}

fn cm(name: &str, namespace: Option<&str>, labels: Value, owner_refs: Value) -> Value {
    let mut metadata = json!({"name": name, "labels": labels, "ownerReferences": owner_refs});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"x": "y"}})
}

/// One hostile batch per primary name: an allowed action first, then the forbidden
/// one; confinement must refuse the whole batch.
fn hostile(snapshot: Snapshot, other_namespace: &str) -> Outcome {
    let name = snapshot.object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let uid = snapshot.object["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let mine = json!({LABEL: name});
    let me = json!([{"apiVersion": "mirror.example.com/v1", "kind": "Mirror", "name": name, "uid": uid, "controller": true}]);
    let forbidden = match name.as_str() {
        "other-namespace" => Action::Apply { object: cm("escaped", Some(other_namespace), mine, me) },
        "unlisted-kind" => Action::Apply {
            object: json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "loot", "labels": mine}}),
        },
        "no-owner-label" => Action::Apply { object: cm("unlabelled", None, json!({}), me) },
        "foreign-owner" => Action::Apply {
            object: cm(
                "adopted",
                None,
                mine,
                json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "victim", "uid": "11111111-1111-1111-1111-111111111111"}]),
            ),
        },
        // A forced apply over a foreign namesake would take it over (and label it ours).
        "take-over" => Action::Apply { object: cm("victim", None, mine, me) },
        "delete-unowned" => Action::Delete {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "victim".into(),
            propagation_policy: Some(PropagationPolicy::Background),
        },
        "orphan-unowned" => {
            Action::Orphan { api_version: "v1".into(), kind: "ConfigMap".into(), name: "victim".into() }
        }
        "foreign-finalizer" => Action::AddFinalizer { finalizer: "kubernetes.io/pv-protection".into() },
        "requires-unlisted" => {
            return Outcome::Actions {
                actions: vec![Action::AddFinalizer { finalizer: FINALIZER.into() }],
                requires: vec![Requirement {
                    api_version: "v1".into(),
                    kind: "ServiceAccount".into(),
                    name: "default".into(),
                }],
                requeue_after_seconds: None,
            };
        }
        _ => return Outcome::actions(Vec::new()),
    };
    Outcome::actions(vec![Action::AddFinalizer { finalizer: FINALIZER.into() }, forbidden])
}

const HOSTILE_CASES: [&str; 9] = [
    "other-namespace",
    "unlisted-kind",
    "no-owner-label",
    "foreign-owner",
    "take-over",
    "delete-unowned",
    "orphan-unowned",
    "foreign-finalizer",
    "requires-unlisted",
];

#[tokio::test]
async fn forbidden_actions_are_rejected_and_nothing_is_written() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "op-hostile").await?;
    let elsewhere = TestNamespace::create(cluster, "op-hostile-elsewhere").await?;
    let (ns, elsewhere) = (ns.name().to_owned(), elsewhere.name().to_owned());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    // The victim: not associated with anyone (no label); owned by a stranger that
    // exists (the garbage collector deletes objects whose owner does not).
    let anchor = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "anchor"}}))?)
        .await?;
    let victim_owner = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "anchor", "uid": some(anchor.metadata.uid, "uid")?}]);
    cms.create(&PostParams::default(), &serde_json::from_value(cm("victim", None, json!({}), victim_owner))?)
        .await?;

    let module = {
        let elsewhere = elsewhere.clone();
        NativeModule::new(mirror_manifest(), move |snapshot| hostile(snapshot, &elsewhere))
    };
    let op = start_operator(&client, module.clone(), &ns).await?;
    wait_ready(&op).await?;
    for name in HOSTILE_CASES {
        create_mirror(&client, &ns, name, json!({})).await?;
    }
    for name in HOSTILE_CASES {
        let found = eventually(&format!("ActionRejected on {name}"), || async {
            let events = events(&client, &ns, name, "ActionRejected").await?;
            Ok((!events.is_empty()).then_some(events))
        })
        .await?;
        assert_eq!(found[0].0, "Warning", "{name}: {found:?}");
    }
    assert!(op.metrics.rejections_total() >= HOSTILE_CASES.len() as u64);

    // Nothing written: no finalizer on any Mirror (the allowed first action did not
    // run either), no object created, the victim untouched.
    let mirrors = mirror_api(&client, &ns);
    for name in HOSTILE_CASES {
        let m = mirrors.get(name).await?;
        assert_eq!(m.metadata.finalizers, None, "{name} got a finalizer");
    }
    let elsewhere_cms: Api<ConfigMap> = Api::namespaced(client.clone(), &elsewhere);
    assert!(elsewhere_cms.get_opt("escaped").await?.is_none());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    assert!(secrets.get_opt("loot").await?.is_none());
    assert!(cms.get_opt("unlabelled").await?.is_none());
    assert!(cms.get_opt("adopted").await?.is_none());
    let victim = some(cms.get_opt("victim").await?, "the victim")?;
    assert_eq!(
        victim.metadata.owner_references.unwrap_or_default().len(),
        1,
        "the victim keeps its reference"
    );
    assert_eq!(victim.metadata.labels.unwrap_or_default().get(LABEL), None, "the victim was not taken over");
    let writes = op.metrics.writes.get_or_create(&wasm_operator::OpLabels { op: "apply".into() }).get();
    assert_eq!(writes, 0);

    // The rejection is the next snapshot's lastFailure.
    eventually("a snapshot carrying lastFailure", || async {
        let calls = module.calls.lock().unwrap();
        Ok(calls
            .iter()
            .find(|s| s.last_failure.as_ref().is_some_and(|f| f.message.contains("rejected")))
            .map(|_| ()))
    })
    .await?;
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_required_object_no_watch_sees_is_polled() -> Result<()> {
    // A ConfigMap without the owner label: the related watch never lists it, so only
    // polling brings its change to the module.
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "op-unwatched").await?;
    let ns = ns.name().to_owned();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let source = |value: &str| json!({"metadata": {"name": "source"}, "data": {"v": value}});
    cms.create(&PostParams::default(), &serde_json::from_value(source("1"))?).await?;

    let module = NativeModule::new(mirror_manifest(), |_| Outcome::Actions {
        actions: Vec::new(),
        requires: vec![Requirement {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "source".into(),
        }],
        requeue_after_seconds: None,
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    wait_ready(&op).await?;
    create_mirror(&client, &ns, "m", json!({})).await?;
    let seen = |value: &'static str| {
        let module = module.clone();
        move || {
            let module = module.clone();
            async move {
                let calls = module.calls.lock().unwrap();
                Ok(calls
                    .iter()
                    .any(|s| {
                        s.required.iter().any(|r| r.object.as_ref().is_some_and(|o| o["data"]["v"] == value))
                    })
                    .then_some(()))
            }
        }
    };
    eventually("the module to read the source", seen("1")).await?;
    cms.patch("source", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "2"}}))).await?;
    eventually("the module to read the changed source", seen("2")).await?;
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn snapshot_capture_answers_requirements_without_secret_values() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "op-snapshot").await?;
    let ns = ns.name().to_owned();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "plaintext-value"}}))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let m = create_mirror(&client, &ns, "m", json!({"data": {"a": "1"}, "secretName": "s"})).await?;
    let uid = some(m.metadata.uid, "uid")?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let me = json!([{"apiVersion": "mirror.example.com/v1", "kind": "Mirror", "name": "m", "uid": uid, "controller": true}]);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(cm("m-mirror", None, json!({LABEL: "m"}), me))?,
    )
    .await?;
    // Labelled but controlled by someone else (that exists): not associated.
    let anchor = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "anchor"}}))?)
        .await?;
    let stranger = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "anchor", "uid": some(anchor.metadata.uid, "uid")?, "controller": true}]);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(cm("foreign", None, json!({LABEL: "m"}), stranger))?,
    )
    .await?;

    let module = mirror_module().await?;
    let snapshot =
        wasm_operator::capture(&client, "the test cluster", module.as_ref(), &ObjectKey::new(&ns, "m"))
            .await?;
    let names: Vec<_> = snapshot.related.iter().map(|o| o["metadata"]["name"].clone()).collect();
    assert_eq!(names, [json!("m-mirror")]);
    assert_eq!(snapshot.required.len(), 1);
    let answer = some(snapshot.required[0].object.clone(), "the Secret")?;
    assert_eq!(answer["data"]["k"], json!(sha("plaintext-value")));
    let text = serde_json::to_string(&snapshot)?;
    assert!(!text.contains("plaintext-value") && !text.contains("cGxhaW50ZXh0LXZhbHVl"), "{text}");
    // The module decides on it without asking for more: exactly what `run` passes.
    match reconcile_sdk::decode_snapshot(text.as_bytes()).map(configmap_mirror::reconcile)? {
        Outcome::Actions { requires, .. } => assert_eq!(requires.len(), 1),
        other => bail!("unexpected outcome {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn an_optional_kind_fails_writes_while_absent_and_is_picked_up_when_its_crd_appears() -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "op-optional").await?;
    let ns = ns.name().to_owned();
    // A group of its own per run, so that no earlier run's CRD is there already.
    let group =
        format!("w{:x}.example.com", std::process::id() ^ std::time::UNIX_EPOCH.elapsed()?.subsec_nanos());
    let api_version = format!("{group}/v1");
    let manifest = Manifest {
        related: vec![
            KindRef {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                plural: "configmaps".into(),
                optional: false,
                digest_only: false,
            },
            KindRef {
                api_version: api_version.clone(),
                kind: "Widget".into(),
                plural: "widgets".into(),
                optional: true,
                digest_only: false,
            },
        ],
        ..mirror_manifest()
    };
    let module = {
        let api_version = api_version.clone();
        NativeModule::new(manifest, move |snapshot| {
            let name = snapshot.object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let widget = json!({"apiVersion": api_version, "kind": "Widget",
                "metadata": {"name": format!("{name}-widget"), "labels": {LABEL: name}}, "spec": {"size": 1}});
            let mut outcome = Outcome::actions(vec![Action::Apply { object: widget }]);
            if let Outcome::Actions { requeue_after_seconds, .. } = &mut outcome {
                *requeue_after_seconds = Some(1);
            }
            outcome
        })
    };
    let op = start_operator(&client, module.clone(), &ns).await?;
    wait_ready(&op).await?;
    create_mirror(&client, &ns, "m", json!({})).await?;
    eventually("a lastFailure naming the absent kind", || async {
        let calls = module.calls.lock().unwrap();
        Ok(calls
            .iter()
            .find_map(|s| s.last_failure.as_ref().filter(|f| f.message.contains("not served")).cloned()))
    })
    .await?;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))?;
    crds.create(&PostParams::default(), &crd).await?;
    let widgets_resource = kube::discovery::ApiResource {
        group: group.clone(),
        version: "v1".into(),
        api_version: api_version.clone(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &widgets_resource);
    let found = eventually("the Widget once its CRD exists", || async {
        // Until the CRD is established the list fails; that is "not yet".
        Ok(widgets.get_opt("m-widget").await.ok().flatten())
    })
    .await;
    op.shutdown().await;
    crds.delete(&format!("widgets.{group}"), &DeleteParams::default()).await?;
    found?;
    Ok(())
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_successor_takes_over_on_shutdown() -> Result<()> {
    use wasm_operator::LeaseConfig;
    use wasm_operator::{OperatorConfig, RunningOperator, Scope};
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "op-leader").await?;
    let ns = ns.name().to_owned();
    let start = |identity: &str| {
        let mut lease = LeaseConfig::new(ns.clone(), "wasm-operator-test".into(), identity.into());
        lease.lease_duration = Duration::from_secs(4);
        lease.renew_deadline = Duration::from_secs(3);
        lease.renew_period = Duration::from_millis(500);
        lease.retry_period = Duration::from_millis(300);
        let config = OperatorConfig {
            scope: Scope { namespace: Some(ns.clone()), label_selector: None },
            concurrency: 2,
            leader: Some(lease),
            instance: Some(identity.into()),
            ..OperatorConfig::default()
        };
        let client = client.clone();
        async move {
            let module = mirror_module().await?;
            anyhow::Ok(RunningOperator::start(client, "the test cluster", module, config).await?)
        }
    };
    let first = start("first").await?;
    eventually("the first replica to lead", || async { Ok((first.metrics.leader.get() == 1).then_some(())) })
        .await?;
    let second = start("second").await?;
    wait_ready(&second).await?;
    create_mirror(&client, &ns, "m", json!({"data": {"v": "1"}})).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    eventually("the leader to mirror", || async {
        Ok(config_map_data(&cms, "m-mirror").await?.filter(|(_, d)| *d == json!({"v": "1"})))
    })
    .await?;
    assert_eq!(second.metrics.leader.get(), 0, "the second replica must follow");
    assert_eq!(successes(&second.metrics), 0, "a follower never reconciles");

    // The leader stops gracefully and releases the Lease; the follower takes over.
    first.shutdown().await;
    eventually("the second replica to lead", || async {
        Ok((second.metrics.leader.get() == 1).then_some(()))
    })
    .await?;
    patch_spec(&client, &ns, "m", json!({"data": {"v": "2"}})).await?;
    eventually("the new leader to mirror", || async {
        Ok(config_map_data(&cms, "m-mirror").await?.filter(|(_, d)| *d == json!({"v": "2"})))
    })
    .await?;
    assert!(successes(&second.metrics) > 0);
    // Leave the Mirror deletable: remove its finalizer while a leader still runs.
    mirror_api(&client, &ns).delete("m", &DeleteParams::default()).await?;
    eventually("the Mirror to be gone", || async {
        Ok(mirror_api(&client, &ns).get_opt("m").await?.is_none().then_some(()))
    })
    .await?;
    second.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn startup_names_the_fix_when_the_primary_crd_is_missing() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "op-nocrd").await?;
    let manifest = Manifest {
        primary: KindRef {
            api_version: "absent.example.com/v1".into(),
            kind: "Gadget".into(),
            plural: "gadgets".into(),
            optional: false,
            digest_only: false,
        },
        ..mirror_manifest()
    };
    let module = NativeModule::new(manifest, |_| Outcome::actions(Vec::new()));
    let err = match start_operator(&client, module, ns.name()).await {
        Ok(_) => bail!("the operator started without its primary CRD"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("Gadget") && err.contains("kubectl apply -f crds/"), "{err}");
    Ok(())
}

/// A module whose calls for primaries named `hang-*` never return, as a reconcile
/// stuck on a hung API call would be (the wasm call itself has a deadline).
struct HangingModule(Manifest);

impl wasm_operator::Module for HangingModule {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn digest(&self) -> &str {
        "sha256:hanging"
    }

    fn reconcile(
        &self,
        snapshot_json: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<(Outcome, Duration), wasm_operator::ModuleCallError>>
    {
        let hangs = reconcile_sdk::decode_snapshot(&snapshot_json)
            .is_ok_and(|snapshot| name_of(&snapshot).starts_with("hang-"));
        Box::pin(async move {
            if hangs {
                std::future::pending::<()>().await;
            }
            Ok((Outcome::actions(Vec::new()), Duration::ZERO))
        })
    }
}

#[tokio::test]
async fn healthz_fails_when_every_worker_is_stuck_and_shutdown_does_not_wait_for_them() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "op-stall").await?;
    let ns = ns.name().to_owned();
    let module = Arc::new(HangingModule(configmap_mirror::manifest()));
    let config = wasm_operator::OperatorConfig {
        scope: wasm_operator::Scope { namespace: Some(ns.clone()), label_selector: None },
        concurrency: 2,
        probe_addr: Some("127.0.0.1:0".parse()?),
        stall_timeout: Duration::from_secs(2),
        drain_timeout: std::time::Duration::from_secs(1),
        ..wasm_operator::OperatorConfig::default()
    };
    let op =
        wasm_operator::RunningOperator::start(client.clone(), "the test cluster", module, config).await?;
    let addr = some(op.probe_addr(), "the probe address")?;
    wait_ready(&op).await?;
    // A healthy replica with nothing to do, and one that keeps up, stay healthy.
    create_mirror(&client, &ns, "fine", json!({})).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(http_get(addr, "/healthz").await?, (200, "ok\n".to_owned()));
    // Both workers stuck, and a third primary waiting: unhealthy, with the reason.
    for name in ["hang-1", "hang-2", "waiting"] {
        create_mirror(&client, &ns, name, json!({})).await?;
    }
    let body = eventually("/healthz to fail", || async {
        let (code, body) = http_get(addr, "/healthz").await?;
        Ok((code == 503).then_some(body))
    })
    .await?;
    assert!(body.contains("no worker taking it"), "{body}");
    // Shutdown waits for the reconciles in flight, which never end, only for the
    // drain timeout. (The outer bound only keeps a regression from hanging the run.)
    tokio::time::timeout(Duration::from_secs(120), op.shutdown())
        .await
        .context("shutdown hung on the reconciles in flight")?;
    Ok(())
}

#[tokio::test]
async fn http_endpoints_describe_health_readiness_the_module_and_metrics() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "op-http").await?;
    let module = mirror_module().await?;
    let digest = wasm_operator::Module::digest(module.as_ref()).to_owned();
    let op = start_operator(&client, module, ns.name()).await?;
    let addr = some(op.probe_addr(), "the probe address")?;
    let metrics_addr = some(op.metrics_addr(), "the metrics address")?;
    assert_ne!(addr, metrics_addr);
    assert_eq!(http_get(addr, "/healthz").await?.0, 200);
    // Each port serves its own endpoints only, so that a NetworkPolicy can open them
    // to different clients.
    assert_eq!(http_get(addr, "/metrics").await?.0, 404, "metrics on the probe port");
    assert_eq!(http_get(metrics_addr, "/module").await?.0, 404, "/module on the metrics port");
    assert_eq!(http_get(metrics_addr, "/healthz").await?.0, 404, "/healthz on the metrics port");
    eventually("/readyz to answer 200", || async {
        Ok((http_get(addr, "/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    let (code, body) = http_get(addr, "/module").await?;
    assert_eq!(code, 200);
    let module: Value = serde_json::from_str(&body)?;
    assert_eq!(module["digest"], json!(digest));
    assert_eq!(module["name"], "configmap-mirror");
    assert_eq!(module["manifest"]["primary"]["kind"], "Mirror");
    assert!(module["loadedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{module}");

    create_mirror(&client, ns.name(), "m", json!({"data": {"a": "1"}})).await?;
    let metrics = eventually("a successful reconcile in /metrics", || async {
        let (_, body) = http_get(metrics_addr, "/metrics").await?;
        // The series exists at 0 from the start; wait for a count.
        let successes = body
            .lines()
            .find_map(|l| l.strip_prefix("wasm_operator_reconciles_total{result=\"success\"} "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default();
        Ok((successes > 0).then_some(body))
    })
    .await?;
    for name in [
        "wasm_operator_reconcile_duration_seconds_bucket",
        "wasm_operator_wasm_call_duration_seconds_count",
        "wasm_operator_actions_total{op=\"apply\",result=\"success\"}",
        "wasm_operator_writes_total{op=\"apply\"}",
        "wasm_operator_module_info{name=\"configmap-mirror\"",
        "wasm_operator_module_loaded_timestamp_seconds",
        // Known series at zero before their first event.
        "wasm_operator_reconciles_total{result=\"error\"} 0",
        "wasm_operator_module_rejected_total{reason=\"signature\"} 0",
        "wasm_operator_write_budget_exceeded_total{reason=\"rate\"} 0",
        // client-go's and controller-runtime's names, the controller named after the
        // primary kind; the process's own.
        "workqueue_adds_total{name=\"mirror\"}",
        "workqueue_depth{name=\"mirror\"}",
        "workqueue_queue_duration_seconds_count{name=\"mirror\"}",
        "workqueue_work_duration_seconds_count{name=\"mirror\"}",
        "workqueue_unfinished_work_seconds{name=\"mirror\"}",
        "workqueue_longest_running_processor_seconds{name=\"mirror\"}",
        "controller_runtime_active_workers{controller=\"mirror\"}",
        "controller_runtime_max_concurrent_reconciles{controller=\"mirror\"} 4",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    // Leave the Mirror deletable with the namespace.
    mirror_api(&client, ns.name()).delete("m", &DeleteParams::default()).await?;
    eventually("the Mirror to be gone", || async {
        Ok(mirror_api(&client, ns.name()).get_opt("m").await?.is_none().then_some(()))
    })
    .await?;
    op.shutdown().await;
    Ok(())
}

/// Loads a hostile WAT fixture of `tests/fixtures/` through the runtime, as `run` would.
async fn wat_fixture(name: &str) -> Result<Arc<wasm_operator::WasmModule>> {
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/fixtures/{name}.wat"));
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&path, wat::parse_file(&source)?)?;
    use wasm_operator::runtime::{ModuleCache, SandboxConfig, SandboxLimits};
    let sandbox = SandboxConfig {
        limits: SandboxLimits { deadline: Duration::from_millis(2000), ..SandboxLimits::default() },
        cache: ModuleCache::Disabled,
        ..SandboxConfig::default()
    };
    Ok(wasm_operator::load_module(&path, &sandbox, 2, &wasm_operator::TrustPolicy::default()).await?)
}

#[tokio::test]
async fn the_forbidden_wat_fixtures_are_rejected_and_nothing_is_written() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let dittoservers = e2e::dittofs::dittoservers();
    for fixture in [
        "forbidden-apply-other-namespace",
        "forbidden-apply-unlisted-kind",
        "forbidden-delete-unowned",
        "forbidden-remove-foreign-finalizer",
    ] {
        let ns = TestNamespace::create(cluster, fixture).await?;
        let ns = ns.name().to_owned();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        // No root-CA publisher runs in the test control plane: make the victim.
        let victim: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "kube-root-ca.crt"}}))?;
        cms.create(&PostParams::default(), &victim).await?;
        let servers: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &dittoservers);
        let server = json!({"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": "hostile", "finalizers": ["example.com/not-mine"]},
            "spec": {"storage": {"metadataSize": "1Gi"}}});
        servers.create(&PostParams::default(), &serde_json::from_value(server)?).await?;

        let op = start_operator(&client, wat_fixture(fixture).await?, &ns).await?;
        eventually(&format!("ActionRejected from {fixture}"), || async {
            Ok((!events(&client, &ns, "hostile", "ActionRejected").await?.is_empty()).then_some(()))
        })
        .await?;
        let events_written =
            op.metrics.writes.get_or_create(&wasm_operator::OpLabels { op: "event".into() }).get();
        assert_eq!(op.metrics.writes_total() - events_written, 0, "{fixture}: only events may be written");
        op.shutdown().await;

        let kube_system: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
        assert!(kube_system.get_opt("hostile-config").await?.is_none(), "{fixture}");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        assert!(secrets.get_opt("hostile-secret").await?.is_none(), "{fixture}");
        assert!(cms.get_opt("kube-root-ca.crt").await?.is_some(), "{fixture}");
        let finalizers = servers.get("hostile").await?.metadata.finalizers.unwrap_or_default();
        assert_eq!(finalizers, ["example.com/not-mine"], "{fixture}");
        // Let the namespace go.
        let clear = json!({"metadata": {"finalizers": null}});
        servers.patch("hostile", &PatchParams::default(), &Patch::Merge(clear)).await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_label_selector_scopes_which_primaries_are_reconciled() -> Result<()> {
    use wasm_operator::{OperatorConfig, RunningOperator, Scope};
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "op-selector").await?;
    let ns = ns.name().to_owned();
    let module = NativeModule::new(mirror_manifest(), configmap_mirror::reconcile);
    let config = OperatorConfig {
        scope: Scope { namespace: Some(ns.clone()), label_selector: Some("shard=a".into()) },
        concurrency: 2,
        ..OperatorConfig::default()
    };
    let op = RunningOperator::start(client.clone(), "the test cluster", module.clone(), config).await?;
    wait_ready(&op).await?;
    let mirror = |name: &str, shard: &str| {
        json!({"apiVersion": "mirror.example.com/v1", "kind": "Mirror",
            "metadata": {"name": name, "labels": {"shard": shard}}, "spec": {"data": {"k": "v"}}})
    };
    // The out-of-scope one first: by the time the in-scope one is mirrored, the
    // other's events have long been delivered, and ignored.
    e2e::apply(&client, Some(&ns), &mirror("theirs", "b")).await?;
    e2e::apply(&client, Some(&ns), &mirror("ours", "a")).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    eventually("the in-scope Mirror's ConfigMap", || async { Ok(cms.get_opt("ours-mirror").await?) }).await?;
    assert!(cms.get_opt("theirs-mirror").await?.is_none());
    let seen: Vec<String> = module
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.object["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    assert!(!seen.is_empty() && seen.iter().all(|n| n == "ours"), "{seen:?}");
    mirror_api(&client, &ns).delete("ours", &DeleteParams::default()).await?;
    eventually("the in-scope Mirror to be gone", || async {
        Ok(mirror_api(&client, &ns).get_opt("ours").await?.is_none().then_some(()))
    })
    .await?;
    op.shutdown().await;
    Ok(())
}
