//! Shared setup of the operator and executor tests: the real control plane (through
//! the `e2e` crate), the configmap-mirror module built to wasm, native test modules,
//! and small object helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context as _, Result, bail};
use e2e::build::build_command;
use e2e::dittofs::dittoservers;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Client;
use kube::ResourceExt as _;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use reconcile_sdk::{Manifest, Outcome, Snapshot};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;
use wasm_operator::runtime::{ModuleCache, SandboxConfig, SandboxLimits};
use wasm_operator::{
    AdminPolicy, Backoff, Module, ModuleCallError, OperatorConfig, RunningOperator, Scope, WasmModule,
};

pub use e2e::{DEFAULT_TIMEOUT, TestNamespace, wait_until};

/// The shared cluster and a client built on this test's runtime.
pub async fn cluster() -> Result<(&'static e2e::Cluster, Client)> {
    let cluster = e2e::cluster().await?;
    Ok((cluster, cluster.client()?))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

static MIRROR_WASM: OnceCell<std::result::Result<PathBuf, String>> = OnceCell::const_new();

/// Builds `tests/modules/configmap-mirror` for wasm32 (once per test process) and
/// returns the module's path. A separate target directory keeps this build from
/// waiting on the lock of the `cargo test` that runs us.
pub async fn mirror_wasm() -> Result<PathBuf> {
    MIRROR_WASM
        .get_or_init(|| async {
            let root = repo_root();
            let target_dir = root.join("target/test-modules");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = tokio::process::Command::new(cargo)
                .current_dir(&root)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "configmap-mirror",
                    "--target",
                    "wasm32-unknown-unknown",
                    "--profile",
                    "wasm",
                ])
                .arg("--target-dir")
                .arg(&target_dir)
                .status()
                .await
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err(format!("building configmap-mirror for wasm32 failed ({status})"));
            }
            Ok(target_dir.join("wasm32-unknown-unknown/wasm/configmap_mirror.wasm"))
        })
        .await
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// The configmap-mirror module, loaded by the runtime layer from its wasm build.
pub async fn mirror_module() -> Result<Arc<WasmModule>> {
    let path = mirror_wasm().await?;
    let sandbox = SandboxConfig {
        limits: SandboxLimits { deadline: Duration::from_millis(2000), ..SandboxLimits::default() },
        cache: ModuleCache::Disabled,
        ..SandboxConfig::default()
    };
    Ok(wasm_operator::load_module(&path, &sandbox, 4, &wasm_operator::TrustPolicy::default()).await?)
}

/// A module implemented natively, for hostile and edge-case behaviour.
pub struct NativeModule {
    manifest: Manifest,
    reconcile: Box<dyn Fn(Snapshot) -> Outcome + Send + Sync>,
    /// Every snapshot it was called with.
    pub calls: Mutex<Vec<Snapshot>>,
}

impl NativeModule {
    /// A module with `manifest` answering `reconcile`.
    pub fn new(
        manifest: Manifest,
        reconcile: impl Fn(Snapshot) -> Outcome + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self { manifest, reconcile: Box::new(reconcile), calls: Mutex::new(Vec::new()) })
    }

    /// How many calls so far.
    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl Module for NativeModule {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn digest(&self) -> &str {
        "sha256:native"
    }

    fn reconcile(
        &self,
        snapshot_json: Vec<u8>,
    ) -> BoxFuture<'static, Result<(Outcome, Duration), ModuleCallError>> {
        let result = match reconcile_sdk::decode_snapshot(&snapshot_json) {
            Ok(snapshot) => {
                self.calls.lock().unwrap().push(snapshot.clone());
                Ok(((self.reconcile)(snapshot), Duration::ZERO))
            }
            Err(err) => Err(ModuleCallError::from_error(err)),
        };
        Box::pin(async move { result })
    }
}

/// An operator for `module`, watching only `namespace`, with a short backoff so
/// failure paths are exercised quickly.
pub async fn start_operator(
    client: &Client,
    module: Arc<dyn Module>,
    namespace: &str,
) -> Result<RunningOperator> {
    start_operator_with_policy(client, module, namespace, AdminPolicy::default()).await
}

/// [`start_operator`] under the administrator's `policy`.
pub async fn start_operator_with_policy(
    client: &Client,
    module: Arc<dyn Module>,
    namespace: &str,
    policy: AdminPolicy,
) -> Result<RunningOperator> {
    let config = OperatorConfig {
        scope: Scope { namespace: Some(namespace.to_owned()), label_selector: None },
        probe_addr: Some("127.0.0.1:0".parse()?),
        metrics_addr: Some("127.0.0.1:0".parse()?),
        backoff: Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(2) },
        instance: Some("test".into()),
        policy,
        ..OperatorConfig::default()
    };
    Ok(RunningOperator::start(client.clone(), "the test cluster", module, config).await?)
}

/// The `metadata.name` of a snapshot's primary.
pub fn name_of(snapshot: &Snapshot) -> String {
    snapshot.object["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

/// How often `module` was called for the primary `name`.
pub fn calls_of(module: &NativeModule, name: &str) -> usize {
    module.calls.lock().unwrap().iter().filter(|s| name_of(s) == name).count()
}

/// A plain HTTP/1.0 GET on loopback: status code and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// Waits until `module` saw a `lastFailure` for the primary `name` containing `text`.
pub async fn wait_last_failure(module: &NativeModule, name: &str, text: &str) -> Result<String> {
    eventually(&format!("{name}'s lastFailure to say {text:?}"), || async {
        let calls = module.calls.lock().unwrap();
        Ok(calls.iter().filter(|s| name_of(s) == name).find_map(|s| {
            s.last_failure.as_ref().filter(|f| f.message.contains(text)).map(|f| f.message.clone())
        }))
    })
    .await
}

/// The Mirror resource.
pub fn mirrors() -> ApiResource {
    ApiResource {
        group: "mirror.example.com".into(),
        version: "v1".into(),
        api_version: "mirror.example.com/v1".into(),
        kind: "Mirror".into(),
        plural: "mirrors".into(),
    }
}

/// The Mirror API in `namespace`.
pub fn mirror_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &mirrors())
}

/// Creates (applies) a Mirror.
pub async fn create_mirror(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: Value,
) -> Result<DynamicObject> {
    let object = json!({"apiVersion": "mirror.example.com/v1", "kind": "Mirror", "metadata": {"name": name}, "spec": spec});
    e2e::apply(client, Some(namespace), &object).await
}

/// Merge-patches a Mirror's spec as a user would.
pub async fn patch_spec(client: &Client, namespace: &str, name: &str, spec: Value) -> Result<()> {
    mirror_api(client, namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
        .await
        .with_context(|| format!("cannot patch Mirror {name}"))?;
    Ok(())
}

/// Polls `probe` every 100 ms (through `e2e::wait_until`) with the default timeout.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    wait_until(what, DEFAULT_TIMEOUT, probe).await
}

/// The events regarding `name` in `namespace` with `reason`, as (type, note).
pub async fn events(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
) -> Result<Vec<(String, String)>> {
    use k8s_openapi::api::events::v1::Event;
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&Default::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| (e.type_.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

/// Fails unless `value` is `Some`.
pub fn some<T>(value: Option<T>, what: &str) -> Result<T> {
    match value {
        Some(v) => Ok(v),
        None => bail!("{what} is missing"),
    }
}

/// The DittoFS module's finalizer.
pub const DITTO_FINALIZER: &str = "dittofs.dittofs.com/finalizer";
/// The DittoFS module's owner label.
pub const DITTO_OWNER_LABEL: &str = "dittofs.dittofs.com/server";
/// The annotation the v2 build (`v2-annotation`) puts on every object it applies.
pub const V2_ANNOTATION: &str = "dittofs.dittofs.com/module-generation";

pub fn run_build(mut command: Command, what: &str) -> std::result::Result<(), String> {
    let status = command.status().map_err(|e| format!("cannot run {what}: {e}"))?;
    if !status.success() {
        return Err(format!("{what} failed ({status})"));
    }
    Ok(())
}

/// Both builds of the DittoFS module (v1, v2), or why they are missing.
type Builds = std::result::Result<(Vec<u8>, Vec<u8>), String>;

static DITTOFS: OnceCell<Builds> = OnceCell::const_new();

/// Name prebuilt DittoFS modules (v1 and v2) instead of building them.
const V1_ENV: &str = "HOT_SWAP_MODULE_V1";
const V2_ENV: &str = "HOT_SWAP_MODULE_V2";

/// The DittoFS module and its v2 build (`make wasm wasm-v2`, once per test process,
/// unless `HOT_SWAP_MODULE_V1` and `HOT_SWAP_MODULE_V2` name prebuilt files).
pub async fn dittofs_modules() -> Result<(Vec<u8>, Vec<u8>)> {
    DITTOFS
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                if let (Some(v1), Some(v2)) = (std::env::var_os(V1_ENV), std::env::var_os(V2_ENV)) {
                    let read =
                        |path: &std::ffi::OsStr| std::fs::read(path).map_err(|e| format!("{path:?}: {e}"));
                    return Ok((read(&v1)?, read(&v2)?));
                }
                let mut make = build_command("make");
                make.args(["--no-print-directory", "--quiet", "wasm", "wasm-v2"]);
                run_build(make, "make wasm wasm-v2")?;
                let read = |name: &str| {
                    std::fs::read(repo_root().join("target/modules").join(name))
                        .map_err(|e| format!("{name}: {e}"))
                };
                Ok((read("dittofs-reconciler.wasm")?, read("dittofs-reconciler-v2.wasm")?))
            })
            .await
            .map_err(|e| e.to_string())?
        })
        .await
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Whether `name` is converged: finalizer, phase Pending or Running (the local
/// cluster's fake nodes may already have made its pod ready), and its StatefulSet,
/// ConfigMap and Services exist. Returns its owned objects' annotations
/// of `V2_ANNOTATION` (one entry per object).
pub async fn converged(client: &Client, namespace: &str, name: &str) -> Result<Option<Vec<Option<String>>>> {
    let servers: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &dittoservers());
    let Some(server) = servers.get_opt(name).await? else { return Ok(None) };
    let finalized = server.finalizers().iter().any(|f| f == DITTO_FINALIZER);
    let phase = server.data.pointer("/status/phase").and_then(Value::as_str);
    if !finalized || !matches!(phase, Some("Pending" | "Running")) {
        return Ok(None);
    }
    let selector = ListParams::default().labels(&format!("{DITTO_OWNER_LABEL}={name}"));
    let sts = Api::<StatefulSet>::namespaced(client.clone(), namespace).list(&selector).await?.items;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), namespace).list(&selector).await?.items;
    let svcs = Api::<Service>::namespaced(client.clone(), namespace).list(&selector).await?.items;
    if sts.is_empty() || cms.is_empty() || svcs.is_empty() {
        return Ok(None);
    }
    let marks = sts
        .iter()
        .map(|o| o.annotations().get(V2_ANNOTATION).cloned())
        .chain(cms.iter().map(|o| o.annotations().get(V2_ANNOTATION).cloned()))
        .chain(svcs.iter().map(|o| o.annotations().get(V2_ANNOTATION).cloned()))
        .collect();
    Ok(Some(marks))
}

pub async fn wait_converged(client: &Client, namespace: &str, name: &str, v2: bool) -> Result<()> {
    let want = v2.then(|| "v2".to_owned());
    eventually(&format!("DittoServer {name} to converge ({})", if v2 { "v2" } else { "v1" }), || async {
        Ok(converged(client, namespace, name)
            .await?
            .filter(|marks| marks.iter().all(|m| *m == want))
            .map(drop))
    })
    .await
}

/// Waits until the module with `digest` is `op`'s active one.
pub async fn wait_active(op: &RunningOperator, digest: &str) -> Result<()> {
    eventually(&format!("module {digest} to be active"), || async {
        Ok((op.active.current().module.digest() == digest).then_some(()))
    })
    .await
}

/// `/module` of the operator, as JSON.
pub async fn module_endpoint(op: &RunningOperator) -> Result<Value> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = some(op.probe_addr(), "the probe address")?;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"GET /module HTTP/1.0\r\nHost: test\r\n\r\n").await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (_, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    Ok(serde_json::from_str(body)?)
}
