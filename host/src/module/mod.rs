//! The active module as the operator sees it: a manifest, a digest and an async,
//! sandboxed `reconcile` call.
//!
//! The operator never talks to wasmtime directly; it goes through [`Module`], so that
//! the runtime layer owns the sandbox (and its bounded, off-executor call) and the
//! operator can be tested with the same trait. The active module sits in an
//! [`ActiveModule`] holder that a reconcile reads exactly once: a hot swap stores a
//! new one, calls in flight finish on the module they started with.

use crate::runtime::{CallError, LoadedModule, ModuleCaller};
use arc_swap::{ArcSwap, ArcSwapOption};
use futures::future::BoxFuture;
use reconcile_sdk::{Manifest, Outcome};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Why a call into the module did not produce an [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum ModuleCallError {
    /// The sandboxed wasm call failed; the runtime's error says how.
    #[error(transparent)]
    Sandbox(CallError),
    /// A module that is not a wasm module (a test double, say) failed.
    #[error("module failed")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ModuleCallError {
    /// A call error of a module that is not a wasm module, keeping `err` as the source.
    pub fn from_error(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Other(Box::new(err))
    }

    /// What kind of failure this is, as the `reason` label of
    /// `wasm_operator_module_call_errors_total`: `deadline`, `memory`, `trap`,
    /// `output` (the module's output was unusable), `host` (not the module's fault)
    /// or `other`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Sandbox(err) => match err {
                CallError::DeadlineExceeded { .. } => "deadline",
                CallError::MemoryLimit { .. } | CallError::TableLimit { .. } => "memory",
                CallError::Trap { .. } => "trap",
                CallError::AllocationFailed { .. }
                | CallError::BadPointer { .. }
                | CallError::OutputTooLarge { .. }
                | CallError::TooManyValues { .. }
                | CallError::InvalidUtf8 { .. }
                | CallError::InvalidJson { .. }
                | CallError::InvalidOutcome(_) => "output",
                CallError::InputTooLarge { .. } | CallError::Host { .. } => "host",
            },
            Self::Other(_) => "other",
        }
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

/// The module in use, when it became active and where it came from.
#[derive(Clone)]
pub struct LoadedModuleInfo {
    /// The module.
    pub module: Arc<dyn Module>,
    /// When it became the active module.
    pub loaded_at: SystemTime,
    /// Where it came from (`file /path`, `configmap ns/name:key@rv`), when known.
    pub origin: Option<String>,
    /// The fingerprint of the trusted key that signed it, when keys are required.
    pub signer: Option<String>,
}

/// A module that was active once, for `/module`'s `history`.
#[derive(Debug, Clone)]
pub struct AcceptedModule {
    /// `sha256:<hex>` of the module.
    pub digest: String,
    /// The manifest's version.
    pub version: String,
    /// Where it came from.
    pub origin: Option<String>,
    /// The key that signed it.
    pub signer: Option<String>,
    /// When it became active.
    pub at: SystemTime,
}

/// How many accepted modules [`ActiveModule::history`] keeps.
pub const HISTORY_LEN: usize = 3;

impl std::fmt::Debug for LoadedModuleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let manifest = self.module.manifest();
        f.debug_struct("LoadedModuleInfo")
            .field("name", &manifest.name)
            .field("version", &manifest.version)
            .field("digest", &self.module.digest())
            .field("origin", &self.origin)
            .field("signer", &self.signer)
            .finish()
    }
}

/// A hot-swap candidate that was refused (the active module kept serving).
#[derive(Debug, Clone)]
pub struct ModuleRejection {
    /// `sha256:<hex>` of the candidate (of its bytes as stored, when they did not
    /// even decompress).
    pub digest: String,
    /// The failed check, as the `reason` label of `wasm_operator_module_rejected_total`.
    pub reason: &'static str,
    /// Why, in words.
    pub message: String,
    /// Where it came from.
    pub origin: String,
    /// When it was refused.
    pub at: SystemTime,
}

/// The holder of the active module, swapped atomically by a hot swap, the last
/// candidate it refused, and the last [`HISTORY_LEN`] modules it made active.
#[derive(Debug)]
pub struct ActiveModule {
    current: ArcSwap<LoadedModuleInfo>,
    last_rejection: ArcSwapOption<ModuleRejection>,
    history: Mutex<VecDeque<AcceptedModule>>,
}

impl ActiveModule {
    /// A holder with `module` active from now on.
    pub fn new(module: Arc<dyn Module>) -> Self {
        Self::with_origin(module, None, None)
    }

    /// A holder with `module`, from `origin` and signed by `signer`, active from now
    /// on.
    pub fn with_origin(module: Arc<dyn Module>, origin: Option<String>, signer: Option<String>) -> Self {
        let info = LoadedModuleInfo { module, loaded_at: SystemTime::now(), origin, signer };
        let holder = Self {
            current: ArcSwap::from_pointee(info.clone()),
            last_rejection: ArcSwapOption::empty(),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_LEN)),
        };
        holder.remember(&info);
        holder
    }

    /// The modules made active, newest first: the active one and the
    /// [`HISTORY_LEN`]` - 1` before it (a rollback pins one of their digests).
    pub fn history(&self) -> Vec<AcceptedModule> {
        self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }

    fn remember(&self, info: &LoadedModuleInfo) {
        let mut history = self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        history.push_front(AcceptedModule {
            digest: info.module.digest().to_owned(),
            version: info.module.manifest().version.clone(),
            origin: info.origin.clone(),
            signer: info.signer.clone(),
            at: info.loaded_at,
        });
        history.truncate(HISTORY_LEN);
    }

    /// The active module; read it once per reconcile and use that one throughout.
    pub fn current(&self) -> Arc<LoadedModuleInfo> {
        self.current.load_full()
    }

    /// Makes `module` the active one; reconciles already running keep the old one.
    pub fn store(&self, module: Arc<dyn Module>) {
        self.store_from(module, None, None);
    }

    /// [`ActiveModule::store`], recording where the module came from and who signed
    /// it; returns what is active now.
    pub fn store_from(
        &self,
        module: Arc<dyn Module>,
        origin: Option<String>,
        signer: Option<String>,
    ) -> Arc<LoadedModuleInfo> {
        let info = Arc::new(LoadedModuleInfo { module, loaded_at: SystemTime::now(), origin, signer });
        self.current.store(info.clone());
        self.remember(&info);
        info
    }

    /// The last candidate refused, if any.
    pub fn last_rejection(&self) -> Option<Arc<ModuleRejection>> {
        self.last_rejection.load_full()
    }

    /// Records a refused candidate.
    pub fn rejected(&self, rejection: ModuleRejection) {
        self.last_rejection.store(Some(Arc::new(rejection)));
    }
}

/// A wasm module loaded by the runtime layer, called through its bounded caller (on
/// the blocking pool, at most `concurrency` guest calls at once).
#[derive(Debug, Clone)]
pub struct WasmModule {
    loaded: Arc<LoadedModule>,
    caller: ModuleCaller,
}

impl WasmModule {
    /// Wraps a loaded module and the caller that bounds its calls.
    pub fn new(loaded: Arc<LoadedModule>, caller: ModuleCaller) -> Self {
        Self { loaded, caller }
    }

    /// The runtime's module.
    pub fn loaded(&self) -> &Arc<LoadedModule> {
        &self.loaded
    }

    /// The caller bounding its calls; a hot-swapped version shares it, so the bound
    /// holds across versions.
    pub fn caller(&self) -> &ModuleCaller {
        &self.caller
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
                .map_err(ModuleCallError::Sandbox)
        })
    }
}
