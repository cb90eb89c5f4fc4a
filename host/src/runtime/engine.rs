//! The process-wide wasmtime engine: compiler, sandbox configuration, compile
//! limits, epoch clock and compiled-module cache.
//!
//! Guarantees:
//! - One [`SandboxEngine`] serves every module version; it is cheap to clone and
//!   stays alive while any [`LoadedModule`](super::LoadedModule) made with it does.
//! - Deadlines are wall-clock: a background thread advances the engine's epoch every
//!   [`SandboxConfig::epoch_tick`], and each call's store traps once its deadline's
//!   worth of ticks has passed. The thread stops when the last clone is dropped.
//! - Modules get nothing from the host: the [`Linker`] is empty (no WASI, no host
//!   functions), so a module can only compute on the bytes it is given.
//! - What compiling a candidate may cost is bounded by [`CompileLimits`], checked on
//!   the bytes before anything is compiled ([`precheck`](super::precheck)).
//! - Compiled code of accepted modules is cached on disk by the host's own
//!   [`CompiledCache`], keyed by the module's digest and the engine's compatibility
//!   hash, in a directory only the host's user can enter. The cache is an
//!   optimisation only: when it cannot be set up the engine compiles every time
//!   (with a warning that says why), and unusable entries are removed.
//! - With the pooling allocator, instance slots are reserved once and reused with
//!   copy-on-write memory images, which makes the per-call fresh instance cheap. If
//!   the pool cannot be reserved (a small address-space limit, say), the engine falls
//!   back to allocating each instance on demand, with a warning.

use super::cache::{CompiledCache, DEFAULT_MAX_BYTES};
use super::call::CallState;
use super::limits::{LimitsError, SandboxLimits};
use super::precheck::CompileLimits;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

/// Where compiled modules are cached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ModuleCache {
    /// `${XDG_CACHE_HOME:-$HOME/.cache}/wasm-operator`; no cache when neither is set.
    #[default]
    Default,
    /// This directory (made absolute against the working directory).
    Dir(PathBuf),
    /// No cache: compile on every load.
    Disabled,
}

/// How instances get their memory and tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Allocator {
    /// Slots reserved up front and reused, memory reset to the module's
    /// copy-on-write image; the fastest instantiation (see the `call` benchmark).
    #[default]
    Pooling,
    /// `mmap` per instance. Slower to instantiate; needs no up-front reservation.
    OnDemand,
}

/// Everything a [`SandboxEngine`] is built from: the limits every call runs under and
/// how the engine gets there. Plain data; the command line converts its flags into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// What one call may consume; checked by [`SandboxEngine::new`].
    pub limits: SandboxLimits,
    /// What compiling one module may cost.
    pub compile: CompileLimits,
    /// The compiled-module cache.
    pub cache: ModuleCache,
    /// The instance allocator.
    pub allocator: Allocator,
    /// How many instances may exist at once (pooling allocator): the concurrent calls,
    /// plus loads (each runs the module twice, one instance at a time), plus slack.
    /// An instantiation beyond it fails with a [`CallError::Host`](super::CallError::Host).
    pub max_instances: u32,
    /// Period of the epoch clock; deadlines are honoured to within one tick.
    pub epoch_tick: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            limits: SandboxLimits::default(),
            compile: CompileLimits::default(),
            cache: ModuleCache::Default,
            allocator: Allocator::Pooling,
            max_instances: 32,
            epoch_tick: Duration::from_millis(5),
        }
    }
}

impl SandboxConfig {
    /// This configuration with instance slots for `concurrency` concurrent calls.
    pub fn for_concurrency(self, concurrency: usize) -> Self {
        // Loads and hot-swap candidates instantiate outside the call semaphore; eight
        // spare slots cost only address space.
        let max_instances = u32::try_from(concurrency).unwrap_or(u32::MAX).saturating_add(8);
        Self { max_instances, ..self }
    }
}

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A limit is one the sandbox cannot honour (the message names it).
    #[error(transparent)]
    Limits(LimitsError),
    /// wasmtime refused the configuration.
    #[error("cannot configure the wasm engine")]
    Config(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The epoch clock thread could not start.
    #[error("cannot start the epoch clock thread")]
    EpochThread(#[source] std::io::Error),
}

/// The one wasmtime engine of the process, with its empty linker and the sandbox
/// limits every call runs under.
#[derive(Clone)]
pub struct SandboxEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: Engine,
    linker: Linker<CallState>,
    limits: SandboxLimits,
    compile: CompileLimits,
    deadline_ticks: u64,
    cache: Option<CompiledCache>,
    allocator: Allocator,
    // Dropping the sender stops the epoch thread.
    _epoch_clock: mpsc::Sender<()>,
}

impl std::fmt::Debug for SandboxEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxEngine")
            .field("limits", &self.inner.limits)
            .field("allocator", &self.inner.allocator)
            .field("cache_dir", &self.cache_dir())
            .finish_non_exhaustive()
    }
}

impl SandboxEngine {
    /// Checks the limits, builds the engine and starts its epoch clock. The one way to
    /// build an engine.
    pub fn new(options: &SandboxConfig) -> Result<Self, EngineError> {
        options.limits.validate().map_err(EngineError::Limits)?;
        let limits = options.limits;
        let cache = open_cache(&options.cache);
        let engine = match options.allocator {
            Allocator::Pooling => match Engine::new(&config(&limits, options, true)) {
                Ok(engine) => engine,
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        "cannot reserve the instance pool; allocating instances on demand (slower calls)"
                    );
                    Engine::new(&config(&limits, options, false))
                        .map_err(|err| EngineError::Config(err.into()))?
                }
            },
            Allocator::OnDemand => Engine::new(&config(&limits, options, false))
                .map_err(|err| EngineError::Config(err.into()))?,
        };
        let tick = options.epoch_tick.max(Duration::from_millis(1));
        let _epoch_clock = start_epoch_clock(&engine, tick)?;
        // The deadline trips after `ticks` increments, that is after between
        // (ticks - 1) and ticks periods; one extra tick makes it never early.
        let deadline_ticks = u64::try_from(limits.deadline.as_nanos().div_ceil(tick.as_nanos()))
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        Ok(Self {
            inner: Arc::new(EngineInner {
                linker: Linker::new(&engine),
                engine,
                limits,
                compile: options.compile,
                deadline_ticks,
                cache,
                allocator: options.allocator,
                _epoch_clock,
            }),
        })
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.inner.limits
    }

    /// What compiling one module may cost.
    pub fn compile_limits(&self) -> &CompileLimits {
        &self.inner.compile
    }

    /// The compiled-module cache directory, if the cache is on.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.inner.cache.as_ref().map(CompiledCache::dir)
    }

    /// Compiled-module cache hits and misses so far (both 0 without a cache).
    pub fn cache_stats(&self) -> (u64, u64) {
        self.inner.cache.as_ref().map_or((0, 0), CompiledCache::stats)
    }

    pub(crate) fn cache(&self) -> Option<&CompiledCache> {
        self.inner.cache.as_ref()
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<CallState> {
        &self.inner.linker
    }

    pub(crate) fn deadline_ticks(&self) -> u64 {
        self.inner.deadline_ticks
    }
}

/// The host's pooling engine configuration without epoch interruption, for the
/// `call` benchmark's reference column only: what the deadline's checks cost. A
/// module on this engine runs without a deadline; the host never runs one so.
#[doc(hidden)]
pub fn engine_without_deadline(options: &SandboxConfig) -> Result<Engine, EngineError> {
    let mut config = config(&options.limits, options, true);
    config.epoch_interruption(false);
    Engine::new(&config).map_err(|err| EngineError::Config(err.into()))
}

fn config(limits: &SandboxLimits, options: &SandboxConfig, pooling: bool) -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(limits.stack_bytes)
        // Instances start from a copy-on-write image of the module's initial memory
        // instead of copying its data segments on every call.
        .memory_init_cow(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(options.max_instances)
            .total_memories(options.max_instances)
            .total_tables(options.max_instances)
            // No components: keep the component pools (and their reservations) empty.
            .total_component_instances(0)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(limits.memory_bytes)
            .table_elements(limits.table_elements)
            .table_keep_resident(64 << 10);
        // Measured with the `call` benchmark (DittoFS module, converged snapshot):
        // with PAGEMAP_SCAN (Linux 6.7+), resetting only the pages a call dirtied and
        // keeping them resident saves ~20% of a call and ~75% of the sandbox's own
        // cost (3.7 µs instead of 14.5 µs for a trivial module). Without it, keeping
        // memory resident means a memset of all of it on every call, which is slower
        // than madvise: keep nothing then.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes).linear_memory_keep_resident(KEEP_RESIDENT_BYTES);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    } else {
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    }
    config
}

/// Bytes of each pooled linear memory kept resident between calls, where only the
/// dirtied pages are reset.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

fn open_cache(setting: &ModuleCache) -> Option<CompiledCache> {
    let dir = match setting {
        ModuleCache::Disabled => return None,
        ModuleCache::Dir(dir) => dir.clone(),
        ModuleCache::Default => default_cache_dir()?,
    };
    match CompiledCache::open(&dir, DEFAULT_MAX_BYTES) {
        Ok(cache) => Some(cache),
        Err(err) => {
            tracing::warn!(error = %crate::error_chain(&err), "compiled-module cache disabled");
            None
        }
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = non_empty("XDG_CACHE_HOME").or_else(|| non_empty("HOME").map(|home| home.join(".cache")))?;
    // The XDG spec ignores relative paths; so does this.
    base.is_absolute().then(|| base.join("wasm-operator"))
}

fn start_epoch_clock(engine: &Engine, tick: Duration) -> Result<mpsc::Sender<()>, EngineError> {
    let (stop, stopped) = mpsc::channel::<()>();
    let engine = engine.clone();
    thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            // Ends when every sender is gone, i.e. when the engine is dropped.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                engine.increment_epoch();
            }
        })
        .map_err(EngineError::EpochThread)?;
    Ok(stop)
}
