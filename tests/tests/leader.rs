//! Leader election between real host processes (`wasm-operator run --leader-elect`)
//! on one Lease: only the leader reconciles; when it crashes (SIGKILL, the Lease is
//! not released) the follower takes over once the Lease expires; on SIGTERM the
//! leader releases the Lease and a follower takes over at once; and nothing fails
//! because two replicas acted at the same time.
//!
//! Takeover times are measured and printed (`cargo test -- --nocapture`), never
//! asserted beyond a generous bound: the default lease lasts 15 s, followers retry
//! every 2 s.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use e2e::converge::{Percona, Servers};
use e2e::host_process::{HostOptions, HostProcess};
use e2e::{TestNamespace, cluster, wait_until};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::Value;

/// The generous bound on a takeover: lease duration (15 s) plus retry period (2 s),
/// with room for a machine busy compiling.
const TAKEOVER_BOUND: Duration = Duration::from_secs(60);

/// The Lease all replicas of a test compete for.
const LEASE: &str = "wasm-operator";

fn replica(ns: &str, name: &str) -> HostOptions {
    HostOptions::new(ns, name).args([
        "--leader-elect",
        "--leader-election-namespace",
        ns,
        "--lease-name",
        LEASE,
    ])
}

/// How much `host` has reconciled and written, from its metrics.
async fn activity(host: &HostProcess) -> Result<(f64, f64)> {
    let metrics = host.metrics().await?;
    Ok((metrics.sum("wasm_operator_reconciles_total", &[]), metrics.sum("wasm_operator_writes_total", &[])))
}

/// Fails when `host` logged an error, a failed reconcile, a conflict or a rejection.
fn assert_clean_log(host: &HostProcess) -> Result<()> {
    let bad: Vec<Value> = host
        .log_lines()
        .into_iter()
        .filter(|line| {
            let level = line.get("level").and_then(Value::as_str).unwrap_or_default();
            let message = line.get("message").and_then(Value::as_str).unwrap_or_default();
            level == "ERROR"
                || message.starts_with("reconcile failed")
                || message.starts_with("action rejected")
                || message.contains("conflicted")
        })
        .collect();
    ensure!(bad.is_empty(), "replica {} logged problems: {bad:#?}", host.name());
    Ok(())
}

/// The Lease's holder identity (replica identities start with `<name>_`).
async fn holder(leases: &Api<Lease>) -> Result<Option<String>> {
    Ok(leases.get_opt(LEASE).await?.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

async fn wait_leader(host: &HostProcess, what: &str) -> Result<Duration> {
    let started = Instant::now();
    wait_until(format!("{what} (log: {})", host.log_path().display()), TAKEOVER_BOUND, || async {
        host.check_alive()?;
        Ok(host.is_leader().await?.then_some(()))
    })
    .await?;
    Ok(started.elapsed())
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_follower_takes_over() -> Result<()> {
    let cluster = cluster().await?;
    let client = cluster.client()?;
    let ns = TestNamespace::create(cluster, "leader").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    let servers = Servers::new(client.clone(), ns.name());

    // `a` starts first and leads; `b` follows.
    let a = HostProcess::spawn(cluster, replica(ns.name(), "a")).await?;
    a.wait_ready().await?;
    wait_leader(&a, "replica a to lead").await?;
    let b = HostProcess::spawn(cluster, replica(ns.name(), "b")).await?;
    b.wait_ready().await?;
    ensure!(holder(&leases).await?.is_some_and(|h| h.starts_with("a_")), "a does not hold the Lease");

    // Only the leader reconciles: two servers converge, b touches nothing.
    for name in ["one", "two"] {
        servers.create(name, Percona::Off).await?;
    }
    for name in ["one", "two"] {
        servers
            .wait_running(name, Percona::Off)
            .await
            .with_context(|| format!("log: {}", a.log_path().display()))?;
    }
    let (a_reconciles, a_writes) = activity(&a).await?;
    ensure!(a_reconciles > 0.0 && a_writes > 0.0, "the leader did nothing: {a_reconciles} reconciles");
    ensure!(!b.is_leader().await?, "both replicas claim to lead");
    let (b_reconciles, b_writes) = activity(&b).await?;
    ensure!(
        b_reconciles == 0.0 && b_writes == 0.0,
        "the follower reconciled {b_reconciles} times and wrote {b_writes} times"
    );
    ensure!(
        !b.log_lines()
            .iter()
            .any(|l| l.get("message").and_then(Value::as_str) == Some("leading: reconciling")),
        "the follower started reconciling"
    );

    // The leader crashes: the Lease stays held until it expires, then b takes over.
    assert_clean_log(&a)?;
    a.kill()?;
    let crash_takeover = wait_leader(&b, "replica b to take over after a's crash").await?;
    println!(
        "takeover after SIGKILL of the leader: {:.1} s (lease 15 s, retry 2 s)",
        crash_takeover.as_secs_f64()
    );
    ensure!(holder(&leases).await?.is_some_and(|h| h.starts_with("b_")), "b does not hold the Lease");
    let transitions = leases.get(LEASE).await?.spec.and_then(|s| s.lease_transitions).unwrap_or_default();
    ensure!(transitions >= 1, "leaseTransitions is {transitions}");

    // The new leader reconciles: a new server converges, and the existing ones,
    // looked at again on takeover, need no write.
    servers.create("three", Percona::Off).await?;
    servers
        .wait_running("three", Percona::Off)
        .await
        .with_context(|| format!("log: {}", b.log_path().display()))?;
    let (b_reconciles, _) = activity(&b).await?;
    ensure!(b_reconciles >= 3.0, "the new leader reconciled {b_reconciles} times");

    // A graceful stop releases the Lease: a third replica takes over without waiting
    // for it to expire.
    let c = HostProcess::spawn(cluster, replica(ns.name(), "c")).await?;
    c.wait_ready().await?;
    ensure!(!c.is_leader().await?, "c leads while b holds the Lease");
    let stopping = Instant::now();
    let status = b.terminate()?;
    ensure!(status.success(), "b exited with {status}");
    ensure!(
        b.log_lines()
            .iter()
            .any(|l| l.get("message").and_then(Value::as_str) == Some("released the leader lease")),
        "b did not release the Lease"
    );
    wait_leader(&c, "replica c to take over after b's SIGTERM").await?;
    println!("takeover after SIGTERM of the leader: {:.1} s", stopping.elapsed().as_secs_f64());
    servers.create("four", Percona::Off).await?;
    servers
        .wait_running("four", Percona::Off)
        .await
        .with_context(|| format!("log: {}", c.log_path().display()))?;

    for host in [&b, &c] {
        assert_clean_log(host)?;
    }
    for host in [&c] {
        let metrics = host.metrics().await?;
        ensure!(metrics.sum("wasm_operator_reconciles_total", &[("result", "error")]) == 0.0);
        ensure!(metrics.sum("wasm_operator_actions_total", &[("result", "conflict")]) == 0.0);
    }
    c.terminate()?;
    Ok(())
}
