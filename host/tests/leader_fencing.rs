//! Leader fencing against the real control plane: a leader cut off from the API
//! server (its connection black-holed by a loopback TCP proxy the test controls, so
//! requests hang rather than fail) steps down before a follower can take the Lease.
//!
//! Without a timeout on Lease requests, the leader's renewal would hang for minutes
//! and it would still believe it leads, and keep writing, after the follower took
//! over. Only the order of the two is asserted; the takeover time is printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use anyhow::Result;
use operator_support::*;
use reconcile_sdk::Outcome;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wasm_operator::{Backoff, LeaseConfig, OperatorConfig, RunningOperator, Scope};

/// Forwards loopback connections to `upstream` until `cut` is set; from then on it
/// reads and drops everything both ways, holding the connections open.
async fn proxy(upstream: String, cut: Arc<AtomicBool>) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else { continue };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pipe(client_read, server_write, cut.clone()));
            tokio::spawn(pipe(server_read, client_write, cut.clone()));
        }
    });
    Ok(format!("https://{addr}"))
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 {
            return;
        }
        if !cut.load(Ordering::Acquire) && to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

async fn start(client: &kube::Client, namespace: &str, identity: &str) -> Result<RunningOperator> {
    let mut lease = LeaseConfig::new(namespace.to_owned(), "fencing".to_owned(), identity.to_owned());
    lease.lease_duration = Duration::from_secs(5);
    lease.renew_deadline = Duration::from_secs(2);
    lease.renew_period = Duration::from_millis(500);
    lease.retry_period = Duration::from_millis(500);
    let config = OperatorConfig {
        scope: Scope { namespace: Some(namespace.to_owned()), label_selector: None },
        concurrency: 2,
        leader: Some(lease),
        backoff: Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(2) },
        instance: Some(identity.to_owned()),
        ..OperatorConfig::default()
    };
    let module = NativeModule::new(configmap_mirror::manifest(), |_| Outcome::actions(vec![]));
    Ok(RunningOperator::start(client.clone(), "the test cluster", module, config).await?)
}

fn leads(op: &RunningOperator) -> bool {
    op.metrics.leader.get() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_steps_down_before_the_follower_takes_over() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "fencing").await?;
    let ns = ns.name().to_owned();

    let cut = Arc::new(AtomicBool::new(false));
    let upstream = cluster.config().cluster_url.authority().expect("the API server's address").to_string();
    let mut proxied = cluster.config().clone();
    proxied.cluster_url = proxy(upstream, cut.clone()).await?.parse()?;
    let leader = start(&kube::Client::try_from(proxied)?, &ns, "a").await?;
    eventually("replica a to lead", || async { Ok(leads(&leader).then_some(())) }).await?;
    let follower = start(&client, &ns, "b").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!leads(&follower), "two replicas lead at once before any fault");

    cut.store(true, Ordering::Release);
    let cut_at = Instant::now();
    // Until the follower leads, watch for the moment it does, and what the old
    // leader believed then.
    let old_still_led =
        eventually("replica b to take over", || async { Ok(leads(&follower).then(|| leads(&leader))) })
            .await?;
    eprintln!("the follower took over {:?} after the cut (lease duration 5 s)", cut_at.elapsed());
    assert!(!old_still_led, "the partitioned leader still believed it led when the follower took over");
    assert!(!leads(&leader));

    follower.shutdown().await;
    // Its Lease requests time out instead of hanging: shutdown ends.
    leader.shutdown().await;
    Ok(())
}
