//! The DittoServer's deletion (the seed's finalizer truths), proven against the real
//! control plane and its garbage collector, with the built module in the real host:
//! phase Deleting and garbage collection, `deleteWithServer` true and false under
//! background, foreground and orphan propagation, reuse of a preserved cluster, the
//! 60-second cleanup timeout, a server in a namespace being deleted (its events
//! refused), and a status written concurrently during deletion.
//!
//! Waits are generous bounds; the only time compared is the cleanup timeout's own
//! 60 seconds, against the timestamps the API server and the host wrote.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::dittofs::{
    FINALIZER, OWNER_LABEL, condition_state, controlled_by, dittoservers, names, phase, references,
};
use e2e::identity::{dittofs_rules, service_account_with_role, write_impersonating_kubeconfig};
use e2e::operator::artifact_dir;
use e2e::record::{Change, Recording};
use e2e::{DEFAULT_TIMEOUT, Scenario, wait_until};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::jiff::SignedDuration;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

fn percona_spec(delete_with_server: bool) -> Value {
    json!({"storage": {"metadataSize": "1Gi"},
           "percona": {"enabled": true, "deleteWithServer": delete_with_server}})
}

/// Creates a DittoServer with Percona, plays the Percona operator and waits until
/// its pod is ready and it runs; returns the server and its PerconaPGCluster.
async fn running_percona_server(
    s: &Scenario,
    name: &str,
    delete_with_server: bool,
) -> Result<(DynamicObject, DynamicObject)> {
    s.create_server(name, percona_spec(delete_with_server)).await?;
    let cluster_name = names::percona_cluster(name);
    let perconas = s.perconas();
    let perconas = &perconas;
    wait_until("the PerconaPGCluster", DEFAULT_TIMEOUT, || {
        let cluster_name = cluster_name.clone();
        async move { Ok(perconas.get_opt(&cluster_name).await?) }
    })
    .await
    .with_context(|| s.diagnosis(name))?;
    s.set_percona_state(name, "ready").await?;
    s.wait_statefulset(name).await?;
    s.wait_statefulset_ready(name).await?;
    let server = s.wait_phase(name, "Running").await?;
    let cluster = s.perconas().get(&cluster_name).await?;
    Ok((server, cluster))
}

/// Waits until the garbage collector has processed the deleted server `name`'s
/// dependents: its ConfigMap is gone (`gone`) or no longer references `uid`.
async fn wait_collected(s: &Scenario, name: &str, uid: &str, gone: bool) -> Result<()> {
    let config_map = names::config_map(name);
    let what = if gone {
        "the garbage collector to delete the ConfigMap"
    } else {
        "the garbage collector to orphan the ConfigMap"
    };
    let config_map = &config_map;
    wait_until(what, DEFAULT_TIMEOUT, || async move {
        let found = s.config_maps().get_opt(config_map).await?;
        Ok(match found {
            None => gone.then_some(()),
            Some(cm) => (!gone && !references(&cm.metadata, uid)).then_some(()),
        })
    })
    .await
}

/// Scenario 5. Background deletion: phase Deleting (recorded, since it lasts one
/// batch) with a Normal event; the DittoServer goes; the garbage collector removes
/// the ConfigMap, the Services, the StatefulSet and its pod; the pod's volumes stay.
#[tokio::test]
async fn background_deletion_goes_through_deleting_and_collects_everything() -> Result<()> {
    let s = Scenario::start("delete-background").await?;
    let name = "nas";
    let server = s
        .create_running_server(
            name,
            json!({"storage": {"metadataSize": "1Gi"}, "metrics": {"enabled": true}}),
        )
        .await?;
    let uid = server.uid().context("no uid")?;
    let recording = Recording::start(&s.client, s.ns(), &[dittoservers()]).await?;

    s.servers().delete(name, &DeleteParams::background()).await?;
    s.wait_server_gone(name, DEFAULT_TIMEOUT).await?;

    // The watch lags the `get` that saw the server gone; its Deleted event comes
    // after every change before it.
    let changes = recording
        .wait_for(&format!("{name} deleted"), |changes| {
            changes.iter().any(|c| c.change == Change::Deleted && c.object.name_any() == name)
        })
        .await?;
    ensure!(recording.errors().is_empty(), "the recording failed: {:?}", recording.errors());
    let phases: Vec<String> = changes.iter().filter_map(|c| phase(&c.object).map(str::to_owned)).collect();
    ensure!(phases.iter().any(|p| p == "Deleting"), "phase Deleting never written; phases seen: {phases:?}");
    let deleting =
        changes.into_iter().find(|c| phase(&c.object) == Some("Deleting")).context("no Deleting")?;
    ensure!(deleting.object.metadata.deletion_timestamp.is_some(), "Deleting before the deletion");
    ensure!(
        deleting.object.finalizers().iter().any(|f| f == FINALIZER),
        "Deleting written after the finalizer went"
    );
    let event = s.wait_event(name, "Deleting").await?;
    ensure!(event.type_.as_deref() == Some("Normal"), "{event:?}");

    let selector = format!("{OWNER_LABEL}={name}");
    let this = &s;
    let selector = &selector;
    wait_until("the garbage collector to remove every owned object", DEFAULT_TIMEOUT, || async move {
        let lp = ListParams::default().labels(selector);
        let left = this.config_maps().list(&lp).await?.items.len()
            + this.services().list(&lp).await?.items.len()
            + this.statefulsets().list(&lp).await?.items.len();
        Ok((left == 0).then_some(()))
    })
    .await?;
    // The StatefulSet's pod goes with it (the garbage collector, then kwok), and
    // its volumes stay: the retention policy is Retain, so no data is lost.
    let pod = format!("{name}-0");
    let pod = &pod;
    wait_until("the StatefulSet's pod to go", DEFAULT_TIMEOUT, || async move {
        Ok(this.pods().get_opt(pod).await?.is_none().then_some(()))
    })
    .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), s.ns());
    for claim in ["metadata", "cache"] {
        let claim = format!("{claim}-{name}-0");
        let found = claims.get_opt(&claim).await?.with_context(|| format!("PVC {claim} was deleted"))?;
        ensure!(found.metadata.deletion_timestamp.is_none(), "PVC {claim} is being deleted");
    }
    // Nothing the GC removed came back: the host did not re-create for a dying server.
    ensure!(s.config_maps().get_opt(&names::config_map(name)).await?.is_none());
    ensure!(
        s.statefulsets().get_opt(name).await?.is_none_or(|sts| !references(&sts.metadata, &uid)),
        "the StatefulSet still belongs to the deleted server"
    );
    Ok(())
}

/// Scenario 6. `deleteWithServer: true`: the PerconaPGCluster (owned by the server
/// then) is deleted with it, by the module (Warning event PerconaDeleted).
#[tokio::test]
async fn delete_with_server_true_deletes_the_cluster() -> Result<()> {
    let s = Scenario::start("delete-with-server").await?;
    let name = "nas";
    let (server, cluster) = running_percona_server(&s, name, true).await?;
    let uid = server.uid().context("no uid")?;
    ensure!(
        controlled_by(&cluster.metadata, &uid),
        "no controller reference with deleteWithServer: {:?}",
        cluster.metadata
    );

    s.servers().delete(name, &DeleteParams::background()).await?;
    s.wait_server_gone(name, DEFAULT_TIMEOUT).await?;
    let cluster_name = names::percona_cluster(name);
    let perconas = s.perconas();
    let (perconas, cluster_name) = (&perconas, &cluster_name);
    wait_until("the PerconaPGCluster to be deleted", DEFAULT_TIMEOUT, || async move {
        Ok(perconas.get_opt(cluster_name).await?.is_none().then_some(()))
    })
    .await?;
    let event = s.wait_event(name, "PerconaDeleted").await?;
    ensure!(event.type_.as_deref() == Some("Warning"), "{event:?}");
    ensure!(s.events(name, "PerconaOrphaned").await?.is_empty(), "orphaned and deleted?");
    Ok(())
}

/// Scenario 7. `deleteWithServer: false`: whatever the propagation policy, the
/// PerconaPGCluster survives the server, with no ownerReference to it.
async fn delete_with_server_false_keeps_the_cluster(prefix: &str, params: DeleteParams) -> Result<()> {
    let s = Scenario::start(prefix).await?;
    let name = "nas";
    let (server, cluster) = running_percona_server(&s, name, false).await?;
    let uid = server.uid().context("no uid")?;
    let cluster_uid = cluster.uid().context("no cluster uid")?;
    ensure!(
        !references(&cluster.metadata, &uid),
        "an ownerReference without deleteWithServer: {:?}",
        cluster.metadata
    );

    let orphaning = params.propagation_policy == Some(kube::api::PropagationPolicy::Orphan);
    s.servers().delete(name, &params).await?;
    s.wait_server_gone(name, DEFAULT_TIMEOUT).await?;
    // The garbage collector has seen the owner go; had the cluster depended on it,
    // it would be deleted (or being deleted) by now.
    wait_collected(&s, name, &uid, !orphaning).await?;
    let kept = s
        .perconas()
        .get_opt(&names::percona_cluster(name))
        .await?
        .context("the PerconaPGCluster was deleted although deleteWithServer is false")?;
    ensure!(kept.uid().as_deref() == Some(cluster_uid.as_str()), "the PerconaPGCluster was re-created");
    ensure!(kept.metadata.deletion_timestamp.is_none(), "the PerconaPGCluster is being deleted");
    ensure!(
        !references(&kept.metadata, &uid),
        "the kept cluster references the deleted server: {:?}",
        kept.metadata
    );
    ensure!(
        kept.labels().get(OWNER_LABEL).map(String::as_str) == Some(name),
        "the label is what ties it to a namesake"
    );
    let event = s.wait_event(name, "PerconaOrphaned").await?;
    ensure!(event.type_.as_deref() == Some("Normal"), "{event:?}");
    Ok(())
}

#[tokio::test]
async fn delete_with_server_false_keeps_the_cluster_under_background_deletion() -> Result<()> {
    delete_with_server_false_keeps_the_cluster("keep-background", DeleteParams::background()).await
}

#[tokio::test]
async fn delete_with_server_false_keeps_the_cluster_under_foreground_deletion() -> Result<()> {
    delete_with_server_false_keeps_the_cluster("keep-foreground", DeleteParams::foreground()).await
}

#[tokio::test]
async fn delete_with_server_false_keeps_the_cluster_under_orphan_deletion() -> Result<()> {
    delete_with_server_false_keeps_the_cluster("keep-orphan", DeleteParams::orphan()).await
}

/// Scenario 8. A DittoServer re-created under the same name finds the preserved
/// PerconaPGCluster and uses it as it is: same uid, not written, ready at once.
#[tokio::test]
async fn a_recreated_server_reuses_the_preserved_cluster() -> Result<()> {
    let s = Scenario::start("recreate").await?;
    let name = "nas";
    let (server, cluster) = running_percona_server(&s, name, false).await?;
    let first_uid = server.uid().context("no uid")?;
    s.servers().delete(name, &DeleteParams::background()).await?;
    s.wait_server_gone(name, DEFAULT_TIMEOUT).await?;
    wait_collected(&s, name, &first_uid, true).await?;
    let preserved = s.perconas().get(&names::percona_cluster(name)).await?;
    ensure!(preserved.uid() == cluster.uid(), "the cluster did not survive");

    let again = s.create_server(name, percona_spec(false)).await?;
    ensure!(again.uid() != Some(first_uid), "not a new DittoServer");
    s.wait_statefulset(name).await?;
    let server = s
        .wait_server("DatabaseReady True", name, |o| {
            condition_state(o, "DatabaseReady") == Some(("True".into(), "PerconaReady".into()))
        })
        .await?;
    ensure!(server.data["status"]["perconaClusterName"] == names::percona_cluster(name).as_str());
    s.wait_statefulset_ready(name).await?;
    s.wait_phase(name, "Running").await?;
    let reused = s.perconas().get(&names::percona_cluster(name)).await?;
    ensure!(reused.uid() == preserved.uid(), "the PerconaPGCluster was re-created");
    ensure!(
        reused.resource_version() == preserved.resource_version(),
        "the preserved PerconaPGCluster was written: {:?} -> {:?}",
        preserved.metadata.managed_fields,
        reused.metadata.managed_fields
    );
    Ok(())
}

/// A DittoServer in a namespace being deleted: the API server refuses every create
/// there, the module's events included. Events are best effort, so the deletion
/// batch goes on past them and the finalizer goes in that same reconcile, rather than
/// after a failed reconcile and its retries (or, for a module whose every deletion
/// reconcile sends an event, after the 60-second cleanup timeout).
#[tokio::test]
async fn a_server_in_a_namespace_being_deleted_goes_without_waiting_for_the_timeout() -> Result<()> {
    let s = Scenario::start("ns-deleting").await?;
    let name = "nas";
    s.create_server(name, json!({"storage": {"metadataSize": "1Gi"}})).await?;
    s.wait_statefulset(name).await?;
    s.wait_statefulset_ready(name).await?;
    s.wait_phase(name, "Running").await?;
    let op = s.operator()?;
    let before = op.metrics().await?;

    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    namespaces.delete(s.ns(), &DeleteParams::background()).await?;
    let this = &s;
    wait_until("the DittoServer to be gone", DEFAULT_TIMEOUT, || async move {
        Ok(this.server(name).await?.is_none().then_some(()))
    })
    .await
    .with_context(|| s.diagnosis(name))?;

    // The host counts the removal once the response is in, a moment after the
    // server is seen gone.
    let removed_before = before.actions("removeFinalizer", "success");
    let after = wait_until("the host to count its finalizer removal", DEFAULT_TIMEOUT, || async {
        let metrics = op.metrics().await?;
        Ok((metrics.actions("removeFinalizer", "success") > removed_before).then_some(metrics))
    })
    .await
    .with_context(|| format!("the host did not remove the finalizer: {:?}", before.samples()))?;
    let refused_events = after.actions("event", "error") - before.actions("event", "error");
    ensure!(refused_events >= 1.0, "no event was refused: {:?}", after.samples());
    // The refused event was logged and passed over, and no reconcile failed on it
    // (other writes may fail while the namespace controller empties the namespace).
    let messages: Vec<String> =
        op.log_lines().iter().filter_map(|l| l["message"].as_str().map(str::to_owned)).collect();
    ensure!(
        messages.iter().any(|m| m.starts_with("cannot record the module's event")),
        "the refused event was not logged as passed over"
    );
    let failed_on_event: Vec<&String> =
        messages.iter().filter(|m| m.starts_with("reconcile failed: event")).collect();
    ensure!(failed_on_event.is_empty(), "a reconcile failed on its event: {failed_on_event:?}");
    Ok(())
}

/// Scenario 9. Cleanup that keeps failing (the host's identity may not delete
/// PerconaPGClusters): the finalizer stays and the step is retried; 60 seconds after
/// deletionTimestamp the finalizer is removed anyway, with a Warning event
/// CleanupTimeout, and the DittoServer does not hang in Terminating.
#[tokio::test]
async fn cleanup_that_keeps_failing_gives_up_after_60_seconds() -> Result<()> {
    let mut s = Scenario::new("cleanup-timeout").await?;
    let rules = dittofs_rules(&[("perconapgclusters", "delete")]);
    let user = service_account_with_role(&s.client, s.ns(), "operator-without-delete", rules).await?;
    let kubeconfig = artifact_dir(s.ns())?.join("operator-without-delete.kubeconfig");
    write_impersonating_kubeconfig(s.cluster(), &user, &kubeconfig)?;
    s.start_operator(Some(&kubeconfig)).await?;

    // Everything but the cleanup works under this identity.
    let name = "nas";
    let (server, _) = running_percona_server(&s, name, true).await?;
    let uid = server.uid().context("no uid")?;

    s.servers().delete(name, &DeleteParams::background()).await?;
    let deleting = s.wait_phase(name, "Deleting").await?;
    let deleted_at = deleting.metadata.deletion_timestamp.clone().context("no deletionTimestamp")?.0;

    // The step fails and is retried, and the finalizer holds meanwhile.
    let op = s.operator()?;
    let this = &s;
    let retries = wait_until("the failing cleanup to be retried", DEFAULT_TIMEOUT, || async move {
        let failed = op.metrics().await?.actions("delete", "error");
        let server = this.server(name).await?.context("the DittoServer went while its cleanup fails")?;
        ensure!(server.finalizers().iter().any(|f| f == FINALIZER), "the finalizer went while cleanup fails");
        Ok((failed >= 2.0).then_some(failed))
    })
    .await
    .with_context(|| s.diagnosis(name))?;
    ensure!(
        op.log_lines().iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("forbidden"))),
        "the host's log does not say why the cleanup fails"
    );
    let cluster = s.perconas().get(&names::percona_cluster(name)).await?;
    ensure!(cluster.metadata.deletion_timestamp.is_none(), "the cluster is being deleted after all");

    // Then the finalizer goes anyway (retries back off, so allow well beyond 60 s).
    s.wait_server_gone(name, Duration::from_secs(240)).await?;
    let timeout = s.wait_event(name, "CleanupTimeout").await?;
    ensure!(timeout.type_.as_deref() == Some("Warning"), "{timeout:?}");
    let note = timeout.note.clone().unwrap_or_default();
    ensure!(note.contains("60s") && note.contains("forbidden"), "the event does not explain: {note}");
    let given_up_at = timeout.event_time.as_ref().context("the event has no eventTime")?.0;
    let waited = given_up_at.duration_since(deleted_at);
    ensure!(
        waited >= SignedDuration::from_secs(60),
        "the finalizer was removed {waited:?} after deletionTimestamp, before the 60 s timeout"
    );
    ensure!(s.events(name, "PerconaDeleted").await?.is_empty(), "the cleanup succeeded after all?");
    eprintln!(
        "cleanup timeout: {retries} failed delete attempts seen while waiting; finalizer removed {waited:?} after \
         deletionTimestamp ({given_up_at} - {deleted_at}); server uid {uid}"
    );
    Ok(())
}

/// A finalizer of the test's own: it keeps a deleted DittoServer in Terminating after
/// the module's finalizer is gone, so that what the host does then can be watched.
const HOLD_FINALIZER: &str = "e2e.dittofs.dittofs.com/hold";

/// Scenario 10. Another client writes the status, as fast as the API server takes
/// it, while the server is deleted (the original operator's `Deleting` write made
/// its finalizer update fail with 409 forever): the module's finalizer still goes,
/// the host then leaves the dying object alone whatever is written to it, and the
/// deletion completes; the host's conflicts and failures stay bounded.
#[tokio::test]
async fn deletion_completes_while_another_client_writes_the_status() -> Result<()> {
    let s = Scenario::start("concurrent-status").await?;
    let name = "nas";
    s.create_running_server(name, json!({"storage": {"metadataSize": "1Gi"}})).await?;
    let op = s.operator()?;
    let before = op.metrics().await?;
    let hold = json!([{"op": "add", "path": "/metadata/finalizers/-", "value": HOLD_FINALIZER}]);
    s.servers()
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(hold)?))
        .await?;

    // The other writer: a status field the module also owns, flipped until the
    // object is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (servers, stop, written) = (s.servers(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut value = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                value += 1;
                let status = json!({"status": {"availableReplicas": value % 2}});
                match servers.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await {
                    Ok(_) => {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => return,
                    Err(e) => {
                        eprintln!("status writer: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let written_ref = &written;
    let writes_reach = |count: u64| async move {
        wait_until(format!("the other writer to write {count} times"), DEFAULT_TIMEOUT, || async move {
            Ok((written_ref.load(Ordering::Relaxed) >= count).then_some(()))
        })
        .await
    };
    // The host and the writer interleave before the deletion too.
    writes_reach(20).await?;

    s.servers().delete(name, &DeleteParams::background()).await?;
    let held = s
        .wait_server("the module's finalizer to go while the status is being written", name, |o| {
            !o.finalizers().iter().any(|f| f == FINALIZER)
        })
        .await?;
    ensure!(held.metadata.deletion_timestamp.is_some() && phase(&held).is_some(), "{:?}", held.metadata);
    // Once its finalizer is gone, the host leaves the dying object alone, however
    // often it changes. (A reconcile already under way on the cached object from just
    // before may still try a guarded patch, which conflicts: let that window pass;
    // the reconciles of the writes that follow see the finalizer gone.)
    writes_reach(written.load(Ordering::Relaxed) + 20).await?;
    let host_writes = op.metrics().await?.writes();
    let reconciles = op.metrics().await?.reconciles("success");
    writes_reach(written.load(Ordering::Relaxed) + 50).await?;
    let metrics = op.metrics().await?;
    ensure!(metrics.reconciles("success") > reconciles, "the host did not see the foreign writes");
    ensure!(
        metrics.writes() == host_writes,
        "the host wrote to a DittoServer whose finalizer it had removed"
    );

    let release = json!([
        {"op": "test", "path": "/metadata/finalizers", "value": [HOLD_FINALIZER]},
        {"op": "remove", "path": "/metadata/finalizers"},
    ]);
    s.servers()
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(release)?))
        .await?;
    let gone = s.wait_server_gone(name, DEFAULT_TIMEOUT).await;
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    gone?;

    let after = op.metrics().await?;
    let conflicts = after.sum("wasm_operator_actions_total", &[("result", "conflict")])
        - before.sum("wasm_operator_actions_total", &[("result", "conflict")]);
    let failures = after.reconciles("error") - before.reconciles("error");
    eprintln!(
        "concurrent status: {} foreign status writes; {conflicts} conflicts, {failures} failed reconciles",
        written.load(Ordering::Relaxed)
    );
    ensure!(conflicts <= 3.0, "the host kept conflicting: {conflicts} conflicts; {:?}", after.samples());
    ensure!(
        failures <= 3.0,
        "the host kept failing: {failures} failed reconciles; log: {}",
        op.log_path().display()
    );
    ensure!(
        !op.log_lines().iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("kept conflicting"))),
        "guarded patches kept conflicting"
    );
    Ok(())
}
