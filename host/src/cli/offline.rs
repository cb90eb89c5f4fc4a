//! Offline tools: `reconcile` and `manifest`, no cluster needed (placeholder; being written).

use super::{ManifestArgs, ReconcileArgs};
use std::process::ExitCode;

/// `wasm-operator reconcile`.
pub fn reconcile(_args: &ReconcileArgs) -> ExitCode {
    eprintln!("error: not implemented yet");
    ExitCode::FAILURE
}

/// `wasm-operator manifest`.
pub fn manifest(_args: &ManifestArgs) -> ExitCode {
    eprintln!("error: not implemented yet");
    ExitCode::FAILURE
}
