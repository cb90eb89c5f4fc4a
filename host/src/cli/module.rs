//! `wasm-operator module push`: validate a module locally, then upload it
//! gzip-compressed to the ConfigMap key a running operator follows.
//!
//! The validation is the runtime's one acceptance check
//! ([`SandboxEngine::load`]), with the sandbox
//! limits given on the command line (the operator's defaults unless changed), so a
//! module that passes here passes the operator's check before a swap, except for the
//! rights check, which depends on the operator's identity.
//!
//! Exit status: 0 uploaded (or validated, with `--dry-run`); 1 refused (invalid, or
//! too large for a ConfigMap); 2 could not try (unreadable file, no cluster, the API
//! refused the write).

use super::args::PushArgs;
use super::failure::Failure;
use crate::lifecycle::source::{self, MAX_UPLOAD_BYTES, SourceError};
use crate::runtime::SandboxEngine;

/// `wasm-operator module push`.
pub fn push(args: &PushArgs) -> Result<(), Failure> {
    let raw = std::fs::read(&args.file).map_err(|err| {
        Failure::cannot_run(format_args!("cannot read module {}: {err}", args.file.display()))
    })?;
    // A gzip file is accepted too: validate what the operator would run.
    let module = source::decode(&raw).map_err(|err| Failure::failed_with(Some("module refused"), &err))?;
    let engine =
        SandboxEngine::new(&args.sandbox.config(1)).map_err(|err| Failure::cannot_run_with(None, &err))?;
    let loaded = engine.load(&module).map_err(|err| match err.is_module_fault() {
        true => Failure::failed_with(Some("module refused, nothing uploaded"), &err),
        false => Failure::cannot_run_with(None, &err),
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
            Failure::failed_with(Some("module refused, nothing uploaded"), &err)
        }
        other => Failure::cannot_run_with(None, &other),
    })?;
    let percent = compressed.len() * 100 / module.len().max(1);
    println!(
        "compressed {} -> {} bytes (gzip, {percent}%; limit {MAX_UPLOAD_BYTES} bytes)",
        module.len(),
        compressed.len(),
    );
    if args.dry_run {
        println!("dry run: nothing uploaded to ConfigMap {}", args.configmap);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::cannot_run(format_args!("cannot start the async runtime: {err}")))?;
    let resource_version = runtime.block_on(async {
        let (client, _) = crate::connect().await.map_err(|err| Failure::cannot_run_with(None, &err))?;
        args.configmap
            .upload(&client, compressed, &args.field_manager)
            .await
            .map_err(|err| Failure::cannot_run_with(None, &err))
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
