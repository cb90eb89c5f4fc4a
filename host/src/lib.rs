//! `wasm-operator`: a generic Kubernetes operator whose reconcile logic is a sandboxed,
//! hot-swappable WebAssembly module speaking ABI v1 (the contract: `docs/abi.md`).
//!
//! The host knows nothing about the kinds it manages: the module's manifest says what
//! to watch, and every action the module returns is checked against it before any
//! write. The folders follow a reconcile's path, each with its own error type:
//!
//! - `runtime/`: wasmtime. One engine per process, one compiled module and
//!   `InstancePre` per module version, a fresh sandboxed store per call. Public: it is
//!   usable on its own, and takes plain configuration ([`runtime::SandboxConfig`]).
//! - `module/`: the module as the operator calls it ([`Module`], [`WasmModule`]), and
//!   the holder a hot swap replaces atomically ([`ActiveModule`]).
//! - `cluster/`: the cluster view: connection, discovery of the manifest's kinds, the
//!   watches and the caches and indexes they fill.
//! - `queue.rs`: the work queue between the watches and the workers, with the
//!   [`Cause`] of each run.
//! - `snapshot/`: objects as a module sees them (managed fields dropped, secrets
//!   digested), and the snapshot document.
//! - `control/`: reconciling: decide (snapshot, module calls, requirements), one
//!   attempt (confine, pre-check, execute), the verdict, backoff, the Lease, and the
//!   capture of a live snapshot.
//! - `policy/`: what a module may do: the administrator's policy (kinds, Secrets, Pod
//!   Security, outcome caps), confinement of actions and requirements, and
//!   least-privilege RBAC derived from a manifest.
//! - `execute/`: actions as API requests.
//! - `lifecycle/`: where modules come from (file, ConfigMap, OCI registry), whom the administrator
//!   trusts to sign them ([`TrustPolicy`]), and the hot swap.
//! - `observe/`: metrics and the HTTP endpoints.
//! - `operator/`: everything wired together ([`RunningOperator`]).
//! - `cli/`: the command line, the only place that knows clap; `main.rs` calls
//!   [`cli::main`].
//!
//! Configuration flows inward as plain types ([`OperatorConfig`],
//! [`runtime::SandboxConfig`]); errors are printed one way ([`error_chain`]).
// `deny`, not `forbid`: the compiled-module cache has the one `unsafe` call of the
// library (`runtime/cache.rs`, with its SAFETY argument), as wasmtime's own cache does.
#![deny(unsafe_code)]

pub mod cli;
pub(crate) mod cluster;
pub(crate) mod control;
mod error;
pub(crate) mod execute;
pub(crate) mod lifecycle;
pub(crate) mod module;
pub(crate) mod observe;
pub(crate) mod operator;
pub(crate) mod policy;
pub(crate) mod queue;
pub mod runtime;
pub(crate) mod snapshot;

pub use cluster::{
    ConnectConfig, ConnectError, DiscoveryError, KindKey, KindRegistry, ObjectKey, PrimaryTarget, Scope,
    connect,
};
pub use control::{Backoff, CaptureError, LeaseConfig, capture};
pub use error::{error_chain, one_line};
pub use execute::{ActionError, Executor};
pub use lifecycle::oci::{MAX_SIGNATURES, OciError, Registry};
pub use lifecycle::trust::{ModuleSigner, PinnedDigest, TrustedKey, Untrusted};
pub use lifecycle::{
    ConfigMapSource, LoadFileError, ModuleSource, OciReference, OciSource, RegistryConfig, SignatureLocation,
    SourceError, TrustPolicy, compress_for_configmap, load_module,
};
pub use module::{
    AcceptedModule, ActiveModule, LoadedModuleInfo, Module, ModuleCallError, ModuleRejection, WasmModule,
};
pub use observe::{ActionLabels, Metrics, ModuleLabels, OpLabels, ResultLabels};
pub use operator::{OperatorConfig, RunningOperator, StartError, start_from_source};
pub use policy::{
    AdminPolicy, GroupKind, OutcomeLimits, OutcomeTooLarge, PodSecurityLevel, PolicyViolation, Rejection,
    Violation, WorkloadPolicy, WriteBudgetConfig,
};
pub use queue::Cause;
