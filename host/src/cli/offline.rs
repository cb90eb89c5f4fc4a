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

use super::args::{ManifestArgs, ReconcileArgs, SandboxArgs};
use super::failure::Failure;
use crate::runtime::{LoadedModule, SandboxEngine};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

/// `wasm-operator reconcile`: prints the module's Outcome JSON for one snapshot.
pub fn reconcile(args: &ReconcileArgs) -> Result<(), Failure> {
    let snapshot = read_snapshot(&args.snapshot)?;
    // The module would answer a bad snapshot with an error outcome; telling the user
    // that their file is wrong is more useful than exit 0 with the module's complaint.
    reconcile_sdk::decode_snapshot(&snapshot).map_err(|err| Failure::cannot_run_with(None, &err))?;
    let module = load(&args.module, &args.sandbox)?;
    let reply = module.call(&snapshot).map_err(|err| Failure::failed_with(None, &err))?;
    print(&reply.json)
}

/// `wasm-operator manifest`: prints the module's manifest as pretty JSON.
pub fn manifest(args: &ManifestArgs) -> Result<(), Failure> {
    let module = load(&args.module, &args.sandbox)?;
    let json = serde_json::to_string_pretty(module.manifest())
        .map_err(|err| Failure::cannot_run_with(Some("cannot encode the manifest"), &err))?;
    print(&json)
}

/// Loads `path` with one call's worth of engine, validated as the operator does: a
/// module fault exits 1, anything else 2.
pub fn load(path: &Path, sandbox: &SandboxArgs) -> Result<Arc<LoadedModule>, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|err| Failure::cannot_run(format_args!("cannot read module {}: {err}", path.display())))?;
    let engine =
        SandboxEngine::new(&sandbox.config(1)).map_err(|err| Failure::cannot_run_with(None, &err))?;
    engine.load(&bytes).map_err(|err| match err.is_module_fault() {
        true => Failure::failed_with(Some("module rejected"), &err),
        false => Failure::cannot_run_with(None, &err),
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

/// Writes `output` and a newline to stdout.
pub fn print(output: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{output}")
        .and_then(|()| stdout.flush())
        .map_err(|err| Failure::cannot_run(format_args!("cannot write to stdout: {err}")))
}
