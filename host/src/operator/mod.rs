//! The running operator: every part wired together, started and stopped as one.
//!
//! [`start_from_source`] is `wasm-operator run` without the command line: it loads the
//! first module from its source ([`crate::lifecycle`]), then [`RunningOperator::start`]
//! discovers the module's kinds, starts the watches ([`crate::cluster`]), the HTTP
//! endpoints ([`crate::observe`]), the leader election if configured and the
//! controller's workers ([`crate::control`]), and hands the source to the hot swap.
//!
//! Guarantees: a module's actions never write outside its manifest's rights; a
//! primary is never reconciled twice at once; [`RunningOperator::shutdown`] lets
//! reconciles in flight finish and releases the Lease before it returns.

use crate::cluster::sync::SyncState;
use crate::cluster::{DiscoveryError, KindRegistry, Scope, watches};
use crate::control::{Backoff, Controller, LeaderElector, LeaseConfig, Wiring};
use crate::error_chain;
use crate::execute::Executor;
use crate::lifecycle::{
    LoadFileError, ModuleSource, SourceState, Swapper, TrustPolicy, load_file, swap::SwapTarget,
};
use crate::module::{ActiveModule, Module, WasmModule};
use crate::observe::{HttpState, Metrics, ModuleLabels, RestClientMetrics, http};
use crate::policy::{AdminPolicy, PolicyViolation};
use crate::queue::WorkQueue;
use crate::runtime::{EngineError, ModuleCaller, SandboxConfig, SandboxEngine};
use kube::Client;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

/// How to run the operator: plain data, built by the command line or by tests.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// The primary watch's scope.
    pub scope: Scope,
    /// Concurrent reconciles (and module calls).
    pub concurrency: usize,
    /// Where to serve `/metrics` (`None`: not at all).
    pub metrics_addr: Option<SocketAddr>,
    /// Where to serve `/healthz`, `/readyz` and `/module` (`None`: not at all).
    pub probe_addr: Option<SocketAddr>,
    /// The API request counts that the client's layer records
    /// ([`RestClientMetrics::layer`]), exported on `/metrics` as `rest_client_*`.
    pub rest_client: RestClientMetrics,
    /// Leader election, if enabled.
    pub leader: Option<LeaseConfig>,
    /// The failure backoff.
    pub backoff: Backoff,
    /// The events' reportingInstance.
    pub instance: Option<String>,
    /// What the administrator allows any module: kinds, Secrets, workload content,
    /// the caps on one outcome, the write budget.
    pub policy: AdminPolicy,
    /// How long work may wait in the queue, with no worker taking it, before
    /// `/healthz` fails.
    pub stall_timeout: Duration,
    /// How long a watch may take to deliver its initial list before `/readyz` names
    /// it and it is logged at ERROR; also how long a hot swap waits for the new
    /// manifest's watches.
    pub sync_timeout: Duration,
    /// How long [`RunningOperator::shutdown`] waits for reconciles in flight before
    /// it stops without them (a hung call would otherwise hold it until the kubelet
    /// kills the pod).
    pub drain_timeout: Duration,
    /// Which modules the administrator trusts (signing keys, pinned digests): every
    /// module from the source, the first one included, must pass it.
    pub trust: TrustPolicy,
}

impl Default for OperatorConfig {
    /// `run`'s defaults: every namespace, 4 reconciles at once, no HTTP endpoints (and
    /// no API request counts),
    /// no leader election, the default backoff and policy, every module trusted, and
    /// the 300 s stall, 120 s sync and 25 s drain timeouts.
    fn default() -> Self {
        Self {
            scope: Scope::default(),
            concurrency: 4,
            metrics_addr: None,
            probe_addr: None,
            rest_client: RestClientMetrics::default(),
            leader: None,
            backoff: Backoff::default(),
            instance: None,
            policy: AdminPolicy::default(),
            stall_timeout: Duration::from_secs(300),
            sync_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(25),
            trust: TrustPolicy::default(),
        }
    }
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The wasm engine could not start.
    #[error("cannot start the wasm engine")]
    Engine(#[source] EngineError),
    /// The module file could not be loaded.
    #[error(transparent)]
    Module(LoadFileError),
    /// The module source cannot be followed (a registry's credentials, say).
    #[error("cannot follow the module source")]
    Source(#[source] crate::lifecycle::oci::OciError),
    /// The module source ended before it offered a valid module.
    #[error("the module source {0} ended before offering a valid module")]
    SourceEnded(String),
    /// The module's manifest asks for a kind the administrator's policy refuses.
    #[error("the module is refused")]
    Policy(#[source] PolicyViolation),
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
}

/// Starts an operator whose module comes from `source` and is hot-swapped when the
/// source changes (docs/abi.md, *Hot swap acceptance checks*).
///
/// - Every module, the first one included, must pass `config.trust` (a signature by
///   a trusted key, a pinned digest) before it is compiled.
/// - A file must hold a valid module now (else [`StartError::Module`]); later
///   versions are swapped in, or refused and reported.
/// - A ConfigMap or registry source is waited for: until it holds a module that passes
///   validation, this logs what is missing or why a version was refused (a Warning
///   event on the ConfigMap too) and does not reconcile; nothing else is served
///   meanwhile, so the operator is never ready without a valid module.
pub async fn start_from_source(
    client: Client,
    server: &str,
    source: &ModuleSource,
    sandbox: &SandboxConfig,
    config: OperatorConfig,
) -> Result<RunningOperator, StartError> {
    let engine = SandboxEngine::new(&sandbox.clone().for_concurrency(config.concurrency))
        .map_err(StartError::Engine)?;
    let caller = ModuleCaller::new(config.concurrency);
    let metrics = Arc::new(Metrics::with_rest_client(&config.rest_client));
    let mut swapper = Swapper::new(
        engine.clone(),
        caller.clone(),
        client.clone(),
        config.instance.clone(),
        metrics.clone(),
        config.policy.clone(),
        config.sync_timeout,
    )
    .with_trust(config.trust.clone());
    let (module, origin, signer, rx, source_task) = match source {
        ModuleSource::File(path) => {
            let file = load_file(&engine, path, &config.trust).await.map_err(StartError::Module)?;
            let module = Arc::new(WasmModule::new(file.loaded, caller));
            let (rx, task) = spawn_source(source, &client, &metrics)?;
            (module, source.to_string(), file.signer, rx, task)
        }
        ModuleSource::ConfigMap(_) | ModuleSource::Oci(_) => {
            tracing::info!(%source, "loading the module from its source; not reconciling until it holds a valid module");
            let (mut rx, task) = spawn_source(source, &client, &metrics)?;
            let Some(first) = swapper.first_module(&mut rx).await else {
                task.abort();
                return Err(StartError::SourceEnded(source.to_string()));
            };
            (first.module, first.origin, first.signer, rx, task)
        }
    };
    let manifest = module.manifest();
    tracing::info!(name = %manifest.name, version = %manifest.version, digest = %module.digest(), %origin, signer = signer.as_deref().unwrap_or("-"), "module active");
    let mut operator =
        RunningOperator::start_with_metrics(client, server, module, Some(origin), signer, config, metrics)
            .await?;
    operator.hot_swap(swapper, rx, source_task);
    Ok(operator)
}

/// Starts the task following `source`.
fn spawn_source(
    source: &ModuleSource,
    client: &Client,
    metrics: &Metrics,
) -> Result<(channel::Receiver<SourceState>, JoinHandle<()>), StartError> {
    crate::lifecycle::source::spawn(source, Some(client.clone()), metrics.module_source_errors.clone())
        .map_err(StartError::Source)
}

/// A running operator; [`RunningOperator::shutdown`] stops it gracefully.
pub struct RunningOperator {
    /// The metrics it records.
    pub metrics: Arc<Metrics>,
    /// The controller (caches, queue, reconcile).
    pub controller: Arc<Controller>,
    /// The active module's holder.
    pub active: Arc<ActiveModule>,
    swap_target: SwapTarget,
    swap_tasks: Vec<JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
    probe_addr: Option<SocketAddr>,
    shutdown: channel::Sender<bool>,
    // Sent once the controller has drained: the Lease is renewed until then.
    elector_stop: channel::Sender<bool>,
    drain_timeout: Duration,
    controller_task: JoinHandle<()>,
    elector_task: Option<JoinHandle<LeaderElector>>,
    http_tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for RunningOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningOperator")
            .field("metrics_addr", &self.metrics_addr)
            .field("probe_addr", &self.probe_addr)
            .finish_non_exhaustive()
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
    ) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::with_rest_client(&config.rest_client));
        Self::start_with_metrics(client, server, module, None, None, config, metrics).await
    }

    /// [`RunningOperator::start`] recording into `metrics`, with the module's origin
    /// and signer.
    async fn start_with_metrics(
        client: Client,
        server: &str,
        module: Arc<dyn Module>,
        origin: Option<String>,
        signer: Option<String>,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartError> {
        let manifest = module.manifest().clone();
        config.policy.check_manifest(&manifest).map_err(StartError::Policy)?;
        let kinds = Arc::new(
            KindRegistry::discover(&client, server, &manifest).await.map_err(StartError::Discovery)?,
        );
        let active = Arc::new(ActiveModule::with_origin(module, origin, signer));
        let current = active.current();
        metrics.set_module(
            ModuleLabels {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                digest: current.module.digest().to_owned(),
                source: current.origin.clone().unwrap_or_default(),
                signer: current.signer.clone().unwrap_or_default(),
            },
            current.loaded_at,
        );
        // Named after the primary kind, as controller-runtime names a controller.
        let controller_name = manifest.primary.kind.to_lowercase();
        let queue = Arc::new(WorkQueue::with_metrics(metrics.work_queue(&controller_name)));
        let watches = watches::start(
            client.clone(),
            server.to_owned(),
            &manifest,
            kinds.clone(),
            config.scope.clone(),
            queue.clone(),
            SyncState::new(config.sync_timeout, metrics.watches_overdue.clone()),
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
            config.policy,
        ));
        let (shutdown, shutdown_rx) = channel::channel(false);
        let state = http_state(
            &controller,
            &active,
            &metrics,
            config.stall_timeout,
            controller_name,
            config.concurrency,
        );
        let mut http_tasks = Vec::new();
        let metrics_addr = serve(
            config.metrics_addr,
            http::metrics_router(state.clone()),
            "/metrics",
            shutdown_rx.clone(),
            &mut http_tasks,
        )
        .await?;
        let probe_addr = serve(
            config.probe_addr,
            http::probe_router(state),
            "/healthz, /readyz and /module",
            shutdown_rx.clone(),
            &mut http_tasks,
        )
        .await?;
        // The elector stops only after the workers have drained (see `shutdown`).
        let (elector_stop, elector_stop_rx) = channel::channel(false);
        let (leading_rx, elector_task) = elect(&client, config.leader, &metrics, elector_stop_rx);
        let controller_task =
            tokio::spawn(controller.clone().run(config.concurrency, leading_rx, shutdown_rx));
        let swap_target = SwapTarget {
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
            metrics_addr,
            probe_addr,
            shutdown,
            elector_stop,
            drain_timeout: config.drain_timeout,
            controller_task,
            elector_task,
            http_tasks,
        })
    }

    /// Hands the source's states to `swapper`, which swaps new module versions in;
    /// `source_task` (the source's follower) stops with the operator.
    pub fn hot_swap(
        &mut self,
        swapper: Swapper,
        states: channel::Receiver<SourceState>,
        source_task: JoinHandle<()>,
    ) {
        let target = self.swap_target.clone();
        self.swap_tasks.push(source_task);
        self.swap_tasks.push(tokio::spawn(swapper.run(states, target)));
    }

    /// What a swap changes (for driving a [`Swapper`] by hand).
    pub fn swap_target(&self) -> &SwapTarget {
        &self.swap_target
    }

    /// The bound address of `/metrics`, if served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The bound address of `/healthz`, `/readyz` and `/module`, if served.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe_addr
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
        let mut controller_task = self.controller_task;
        match tokio::time::timeout(self.drain_timeout, &mut controller_task).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "the controller task failed"),
            // The reconciles left behind start no further action: the controller no
            // longer counts as leading, and every action checks that first.
            Err(_) => {
                tracing::warn!(
                    "reconciles still in flight after {}s: stopping without them",
                    self.drain_timeout.as_secs()
                );
                controller_task.abort();
            }
        }
        // Renewed while the workers drained, so that no successor could start
        // writing beside them; now it can go.
        let _ = self.elector_stop.send(true);
        if let Some(task) = self.elector_task {
            match task.await {
                Ok(elector) => {
                    if let Err(err) = elector.release().await {
                        tracing::warn!("cannot release the leader lease: {}", error_chain(&err));
                    }
                }
                Err(err) => tracing::error!(error = %err, "the leader election task failed"),
            }
        }
        for task in self.http_tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "the HTTP server failed"),
                Err(err) => tracing::error!(error = %err, "the HTTP task failed"),
            }
        }
    }
}

/// What the endpoints read: the caches' readiness, the controller's health, and the
/// gauges set just before each scrape.
fn http_state(
    controller: &Arc<Controller>,
    active: &Arc<ActiveModule>,
    metrics: &Arc<Metrics>,
    stall_timeout: Duration,
    controller_name: String,
    workers: usize,
) -> HttpState {
    let ready = {
        let controller = controller.clone();
        Arc::new(move || controller.wiring().watches.caches.not_ready().map_or(Ok(()), Err))
    };
    let healthy = {
        let controller = controller.clone();
        Arc::new(move || controller.health(stall_timeout))
    };
    let refresh = {
        let (controller, metrics) = (controller.clone(), metrics.clone());
        Arc::new(move || {
            metrics.set_cached(controller.wiring().watches.caches.counts());
            metrics.set_queue(&controller_name, controller.queue().in_flight(), workers);
        })
    };
    HttpState { metrics: metrics.clone(), active: active.clone(), ready, healthy, refresh }
}

/// Binds `addr`, if one is given, and serves `router` (its `paths`, for the log)
/// until shutdown, adding the task to `tasks`; returns the bound address.
async fn serve(
    addr: Option<SocketAddr>,
    router: axum::Router,
    paths: &str,
    shutdown: channel::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<std::io::Result<()>>>,
) -> Result<Option<SocketAddr>, StartError> {
    let Some(addr) = addr else { return Ok(None) };
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    tracing::info!(addr = %local, "serving {paths}");
    tasks.push(tokio::spawn(http::serve(listener, router, shutdown)));
    Ok(Some(local))
}

/// Whether this replica may reconcile, as a channel: with a Lease, what the elector
/// publishes (and its task, which returns it for the release); without, always true.
fn elect(
    client: &Client,
    lease: Option<LeaseConfig>,
    metrics: &Arc<Metrics>,
    mut shutdown: channel::Receiver<bool>,
) -> (channel::Receiver<bool>, Option<JoinHandle<LeaderElector>>) {
    let (leading, leading_rx) = channel::channel(lease.is_none());
    let Some(lease) = lease else {
        metrics.leader.set(1);
        // Keep the sender alive for the controller's lifetime.
        tokio::spawn(async move {
            let _ = shutdown.wait_for(|s| *s).await;
            drop(leading);
        });
        return (leading_rx, None);
    };
    let mut elector = LeaderElector::new(client.clone(), lease);
    let metrics = metrics.clone();
    let task = tokio::spawn(async move {
        let mut leading_metric = leading.subscribe();
        let mirror = tokio::spawn(async move {
            while leading_metric.changed().await.is_ok() {
                metrics.leader.set(i64::from(*leading_metric.borrow()));
            }
        });
        elector.run(&leading, shutdown).await;
        drop(leading);
        mirror.abort();
        elector
    });
    (leading_rx, Some(task))
}
