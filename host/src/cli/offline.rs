//! Offline tools: `reconcile` and `manifest`, no cluster needed.
//!
//! Both load the module with the same full validation the operator runs (imports,
//! exports, ABI version, manifest, smoke reconcile) and the same sandbox limits, so
//! what passes here passes there.
//!
//! Exit status:
//! - 0: the module answered. For `reconcile` that is any valid Outcome, an `error`
//!   outcome included: the module chose to report it, and it is printed like the rest.
//! - 1: the module failed (trap, deadline, memory, bad pointer, output that is not an
//!   Outcome) or was rejected at load.
//! - 2: the host could not try: bad limits, an unreadable file, a snapshot that is not
//!   an ABI v1 snapshot, a broken stdout.
//!
//! Results go to stdout; a failure is one line on stderr, `error: <reason>`.

use super::{ManifestArgs, ReconcileArgs, SandboxArgs};
use crate::runtime::{EngineOptions, LoadedModule, SandboxEngine, SandboxLimits};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// The module failed or was rejected.
const MODULE_FAILED: u8 = 1;
/// The host could not run the module.
const CANNOT_RUN: u8 = 2;

/// A failure to report: its exit status and its one-line reason.
struct Failure {
    status: u8,
    reason: String,
}

impl Failure {
    fn module(reason: impl std::fmt::Display) -> Self {
        Self { status: MODULE_FAILED, reason: reason.to_string() }
    }

    fn cannot_run(reason: impl std::fmt::Display) -> Self {
        Self { status: CANNOT_RUN, reason: reason.to_string() }
    }
}

/// `wasm-operator reconcile`: prints the module's Outcome JSON for one snapshot.
pub fn reconcile(args: &ReconcileArgs) -> ExitCode {
    finish(run_reconcile(args))
}

/// `wasm-operator manifest`: prints the module's manifest as pretty JSON.
pub fn manifest(args: &ManifestArgs) -> ExitCode {
    finish(run_manifest(args))
}

fn run_reconcile(args: &ReconcileArgs) -> Result<String, Failure> {
    let snapshot = read_snapshot(&args.snapshot)?;
    // The module would answer a bad snapshot with an error outcome; telling the user
    // that their file is wrong is more useful than exit 0 with the module's complaint.
    reconcile_sdk::decode_snapshot(&snapshot).map_err(Failure::cannot_run)?;
    let module = load(&args.module, &args.sandbox)?;
    let reply = module.call(&snapshot).map_err(Failure::module)?;
    Ok(reply.json)
}

fn run_manifest(args: &ManifestArgs) -> Result<String, Failure> {
    let module = load(&args.module, &args.sandbox)?;
    serde_json::to_string_pretty(module.manifest()).map_err(Failure::cannot_run)
}

fn load(path: &Path, sandbox: &SandboxArgs) -> Result<Arc<LoadedModule>, Failure> {
    let limits = SandboxLimits::try_from(sandbox).map_err(Failure::cannot_run)?;
    let bytes = std::fs::read(path)
        .map_err(|err| Failure::cannot_run(format_args!("cannot read module {}: {err}", path.display())))?;
    // One call at a time; two slots leave room for the load's own instances.
    let engine =
        SandboxEngine::new(limits, &EngineOptions::from_args(sandbox, 1)).map_err(Failure::cannot_run)?;
    engine.load(&bytes).map_err(|err| match err.is_module_fault() {
        true => Failure::module(format_args!("module rejected: {err}")),
        false => Failure::cannot_run(err),
    })
}

fn read_snapshot(path: &Path) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().read_to_end(&mut bytes).map(drop)
    } else {
        std::fs::read(path).map(|read| bytes = read)
    };
    read.map_err(|err| Failure::cannot_run(format_args!("cannot read snapshot {}: {err}", path.display())))?;
    Ok(bytes)
}

fn finish(result: Result<String, Failure>) -> ExitCode {
    let failure = match result {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            match writeln!(stdout, "{output}").and_then(|()| stdout.flush()) {
                Ok(()) => return ExitCode::SUCCESS,
                Err(err) => Failure::cannot_run(format_args!("cannot write to stdout: {err}")),
            }
        }
        Err(failure) => failure,
    };
    // One line, whatever the message holds (wasmtime's texts may span several).
    let reason = failure.reason.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("error: {reason}");
    ExitCode::from(failure.status)
}
