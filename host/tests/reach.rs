//! What a module may reach, against the real control plane, with hostile native
//! modules (docs/abi.md, *Confinement*; README, *Trust model*): Secret values never
//! enter a snapshot whatever the manifest says; a labelled object someone else made
//! is never deleted or applied over; a manifest that lists a refused kind does not
//! start; pod templates and Services that break the workload rules are never written;
//! a name that is not one (`m/status`, `../secrets`) never reaches a request path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use anyhow::Result;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, PostParams};
use operator_support::*;
use reconcile_sdk::{Action, KindRef, Manifest, Outcome, PropagationPolicy, Requirement};
use serde_json::{Value, json};
use wasm_operator::{AdminPolicy, GroupKind, StartError};

const LABEL: &str = configmap_mirror::OWNER_LABEL;

fn kind(api_version: &str, kind: &str, plural: &str) -> KindRef {
    KindRef {
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
        optional: false,
        digest_only: false,
    }
}

fn manifest(related: Vec<KindRef>) -> Manifest {
    Manifest { name: "reach".into(), field_manager: "reach".into(), related, ..configmap_mirror::manifest() }
}

#[tokio::test]
async fn secret_values_never_reach_the_module_whatever_the_manifest_says() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "reach-secret").await?;
    let ns = ns.name().to_owned();
    const VALUE: &str = "hunter2-never-in-a-snapshot";
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = json!({"metadata": {"name": "creds"}, "stringData": {"password": VALUE}});
    secrets.create(&PostParams::default(), &serde_json::from_value(secret)?).await?;
    // The manifest says the Secret is not digest-only; the host digests it anyway.
    let mut manifest = manifest(vec![kind("v1", "ConfigMap", "configmaps")]);
    manifest.reads = vec![kind("v1", "Secret", "secrets")];
    // Echoes whatever it was given into the status, where anyone could read it.
    let module = NativeModule::new(manifest, |snapshot| {
        let echo = serde_json::to_string(&snapshot.required).unwrap_or_default();
        Outcome::Actions {
            actions: vec![Action::PatchStatus { status: json!({"echo": echo}) }],
            requires: vec![Requirement {
                api_version: "v1".into(),
                kind: "Secret".into(),
                name: "creds".into(),
            }],
            requeue_after_seconds: None,
        }
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    create_mirror(&client, &ns, "m", json!({})).await?;
    let echo = eventually("the echoed Secret in the status", || async {
        let mirror = mirror_api(&client, &ns).get("m").await?;
        let echo = mirror.data["status"]["echo"].as_str().unwrap_or_default().to_owned();
        Ok(echo.contains("creds").then_some(echo))
    })
    .await?;
    assert!(echo.contains("sha256:"), "the echoed Secret carries digests: {echo}");
    // The value as the API server stores it, base64 in `data`.
    let raw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &kube::discovery::ApiResource::erase::<Secret>(&()));
    let base64 = raw.get("creds").await?.data["data"]["password"].as_str().unwrap_or_default().to_owned();
    assert!(!base64.is_empty());
    for text in [VALUE, base64.as_str()] {
        assert!(!echo.contains(text), "a Secret value reached the status: {echo}");
        for snapshot in module.calls.lock().unwrap().iter() {
            let json = serde_json::to_string(snapshot)?;
            assert!(!json.contains(text), "a Secret value reached a snapshot");
        }
    }
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_labelled_object_someone_else_made_is_never_deleted_or_applied_over() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "reach-foreign").await?;
    let ns = ns.name().to_owned();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    // Made by a user (as kubectl would), with the owner label and the primaries' names.
    for (name, owner) in [("victim-delete", "deleter"), ("victim-apply", "applier")] {
        let cm = json!({"metadata": {"name": name, "labels": {LABEL: owner}}, "data": {"k": "user"}});
        cms.create(&PostParams::default(), &serde_json::from_value(cm)?).await?;
    }
    let module = NativeModule::new(manifest(vec![kind("v1", "ConfigMap", "configmaps")]), |snapshot| {
        let name = name_of(&snapshot);
        let own = format!("{name}-own");
        let own_seen = snapshot.related.iter().any(|o| o["metadata"]["name"] == own.as_str());
        let mut actions = vec![Action::Apply {
            object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": own, "labels": {LABEL: name}}, "data": {"k": "module"}}),
        }];
        // Only once its own object shows in the snapshot: the module's own objects
        // are associated through its field manager.
        if own_seen {
            actions.push(match name.as_str() {
                "deleter" => Action::Delete {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: "victim-delete".into(),
                    propagation_policy: Some(PropagationPolicy::Background),
                },
                _ => Action::Apply {
                    object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "victim-apply", "labels": {LABEL: name}}, "data": {"k": "taken"}}),
                },
            });
        }
        Outcome::actions(actions)
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    create_mirror(&client, &ns, "deleter", json!({})).await?;
    create_mirror(&client, &ns, "applier", json!({})).await?;
    wait_last_failure(&module, "deleter", "\"victim-delete\": the object is not associated").await?;
    wait_last_failure(&module, "applier", "\"victim-apply\": the object is not associated").await?;
    for name in ["victim-delete", "victim-apply"] {
        let cm = cms.get(name).await?;
        assert_eq!(
            cm.data.unwrap_or_default().get("k").map(String::as_str),
            Some("user"),
            "{name} was touched"
        );
    }
    // The snapshots never showed the user's objects as the module's.
    for snapshot in module.calls.lock().unwrap().iter() {
        let names: Vec<_> = snapshot.related.iter().map(|o| o["metadata"]["name"].clone()).collect();
        assert!(!names.iter().any(|n| n.as_str().is_some_and(|n| n.starts_with("victim"))), "{names:?}");
    }
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_name_that_would_reach_a_subresource_never_becomes_a_request() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "reach-names").await?;
    let ns = ns.name().to_owned();
    let module = NativeModule::new(manifest(vec![kind("v1", "ConfigMap", "configmaps")]), |snapshot| {
        let name = name_of(&snapshot);
        match name.as_str() {
            // `DELETE .../configmaps/m/status` if the name went into the path as it is.
            "deleter" => Outcome::actions(vec![Action::Delete {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "deleter/status".into(),
                propagation_policy: None,
            }]),
            _ => Outcome::Actions {
                actions: vec![],
                requires: vec![Requirement {
                    api_version: "v1".into(),
                    kind: "Secret".into(),
                    name: "../secrets".into(),
                }],
                requeue_after_seconds: None,
            },
        }
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    create_mirror(&client, &ns, "deleter", json!({})).await?;
    create_mirror(&client, &ns, "requirer", json!({})).await?;
    let deleted = wait_last_failure(&module, "deleter", "\"deleter/status\": not a valid name").await?;
    assert!(deleted.contains("DNS-1123 subdomain"), "{deleted}");
    wait_last_failure(&module, "requirer", "\"../secrets\": not a valid name").await?;
    // Refused by confinement, before any request: no Secret was read for a snapshot,
    // and the rejections are counted.
    assert!(module.calls.lock().unwrap().iter().all(|s| s.required.is_empty()));
    assert!(op.metrics.rejections_total() >= 2, "{}", op.metrics.encode());
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_manifest_listing_a_refused_kind_does_not_start_and_the_message_names_the_flag() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "reach-kinds").await?;
    let ns = ns.name().to_owned();
    let binding = kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings");
    let cases = [
        (binding.clone(), "--allow-kind rbac.authorization.k8s.io/RoleBinding"),
        (kind("v1", "ServiceAccount", "serviceaccounts"), "--allow-kind core/ServiceAccount"),
        (kind("v1", "Pod", "pods"), "--allow-kind core/Pod"),
        (kind("v1", "Secret", "secrets"), "--allow-secret-values"),
    ];
    for (refused, flag) in cases {
        let module =
            NativeModule::new(manifest(vec![kind("v1", "ConfigMap", "configmaps"), refused]), |_| {
                Outcome::actions(Vec::new())
            });
        let err = start_operator(&client, module.clone(), &ns).await.expect_err("a refused kind starts");
        let message = format!("{:#}", err);
        assert!(message.contains(flag), "{message}");
        assert!(matches!(err.downcast_ref::<StartError>(), Some(StartError::Policy(_))), "{message}");
        assert_eq!(module.call_count(), 0);
    }
    // The flag opens exactly that kind.
    let policy = AdminPolicy {
        allowed_kinds: vec![
            GroupKind::parse("rbac.authorization.k8s.io/RoleBinding").map_err(anyhow::Error::msg)?,
        ],
        ..AdminPolicy::default()
    };
    let module = NativeModule::new(manifest(vec![binding]), |_| Outcome::actions(Vec::new()));
    let op = start_operator_with_policy(&client, module, &ns, policy).await?;
    op.shutdown().await;
    Ok(())
}

/// A StatefulSet whose pod spec is `pod` beside one plain container.
fn statefulset(owner: &str, name: &str, pod: Value) -> Action {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), pod.as_object()) {
        for (key, value) in extra {
            spec.insert(key.clone(), value.clone());
        }
    }
    Action::Apply {
        object: json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "labels": {LABEL: owner}},
            "spec": {"selector": {"matchLabels": {"app": name}}, "serviceName": name,
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}),
    }
}

#[tokio::test]
async fn pod_templates_and_services_that_break_the_workload_rules_are_never_written() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "reach-workload").await?;
    let ns = ns.name().to_owned();
    let related = vec![
        kind("v1", "ConfigMap", "configmaps"),
        kind("apps/v1", "StatefulSet", "statefulsets"),
        kind("v1", "Service", "services"),
    ];
    let module = NativeModule::new(manifest(related), |snapshot| {
        let name = name_of(&snapshot);
        let privileged = json!({"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]});
        let action = match name.as_str() {
            "privileged" => statefulset(&name, "privileged-sts", privileged),
            "hostpath" => statefulset(
                &name,
                "hostpath-sts",
                json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
            ),
            "account" => statefulset(&name, "account-sts", json!({"serviceAccountName": "admin"})),
            "external" => Action::Apply {
                object: json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "external-svc", "labels": {LABEL: name}},
                    "spec": {"ports": [{"port": 80}], "externalIPs": ["10.0.0.1"]}}),
            },
            _ => statefulset(&name, "clean-sts", json!({"securityContext": {"fsGroup": 65532}})),
        };
        Outcome::actions(vec![action])
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    for name in ["privileged", "hostpath", "account", "external", "clean"] {
        create_mirror(&client, &ns, name, json!({})).await?;
    }
    wait_last_failure(&module, "privileged", "spec.template.spec.containers[0].securityContext.privileged")
        .await?;
    wait_last_failure(&module, "hostpath", "spec.template.spec.volumes[0].hostPath").await?;
    wait_last_failure(&module, "account", "serviceAccountName").await?;
    wait_last_failure(&module, "external", "spec.externalIPs").await?;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    eventually("the clean StatefulSet", || async { Ok(sts.get_opt("clean-sts").await?.map(|_| ())) }).await?;
    for name in ["privileged-sts", "hostpath-sts", "account-sts"] {
        assert!(sts.get_opt(name).await?.is_none(), "{name} was written");
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    assert!(services.get_opt("external-svc").await?.is_none(), "the Service with externalIPs was written");
    let rejected = events(&client, &ns, "privileged", "ActionRejected").await?;
    assert!(rejected.iter().any(|(_, note)| note.contains("privileged")), "{rejected:?}");
    op.shutdown().await;
    Ok(())
}
