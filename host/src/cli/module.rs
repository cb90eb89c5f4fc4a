//! `wasm-operator module push`: validate a module locally, then upload it
//! gzip-compressed to the ConfigMap key a running operator follows.
//!
//! The validation is the runtime's one acceptance check
//! ([`SandboxEngine::load`](crate::runtime::SandboxEngine::load)), with the sandbox
//! limits given on the command line (the operator's defaults unless changed), so a
//! module that passes here passes the operator's check before a swap, except for the
//! rights check, which depends on the operator's identity.
//!
//! Exit status: 0 uploaded (or validated, with `--dry-run`); 1 refused (invalid, or
//! too large for a ConfigMap); 2 could not try (unreadable file, no cluster, the API
//! refused the write).

use super::PushArgs;
use crate::operator::source::{self, SourceError};
use crate::runtime::{EngineOptions, SandboxEngine, SandboxLimits};
use std::process::ExitCode;

/// The module was refused.
const REFUSED: u8 = 1;
/// The upload could not be tried or failed.
const CANNOT_RUN: u8 = 2;

/// `wasm-operator module push`.
pub fn push(args: &PushArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((status, reason)) => {
            // One line, whatever the message holds (wasmtime's texts may span several).
            let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("error: {reason}");
            ExitCode::from(status)
        }
    }
}

fn run(args: &PushArgs) -> Result<(), (u8, String)> {
    let raw = std::fs::read(&args.file)
        .map_err(|err| (CANNOT_RUN, format!("cannot read module {}: {err}", args.file.display())))?;
    // A gzip file is accepted too: validate what the operator would run.
    let module = source::decode(&raw).map_err(|err| (REFUSED, format!("module refused: {err}")))?;
    let limits = SandboxLimits::try_from(&args.sandbox).map_err(|err| (CANNOT_RUN, err.to_string()))?;
    let engine = SandboxEngine::new(limits, &EngineOptions::from_args(&args.sandbox, 1))
        .map_err(|err| (CANNOT_RUN, err.to_string()))?;
    let loaded = engine.load(&module).map_err(|err| match err.is_module_fault() {
        true => (REFUSED, format!("module refused, nothing uploaded: {err}")),
        false => (CANNOT_RUN, err.to_string()),
    })?;
    let manifest = loaded.manifest();
    println!(
        "validated {} {} ({}): no imports, abi 1, manifest, compiles, smoke reconcile within {} ms",
        manifest.name,
        manifest.version,
        loaded.digest(),
        engine.limits().deadline.as_millis()
    );
    let compressed = source::compress_for_configmap(&module).map_err(|err| match err {
        SourceError::TooLargeForConfigMap { .. } => {
            (REFUSED, format!("module refused, nothing uploaded: {err}"))
        }
        other => (CANNOT_RUN, other.to_string()),
    })?;
    let percent = compressed.len() * 100 / module.len().max(1);
    println!(
        "compressed {} -> {} bytes (gzip, {percent}%; limit {} bytes)",
        module.len(),
        compressed.len(),
        source::MAX_UPLOAD_BYTES
    );
    if args.dry_run {
        println!("dry run: nothing uploaded to ConfigMap {}", args.configmap);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| (CANNOT_RUN, format!("cannot start the async runtime: {err}")))?;
    let resource_version = runtime.block_on(async {
        let (client, _) =
            crate::operator::connect::connect().await.map_err(|err| (CANNOT_RUN, format!("{err:#}")))?;
        args.configmap
            .upload(&client, compressed, &args.field_manager)
            .await
            .map_err(|err| (CANNOT_RUN, crate::operator::controller::error_chain(&err)))
    })?;
    println!(
        "applied ConfigMap {}/{} key {} (resourceVersion {resource_version}); the operator validates it again and swaps to {}",
        args.configmap.namespace,
        args.configmap.name,
        args.configmap.key,
        loaded.digest()
    );
    Ok(())
}
