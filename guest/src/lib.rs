//! The DittoFS reconcile module: the `DittoServer` API and a pure reconcile function,
//! exported under ABI v1 (see docs/abi.md) for the generic `wasm-operator` host.
//!
//! [`reconcile()`] takes a snapshot of what the cluster holds (the DittoServer, the
//! objects it owns, the digests of the Secrets it references, the time) and returns
//! the actions that bring the cluster to the desired state. It does no I/O, reads no
//! clock and uses no randomness, so the same snapshot always gives the same outcome,
//! natively, in wasmtime and in JavaScript hosts.
//!
//! It is idempotent: once its actions ran, reconciling the resulting snapshot gives no
//! action at all (no apply, no status write). Owned objects carry a hash of what was
//! applied ([`names::APPLIED_HASH_ANNOTATION`]), and the status is compared before it
//! is written.
//!
//! What a DittoServer becomes:
//! - the finalizer, before anything else ([`mod@reconcile`]);
//! - ConfigMap `<name>-config` ([`config`], [`objects::configmap`]), Services
//!   ([`objects::services`]), StatefulSet `<name>` ([`objects::statefulset`]) and,
//!   with Percona, a PerconaPGCluster `<name>-postgres` ([`objects::percona`]);
//! - a status with phase and conditions ([`status`]);
//! - on deletion, the Percona cleanup and the finalizer's removal ([`deletion`]).
//!
//! Bad input never traps: it becomes an error outcome that names the problem, or,
//! for a spec that decodes but cannot work ([`validate`]), phase Failed.
//!
//! The exports run [`reconcile_raw`], which decodes the snapshot in one pass into
//! derived structs of the few fields it reads ([`input`], [`meta::Related`],
//! [`lenient`]); [`reconcile()`] takes the SDK's owned `Snapshot` and gives the same
//! outcome.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
#[cfg(not(target_arch = "wasm32"))]
pub mod crdgen;
pub mod deletion;
pub mod error;
pub mod hash;
pub mod input;
pub mod lenient;
pub mod manifest;
pub mod meta;
pub mod names;
pub mod objects;
pub mod reconcile;
pub mod secrets;
pub mod status;
pub mod time;
pub mod validate;

pub use manifest::manifest;
pub use reconcile::{reconcile, reconcile_raw};

reconcile_sdk::export_module!(manifest = manifest::manifest, reconcile_raw = reconcile::reconcile_raw);
