//! Hot-swap latency: from the ConfigMap update (the `module push` apply) until the
//! new module is the one new reconciles use, over 20 swaps alternating between the
//! DittoFS module and its v2 build, with the operator following the ConfigMap
//! through the API (`run --module-configmap`, in-process).
//!
//! Needs a cluster: KUBECONFIG, or the local control plane (`make cluster-up`; `make
//! bench` starts it) and the two modules (`make wasm wasm-v2`). Each swap includes
//! the watch event, gunzip, the full validation (compile through the on-disk cache,
//! smoke reconcile) and the atomic store; the manifest is the same, so no watch is
//! rebuilt. Prints every sample and the p50/p90.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use anyhow::{Context as _, Result, bail};
use std::path::Path;
use std::time::{Duration, Instant};
use wasm_operator::runtime::{ModuleCache, SandboxConfig, SandboxLimits, digest};
use wasm_operator::{
    ConfigMapSource, ModuleSource, OperatorConfig, RunningOperator, Scope, compress_for_configmap,
    start_from_source,
};

const SWAPS: usize = 20;

async fn wait_active(op: &RunningOperator, digest: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while op.active.current().module.digest() != digest {
        if Instant::now() > deadline {
            bail!("module {digest} did not become active within 60 s");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted[rank.min(sorted.len() - 1)]
}

async fn bench() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |name: &str| {
        let path = root.join("target/modules").join(name);
        std::fs::read(&path)
            .with_context(|| format!("cannot read {} (run `make wasm wasm-v2`)", path.display()))
    };
    let modules = [read("dittofs-reconciler.wasm")?, read("dittofs-reconciler-v2.wasm")?];
    let compressed = [compress_for_configmap(&modules[0])?, compress_for_configmap(&modules[1])?];
    let digests = [digest(&modules[0]), digest(&modules[1])];

    let cluster = e2e::cluster().await?;
    let client = cluster.client()?;
    let ns = e2e::TestNamespace::create(cluster, "bench-swap").await?;
    let source =
        ConfigMapSource { namespace: ns.name().into(), name: "module".into(), key: "module.wasm".into() };
    source.upload(&client, compressed[0].clone(), None, "bench").await?;
    let sandbox = SandboxConfig {
        limits: SandboxLimits { deadline: Duration::from_millis(250), ..SandboxLimits::default() },
        cache: ModuleCache::Dir(root.join("target/bench-module-cache")),
        ..SandboxConfig::default()
    };
    let config = OperatorConfig {
        scope: Scope { namespace: Some(ns.name().into()), label_selector: None },
        instance: Some("bench".into()),
        ..OperatorConfig::default()
    };
    let op = start_from_source(
        client.clone(),
        "bench",
        &ModuleSource::ConfigMap(source.clone()),
        &sandbox,
        config,
    )
    .await?;
    wait_active(&op, &digests[0]).await?;
    // Warm up: both versions compiled once into the on-disk cache, as they would be
    // after their first upload.
    for i in [1, 0] {
        source.upload(&client, compressed[i].clone(), None, "bench").await?;
        wait_active(&op, &digests[i]).await?;
    }

    let mut samples = Vec::with_capacity(SWAPS);
    for n in 0..SWAPS {
        let i = (n + 1) % 2;
        let started = Instant::now();
        source.upload(&client, compressed[i].clone(), None, "bench").await?;
        wait_active(&op, &digests[i]).await?;
        let elapsed = started.elapsed();
        println!(
            "swap {:>2} to {}: {:>7.1} ms",
            n + 1,
            if i == 1 { "v2" } else { "v1" },
            elapsed.as_secs_f64() * 1e3
        );
        samples.push(elapsed);
    }
    samples.sort();
    println!(
        "hot swap (ConfigMap update -> module active), {SWAPS} swaps: p50 {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms (module {} bytes, {} gzip)",
        percentile(&samples, 50).as_secs_f64() * 1e3,
        percentile(&samples, 90).as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        modules[0].len(),
        compressed[0].len(),
    );
    op.shutdown().await;
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful
    // either: there are no options.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench())
}
