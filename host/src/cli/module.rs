//! `wasm-operator module push | sign | verify`: hand a module to a running operator,
//! and sign and check modules for operators that require signatures.
//!
//! `push` validates a module locally, then uploads it with its signature: to the
//! ConfigMap key a running operator follows (gzip-compressed), or to a registry tag
//! (the Wasm OCI artifact layout, docs/supply.md). The validation is the
//! runtime's one acceptance check ([`SandboxEngine::load`]), with the sandbox limits
//! given on the command line (the operator's defaults unless changed), and the trust
//! policy when keys or digests are given, so a module that passes here passes the
//! operator's checks before a swap, except for the rights check, which depends on
//! the operator's identity.
//!
//! Exit status: 0 done; 1 refused (invalid, untrusted, or too large for a ConfigMap);
//! 2 could not try (unreadable file or key, no cluster, the API refused the write).

use super::args::{PushArgs, SignArgs, VerifyArgs};
use super::failure::Failure;
use crate::lifecycle::oci::Registry;
use crate::lifecycle::source::{self, MAX_UPLOAD_BYTES, SourceError};
use crate::lifecycle::trust::{
    MAX_SIGNATURE_BYTES, ModuleSigner, TrustPolicy, read_signature_file, signature_path,
};
use crate::runtime::{SandboxEngine, digest};
use std::path::{Path, PathBuf};

/// The module in `path`, decoded (gzip allowed): what the operator would run.
fn read_module(path: &Path) -> Result<Vec<u8>, Failure> {
    let raw = std::fs::read(path)
        .map_err(|err| Failure::cannot_run(format_args!("cannot read module {}: {err}", path.display())))?;
    source::decode(&raw).map_err(|err| Failure::failed_with(Some("module refused"), &err))
}

/// The signature in `path`; `None` when `optional` and there is no such file.
fn read_signature(path: &Path, optional: bool) -> Result<Option<Vec<u8>>, Failure> {
    match read_signature_file(path) {
        Ok(Some(bytes)) if bytes.len() > MAX_SIGNATURE_BYTES => Err(Failure::failed(format_args!(
            "{} is over {MAX_SIGNATURE_BYTES} bytes: not a signature (an ECDSA P-256 signature in base64 is under 100)",
            path.display(),
        ))),
        Ok(Some(bytes)) => Ok(Some(bytes)),
        Ok(None) if optional => Ok(None),
        Ok(None) => {
            Err(Failure::cannot_run(format_args!("cannot read signature {}: no such file", path.display())))
        }
        Err(err) => Err(Failure::cannot_run(format_args!("cannot read signature {}: {err}", path.display()))),
    }
}

/// Checks `module` and `signature` against `trust`; prints and returns the signer.
fn check_trust(
    trust: &TrustPolicy,
    module: &[u8],
    signature: Option<&[u8]>,
) -> Result<Option<String>, Failure> {
    let signatures: Vec<Vec<u8>> = signature.map(<[u8]>::to_vec).into_iter().collect();
    let signer = trust
        .check(module, &digest(module), &signatures)
        .map_err(|err| Failure::failed_with(Some("module not trusted"), &err))?;
    if let Some(key) = &signer {
        println!("signature valid: signed by key {key}");
    }
    if !trust.digests().is_empty() {
        println!("digest {} is pinned", digest(module));
    }
    Ok(signer)
}

/// `wasm-operator module push`.
pub fn push(args: &PushArgs) -> Result<(), Failure> {
    let module = read_module(&args.file)?;
    let trust = args.trust.policy().map_err(|err| Failure::cannot_run_with(None, &err))?;
    let (signature_file, optional) = match &args.signature {
        Some(path) => (path.clone(), false),
        None => (signature_path(&args.file), true),
    };
    let signature = read_signature(&signature_file, optional)?;
    check_trust(&trust, &module, signature.as_deref())?;
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
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Failure::cannot_run(format_args!("cannot start the async runtime: {err}")))
    };
    if let Some(reference) = &args.oci {
        match &signature {
            Some(_) => {
                println!("signature {} goes with it ({:?})", signature_file.display(), args.oci_signature)
            }
            None => println!(
                "no signature ({} does not exist): the module goes unsigned",
                signature_file.display()
            ),
        }
        if args.dry_run {
            println!("dry run: nothing pushed to {reference}");
            return Ok(());
        }
        let registry = Registry::new(reference, &args.registry.config())
            .map_err(|err| Failure::cannot_run_with(None, &err))?;
        let manifest_digest = runtime()?
            .block_on(registry.push(reference, &module, signature.as_deref(), args.oci_signature.location()))
            .map_err(|err| Failure::cannot_run_with(None, &err))?;
        println!(
            "pushed {reference} (manifest {manifest_digest}, module {}); an operator following the tag checks it again and swaps to it; pin oci://…@{manifest_digest} to keep this build",
            loaded.digest()
        );
        return Ok(());
    }
    let Some(configmap) = &args.configmap else {
        return Err(Failure::cannot_run("one of --configmap and --oci is required"));
    };
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
    match &signature {
        Some(_) => {
            println!("signature {} goes to key {}", signature_file.display(), configmap.signature_key())
        }
        None => {
            println!("no signature ({} does not exist): the module goes unsigned", signature_file.display())
        }
    }
    if args.dry_run {
        println!("dry run: nothing uploaded to ConfigMap {configmap}");
        return Ok(());
    }
    let resource_version = runtime()?.block_on(async {
        let (client, _) =
            crate::connect(&args.cluster.config(), &crate::observe::RestClientMetrics::default())
                .await
                .map_err(|err| Failure::cannot_run_with(None, &err))?;
        configmap
            .upload(&client, compressed, signature, &args.field_manager)
            .await
            .map_err(|err| Failure::cannot_run_with(None, &err))
    })?;
    println!(
        "applied ConfigMap {}/{} key {} (resourceVersion {resource_version}); the operator checks it again and swaps to {}",
        configmap.namespace,
        configmap.name,
        configmap.key,
        loaded.digest()
    );
    Ok(())
}

/// `wasm-operator module sign`.
pub fn sign(args: &SignArgs) -> Result<(), Failure> {
    let signer = ModuleSigner::read(&args.key).map_err(|err| Failure::cannot_run_with(None, &err))?;
    let module = read_module(&args.file)?;
    let output: PathBuf = args.output.clone().unwrap_or_else(|| signature_path(&args.file));
    let signature = signer.sign(&module);
    std::fs::write(&output, format!("{signature}\n")).map_err(|err| {
        Failure::cannot_run(format_args!("cannot write signature {}: {err}", output.display()))
    })?;
    println!(
        "signed {} ({}) with key {}: {}",
        args.file.display(),
        digest(&module),
        signer.fingerprint(),
        output.display()
    );
    Ok(())
}

/// `wasm-operator module verify`.
pub fn verify(args: &VerifyArgs) -> Result<(), Failure> {
    if args.trust.public_keys.is_empty() && args.trust.digests.is_empty() {
        return Err(Failure::cannot_run(
            "nothing to verify against: give --module-public-key (repeatable) or --module-digest",
        ));
    }
    let trust = args.trust.policy().map_err(|err| Failure::cannot_run_with(None, &err))?;
    let module = read_module(&args.file)?;
    let (signature_file, optional) = match &args.signature {
        Some(path) => (path.clone(), false),
        None => (signature_path(&args.file), true),
    };
    let signature = read_signature(&signature_file, optional || !trust.requires_signature())?;
    check_trust(&trust, &module, signature.as_deref())?;
    println!("verified {} ({})", args.file.display(), digest(&module));
    Ok(())
}
