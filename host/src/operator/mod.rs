//! The kube-rs layer: `wasm-operator run` and `wasm-operator snapshot`.
//!
//! The host knows nothing about the kinds it manages. At startup it loads the module
//! (runtime layer), reads its manifest, discovers the declared kinds
//! ([`discovery`]), starts the watches that fill the caches and indexes
//! ([`watch`], [`index`]) and runs the [`controller`]: for each primary it builds a
//! snapshot ([`snapshot`]), calls the module until requirements are answered
//! ([`reconcile`]), confines the outcome ([`confine`]) and executes it
//! ([`execute`]), with per-primary backoff ([`backoff`]) and a deduplicating work
//! queue ([`queue`]). [`leader`] gates reconciling on a Lease; [`http`] and
//! [`metrics`] make it observable. [`source`] follows where modules come from (a
//! file or a ConfigMap key) and [`swap`] validates new versions and swaps them in
//! without a restart ([`start_from_source`]).
//!
//! Guarantees: a module's actions never write outside its manifest's rights; a
//! primary is never reconciled twice at once; SIGTERM/SIGINT let reconciles in flight
//! finish and release the Lease before the process exits.

pub mod backoff;
pub mod confine;
pub mod connect;
pub mod controller;
pub mod discovery;
pub mod execute;
pub mod http;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod module;
pub mod queue;
pub mod reconcile;
pub mod snapshot;
pub mod source;
pub mod swap;
pub mod watch;

use crate::cli::{RunArgs, SandboxArgs, SnapshotArgs};
use backoff::Backoff;
use connect::{ConnectError, connect};
use controller::{Controller, Wiring};
use discovery::{DiscoveryError, KindLookup, KindRegistry};
use execute::{Executor, PrimaryTarget};
use index::{KindKey, ObjectKey};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use leader::{LeaderElector, LeaseConfig};
use metrics::{Metrics, ModuleLabels};
use module::{ActiveModule, Module, WasmModule};
use queue::WorkQueue;
use reconcile::{DecideError, DecideInput, decide};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

/// Why the operator could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The sandbox limits on the command line are out of range.
    #[error("invalid sandbox limits")]
    Limits(#[source] crate::runtime::LimitsError),
    /// The wasm engine could not start.
    #[error("cannot start the wasm engine")]
    Engine(#[source] crate::runtime::EngineError),
    /// The module file could not be read.
    #[error("cannot read module {path}")]
    ReadModule {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The module file is gzip but does not decompress, or is too large.
    #[error("cannot decode module {path}")]
    DecodeModule {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: source::SourceError,
    },
    /// The module is not a valid ABI v1 module.
    #[error("module {path} is invalid")]
    InvalidModule {
        /// The file.
        path: PathBuf,
        /// The runtime's verdict.
        #[source]
        source: crate::runtime::LoadError,
    },
    /// No cluster configuration.
    #[error(transparent)]
    Connect(ConnectError),
    /// Discovery failed (primary CRD missing, cluster unreachable, ...).
    #[error(transparent)]
    Discovery(DiscoveryError),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install the SIGTERM/SIGINT handlers")]
    Signals(#[source] std::io::Error),
    /// The module source ended before it offered a valid module.
    #[error("the module source {0} ended before offering a valid module")]
    SourceEnded(String),
    /// `snapshot`'s object is not `NAMESPACE/NAME`.
    #[error("invalid object {0:?}: expected NAMESPACE/NAME")]
    ObjectArgument(String),
    /// `snapshot`'s primary does not exist.
    #[error("{kind} {key} not found")]
    PrimaryNotFound {
        /// The primary kind.
        kind: String,
        /// Its namespace and name.
        key: ObjectKey,
    },
    /// A read for `snapshot` failed.
    #[error("cannot read {what}")]
    Read {
        /// What was read.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Loads and validates the module at `path` for `concurrency` concurrent calls.
pub async fn load_module(
    path: &Path,
    sandbox: &SandboxArgs,
    concurrency: usize,
) -> Result<Arc<WasmModule>, OperatorError> {
    use crate::runtime::ModuleCaller;
    let engine = new_engine(sandbox, concurrency)?;
    let bytes = read_module_file(path).await?;
    let loaded = engine
        .load_async(bytes)
        .await
        .map_err(|source| OperatorError::InvalidModule { path: path.to_owned(), source })?;
    Ok(Arc::new(WasmModule::new(loaded, ModuleCaller::new(concurrency))))
}

/// The module in the file at `path`, gunzipped if it is gzip.
async fn read_module_file(path: &Path) -> Result<Vec<u8>, OperatorError> {
    let raw = tokio::fs::read(path)
        .await
        .map_err(|source| OperatorError::ReadModule { path: path.to_owned(), source })?;
    source::decode(&raw).map_err(|source| OperatorError::DecodeModule { path: path.to_owned(), source })
}

/// The process's one wasm engine, for `concurrency` concurrent calls.
pub fn new_engine(
    sandbox: &SandboxArgs,
    concurrency: usize,
) -> Result<crate::runtime::SandboxEngine, OperatorError> {
    use crate::runtime::{EngineOptions, SandboxEngine, SandboxLimits};
    let limits = SandboxLimits::try_from(sandbox).map_err(OperatorError::Limits)?;
    SandboxEngine::new(limits, &EngineOptions::from_args(sandbox, concurrency)).map_err(OperatorError::Engine)
}

/// Starts an operator whose module comes from `source` and is hot-swapped when the
/// source changes (DESIGN.md §4).
///
/// - A file must hold a valid module now (else [`OperatorError::InvalidModule`]);
///   later versions are swapped in, or refused and reported.
/// - A ConfigMap source is waited for: until its key holds a module that passes
///   validation, this logs what is missing or why a version was refused (a Warning
///   event on the ConfigMap too) and does not reconcile; nothing else is served
///   meanwhile, so the operator is never ready without a valid module.
pub async fn start_from_source(
    client: Client,
    server: &str,
    source: &source::ModuleSource,
    sandbox: &SandboxArgs,
    config: OperatorConfig,
) -> Result<RunningOperator, OperatorError> {
    use crate::runtime::ModuleCaller;
    let engine = new_engine(sandbox, config.concurrency)?;
    let caller = ModuleCaller::new(config.concurrency);
    let metrics = Arc::new(Metrics::new());
    let mut swapper = swap::Swapper::new(
        engine.clone(),
        caller.clone(),
        client.clone(),
        config.instance.clone(),
        metrics.clone(),
    );
    let (module, origin, rx, source_task) = match source {
        source::ModuleSource::File(path) => {
            let bytes = read_module_file(path).await?;
            let loaded = engine
                .load_async(bytes)
                .await
                .map_err(|source| OperatorError::InvalidModule { path: path.clone(), source })?;
            let module = Arc::new(WasmModule::new(loaded, caller));
            let (rx, task) = source::spawn(source, Some(client.clone()));
            (module, source.to_string(), rx, task)
        }
        source::ModuleSource::ConfigMap(cm) => {
            tracing::info!(configmap = %cm, "loading the module from the ConfigMap; not reconciling until it holds a valid module");
            let (mut rx, task) = source::spawn(source, Some(client.clone()));
            let Some((module, origin)) = swapper.first_module(&mut rx).await else {
                task.abort();
                return Err(OperatorError::SourceEnded(source.to_string()));
            };
            (module, origin, rx, task)
        }
    };
    let manifest = module.manifest();
    tracing::info!(name = %manifest.name, version = %manifest.version, digest = %module.digest(), %origin, "module active");
    let mut operator =
        RunningOperator::start_with_metrics(client, server, module, Some(origin), config, metrics).await?;
    operator.hot_swap(swapper, rx, source_task);
    Ok(operator)
}

/// How to run the operator, independent of the command line (tests build it too).
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// The primary watch's scope.
    pub scope: watch::Scope,
    /// Concurrent reconciles (and module calls).
    pub concurrency: usize,
    /// Where to serve the HTTP endpoints (`None`: not at all).
    pub http_addr: Option<SocketAddr>,
    /// Leader election, if enabled.
    pub leader: Option<LeaseConfig>,
    /// The failure backoff.
    pub backoff: Backoff,
    /// The events' reportingInstance.
    pub instance: Option<String>,
}

/// A running operator; [`RunningOperator::shutdown`] stops it gracefully.
pub struct RunningOperator {
    /// The metrics it records.
    pub metrics: Arc<Metrics>,
    /// The controller (caches, queue, reconcile).
    pub controller: Arc<Controller>,
    /// The active module's holder.
    pub active: Arc<ActiveModule>,
    swap_target: swap::SwapTarget,
    swap_tasks: Vec<JoinHandle<()>>,
    http_addr: Option<SocketAddr>,
    shutdown: channel::Sender<bool>,
    controller_task: JoinHandle<()>,
    elector_task: Option<JoinHandle<LeaderElector>>,
    http_task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for RunningOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningOperator").field("http_addr", &self.http_addr).finish_non_exhaustive()
    }
}

impl RunningOperator {
    /// Discovers the module's kinds, starts the watches, the HTTP endpoints, the
    /// leader election (if configured) and the controller.
    pub async fn start(
        client: Client,
        server: &str,
        module: Arc<dyn Module>,
        config: OperatorConfig,
    ) -> Result<Self, OperatorError> {
        Self::start_with_metrics(client, server, module, None, config, Arc::new(Metrics::new())).await
    }

    /// [`RunningOperator::start`] recording into `metrics`, with the module's origin.
    pub async fn start_with_metrics(
        client: Client,
        server: &str,
        module: Arc<dyn Module>,
        origin: Option<String>,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, OperatorError> {
        let manifest = module.manifest().clone();
        let kinds = Arc::new(
            KindRegistry::discover(&client, server, &manifest).await.map_err(OperatorError::Discovery)?,
        );
        let active = Arc::new(ActiveModule::with_origin(module, origin));
        let current = active.current();
        metrics.set_module(
            ModuleLabels {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                digest: current.module.digest().to_owned(),
            },
            current.loaded_at,
        );
        let queue = Arc::new(WorkQueue::new());
        let watches = watch::start(
            client.clone(),
            server.to_owned(),
            &manifest,
            kinds.clone(),
            config.scope.clone(),
            queue.clone(),
        );
        let executor =
            Executor::new(client.clone(), kinds, &manifest, config.instance.clone(), metrics.clone());
        let controller = Arc::new(Controller::new(
            client.clone(),
            active.clone(),
            Wiring { watches, executor },
            queue,
            metrics.clone(),
            config.backoff,
        ));
        let (shutdown, shutdown_rx) = channel::channel(false);

        let (http_addr, http_task) = match config.http_addr {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| OperatorError::Bind { addr, source })?;
                let local = listener.local_addr().map_err(|source| OperatorError::Bind { addr, source })?;
                let ready = {
                    let controller = controller.clone();
                    Arc::new(move || controller.wiring().watches.caches.synced())
                };
                let router =
                    http::router(http::HttpState { metrics: metrics.clone(), active: active.clone(), ready });
                tracing::info!(addr = %local, "serving /metrics, /healthz, /readyz and /module");
                (Some(local), Some(tokio::spawn(http::serve(listener, router, shutdown_rx.clone()))))
            }
            None => (None, None),
        };

        let (leading, leading_rx) = channel::channel(config.leader.is_none());
        let elector_task = match config.leader {
            Some(lease) => {
                let mut elector = LeaderElector::new(client.clone(), lease);
                let shutdown_rx = shutdown_rx.clone();
                let metrics = metrics.clone();
                Some(tokio::spawn(async move {
                    let mut leading_metric = leading.subscribe();
                    let mirror = tokio::spawn(async move {
                        while leading_metric.changed().await.is_ok() {
                            metrics.leader.set(i64::from(*leading_metric.borrow()));
                        }
                    });
                    elector.run(&leading, shutdown_rx).await;
                    drop(leading);
                    mirror.abort();
                    elector
                }))
            }
            None => {
                metrics.leader.set(1);
                // Keep the sender alive for the controller's lifetime.
                let mut shutdown_rx = shutdown_rx.clone();
                tokio::spawn(async move {
                    let _ = shutdown_rx.wait_for(|s| *s).await;
                    drop(leading);
                });
                None
            }
        };
        let controller_task =
            tokio::spawn(controller.clone().run(config.concurrency, leading_rx, shutdown_rx));
        let swap_target = swap::SwapTarget {
            client,
            server: server.to_owned(),
            scope: config.scope,
            instance: config.instance,
            controller: controller.clone(),
            active: active.clone(),
        };
        Ok(Self {
            metrics,
            controller,
            active,
            swap_target,
            swap_tasks: Vec::new(),
            http_addr,
            shutdown,
            controller_task,
            elector_task,
            http_task,
        })
    }

    /// Hands the source's states to `swapper`, which swaps new module versions in;
    /// `source_task` (the source's follower) stops with the operator.
    pub fn hot_swap(
        &mut self,
        swapper: swap::Swapper,
        states: channel::Receiver<source::SourceState>,
        source_task: JoinHandle<()>,
    ) {
        let target = self.swap_target.clone();
        self.swap_tasks.push(source_task);
        self.swap_tasks.push(tokio::spawn(swapper.run(states, target)));
    }

    /// What a swap changes (for driving a [`swap::Swapper`] by hand).
    pub fn swap_target(&self) -> &swap::SwapTarget {
        &self.swap_target
    }

    /// The bound HTTP address, if serving.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Whether every watch has delivered its initial list.
    pub fn ready(&self) -> bool {
        self.controller.wiring().watches.caches.synced()
    }

    /// Stops reconciling, lets reconciles in flight finish, releases the Lease and
    /// stops the HTTP endpoints.
    pub async fn shutdown(self) {
        // No swap starts any more; one half done is dropped with its new watches.
        for task in &self.swap_tasks {
            task.abort();
        }
        let _ = self.shutdown.send(true);
        if let Err(err) = self.controller_task.await {
            tracing::error!(error = %err, "the controller task failed");
        }
        if let Some(task) = self.elector_task {
            match task.await {
                Ok(elector) => {
                    if let Err(err) = elector.release().await {
                        tracing::warn!("cannot release the leader lease: {}", controller::error_chain(&err));
                    }
                }
                Err(err) => tracing::error!(error = %err, "the leader election task failed"),
            }
        }
        if let Some(task) = self.http_task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "the HTTP server failed"),
                Err(err) => tracing::error!(error = %err, "the HTTP task failed"),
            }
        }
    }
}

/// This replica's name: the pod's (POD_NAME, else HOSTNAME), else `wasm-operator`.
fn instance_name() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "wasm-operator".to_owned())
}

/// The Lease namespace: the flag, else the pod's namespace, else `default`.
fn lease_namespace(flag: Option<&str>) -> String {
    if let Some(ns) = flag {
        return ns.to_owned();
    }
    if let Ok(ns) = std::env::var("POD_NAMESPACE")
        && !ns.is_empty()
    {
        return ns;
    }
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|ns| ns.trim().to_owned())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() -> Result<(), OperatorError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(OperatorError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(OperatorError::Signals)?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing reconciles in flight"),
        _ = int.recv() => tracing::info!("SIGINT: finishing reconciles in flight"),
    }
    Ok(())
}

/// `wasm-operator run`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let concurrency = usize::from(args.concurrency);
    let source = match (&args.module, &args.module_configmap) {
        (_, Some(cm)) => source::ModuleSource::ConfigMap(cm.clone()),
        (Some(path), None) => source::ModuleSource::File(path.clone()),
        (None, None) => anyhow::bail!("one of --module and --module-configmap is required"),
    };
    if let source::ModuleSource::File(path) = &source {
        // Fail before connecting when the file is bad.
        let module = load_module(path, &args.sandbox, concurrency).await?;
        let manifest = module.manifest();
        tracing::info!(name = %manifest.name, version = %manifest.version, digest = %module.digest(), "module valid");
    }
    let (client, server) = connect().await.map_err(OperatorError::Connect)?;
    let instance = instance_name();
    let leader = args.leader_elect.then(|| {
        // Unique per process, so a restarted pod with the same name is a new
        // candidate rather than a holder that believes it still renews.
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let identity = format!("{instance}_{:x}{nanos:x}", std::process::id());
        LeaseConfig::new(
            lease_namespace(args.leader_election_namespace.as_deref()),
            args.lease_name.clone(),
            identity,
        )
    });
    let config = OperatorConfig {
        scope: watch::Scope {
            namespace: args.namespace.clone(),
            label_selector: args.label_selector.clone(),
        },
        concurrency,
        http_addr: Some(args.http_addr),
        leader,
        backoff: Backoff::default(),
        instance: Some(instance),
    };
    let operator = tokio::select! {
        operator = start_from_source(client, &server, &source, &args.sandbox, config) => operator?,
        signal = shutdown_signal() => {
            signal?;
            tracing::info!("stopped before a module was active");
            return Ok(());
        }
    };
    let signal = shutdown_signal().await;
    operator.shutdown().await;
    signal?;
    Ok(())
}

/// `wasm-operator snapshot`: prints exactly the snapshot `run` would pass for one
/// primary, requirements answered (one decision's worth of module calls), as JSON.
pub async fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let (namespace, name) = args
        .object
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| OperatorError::ObjectArgument(args.object.clone()))?;
    let key = ObjectKey::new(namespace, name);
    let module = load_module(&args.module, &args.sandbox, 1).await?;
    let (client, server) = connect().await.map_err(OperatorError::Connect)?;
    let snapshot = capture(&client, &server, module.as_ref(), &key).await?;
    println!("{}", serde_json::to_string_pretty(&snapshot)?);
    Ok(())
}

/// Reads `key` and its associated objects fresh and returns the snapshot `run` would
/// pass: the one of the decision's last round (requirements answered). If the module
/// fails or asks for something forbidden, the first round's snapshot is returned,
/// since that is the input to replay.
pub async fn capture(
    client: &Client,
    server: &str,
    module: &dyn Module,
    key: &ObjectKey,
) -> Result<reconcile_sdk::Snapshot, OperatorError> {
    let manifest = module.manifest();
    let kinds = KindRegistry::discover(client, server, manifest).await.map_err(OperatorError::Discovery)?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, kinds.primary());
    let object = api
        .get_opt(&key.name)
        .await
        .map_err(|source| OperatorError::Read { what: format!("{} {key}", manifest.primary.kind), source })?
        .ok_or_else(|| OperatorError::PrimaryNotFound {
            kind: manifest.primary.kind.clone(),
            key: key.clone(),
        })?;
    let primary = PrimaryTarget::new(Arc::new(object)).ok_or_else(|| OperatorError::PrimaryNotFound {
        kind: manifest.primary.kind.clone(),
        key: key.clone(),
    })?;
    let mut claimed = Vec::new();
    let selector = format!("{}={}", manifest.owner_label, key.name);
    for kind in &manifest.related {
        let kind_key = KindKey::new(&kind.api_version, &kind.kind);
        let KindLookup::Served(_, resource) = kinds.lookup(&kind_key) else { continue };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, &resource);
        let list = api.list(&ListParams::default().labels(&selector)).await.map_err(|source| {
            OperatorError::Read { what: format!("{} in {}", kind.kind, key.namespace), source }
        })?;
        claimed.extend(list.items.into_iter().map(|o| (kind_key.clone(), Arc::new(o))));
    }
    let input = DecideInput {
        manifest,
        kinds: &kinds,
        client,
        primary: &primary,
        claimed,
        remembered: Vec::new(),
        last_failure: None,
        now: snapshot::rfc3339(SystemTime::now()),
        metrics: None,
    };
    let (object, related, _) = reconcile::view(&input);
    let first = snapshot::build(input.now.clone(), object, related, Vec::new(), None);
    match decide(module, input).await {
        Ok(decision) => Ok(decision.snapshot),
        Err(err @ (DecideError::Call(_) | DecideError::Rejected(_) | DecideError::TooManyRounds { .. })) => {
            tracing::warn!(
                "requirements not answered ({}); printing the first round's snapshot",
                controller::error_chain(&err)
            );
            Ok(first)
        }
        Err(err) => {
            tracing::warn!(
                "cannot answer requirements ({}); printing the first round's snapshot",
                controller::error_chain(&err)
            );
            Ok(first)
        }
    }
}
