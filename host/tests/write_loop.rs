//! A module that writes in a loop, against the real control plane: a 900 KiB status
//! that changes on every call, with `requeueAfterSeconds: 0`. Over 60 s the write
//! budget holds it to what `bytes_per_minute` allows, a `WriteBudgetExceeded` warning
//! is on the primary, and etcd's database grows by a bounded amount.
//!
//! Alone in its binary: the etcd measurement must not see other tests' writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use anyhow::{Context as _, Result};
use operator_support::*;
use reconcile_sdk::{Action, Manifest, Outcome};
use serde_json::json;
use std::time::Duration;
use wasm_operator::{ActionLabels, AdminPolicy};

/// The size of the status the module writes.
const STATUS_BYTES: usize = 900 * 1024;
/// How long the module is left looping.
const LOOP: Duration = Duration::from_secs(60);

fn manifest() -> Manifest {
    Manifest { name: "write-loop".into(), field_manager: "write-loop".into(), ..configmap_mirror::manifest() }
}

/// etcd's database size, from its metrics on loopback (the local control plane's
/// state file names the port); `None` against a cluster of `KUBECONFIG`'s.
async fn etcd_db_size() -> Result<Option<u64>> {
    let state = e2e::cluster::repo_root().join("target/cluster/state.env");
    let Ok(state) = std::fs::read_to_string(&state) else { return Ok(None) };
    let Some(port) = state.lines().find_map(|line| line.strip_prefix("ETCD_CLIENT_PORT=")) else {
        return Ok(None);
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", port.trim_matches('\'')).parse()?;
    let (_, metrics) = http_get(addr, "/metrics").await?;
    let size = metrics
        .lines()
        .find_map(|line| line.strip_prefix("etcd_mvcc_db_total_size_in_bytes "))
        .context("etcd reports no etcd_mvcc_db_total_size_in_bytes")?;
    Ok(Some(size.trim().parse::<f64>()? as u64))
}

#[tokio::test]
async fn a_status_write_loop_is_held_to_the_write_budget() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "write-loop").await?;
    let ns = ns.name().to_owned();
    let module = NativeModule::new(manifest(), |snapshot| {
        // Changes with every input: the snapshot's clock and resourceVersion.
        let stamp = format!("{} {}", snapshot.now, snapshot.object["metadata"]["resourceVersion"]);
        let filler = "x".repeat(STATUS_BYTES - stamp.len());
        Outcome::Actions {
            actions: vec![Action::PatchStatus { status: json!({"stamp": stamp, "filler": filler}) }],
            requires: Vec::new(),
            requeue_after_seconds: Some(0),
        }
    });
    // The default cap on one status (512 KiB) would refuse this module outright; an
    // administrator who raised it still has the budget.
    let mut policy = AdminPolicy::default();
    policy.outcome.object_bytes = 1024 * 1024;
    let budget = policy.writes;
    let before = etcd_db_size().await?;
    let op = start_operator_with_policy(&client, module.clone(), &ns, policy).await?;
    create_mirror(&client, &ns, "looper", json!({})).await?;
    tokio::time::sleep(LOOP).await;
    let writes = op
        .metrics
        .actions
        .get_or_create(&ActionLabels { op: "patchStatus".into(), result: "success".into() })
        .get();
    let calls = module.call_count();
    let exceeded = op.metrics.write_budget_exceeded_total();
    op.shutdown().await;

    // The bytes window admits bytes_per_minute in any 60 s; the loop ran a little over
    // one window (the first write opens it), so at most two windows' worth.
    let per_window = budget.bytes_per_minute / STATUS_BYTES as u64;
    eprintln!("{writes} status writes of {STATUS_BYTES} B in {LOOP:?} ({calls} module calls)");
    assert!(writes >= 1, "the module never wrote");
    assert!(
        writes <= 2 * per_window,
        "{writes} writes in {LOOP:?}: more than the budget of {per_window} a minute"
    );
    let warnings = events(&client, &ns, "looper", "WriteBudgetExceeded").await?;
    assert!(!warnings.is_empty(), "no WriteBudgetExceeded event on the primary");
    assert!(warnings.iter().all(|(kind, _)| kind == "Warning"), "{warnings:?}");
    assert!(warnings.len() <= 2, "the warning itself is rate-limited, got {}", warnings.len());
    assert!(exceeded >= 1, "the metric did not count the held-back batches");

    if let (Some(before), Some(after)) = (before, etcd_db_size().await?) {
        // Each admitted write keeps one 900 KiB revision until the API server's next
        // compaction, and costs etcd about twice that in pages (measured: 9 writes grew
        // it by 17.5 MB). The bound is two windows' worth of that plus 16 MiB of slack;
        // without the budget the loop writes once a second, about 110 MB a minute.
        let bound = 2 * 2 * budget.bytes_per_minute + (16 << 20);
        let grown = after.saturating_sub(before);
        eprintln!("etcd database: {before} B -> {after} B (+{grown} B, bound {bound} B)");
        assert!(grown <= bound, "etcd grew by {grown} B, more than {bound} B");
    } else {
        eprintln!("etcd not on loopback (KUBECONFIG cluster): its size was not measured");
    }
    Ok(())
}
