//! `wasm-operator`: a generic Kubernetes operator whose reconcile logic is a sandboxed,
//! hot-swappable WebAssembly module speaking ABI v1 (DESIGN.md §3).
//!
//! The host knows nothing about the kinds it manages: the module's manifest says what
//! to watch, and every action the module returns is checked against it before any
//! write. The layers, each with its own error type:
//!
//! - [`runtime`]: wasmtime. One engine, one compiled module and `InstancePre` per
//!   module version, a fresh sandboxed store per call.
//! - [`operator`]: kube-rs. Watches, snapshots, confinement, the action executor,
//!   requeues, metrics and the HTTP endpoints.
//! - [`rbac`]: least-privilege RBAC derived from a manifest.
//! - [`cli`]: the command line.
#![forbid(unsafe_code)]

pub mod cli;
pub mod operator;
pub mod rbac;
pub mod runtime;
