//! The active module as the operator sees it: a manifest, a digest and an async,
//! sandboxed `reconcile` call.
//!
//! The operator never talks to wasmtime directly; it goes through [`Module`], so that
//! the runtime layer owns the sandbox (and its bounded, off-executor call) and the
//! operator can be tested with the same trait. The active module sits in an
//! [`ActiveModule`] holder that a reconcile reads exactly once: a hot swap stores a
//! new one, calls in flight finish on the module they started with.

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use reconcile_sdk::{Manifest, Outcome};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Why a call into the module did not produce an [`Outcome`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ModuleCallError {
    /// What went wrong, as the runtime reported it (trap, deadline, bad output...).
    pub message: String,
    /// The runtime's error, when there is one.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ModuleCallError {
    /// A call error from any error, keeping it as the source.
    pub fn from_error(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { message: err.to_string(), source: Some(Box::new(err)) }
    }
}

/// A loaded, validated reconcile module.
///
/// Implementations must run the guest off the async executor's threads and bound the
/// number of concurrent calls; `reconcile` only awaits.
pub trait Module: Send + Sync + 'static {
    /// The module's manifest, read once when it was loaded.
    fn manifest(&self) -> &Manifest;
    /// `sha256:<hex>` of the module's bytes.
    fn digest(&self) -> &str;
    /// Calls the module's `reconcile` with a snapshot (JSON) and returns its outcome
    /// and how long the guest ran.
    fn reconcile(
        &self,
        snapshot_json: Vec<u8>,
    ) -> BoxFuture<'static, Result<(Outcome, Duration), ModuleCallError>>;
}

/// The module in use and when it became active.
#[derive(Clone)]
pub struct LoadedModuleInfo {
    /// The module.
    pub module: Arc<dyn Module>,
    /// When it became the active module.
    pub loaded_at: SystemTime,
}

impl std::fmt::Debug for LoadedModuleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let manifest = self.module.manifest();
        f.debug_struct("LoadedModuleInfo")
            .field("name", &manifest.name)
            .field("version", &manifest.version)
            .field("digest", &self.module.digest())
            .finish()
    }
}

/// The holder of the active module, swapped atomically by a hot swap.
#[derive(Debug)]
pub struct ActiveModule(ArcSwap<LoadedModuleInfo>);

impl ActiveModule {
    /// A holder with `module` active from now on.
    pub fn new(module: Arc<dyn Module>) -> Self {
        Self(ArcSwap::from_pointee(LoadedModuleInfo { module, loaded_at: SystemTime::now() }))
    }

    /// The active module; read it once per reconcile and use that one throughout.
    pub fn current(&self) -> Arc<LoadedModuleInfo> {
        self.0.load_full()
    }

    /// Makes `module` the active one; reconciles already running keep the old one.
    pub fn store(&self, module: Arc<dyn Module>) {
        self.0.store(Arc::new(LoadedModuleInfo { module, loaded_at: SystemTime::now() }));
    }
}

/// A wasm module loaded by the runtime layer, called through its bounded caller (on
/// the blocking pool, at most `concurrency` guest calls at once).
#[derive(Debug, Clone)]
pub struct WasmModule {
    loaded: Arc<crate::runtime::LoadedModule>,
    caller: crate::runtime::ModuleCaller,
}

impl WasmModule {
    /// Wraps a loaded module and the caller that bounds its calls.
    pub fn new(loaded: Arc<crate::runtime::LoadedModule>, caller: crate::runtime::ModuleCaller) -> Self {
        Self { loaded, caller }
    }

    /// The runtime's module.
    pub fn loaded(&self) -> &Arc<crate::runtime::LoadedModule> {
        &self.loaded
    }
}

impl Module for WasmModule {
    fn manifest(&self) -> &Manifest {
        self.loaded.manifest()
    }

    fn digest(&self) -> &str {
        self.loaded.digest()
    }

    fn reconcile(
        &self,
        snapshot_json: Vec<u8>,
    ) -> BoxFuture<'static, Result<(Outcome, Duration), ModuleCallError>> {
        let caller = self.caller.clone();
        let loaded = self.loaded.clone();
        Box::pin(async move {
            caller
                .call(loaded, snapshot_json)
                .await
                .map(|reply| (reply.outcome, reply.elapsed))
                .map_err(ModuleCallError::from_error)
        })
    }
}
