//! The wasmtime layer: loads ABI v1 modules (docs/abi.md) and calls them in a sandbox.
//!
//! Lifecycles are kept apart, as wasmtime documents them:
//! - [`SandboxEngine`]: one per process, built from a [`SandboxConfig`]. Cranelift,
//!   epoch interruption with a clock thread, the stack limit, the pooling allocator with copy-on-write memory images,
//!   the [`CompileLimits`] of candidates, the host's on-disk cache of accepted modules'
//!   compiled code, and one empty linker (no WASI, no host functions).
//! - [`LoadedModule`]: one per module version, from [`SandboxEngine::load`], which runs
//!   the whole acceptance check of docs/abi.md, *Hot swap acceptance checks*
//!   (compile limits, imports, exports, ABI version, manifest, smoke reconcile), and fails with a [`LoadError`] naming the failed check.
//!   Immutable and shared as `Arc`; the operator's `ActiveModule` swaps it.
//! - A fresh store and instance per call, from the module's one `InstancePre`, capped
//!   by [`SandboxLimits`]; every failure is a typed [`CallError`], never a panic.
//!   [`LoadedModule::call`] blocks; [`ModuleCaller::call`] runs it on the blocking
//!   pool for async code, bounded by a semaphore.
//!
//! ```no_run
//! # async fn example(snapshot_json: Vec<u8>) -> anyhow::Result<()> {
//! use wasm_operator::runtime::{ModuleCaller, SandboxConfig, SandboxEngine};
//!
//! let engine = SandboxEngine::new(&SandboxConfig::default().for_concurrency(4))?;
//! let module = engine.load_async(std::fs::read("module.wasm")?).await?;
//! let caller = ModuleCaller::new(4);
//! let reply = caller.call(module, snapshot_json).await?;
//! println!("{:?} in {:?}", reply.outcome, reply.elapsed);
//! # Ok(()) }
//! ```
//!
//! Error messages never repeat their causes: print an error with
//! [`error_chain`](crate::error_chain), which joins the whole chain on one line.

mod cache;
mod call;
mod caller;
mod engine;
mod limits;
mod manifest;
mod module;
mod precheck;

pub use call::{CallError, CallStage, Reply};
pub use caller::ModuleCaller;
pub use engine::{
    Allocator, EngineError, ModuleCache, SandboxConfig, SandboxEngine, engine_without_deadline,
};
pub use limits::{LimitsError, MAX_MEMORY_BYTES, MAX_STACK_BYTES, MIN_STACK_BYTES, SandboxLimits};
pub use manifest::{ManifestError, validate_manifest};
pub use module::{LoadError, LoadedModule, digest};
pub use precheck::{CompileLimits, PrecheckError};
