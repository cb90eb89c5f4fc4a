//! The host under faults, against the real control plane: what the operator shows
//! when something it depends on does not work.
//!
//! - A watch that can never list (the operator may not list the kind) is named by
//!   `/readyz` with its error once the sync timeout has passed, logged at ERROR with
//!   what to check, and counted by `wasm_operator_watches_overdue`.

use anyhow::{Context as _, Result, ensure};
use e2e::host_process::{HostOptions, HostProcess};
use e2e::identity::{rule, service_account_with_role, write_impersonating_kubeconfig};
use e2e::operator::artifact_dir;
use e2e::{DEFAULT_TIMEOUT, Scenario, wait_until};
use serde_json::Value;

#[tokio::test]
async fn a_watch_that_never_lists_is_named_by_readyz_and_logged_with_what_to_do() -> Result<()> {
    let s = Scenario::new("never-lists").await?;
    let everything = ["get", "list", "watch", "create", "update", "patch", "delete"];
    // All the DittoFS module needs, but listing and watching StatefulSets.
    let user = service_account_with_role(
        &s.client,
        s.ns(),
        "operator-without-statefulset-list",
        vec![
            rule("dittofs.dittofs.com", &["dittoservers"], &["get", "list", "watch", "update", "patch"]),
            rule("dittofs.dittofs.com", &["dittoservers/status"], &["get", "update", "patch"]),
            rule("", &["configmaps", "services"], &everything),
            rule("apps", &["statefulsets"], &["get", "create", "update", "patch", "delete"]),
            rule("", &["secrets"], &["get", "list", "watch"]),
            rule("", &["events"], &["create", "update", "patch"]),
            rule("events.k8s.io", &["events"], &["create", "update", "patch"]),
            rule("pgv2.percona.com", &["perconapgclusters"], &everything),
        ],
    )
    .await?;
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
