//! Hot swap end to end (docs/abi.md, *Hot swap acceptance checks*) against the real
//! control plane: the operator runs in-process with a ConfigMap module source (`start_from_source`, the same path
//! as `run --module-configmap`), and the tests upload module versions to the
//! ConfigMap as `module push` does.
//!
//! - a swap from the DittoFS module to its v2 build (feature `v2-annotation`) while
//!   50 DittoServers are being created: all converge, all end with v2's behaviour,
//!   no reconcile fails;
//! - refused candidates (corrupt, gzip-corrupt, an import, a compile bomb, ABI 2, a
//!   trap and an endless loop in the smoke reconcile) leave v1 serving, are reported (metric,
//!   Warning event on the ConfigMap, `/module`), and v1 keeps converging new objects;
//!   the operator waits at start until the ConfigMap holds a valid module;
//! - a manifest that adds a related kind (configmap-mirror with feature `services`)
//!   gets its watch without a restart, and loses it again on the way back;
//! - candidates that change the owner label or field manager, drop the finalizer a
//!   Mirror carries, or ask for a kind the policy refuses are each refused, and the
//!   Mirror still finishes deleting under v1;
//! - a candidate refused because its CRD is not installed yet is tried again, with
//!   backoff, and swaps in once the CRD is there, without a new push;
//! - a host restarted while the ConfigMap holds no valid module starts from the last
//!   module it accepted (kept in its cache directory), with a Warning event;
//! - a swap while DittoServers are being deleted: each finalizer is handled as the
//!   spec says (the PerconaPGCluster kept or deleted).
//!
//! Waits are generous; nothing asserts a duration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use anyhow::{Context as _, Result, bail};
use e2e::build::build_command;
use e2e::converge::{Percona, Servers};
use e2e::dittofs::{dittoservers, percona_clusters};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use operator_support::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;
use wasm_operator::runtime::{ModuleCache, SandboxConfig, SandboxLimits, digest};
use wasm_operator::{
    Backoff, ConfigMapSource, ModuleSource, OperatorConfig, ResultLabels, RunningOperator, Scope,
    compress_for_configmap, start_from_source,
};

const CONFIGMAP: &str = "module";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

static MIRROR_SERVICES: OnceCell<std::result::Result<Vec<u8>, String>> = OnceCell::const_new();

/// configmap-mirror with feature `services` (Service among the related kinds).
async fn mirror_services_wasm() -> Result<Vec<u8>> {
    MIRROR_SERVICES
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                let target_dir = repo_root().join("target/test-modules-services");
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let mut build = build_command(&cargo);
                build
                    .args(["build", "--quiet", "-p", "configmap-mirror", "--features", "services"])
                    .args(["--target", "wasm32-unknown-unknown", "--profile", "wasm", "--target-dir"])
                    .arg(&target_dir);
                run_build(build, "cargo build -p configmap-mirror --features services")?;
                std::fs::read(target_dir.join("wasm32-unknown-unknown/wasm/configmap_mirror.wasm"))
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        })
        .await
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn fixture(name: &str) -> Result<Vec<u8>> {
    let path = repo_root().join("tests/fixtures").join(name);
    wat::parse_file(&path).with_context(|| format!("cannot parse {}", path.display()))
}

/// `minimal.wat` with one more function: about 1 MiB of loops, a few bytes each, the
/// pattern Cranelift's register allocator is slowest on (a 64 KiB body of it takes
/// about 12 s to compile in a release build; this one, sixteen times the size, about an hour). Gzipped for
/// a ConfigMap it is a few KiB.
fn compile_bomb() -> Result<Vec<u8>> {
    let source = std::fs::read_to_string(repo_root().join("tests/fixtures/minimal.wat"))?;
    let end = source.rfind(')').context("minimal.wat ends with its module's `)`")?;
    let body = "(loop (br_if 0 (local.get 0)))".repeat(150_000);
    Ok(wat::parse_str(format!("{} (func $bomb (param i32) {body}))", &source[..end]))?)
}

/// `minimal.wat` describing itself with `manifest`: a candidate that passes every
/// load check, for the checks a swap makes after loading (identity, finalizers,
/// policy).
fn with_manifest(manifest: &reconcile_sdk::Manifest) -> Result<Vec<u8>> {
    let source = std::fs::read_to_string(repo_root().join("tests/fixtures/minimal.wat"))?;
    let marker = "(data (i32.const 1024) \"";
    let start = source.find(marker).context("minimal.wat has its manifest at 1024")? + marker.len();
    let end = start + source[start..].find("\\00\")").context("the manifest ends with NUL")?;
    let json = serde_json::to_string(manifest)?.replace('\\', "\\\\").replace('"', "\\\"");
    Ok(wat::parse_str(format!("{}{json}{}", &source[..start], &source[end..]))?)
}

fn sandbox() -> SandboxConfig {
    SandboxConfig {
        // Generous for a debug test run on a busy machine; the endless loop still ends.
        limits: SandboxLimits { deadline: Duration::from_millis(2000), ..SandboxLimits::default() },
        cache: ModuleCache::Dir(repo_root().join("target/test-module-cache")),
        ..SandboxConfig::default()
    }
}

fn source(namespace: &str) -> ConfigMapSource {
    ConfigMapSource { namespace: namespace.into(), name: CONFIGMAP.into(), key: "module.wasm".into() }
}

/// Uploads `module` to the test's ConfigMap, gzip-compressed as `module push` does.
async fn push(client: &Client, namespace: &str, module: &[u8]) -> Result<()> {
    let compressed = compress_for_configmap(module)?;
    source(namespace).upload(client, compressed, None, "e2e-push").await?;
    Ok(())
}

/// Uploads bytes as they are (for candidates `module push` would refuse).
async fn push_raw(client: &Client, namespace: &str, bytes: Vec<u8>) -> Result<()> {
    source(namespace).upload(client, bytes, None, "e2e-push").await?;
    Ok(())
}

fn config(namespace: &str) -> OperatorConfig {
    OperatorConfig {
        scope: Scope { namespace: Some(namespace.to_owned()), label_selector: None },
        probe_addr: Some("127.0.0.1:0".parse().expect("an address")),
        metrics_addr: Some("127.0.0.1:0".parse().expect("an address")),
        backoff: Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(2) },
        instance: Some("hot-swap-test".into()),
        ..OperatorConfig::default()
    }
}

/// An operator following the test's ConfigMap (which must get a valid module).
async fn start(client: &Client, namespace: &str) -> Result<RunningOperator> {
    start_with_cache(client, namespace, sandbox().cache).await
}

/// [`start`] with a compiled-module cache of its own: where the host keeps its last
/// good module, which the shared one would hand from one test to another.
async fn start_with_cache(client: &Client, namespace: &str, cache: ModuleCache) -> Result<RunningOperator> {
    let source = ModuleSource::ConfigMap(source(namespace));
    let sandbox = SandboxConfig { cache, ..sandbox() };
    let op =
        start_from_source(client.clone(), "the test cluster", &source, &sandbox, config(namespace)).await?;
    eventually("the caches to sync", || async { Ok(op.ready().then_some(())) }).await?;
    Ok(op)
}

fn errors(op: &RunningOperator) -> u64 {
    op.metrics.reconciles.get_or_create(&ResultLabels { result: "error".into() }).get()
}

async fn create_server(
    client: &Client,
    namespace: &str,
    name: &str,
    percona: Percona,
) -> Result<DynamicObject> {
    Servers::new(client.clone(), namespace).create(name, percona).await
}

/// The Warning `ModuleRejected` events on the module ConfigMap, as notes.
/// Uploads the candidate `(name, payload)` and checks it is refused for `reason`:
/// the metric counts it, a ModuleRejected event and `/module` say why (the event in
/// `words`), and the module of digest `active` still serves.
async fn expect_refused(
    op: &RunningOperator,
    client: &Client,
    namespace: &str,
    (name, payload): (&str, Vec<u8>),
    reason: &str,
    words: &str,
    active: &str,
) -> Result<()> {
    let before = op.metrics.module_rejections(reason);
    let events_before = rejected_events(client, namespace).await?.len();
    push_raw(client, namespace, payload).await?;
    eventually(&format!("the {name} candidate to be refused ({reason})"), || async {
        Ok((op.metrics.module_rejections(reason) > before).then_some(()))
    })
    .await?;
    assert_eq!(op.active.current().module.digest(), active, "{name}: the active module must stay");
    let notes = eventually(&format!("a ModuleRejected event for {name}"), || async {
        let notes = rejected_events(client, namespace).await?;
        Ok((notes.len() > events_before).then_some(notes))
    })
    .await?;
    assert!(notes.iter().any(|n| n.contains(reason) && n.contains(words)), "{name}: {notes:?}");
    let endpoint = module_endpoint(op).await?;
    assert_eq!(endpoint["digest"], active, "{endpoint}");
    assert_eq!(endpoint["lastRejection"]["reason"], reason, "{endpoint}");
    Ok(())
}

async fn rejected_events(client: &Client, namespace: &str) -> Result<Vec<String>> {
    Ok(events(client, namespace, CONFIGMAP, "ModuleRejected")
        .await?
        .into_iter()
        .filter(|(kind, _)| kind == "Warning")
        .map(|(_, note)| note)
        .collect())
}

#[tokio::test]
async fn a_swap_under_load_loses_no_reconcile_and_applies_everywhere() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "swap-load").await?;
    let ns = ns.name().to_owned();
    let (v1, v2) = dittofs_modules().await?;
    push(&client, &ns, &v1).await?;
    let op = start(&client, &ns).await?;
    wait_active(&op, &digest(&v1)).await?;
    let origin = module_endpoint(&op).await?["origin"].as_str().unwrap_or_default().to_owned();
    assert!(origin.starts_with(&format!("configmap {ns}/{CONFIGMAP}:module.wasm@")), "{origin}");

    const SERVERS: usize = 50;
    let created = Arc::new(AtomicUsize::new(0));
    let creator = {
        let (client, ns, created) = (client.clone(), ns.clone(), created.clone());
        tokio::spawn(async move {
            for i in 0..SERVERS {
                create_server(&client, &ns, &format!("load-{i:02}"), Percona::Off).await?;
                created.fetch_add(1, Ordering::SeqCst);
            }
            anyhow::Ok(())
        })
    };
    eventually("a third of the DittoServers to be created", || async {
        Ok((created.load(Ordering::SeqCst) >= SERVERS / 3).then_some(()))
    })
    .await?;
    push(&client, &ns, &v2).await?;
    creator.await??;
    wait_active(&op, &digest(&v2)).await?;

    // Every server converges, and with v2's behaviour: the swap queued everyone.
    for i in 0..SERVERS {
        wait_converged(&client, &ns, &format!("load-{i:02}"), true).await?;
    }
    assert_eq!(errors(&op), 0, "no reconcile may fail: {}", op.metrics.encode());
    assert_eq!(op.metrics.module_swaps.get(), 1);
    let endpoint = module_endpoint(&op).await?;
    assert_eq!(endpoint["digest"], digest(&v2));
    assert_eq!(endpoint["name"], "dittofs-reconciler");
    assert!(endpoint["lastRejection"].is_null(), "{endpoint}");
    let text = op.metrics.encode();
    assert!(
        text.contains("wasm_operator_module_info{name=\"dittofs-reconciler\",version=")
            && text.contains(&digest(&v2)),
        "{text}"
    );
    let activated = events(&client, &ns, CONFIGMAP, "ModuleActivated").await?;
    assert!(activated.iter().any(|(_, note)| note.contains(&digest(&v2))), "{activated:?}");
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rejected_candidates_leave_the_active_module_serving() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "swap-reject").await?;
    let ns = ns.name().to_owned();
    let (v1, _) = dittofs_modules().await?;

    // At start, the operator waits for a valid module and does not start on a bad one.
    let starting = {
        let (client, ns) = (client.clone(), ns.clone());
        // A cache of its own: with no last good module, the host waits.
        let cache = ModuleCache::Dir(repo_root().join("target/test-module-cache-reject").join(&ns));
        tokio::spawn(async move { start_with_cache(&client, &ns, cache).await })
    };
    push_raw(&client, &ns, b"this is not a wasm module".to_vec()).await?;
    eventually("the corrupt first module to be rejected", || async {
        Ok((!rejected_events(&client, &ns).await?.is_empty()).then_some(()))
    })
    .await?;
    assert!(!starting.is_finished(), "the operator must not start without a valid module");
    push(&client, &ns, &v1).await?;
    let op = starting.await??;
    wait_active(&op, &digest(&v1)).await?;
    let compile_rejections = op.metrics.module_rejections("compile");

    let mut corrupt_gzip = compress_for_configmap(&v1)?;
    corrupt_gzip.truncate(corrupt_gzip.len() / 2);
    let candidates: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("corrupt", b"\0asm\x01\0\0\0garbage after a valid header".to_vec(), "compile", "does not compile"),
        ("gzip", corrupt_gzip, "decode", "gzip"),
        ("import", fixture("with-import.wat")?, "imports", "imports"),
        // Refused from its bytes, before compiling: without the limit the load would
        // not end, and `eventually` below would time out.
        ("bomb", compress_for_configmap(&compile_bomb()?)?, "limits", "more than the limit of 65536"),
        ("abi2", fixture("wrong-abi.wat")?, "abi", "abi 2"),
        ("trap", fixture("trap-in-smoke.wat")?, "smoke", "smoke reconcile"),
        ("slow", fixture("slow-in-smoke.wat")?, "smoke", "deadline"),
    ];
    for (name, bytes, reason, words) in candidates {
        expect_refused(&op, &client, &ns, (name, bytes), reason, words, &digest(&v1)).await?;
        // v1 still serves: a server created now converges with v1's behaviour.
        let server = format!("after-{name}");
        create_server(&client, &ns, &server, Percona::Off).await?;
        wait_converged(&client, &ns, &server, false).await?;
    }
    assert_eq!(op.metrics.module_rejections("compile"), compile_rejections + 1);
    assert_eq!(op.metrics.module_swaps.get(), 0);
    let text = op.metrics.encode();
    assert!(text.contains("wasm_operator_module_rejected_total{reason=\"abi\"} 1"), "{text}");
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_manifest_adding_a_related_kind_gets_its_watch_without_a_restart() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "swap-kinds").await?;
    let ns = ns.name().to_owned();
    let v1 = std::fs::read(mirror_wasm().await?)?;
    let v2 = mirror_services_wasm().await?;
    push(&client, &ns, &v1).await?;
    let op = start(&client, &ns).await?;
    let mirrors = mirror_api(&client, &ns);
    create_mirror(&client, &ns, "m", json!({"data": {"a": "1"}})).await?;
    eventually("the Mirror to be Ready", || async {
        let m = mirrors.get("m").await?;
        Ok((m.data["status"]["phase"] == "Ready").then_some(()))
    })
    .await?;

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service = |name: &str| -> Result<Service> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {configmap_mirror::OWNER_LABEL: "m"}},
            "spec": {"ports": [{"port": 80}]},
        }))?)
    };
    // Made with the module's field manager: only objects the module made are its own.
    let as_module = PostParams {
        field_manager: Some(configmap_mirror::manifest().field_manager),
        ..PostParams::default()
    };
    services.create(&as_module, &service("m-one")?).await?;

    push(&client, &ns, &v2).await?;
    wait_active(&op, &digest(&v2)).await?;
    // The new watch's initial list reached the snapshot (the swap requeued the Mirror).
    eventually("the Mirror to count one Service", || async {
        Ok((mirrors.get("m").await?.data["status"]["services"] == 1).then_some(()))
    })
    .await?;
    // And the watch triggers reconciles: nothing else would (the Mirror requeues
    // itself after five minutes only).
    services.create(&as_module, &service("m-two")?).await?;
    eventually("the Mirror to count two Services", || async {
        Ok((mirrors.get("m").await?.data["status"]["services"] == 2).then_some(()))
    })
    .await?;

    // Back to v1: the Service watch goes, the status loses its count.
    push(&client, &ns, &v1).await?;
    wait_active(&op, &digest(&v1)).await?;
    eventually("the status without a Service count", || async {
        Ok(mirrors.get("m").await?.data["status"].get("services").is_none().then_some(()))
    })
    .await?;
    assert_eq!(op.metrics.module_swaps.get(), 2);
    assert_eq!(errors(&op), 0, "{}", op.metrics.encode());
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_swap_cannot_widen_the_identity_drop_a_carried_finalizer_or_ask_for_a_refused_kind() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "swap-identity").await?;
    let ns = ns.name().to_owned();
    let v1 = std::fs::read(mirror_wasm().await?)?;
    push(&client, &ns, &v1).await?;
    let op = start(&client, &ns).await?;
    let mirrors = mirror_api(&client, &ns);
    create_mirror(&client, &ns, "m", json!({"data": {"a": "1"}})).await?;
    eventually("the Mirror to carry the finalizer and be Ready", || async {
        let m = mirrors.get("m").await?;
        let carries = m.finalizers().iter().any(|f| f == configmap_mirror::FINALIZER);
        Ok((carries && m.data["status"]["phase"] == "Ready").then_some(()))
    })
    .await?;

    let active = configmap_mirror::manifest();
    let kind = |api_version: &str, kind: &str, plural: &str| reconcile_sdk::KindRef {
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
        optional: false,
        digest_only: false,
    };
    let mut with_role_bindings = active.clone();
    with_role_bindings.related.push(kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"));
    let candidates = [
        (
            "renamed finalizer",
            reconcile_sdk::Manifest {
                finalizers: vec!["mirror.example.com/renamed".into()],
                ..active.clone()
            },
            "finalizer",
            "mirror.example.com/cleanup",
        ),
        (
            "other owner label",
            reconcile_sdk::Manifest { owner_label: "mirror.example.com/other".into(), ..active.clone() },
            "identity",
            "ownerLabel",
        ),
        (
            "other field manager",
            reconcile_sdk::Manifest { field_manager: "mirror-two".into(), ..active.clone() },
            "identity",
            "fieldManager",
        ),
        ("a RoleBinding", with_role_bindings, "policy", "RoleBinding"),
    ];
    for (name, manifest, reason, words) in candidates {
        let payload = compress_for_configmap(&with_manifest(&manifest)?)?;
        expect_refused(&op, &client, &ns, (name, payload), reason, words, &digest(&v1)).await?;
    }
    assert_eq!(op.metrics.module_swaps.get(), 0);

    // The Mirror still finishes deleting: v1 removes the finalizer it carries.
    mirrors.delete("m", &DeleteParams::default()).await?;
    eventually("the Mirror to be gone", || async { Ok(mirrors.get_opt("m").await?.is_none().then_some(())) })
        .await?;
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_candidate_refused_for_the_clusters_reason_is_tried_again_until_it_swaps() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "swap-retry").await?;
    let ns = ns.name().to_owned();
    // A kind of this test's own, whose CRD is not installed when the candidate comes.
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd_name = "widgets.retry.example.com";
    if crds.get_opt(crd_name).await?.is_some() {
        crds.delete(crd_name, &DeleteParams::default()).await?;
        eventually("the leftover Widget CRD to go", || async {
            Ok(crds.get_opt(crd_name).await?.is_none().then_some(()))
        })
        .await?;
    }
    let v1 = std::fs::read(mirror_wasm().await?)?;
    push(&client, &ns, &v1).await?;
    let op = start(&client, &ns).await?;

    let mut manifest = configmap_mirror::manifest();
    manifest.related.push(reconcile_sdk::KindRef {
        api_version: "retry.example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
        optional: false,
        digest_only: false,
    });
    let candidate = with_manifest(&manifest)?;
    let payload = compress_for_configmap(&candidate)?;
    expect_refused(&op, &client, &ns, ("widget", payload), "discovery", "Widget", &digest(&v1)).await?;

    // The cluster catches up; nobody pushes again.
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name},
        "spec": {"group": "retry.example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
    });
    crds.create(&PostParams::default(), &serde_json::from_value(crd)?).await?;
    let swapped = wait_active(&op, &digest(&candidate)).await;
    crds.delete(crd_name, &DeleteParams::default()).await?;
    swapped?;
    assert_eq!(op.metrics.module_swaps.get(), 1);
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_restart_with_nothing_valid_at_the_source_starts_from_the_last_good_module() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "swap-last-good").await?;
    let ns = ns.name().to_owned();
    let cache_dir = tempfile::tempdir()?;
    let cache = || ModuleCache::Dir(cache_dir.path().join("cache"));
    let v1 = std::fs::read(mirror_wasm().await?)?;
    push(&client, &ns, &v1).await?;
    let op = start_with_cache(&client, &ns, cache()).await?;
    wait_active(&op, &digest(&v1)).await?;
    op.shutdown().await;

    // While the host is down, the ConfigMap gets something that is no module.
    push_raw(&client, &ns, b"\0asm\x01\0\0\0 not a module".to_vec()).await?;
    let op = start_with_cache(&client, &ns, cache()).await?;
    assert_eq!(op.active.current().module.digest(), digest(&v1), "the host did not start from v1");
    let endpoint = module_endpoint(&op).await?;
    assert!(endpoint["origin"].as_str().is_some_and(|o| o.contains("last good module")), "{endpoint}");
    let notes = eventually("a LastGoodModule event", || async {
        let notes = events(&client, &ns, CONFIGMAP, "LastGoodModule").await?;
        Ok((!notes.is_empty()).then_some(notes))
    })
    .await?;
    assert!(
        notes.iter().any(|(type_, note)| type_ == "Warning" && note.contains("refused it (compile)")),
        "{notes:?}"
    );
    // And it reconciles with it.
    let mirrors = mirror_api(&client, &ns);
    create_mirror(&client, &ns, "m", json!({"data": {"a": "1"}})).await?;
    eventually("the Mirror to be Ready", || async {
        Ok((mirrors.get("m").await?.data["status"]["phase"] == "Ready").then_some(()))
    })
    .await?;
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_swap_during_deletions_handles_every_finalizer_as_the_spec_says() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "swap-delete").await?;
    let ns = ns.name().to_owned();
    let (v1, v2) = dittofs_modules().await?;
    push(&client, &ns, &v1).await?;
    let op = start(&client, &ns).await?;
    let servers: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &dittoservers());
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &percona_clusters());

    let plan: Vec<(String, Percona)> = (0..8)
        .map(|i| (format!("del-{i}"), if i % 2 == 0 { Percona::Keep } else { Percona::DeleteWithServer }))
        .collect();
    let mut uids = Vec::new();
    for (name, percona) in &plan {
        let created = create_server(&client, &ns, name, *percona).await?;
        uids.push(some(created.metadata.uid, "uid")?);
    }
    for (name, _) in &plan {
        let cluster = format!("{name}-postgres");
        eventually(&format!("PerconaPGCluster {cluster}"), || async {
            Ok(clusters.get_opt(&cluster).await?)
        })
        .await?;
        clusters
            .patch_status(
                &cluster,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"state": "ready"}})),
            )
            .await?;
        wait_converged(&client, &ns, name, false).await?;
    }

    // Delete them all and swap at once: the deletions straddle the swap.
    for (name, _) in &plan {
        servers.delete(name, &DeleteParams::background()).await?;
    }
    push(&client, &ns, &v2).await?;
    for (name, _) in &plan {
        eventually(&format!("DittoServer {name} to be gone"), || async {
            Ok(servers.get_opt(name).await?.is_none().then_some(()))
        })
        .await?;
    }
    wait_active(&op, &digest(&v2)).await?;
    for ((name, percona), uid) in plan.iter().zip(&uids) {
        let cluster = format!("{name}-postgres");
        match percona {
            Percona::Keep => {
                let kept = some(clusters.get_opt(&cluster).await?, &format!("the kept {cluster}"))?;
                assert!(kept.metadata.deletion_timestamp.is_none(), "{cluster} must be kept");
                let refs = kept.metadata.owner_references.unwrap_or_default();
                assert!(
                    refs.iter().all(|r| &r.uid != uid),
                    "{cluster} must not reference the server: {refs:?}"
                );
            }
            Percona::DeleteWithServer => {
                eventually(&format!("{cluster} to be deleted"), || async {
                    Ok(clusters.get_opt(&cluster).await?.is_none().then_some(()))
                })
                .await?;
            }
            Percona::Off => bail!("no plan without Percona"),
        }
    }
    op.shutdown().await;
    Ok(())
}
