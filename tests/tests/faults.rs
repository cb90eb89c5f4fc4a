//! The host under faults, against the real control plane: what the operator shows
//! when something it depends on does not work.
//!
//! - A watch that can never list (the operator may not list the kind) is named by
//!   `/readyz` with its error once the sync timeout has passed, logged at ERROR with
//!   what to check, and counted by `wasm_operator_watches_overdue`.
//! - Watching every namespace, such a watch in one namespace holds up only the
//!   primaries of that namespace.
//! - An optional kind that never lists does not hold up deletions past the sync
//!   timeout, while live primaries still wait for it.

use anyhow::{Context as _, Result, ensure};
use e2e::host_process::{HostOptions, HostProcess};
use e2e::identity::{
    dittofs_primary_rules, dittofs_related_rules, dittofs_rules, grant_cluster_wide, grant_in_namespace,
    service_account_with_role, write_impersonating_kubeconfig,
};
use e2e::namespace::TestNamespace;
use e2e::operator::artifact_dir;
use e2e::{DEFAULT_TIMEOUT, Scenario, wait_until};
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

/// A DittoServer `name` with `labels`, as a user creates it.
fn server(name: &str, labels: Value) -> Result<kube::api::DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
        "metadata": {"name": name, "labels": labels},
        "spec": {"storage": {"metadataSize": "1Gi"}},
    }))?)
}

#[tokio::test]
async fn a_watch_that_never_lists_is_named_by_readyz_and_logged_with_what_to_do() -> Result<()> {
    let s = Scenario::new("never-lists").await?;
    // All the DittoFS module needs, but listing and watching StatefulSets.
    let rules = dittofs_rules(&[("statefulsets", "list"), ("statefulsets", "watch")]);
    let user =
        service_account_with_role(&s.client, s.ns(), "operator-without-statefulset-list", rules).await?;
    let kubeconfig = artifact_dir(s.ns())?.join("operator-without-statefulset-list.kubeconfig");
    write_impersonating_kubeconfig(s.cluster(), &user, &kubeconfig)?;
    let options = HostOptions::new(s.ns(), "operator").kubeconfig(&kubeconfig).args(["--sync-timeout", "2"]);
    let host = HostProcess::spawn(s.cluster(), options).await?;

    let readyz = wait_until("/readyz to name the StatefulSet watch", DEFAULT_TIMEOUT, || async {
        host.check_alive()?;
        let (code, body) = host.get("/readyz").await?;
        Ok((code == 503 && body.contains("StatefulSet")).then_some(body))
    })
    .await?;
    ensure!(readyz.contains("the related apps/v1 StatefulSet watch has not listed"), "{readyz}");
    ensure!(readyz.contains("forbidden"), "/readyz does not give the API error: {readyz}");

    let error = wait_until("the ERROR line for the StatefulSet watch", DEFAULT_TIMEOUT, || async {
        Ok(host.log_lines_at("ERROR").into_iter().find_map(|line| {
            let message = line.get("message").and_then(Value::as_str)?;
            message.contains("StatefulSet").then(|| message.to_owned())
        }))
    })
    .await?;
    ensure!(
        error.contains("may list and watch statefulsets") && error.contains("wasm-operator rbac"),
        "the ERROR line does not say what to check: {error}"
    );
    let overdue = host.metrics().await?.sum("wasm_operator_watches_overdue", &[]);
    ensure!(overdue == 1.0, "wasm_operator_watches_overdue is {overdue}");
    // Still alive, still not ready: the operator waits rather than reconcile from a
    // cache that cannot list.
    host.check_alive().context("the host exited")?;
    Ok(())
}

#[tokio::test]
async fn a_namespace_whose_watch_cannot_list_holds_up_only_its_own_primaries() -> Result<()> {
    let s = Scenario::new("gated").await?;
    let blocked = TestNamespace::create(s.cluster(), "gated-blocked").await?;
    let user = format!("e2e-operator-{}", s.ns());
    grant_cluster_wide(&s.client, s.ns(), &user, dittofs_primary_rules()).await?;
    grant_in_namespace(&s.client, s.ns(), "operator", &user, dittofs_related_rules(&[])).await?;
    let unlisted = dittofs_related_rules(&[("statefulsets", "list"), ("statefulsets", "watch")]);
    grant_in_namespace(&s.client, blocked.name(), "operator", &user, unlisted).await?;
    let kubeconfig = artifact_dir(s.ns())?.join("operator.kubeconfig");
    write_impersonating_kubeconfig(s.cluster(), &user, &kubeconfig)?;
    // Every namespace, only this test's primaries.
    let selector = format!("e2e.dittofs.dittofs.com/gated={}", s.ns());
    let (key, value) = selector.split_once('=').context("a selector with =")?;
    let options = HostOptions::new(s.ns(), "operator")
        .all_namespaces(&selector)
        .kubeconfig(&kubeconfig)
        .args(["--sync-timeout", "2"]);
    let host = HostProcess::spawn(s.cluster(), options).await?;
    let blocked_servers = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        s.client.clone(),
        blocked.name(),
        &e2e::dittofs::dittoservers(),
    );
    blocked_servers.create(&PostParams::default(), &server("held", json!({key: value}))?).await?;
    s.servers().create(&PostParams::default(), &server("free", json!({key: value}))?).await?;

    // The healthy namespace converges though another namespace cannot list.
    s.wait_statefulset("free").await?;
    s.wait_statefulset_ready("free").await?;
    s.wait_phase("free", "Running").await?;
    let named = format!("the related apps/v1 StatefulSet in {} watch has not listed", blocked.name());
    wait_until("/readyz to name the blocked namespace's watch", DEFAULT_TIMEOUT, || async {
        host.check_alive()?;
        let (code, body) = host.get("/readyz").await?;
        Ok((code == 503 && body.contains(&named)).then_some(()))
    })
    .await?;
    // The held one was never reconciled: no finalizer, no status.
    let held = blocked_servers.get("held").await?;
    ensure!(
        held.metadata.finalizers.as_deref().unwrap_or_default().is_empty()
            && held.data.get("status").is_none(),
        "a DittoServer whose namespace cannot list StatefulSets was reconciled: {held:?}"
    );
    host.check_alive()?;
    Ok(())
}

#[tokio::test]
async fn an_optional_kind_that_never_lists_does_not_hold_up_deletions() -> Result<()> {
    let s = Scenario::new("optional-unlisted").await?;
    // Converged by an operator with every right: the finalizer is on.
    let admin = HostProcess::spawn(s.cluster(), HostOptions::new(s.ns(), "admin")).await?;
    s.create_running_server("doomed", json!({"storage": {"metadataSize": "1Gi"}})).await?;
    admin.terminate()?;

    // Then one that may not list PerconaPGClusters, an optional kind of the module.
    let rules = dittofs_rules(&[("perconapgclusters", "list"), ("perconapgclusters", "watch")]);
    let user = service_account_with_role(&s.client, s.ns(), "operator-without-percona-list", rules).await?;
    let kubeconfig = artifact_dir(s.ns())?.join("operator-without-percona-list.kubeconfig");
    write_impersonating_kubeconfig(s.cluster(), &user, &kubeconfig)?;
    let options = HostOptions::new(s.ns(), "operator").kubeconfig(&kubeconfig).args(["--sync-timeout", "2"]);
    let host = HostProcess::spawn(s.cluster(), options).await?;
    wait_until("/readyz to name the PerconaPGCluster watch", DEFAULT_TIMEOUT, || async {
        host.check_alive()?;
        let (code, body) = host.get("/readyz").await?;
        Ok((code == 503 && body.contains("PerconaPGCluster")).then_some(()))
    })
    .await?;
    s.create_server("waiting", json!({"storage": {"metadataSize": "1Gi"}})).await?;

    // The deletion goes on as if the kind were absent; the finalizer comes off.
    s.servers().delete("doomed", &DeleteParams::default()).await?;
    s.wait_server_gone("doomed", DEFAULT_TIMEOUT).await?;
    // A live primary still waits for the kind: it could be about to create a cluster
    // it cannot see.
    let waiting = s.servers().get("waiting").await?;
    ensure!(
        waiting.metadata.finalizers.as_deref().unwrap_or_default().is_empty(),
        "a live DittoServer was reconciled while an optional kind could not list: {waiting:?}"
    );
    host.check_alive()?;
    Ok(())
}
