//! The watch cache is bounded by where primaries are, not by what anyone may create.
//!
//! Anyone allowed to create a ConfigMap in some namespace can give it the module's
//! owner label. Watching every namespace, the host caches related objects only in
//! namespaces that hold one of its primaries, so 1,000 such ConfigMaps of 100 KiB in
//! other namespaces cost it nothing: `wasm_operator_cached_objects` counts only the
//! primary's own ConfigMap, and the host's resident memory barely moves (it grew by
//! well over 100 MiB when related kinds were cached cluster-wide).

use anyhow::{Context as _, Result, ensure};
use e2e::host_process::{HostOptions, HostProcess};
use e2e::measure;
use e2e::namespace::TestNamespace;
use e2e::{DEFAULT_TIMEOUT, Scenario, wait_until};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

const FOREIGN_NAMESPACES: usize = 4;
const CONFIG_MAPS_PER_NAMESPACE: usize = 250;
const CONFIG_MAP_BYTES: usize = 100 * 1024;
/// What 100 MiB of foreign data may add to the host's resident memory at most: the
/// noise of a running host (allocator slack, the module's instance), not the data.
const ALLOWED_GROWTH_KIB: u64 = 40 * 1024;

/// The DittoFS module's owner label.
const OWNER_LABEL: &str = "dittofs.dittofs.com/server";

#[tokio::test]
async fn labelled_config_maps_in_namespaces_without_primaries_are_never_cached() -> Result<()> {
    let s = Scenario::new("cache-bound").await?;
    // Watching every namespace, the host is kept to this test's primary by a label.
    let selector = format!("e2e.dittofs.dittofs.com/cache-test={}", s.ns());
    let (label_key, label_value) = selector.split_once('=').context("a selector with =")?;
    let server = serde_json::from_value(json!({
        "apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
        "metadata": {"name": "cached", "labels": {label_key: label_value}},
        "spec": {"storage": {"metadataSize": "1Gi"}},
    }))?;
    s.servers().create(&PostParams::default(), &server).await.context("cannot create the DittoServer")?;
    let host =
        HostProcess::spawn(s.cluster(), HostOptions::new(s.ns(), "operator").all_namespaces(&selector))
            .await?;
    host.wait_ready().await?;
    s.wait_statefulset("cached").await?;
    s.wait_statefulset_ready("cached").await?;
    s.wait_phase("cached", "Running").await?;
    let before = measure::rss(host.pid())?.current_kib;

    // 1,000 ConfigMaps of 100 KiB, labelled as the module's, where no primary is.
    let mut foreign = Vec::new();
    for _ in 0..FOREIGN_NAMESPACES {
        foreign.push(TestNamespace::create(s.cluster(), "cache-foreign").await?);
    }
    let client = s.cluster().client()?;
    let payload = "x".repeat(CONFIG_MAP_BYTES);
    let creates = foreign.iter().flat_map(|ns| (0..CONFIG_MAPS_PER_NAMESPACE).map(move |i| (ns.name(), i)));
    futures::stream::iter(creates)
        .map(|(ns, i)| {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            let config_map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(format!("lookalike-{i}")),
                    labels: Some([(OWNER_LABEL.to_owned(), "cached".to_owned())].into()),
                    ..ObjectMeta::default()
                },
                data: Some([("blob".to_owned(), payload.clone())].into()),
                ..ConfigMap::default()
            };
            async move {
                api.create(&PostParams::default(), &config_map).await.context("cannot create a ConfigMap")
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;

    // A change to the primary's own ConfigMap, made after all of them: once the host
    // has seen it, a cluster-wide watch would have delivered the 1,000 before it.
    s.servers()
        .patch("cached", &PatchParams::default(), &Patch::Merge(json!({"spec": {"cache": {"size": "7Gi"}}})))
        .await?;
    let own = s.config_maps();
    wait_until("the host to rewrite the DittoServer's ConfigMap", DEFAULT_TIMEOUT, || async {
        host.check_alive()?;
        let config_map = own.get_opt(&e2e::dittofs::names::config_map("cached")).await?;
        let data = config_map.and_then(|c| c.data).unwrap_or_default();
        Ok(data.values().any(|v| v.contains("7Gi")).then_some(()))
    })
    .await?;
    let metrics = host.metrics().await?;
    let cached = metrics.sum("wasm_operator_cached_objects", &[("role", "related"), ("kind", "ConfigMap")]);
    let after = measure::rss(host.pid())?.current_kib;
    eprintln!(
        "host RSS {before} KiB before, {after} KiB after {} foreign ConfigMaps of {} KiB; {cached} ConfigMaps cached",
        FOREIGN_NAMESPACES * CONFIG_MAPS_PER_NAMESPACE,
        CONFIG_MAP_BYTES / 1024,
    );
    ensure!(
        cached == 1.0,
        "the host caches {cached} ConfigMaps; only the DittoServer's own is in its namespace"
    );
    ensure!(
        after.saturating_sub(before) < ALLOWED_GROWTH_KIB,
        "the host's RSS grew from {before} KiB to {after} KiB with ConfigMaps it has no business caching"
    );

    // The namespace's last primary goes: its watches stop and its objects leave the
    // cache (the garbage collector deletes the ConfigMap a little later, unseen).
    s.servers().delete("cached", &Default::default()).await?;
    s.wait_server_gone("cached", DEFAULT_TIMEOUT).await?;
    wait_until("the namespace's objects to leave the cache", DEFAULT_TIMEOUT, || async {
        let metrics = host.metrics().await?;
        let related = metrics.sum("wasm_operator_cached_objects", &[("role", "related")]);
        Ok((related == 0.0).then_some(()))
    })
    .await?;
    Ok(())
}
