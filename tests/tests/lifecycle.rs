//! The DittoServer lifecycle while it lives, proven against the real control plane
//! with the built module running in the real host (`wasm-operator run`, one per test,
//! scoped to the test's namespace): creation (finalizer first, owned objects, no
//! secret in the ConfigMap, Pending then Running), stop, the metrics Service,
//! Percona ordering, config-hash rolls, no idle writes, and bad input.
//!
//! Pods are real, as far as the API goes: the StatefulSet controller creates and
//! replaces them, the scheduler places them on kwok's fake nodes, and kwok reports
//! them Running and Ready (no container runs). The tests play only the Percona
//! operator, setting PerconaPGCluster `status.state`. States too short to poll for
//! (Pending before the pods are ready) are read from a [`Recording`]. Waits are
//! generous bounds; nothing asserts a duration.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, bail, ensure};
use e2e::dittofs::{
    CONFIG_HASH_ANNOTATION, FINALIZER, OWNER_LABEL, condition, condition_state, controlled_by, dittoservers,
    names, phase, references,
};
use e2e::record::{Change, Recorded, Recording};
use e2e::{DEFAULT_TIMEOUT, Scenario, wait_until};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt as _;
use kube::api::{ApiResource, ListParams};
use serde_json::{Value, json};

fn minimal_spec() -> Value {
    json!({"storage": {"metadataSize": "1Gi"}})
}

/// Names of the Services labelled as owned by `server`.
async fn service_names(s: &Scenario, server: &str) -> Result<BTreeSet<String>> {
    let selector = format!("{OWNER_LABEL}={server}");
    Ok(s.services()
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .map(|o| o.name_any())
        .collect())
}

fn expected_services(server: &str, metrics: bool) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = names::services(server).into_iter().collect();
    if metrics {
        set.insert(names::metrics_service(server));
    }
    set
}

/// Asserts that `meta` is labelled as owned by `server` and controlled by it.
fn assert_owned(what: &str, meta: &kube::api::ObjectMeta, server: &str, uid: &str) -> Result<()> {
    let label = meta.labels.as_ref().and_then(|l| l.get(OWNER_LABEL));
    ensure!(
        label.map(String::as_str) == Some(server),
        "{what}: label {OWNER_LABEL} is {label:?}, not {server}"
    );
    ensure!(
        controlled_by(meta, uid),
        "{what}: no controller ownerReference to DittoServer {server} ({uid}): {:?}",
        meta.owner_references
    );
    Ok(())
}

/// The statuses DittoServer `name` went through, in order, from a recording.
fn server_statuses(changes: &[Recorded], name: &str) -> Vec<Value> {
    changes
        .iter()
        .filter(|c| c.kind == "DittoServer" && c.object.name_any() == name)
        .map(|c| c.object.data["status"].clone())
        .collect()
}

/// The recorded changes once the recording has seen the server Running: the watch
/// lags the `get` that saw it.
async fn changes_until_running(recording: &Recording, name: &str) -> Result<Vec<Recorded>> {
    recording
        .wait_for(&format!("{name} Running"), |changes| {
            server_statuses(changes, name).iter().any(|st| st["phase"] == "Running")
        })
        .await
}

fn pod_config_hash(sts: &StatefulSet) -> Option<String> {
    sts.spec.template.metadata.as_ref()?.annotations.as_ref()?.get(CONFIG_HASH_ANNOTATION).cloned()
}

/// Scenario 1. The finalizer is in place before any owned object exists; the
/// ConfigMap, three Services and the StatefulSet carry the owner label and a
/// controller reference; no secret value reaches the ConfigMap; Pending, then
/// Running with Ready True and all its conditions once the StatefulSet is ready.
#[tokio::test]
async fn create_puts_the_finalizer_first_then_owned_objects_and_runs_once_ready() -> Result<()> {
    let s = Scenario::start("create").await?;
    // Distinctive values, to be looked for where they must not be.
    let secrets = [
        ("jwt", "secret", "e2e-jwt-9d41c7f0a2b35e68"),
        ("admin", "password", "e2e-admin-password-73c1e5b9"),
        ("s3", "accessKeyId", "E2EACCESSKEY5F2A9C"),
        ("s3", "secretAccessKey", "e2e-s3-secret-access-key-0b7d4e"),
        ("pg", "password", "e2e-postgres-password-c6a8f1"),
    ];
    s.put_secret("jwt", &[("secret", secrets[0].2)]).await?;
    s.put_secret("admin", &[("password", secrets[1].2)]).await?;
    s.put_secret(
        "s3",
        &[("accessKeyId", secrets[2].2), ("secretAccessKey", secrets[3].2), ("endpoint", "http://s3.local")],
    )
    .await?;
    s.put_secret(
        "pg",
        &[("host", "pg.local"), ("database", "ditto"), ("user", "ditto"), ("password", secrets[4].2)],
    )
    .await?;

    let kinds = [
        dittoservers(),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<StatefulSet>(&()),
    ];
    let recording = Recording::start(&s.client, s.ns(), &kinds).await?;

    let name = "nas";
    let created = s
        .create_server(
            name,
            json!({
                "storage": {"metadataSize": "1Gi"},
                "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "secret"}},
                             "admin": {"passwordSecretRef": {"name": "admin", "key": "password"}}},
                "database": {"type": "postgres", "postgresSecretRef": {"name": "pg", "key": "password"}},
                "s3": {"credentialsSecretRef": {"secretName": "s3"}, "bucket": "files"},
            }),
        )
        .await?;
    let uid = created.uid().context("the DittoServer has no uid")?;

    let sts = s.wait_statefulset(name).await?;

    // Owned objects: labels and controller references.
    let cm = s.config_maps().get(&names::config_map(name)).await?;
    assert_owned("ConfigMap", &cm.metadata, name, &uid)?;
    let services = service_names(&s, name).await?;
    ensure!(services == expected_services(name, false), "Services: {services:?}");
    for service in &services {
        assert_owned(&format!("Service {service}"), &s.services().get(service).await?.metadata, name, &uid)?;
    }
    assert_owned("StatefulSet", &sts.metadata, name, &uid)?;

    // No secret value in the ConfigMap (nor in the StatefulSet: env uses secretKeyRef).
    let cm_text = serde_json::to_string(&cm)?;
    let sts_text = serde_json::to_string(&sts)?;
    ensure!(cm.data.as_ref().is_some_and(|d| d.contains_key("config.yaml")), "no config.yaml: {cm_text}");
    for (secret, key, value) in secrets {
        ensure!(
            !cm_text.contains(value),
            "the value of Secret {secret} key {key} is in the ConfigMap: {cm_text}"
        );
        ensure!(!sts_text.contains(value), "the value of Secret {secret} key {key} is in the StatefulSet");
    }
    let env =
        serde_json::to_value(&sts.spec.template.spec.as_ref().context("no pod spec")?.containers[0].env)?;
    let jwt_env = env
        .as_array()
        .and_then(|vars| vars.iter().find(|v| v["name"] == "DITTOFS_CONTROLPLANE_SECRET"))
        .context("no DITTOFS_CONTROLPLANE_SECRET")?;
    ensure!(
        jwt_env["valueFrom"]["secretKeyRef"] == json!({"name": "jwt", "key": "secret"}),
        "the JWT secret does not come from a secretKeyRef: {jwt_env}"
    );

    // Pending until the pods are ready; then Running, Ready and every condition met.
    s.wait_statefulset_ready(name).await?;
    let server = s.wait_phase(name, "Running").await?;
    let generation = server.metadata.generation.context("no generation")?;
    // The owned objects' watches are separate streams: wait for them too.
    let changes = recording
        .wait_for(&format!("{name} Running and its 5 owned objects created"), |changes| {
            let created =
                changes.iter().filter(|c| c.kind != "DittoServer" && c.change == Change::Added).count();
            created >= 5 && server_statuses(changes, name).iter().any(|st| st["phase"] == "Running")
        })
        .await?;
    let statuses = server_statuses(&changes, name);
    let pending = statuses.iter().position(|st| st["phase"] == "Pending");
    let running = statuses.iter().position(|st| st["phase"] == "Running");
    ensure!(
        pending.is_some() && pending < running,
        "the status was not Pending before Running: {statuses:?}"
    );
    let pending = &statuses[pending.unwrap_or_default()];
    ensure!(
        pending["conditions"].as_array().is_some_and(|conditions| conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "False")),
        "Ready while Pending: {pending}"
    );
    for (kind, status, reason) in [
        ("ConfigReady", "True", "ConfigMapCurrent"),
        ("Available", "True", "MinimumReplicasAvailable"),
        ("Progressing", "False", "ReconcileComplete"),
        ("Ready", "True", "AllConditionsMet"),
    ] {
        let found = condition_state(&server, kind);
        ensure!(found == Some((status.into(), reason.into())), "{kind}: {found:?}, want {status} {reason}");
        let observed = condition(&server, kind).and_then(|c| c["observedGeneration"].as_i64());
        ensure!(observed == Some(generation), "{kind}: observedGeneration {observed:?}, want {generation}");
    }
    ensure!(condition(&server, "DatabaseReady").is_none(), "DatabaseReady without Percona");
    ensure!(server.data["status"]["readyReplicas"] == 1, "status: {}", server.data["status"]);
    ensure!(server.finalizers().iter().any(|f| f == FINALIZER), "finalizers: {:?}", server.finalizers());

    // The order, from the API server's own revisions.
    ensure!(recording.errors().is_empty(), "the recording failed: {:?}", recording.errors());
    let finalized_at = changes
        .iter()
        .filter(|c| c.kind == "DittoServer" && c.object.finalizers().iter().any(|f| f == FINALIZER))
        .map(|c| c.revision)
        .min()
        .context("no recorded change of the DittoServer carries the finalizer")?;
    let created: Vec<_> = changes
        .iter()
        .filter(|c| c.kind != "DittoServer" && c.change == Change::Added)
        .map(|c| (c.revision, format!("{} {}", c.kind, c.object.name_any())))
        .collect();
    ensure!(
        created.len() >= 5,
        "expected the ConfigMap, 3 Services and the StatefulSet to be created: {created:?}"
    );
    ensure!(finalized_at > 0, "resourceVersions are not numbers here; cannot order the changes");
    for (revision, what) in &created {
        ensure!(
            *revision > finalized_at,
            "{what} was created at revision {revision}, before the finalizer (revision {finalized_at})"
        );
    }
    Ok(())
}

/// Scenario 2. `replicas: 0` stops the server: phase Stopped, the StatefulSet scaled
/// to 0; back to 1 it runs again once ready.
#[tokio::test]
async fn replicas_zero_stops_the_server() -> Result<()> {
    let s = Scenario::start("stop").await?;
    let name = "nas";
    s.create_running_server(name, minimal_spec()).await?;

    s.patch_spec(name, json!({"replicas": 0})).await?;
    let server = s.wait_phase(name, "Stopped").await?;
    let sts = s.statefulsets().get(name).await?;
    ensure!(sts.spec.replicas == Some(0), "StatefulSet replicas: {:?}", sts.spec.replicas);
    let available = condition_state(&server, "Available");
    ensure!(available == Some(("True".into(), "Stopped".into())), "Available: {available:?}");
    // The pods go; the server stays Stopped, and is Ready as such.
    s.wait_statefulset_ready(name).await?;
    let stopped = s
        .wait_server("Ready while stopped", name, |o| {
            condition_state(o, "Ready") == Some(("True".into(), "AllConditionsMet".into()))
        })
        .await?;
    ensure!(phase(&stopped) == Some("Stopped"), "phase: {:?}", phase(&stopped));

    let recording = Recording::start(&s.client, s.ns(), &[dittoservers()]).await?;
    s.patch_spec(name, json!({"replicas": 1})).await?;
    let this = &s;
    wait_until("the StatefulSet scaled back to 1", DEFAULT_TIMEOUT, || async move {
        Ok((this.statefulsets().get(name).await?.spec.replicas == Some(1)).then_some(()))
    })
    .await?;
    s.wait_statefulset_ready(name).await?;
    s.wait_phase(name, "Running").await?;
    let changes = changes_until_running(&recording, name).await?;
    let phases: Vec<_> = server_statuses(&changes, name).iter().map(|st| st["phase"].clone()).collect();
    let pending = phases.iter().position(|p| p == "Pending");
    ensure!(
        pending.is_some() && pending < phases.iter().position(|p| p == "Running"),
        "not Pending while the pod started: {phases:?}"
    );
    Ok(())
}

/// Hand edits are reverted: `kubectl scale` of the StatefulSet and `kubectl edit` of
/// the configuration keep the applied-hash annotation, and the operator still puts
/// back what the DittoServer says.
#[tokio::test]
async fn hand_edits_of_owned_objects_are_reverted() -> Result<()> {
    let s = Scenario::start("hand-edit").await?;
    let name = "nas";
    s.create_running_server(name, minimal_spec()).await?;
    let config_map = names::config_map(name);
    let config = s.config_maps().get(&config_map).await?.data.unwrap_or_default();

    let patch = |value: Value| kube::api::Patch::Merge(value);
    let params = kube::api::PatchParams::default();
    s.statefulsets().patch(name, &params, &patch(json!({"spec": {"replicas": 3}}))).await?;
    s.config_maps()
        .patch(&config_map, &params, &patch(json!({"data": {"config.yaml": "edited: true\n"}})))
        .await?;

    let this = &s;
    wait_until("the StatefulSet scaled back to 1", DEFAULT_TIMEOUT, || async move {
        Ok((this.statefulsets().get(name).await?.spec.replicas == Some(1)).then_some(()))
    })
    .await?;
    let config_map = &config_map;
    let config = &config;
    wait_until("the configuration restored", DEFAULT_TIMEOUT, || async move {
        let data = this.config_maps().get(config_map).await?.data.unwrap_or_default();
        Ok((&data == config).then_some(()))
    })
    .await?;
    Ok(())
}

/// Scenario 3. Turning metrics on creates the metrics Service (owned, labelled, port
/// `metrics`); turning them off deletes it, and only it.
#[tokio::test]
async fn metrics_service_follows_metrics_enabled() -> Result<()> {
    let s = Scenario::start("metrics").await?;
    let name = "nas";
    let server = s.create_running_server(name, minimal_spec()).await?;
    let uid = server.uid().context("no uid")?;
    ensure!(service_names(&s, name).await? == expected_services(name, false));

    s.patch_spec(name, json!({"metrics": {"enabled": true, "port": 9191}})).await?;
    let metrics_name = names::metrics_service(name);
    let this = &s;
    let metrics = wait_until("the metrics Service", DEFAULT_TIMEOUT, || {
        let metrics_name = metrics_name.clone();
        async move { Ok(this.services().get_opt(&metrics_name).await?) }
    })
    .await
    .with_context(|| s.diagnosis(name))?;
    assert_owned("the metrics Service", &metrics.metadata, name, &uid)?;
    let ports = serde_json::to_value(metrics.spec.as_ref().and_then(|spec| spec.ports.clone()))?;
    ensure!(ports[0]["name"] == "metrics" && ports[0]["port"] == 9191, "metrics ports: {ports}");
    ensure!(service_names(&s, name).await? == expected_services(name, true));

    s.patch_spec(name, json!({"metrics": {"enabled": false}})).await?;
    wait_until("the metrics Service to be deleted", DEFAULT_TIMEOUT, || {
        let metrics_name = metrics_name.clone();
        async move { Ok(this.services().get_opt(&metrics_name).await?.is_none().then_some(())) }
    })
    .await
    .with_context(|| s.diagnosis(name))?;
    ensure!(service_names(&s, name).await? == expected_services(name, false));
    Ok(())
}

/// Scenario 4. With Percona, the PerconaPGCluster is created (labelled, without an
/// ownerReference, since deleteWithServer is false); the StatefulSet waits until the
/// cluster's `status.state` is `ready`; DatabaseReady goes False, then True.
#[tokio::test]
async fn percona_cluster_comes_first_and_the_server_waits_for_it() -> Result<()> {
    let s = Scenario::start("percona").await?;
    let name = "nas";
    let created = s
        .create_server(
            name,
            json!({"storage": {"metadataSize": "1Gi"}, "percona": {"enabled": true, "storageSize": "2Gi"}}),
        )
        .await?;
    let uid = created.uid().context("no uid")?;
    let cluster_name = names::percona_cluster(name);
    let perconas = s.perconas();
    let perconas = &perconas;
    let cluster = wait_until("the PerconaPGCluster", DEFAULT_TIMEOUT, || {
        let cluster_name = cluster_name.clone();
        async move { Ok(perconas.get_opt(&cluster_name).await?) }
    })
    .await
    .with_context(|| s.diagnosis(name))?;
    let label = cluster.labels().get(OWNER_LABEL).cloned();
    ensure!(label.as_deref() == Some(name), "PerconaPGCluster label: {label:?}");
    ensure!(
        !references(&cluster.metadata, &uid),
        "an ownerReference without deleteWithServer: {:?}",
        cluster.metadata
    );
    ensure!(cluster.data["spec"]["postgresVersion"] == 16, "spec: {}", cluster.data["spec"]);
    ensure!(
        cluster.data["spec"]["instances"][0]["dataVolumeClaimSpec"]["resources"]["requests"]["storage"]
            == "2Gi"
    );

    let not_ready = s
        .wait_server("DatabaseReady False", name, |o| {
            condition_state(o, "DatabaseReady")
                .is_some_and(|(st, reason)| st == "False" && reason == "PerconaNotReady")
        })
        .await?;
    ensure!(phase(&not_ready) == Some("Pending"), "phase: {:?}", phase(&not_ready));
    ensure!(s.statefulsets().get_opt(name).await?.is_none(), "a StatefulSet before the database is ready");

    // A state other than ready: the status says so, and still no StatefulSet. The
    // status is the batch's last write, so the StatefulSet decision was made with
    // this state.
    s.set_percona_state(name, "initializing").await?;
    s.wait_server("DatabaseReady naming the state", name, |o| {
        condition(o, "DatabaseReady")
            .and_then(|c| c["message"].as_str())
            .is_some_and(|m| m.contains("initializing"))
    })
    .await?;
    ensure!(
        s.statefulsets().get_opt(name).await?.is_none(),
        "a StatefulSet while the database is initializing"
    );

    s.set_percona_state(name, "ready").await?;
    let sts = s.wait_statefulset(name).await?;
    let init =
        serde_json::to_value(&sts.spec.template.spec.as_ref().context("no pod spec")?.init_containers)?;
    ensure!(init[0]["name"] == "wait-for-postgres", "init containers: {init}");
    let server = s
        .wait_server("DatabaseReady True", name, |o| {
            condition_state(o, "DatabaseReady") == Some(("True".into(), "PerconaReady".into()))
        })
        .await?;
    ensure!(server.data["status"]["perconaClusterName"] == cluster_name.as_str());
    s.wait_statefulset_ready(name).await?;
    let running = s.wait_phase(name, "Running").await?;
    ensure!(condition_state(&running, "Ready") == Some(("True".into(), "AllConditionsMet".into())));
    Ok(())
}

/// Scenario 11. The pod's config hash follows the configuration (a new metrics port)
/// and the data of a referenced Secret (same generation, same ConfigMap).
#[tokio::test]
async fn config_hash_follows_the_spec_and_referenced_secrets() -> Result<()> {
    let s = Scenario::start("config-hash").await?;
    let name = "nas";
    s.put_secret("jwt", &[("secret", "first-signing-key")]).await?;
    s.create_running_server(
        name,
        json!({"storage": {"metadataSize": "1Gi"}, "metrics": {"enabled": true, "port": 9090},
               "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "secret"}}}}),
    )
    .await?;
    let first = pod_config_hash(&s.statefulsets().get(name).await?).context("no config hash on the pod")?;
    let server = s.server(name).await?.context("gone")?;
    ensure!(
        server.data["status"]["configHash"] == first.as_str(),
        "status.configHash differs from the pod's"
    );

    let this = &s;
    let changed_from = |previous: String| async move {
        wait_until(format!("the config hash to change from {previous}"), DEFAULT_TIMEOUT, || {
            let previous = previous.clone();
            async move {
                let sts = this.statefulsets().get(name).await?;
                Ok(pod_config_hash(&sts).filter(|h| *h != previous))
            }
        })
        .await
        .with_context(|| this.diagnosis(name))
    };

    s.patch_spec(name, json!({"metrics": {"port": 9191}})).await?;
    let second = changed_from(first.clone()).await?;
    let config = s.config_maps().get(&names::config_map(name)).await?;
    let yaml = config.data.as_ref().and_then(|d| d.get("config.yaml")).context("no config.yaml")?;
    ensure!(yaml.contains("9191"), "the config file does not have the new port:\n{yaml}");

    // The StatefulSet controller replaced the pod with one of the new template.
    let pods = s.pods();
    let pod_hash = |pod: &k8s_openapi::api::core::v1::Pod| {
        pod.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_HASH_ANNOTATION)).cloned()
    };
    let sts = s.wait_statefulset_ready(name).await?;
    let rolled = e2e::workload::statefulset_pods(&pods, &sts).await?;
    ensure!(
        rolled.iter().all(|pod| pod_hash(pod).as_ref() == Some(&second)),
        "the pod was not replaced with the new config hash {second}: {:?}",
        rolled.iter().map(pod_hash).collect::<Vec<_>>()
    );

    // Converge again and let everything queued run out, so that only the Secret's
    // change can trigger the next reconcile.
    s.wait_server("Ready again with the new hash", name, |o| {
        o.data["status"]["configHash"] == second.as_str()
            && condition_state(o, "Ready") == Some(("True".into(), "AllConditionsMet".into()))
    })
    .await?;
    s.touch_and_reconcile(name, "settle").await?;
    s.touch_and_reconcile(name, "settled").await?;

    let generation = s.server(name).await?.context("gone")?.metadata.generation;
    let config_version = config.resource_version();
    s.put_secret("jwt", &[("secret", "second-signing-key")]).await?;
    let third = changed_from(second.clone()).await?;
    ensure!(third != first, "the hash went back to the first one");
    let server = s.server(name).await?.context("gone")?;
    ensure!(server.metadata.generation == generation, "the spec changed: the Secret alone must roll the pod");
    let config = s.config_maps().get(&names::config_map(name)).await?;
    ensure!(config.resource_version() == config_version, "a Secret change rewrote the ConfigMap");
    s.wait_server("status.configHash to follow", name, |o| o.data["status"]["configHash"] == third.as_str())
        .await?;
    let sts = s.wait_statefulset_ready(name).await?;
    let rolled = e2e::workload::statefulset_pods(&pods, &sts).await?;
    ensure!(
        rolled.iter().all(|pod| pod_hash(pod).as_ref() == Some(&third)),
        "the Secret's change did not roll the pod"
    );
    s.wait_phase(name, "Running").await?;
    Ok(())
}

/// The resourceVersions of a server's owned objects and the Secret, by name.
async fn versions(s: &Scenario, name: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut all = vec![
        ("ConfigMap".to_owned(), s.config_maps().get(&names::config_map(name)).await?.resource_version()),
        ("StatefulSet".to_owned(), s.statefulsets().get(name).await?.resource_version()),
    ];
    for service in expected_services(name, true) {
        all.push((format!("Service {service}"), s.services().get(&service).await?.resource_version()));
    }
    Ok(all)
}

/// Scenario 12. A converged DittoServer (with a Secret it reads, so every reconcile
/// answers a requirement) gets no write over several reconciles, triggered by
/// metadata changes of the primary: the host's write counter stays flat and no
/// object's resourceVersion moves. (A Secret change as the trigger is covered by
/// `config_hash_follows_the_spec_and_referenced_secrets`.) Its StatefulSet carries a
/// sidecar container another tool added, which the operator leaves alone.
#[tokio::test]
async fn a_converged_server_is_never_written() -> Result<()> {
    let s = Scenario::start("idle").await?;
    let name = "nas";
    s.put_secret("jwt", &[("secret", "signing-key")]).await?;
    s.create_server(
        name,
        json!({"storage": {"metadataSize": "1Gi"}, "metrics": {"enabled": true},
               "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "secret"}}}}),
    )
    .await?;
    s.wait_statefulset(name).await?;
    // Before the pods are ready, so that the server runs only once the operator has
    // seen the StatefulSet as it stays. A strategic merge patch merges containers by
    // name, as an injector does.
    let sidecar =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "proxy:1"}]}}}});
    let params = kube::api::PatchParams { field_manager: Some("injector".into()), ..Default::default() };
    s.statefulsets().patch(name, &params, &kube::api::Patch::Strategic(sidecar)).await?;
    s.wait_statefulset_ready(name).await?;
    s.wait_phase(name, "Running").await?;
    let op = s.operator()?;
    // Settle: whatever the convergence queued runs out first.
    s.touch_and_reconcile(name, "settle").await?;

    let writes = op.metrics().await?.writes();
    let versions_before = versions(&s, name).await?;
    let status_before = s.server(name).await?.context("gone")?.data["status"].clone();
    for what in ["one", "two", "three"] {
        s.touch_and_reconcile(name, what).await?;
    }
    let last_touch = s.touch_and_reconcile(name, "four").await?;

    let metrics = op.metrics().await?;
    ensure!(
        metrics.writes() == writes,
        "a converged DittoServer was written: writes {writes} -> {}; {:?}",
        metrics.writes(),
        metrics.samples().iter().filter(|(k, _)| k.starts_with("wasm_operator_writes")).collect::<Vec<_>>()
    );
    ensure!(versions(&s, name).await? == versions_before, "an owned object changed");
    let server = s.server(name).await?.context("gone")?;
    ensure!(server.data["status"] == status_before, "the status changed: {}", server.data["status"]);
    ensure!(
        server.resource_version() == last_touch,
        "the DittoServer was written after the test's last touch (status or metadata)"
    );
    Ok(())
}

/// Scenario 13, part 1. CRD validation: the API server rejects an invalid
/// DittoServer before the module could see it.
#[tokio::test]
async fn invalid_servers_are_rejected_by_the_api_server() -> Result<()> {
    let s = Scenario::new("invalid").await?;
    let cases = [
        ("replicas-five", json!({"replicas": 5, "storage": {"metadataSize": "1Gi"}}), "spec.replicas"),
        ("bad-quantity", json!({"storage": {"metadataSize": "10GB"}}), "spec.storage.metadataSize"),
        ("no-storage", json!({"replicas": 1}), "spec.storage"),
        ("port-range", json!({"storage": {"metadataSize": "1Gi"}, "nfsPort": 70000}), "spec.nfsPort"),
    ];
    for (name, spec, field) in cases {
        match s.create_server(name, spec).await {
            Ok(_) => bail!("{name}: the API server accepted an invalid DittoServer"),
            Err(error) => {
                let status = error
                    .chain()
                    .find_map(|e| match e.downcast_ref::<kube::Error>() {
                        Some(kube::Error::Api(status)) => Some(status.clone()),
                        _ => None,
                    })
                    .with_context(|| format!("{name}: not an API error: {error:#}"))?;
                ensure!(status.code == 422, "{name}: {status:?}");
                ensure!(
                    status.message.contains(field),
                    "{name}: the message does not name {field}: {}",
                    status.message
                );
            }
        }
    }
    ensure!(
        s.servers().list(&ListParams::default()).await?.items.is_empty(),
        "an invalid DittoServer was stored"
    );
    Ok(())
}

/// Scenario 13, part 2. A DittoServer that passes the CRD but cannot work (a CPU
/// limit that is no quantity; the CRD's CEL rules refuse what they can express, such
/// as port clashes, at apply time) gets phase Failed with the reason in its conditions
/// and a Warning event, and no owned object; its neighbour still converges, and it
/// recovers once fixed.
#[tokio::test]
async fn an_unusable_server_fails_alone() -> Result<()> {
    let s = Scenario::start("unusable").await?;
    let bad = s
        .create_server(
            "bad",
            json!({"storage": {"metadataSize": "1Gi"}, "resources": {"limits": {"cpu": "fast"}}}),
        )
        .await?;
    s.create_server("good", minimal_spec()).await?;

    let failed = s.wait_phase("bad", "Failed").await?;
    for kind in ["Ready", "ConfigReady"] {
        let found = condition_state(&failed, kind);
        ensure!(found == Some(("False".into(), "InvalidSpec".into())), "{kind}: {found:?}");
    }
    let message = condition(&failed, "Ready").and_then(|c| c["message"].as_str()).unwrap_or_default();
    ensure!(message.contains("spec.resources.limits.cpu"), "the reason does not name the field: {message}");
    let event = s.wait_event("bad", "InvalidSpec").await?;
    ensure!(event.type_.as_deref() == Some("Warning"), "{event:?}");
    ensure!(
        s.config_maps().get_opt(&names::config_map("bad")).await?.is_none(),
        "a ConfigMap from an unusable spec"
    );
    ensure!(s.statefulsets().get_opt("bad").await?.is_none(), "a StatefulSet from an unusable spec");
    ensure!(service_names(&s, "bad").await?.is_empty(), "Services from an unusable spec");

    s.wait_statefulset("good").await?;
    s.wait_statefulset_ready("good").await?;
    s.wait_phase("good", "Running").await?;
    ensure!(phase(&s.server("bad").await?.context("gone")?) == Some("Failed"), "bad recovered by itself");

    s.patch_spec("bad", json!({"resources": {"limits": {"cpu": "1"}}})).await?;
    s.wait_statefulset("bad").await?;
    // Pending, or already Running: kwok may have made its pod ready in between.
    let fixed =
        s.wait_server("no longer Failed", "bad", |o| matches!(phase(o), Some("Pending" | "Running"))).await?;
    ensure!(fixed.uid() == bad.uid());
    ensure!(condition_state(&fixed, "ConfigReady") == Some(("True".into(), "ConfigMapCurrent".into())));
    Ok(())
}
