//! Loading a module file at start-up: read it and its signature (`PATH.sig`), gunzip
//! when gzip, the trust policy, and the runtime's whole acceptance check, before the
//! operator connects to anything.

use super::source::{self, SourceError};
use super::trust::{TrustPolicy, Untrusted, signature_path};
use crate::module::WasmModule;
use crate::runtime::{
    EngineError, LoadError, LoadedModule, ModuleCaller, SandboxConfig, SandboxEngine, digest,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a module file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadFileError {
    /// The wasm engine could not start (limits out of range, say).
    #[error("cannot start the wasm engine")]
    Engine(#[source] EngineError),
    /// The module file (or its signature file) could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The module file is gzip but does not decompress, or is too large.
    #[error("cannot decode module {}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: SourceError,
    },
    /// The trust policy refuses the module.
    #[error("module {} is not trusted", path.display())]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Untrusted,
    },
    /// The module is not a valid ABI v1 module.
    #[error("module {} is invalid", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The runtime's verdict.
        #[source]
        source: LoadError,
    },
}

/// A module file that passed every check.
#[derive(Debug)]
pub struct LoadedFile {
    /// The module.
    pub loaded: Arc<LoadedModule>,
    /// The fingerprint of the key that signed it, when `trust` requires keys.
    pub signer: Option<String>,
}

/// Loads and checks the module at `path` with a new engine for `concurrency`
/// concurrent calls, called through a caller that bounds them to that.
pub async fn load_module(
    path: &Path,
    sandbox: &SandboxConfig,
    concurrency: usize,
    trust: &TrustPolicy,
) -> Result<Arc<WasmModule>, LoadFileError> {
    let engine =
        SandboxEngine::new(&sandbox.clone().for_concurrency(concurrency)).map_err(LoadFileError::Engine)?;
    let file = load_file(&engine, path, trust).await?;
    Ok(Arc::new(WasmModule::new(file.loaded, ModuleCaller::new(concurrency))))
}

/// Loads and checks the module at `path` with `engine`: the trust policy (with the
/// signature in `PATH.sig`, if there is one) before the runtime's checks.
pub async fn load_file(
    engine: &SandboxEngine,
    path: &Path,
    trust: &TrustPolicy,
) -> Result<LoadedFile, LoadFileError> {
    let raw = tokio::fs::read(path)
        .await
        .map_err(|source| LoadFileError::Read { path: path.to_owned(), source })?;
    let signature = source::read_signature(path)
        .await
        .map_err(|source| LoadFileError::Read { path: signature_path(path), source })?;
    let bytes =
        source::decode(&raw).map_err(|source| LoadFileError::Decode { path: path.to_owned(), source })?;
    let signatures: Vec<Vec<u8>> = signature.into_iter().collect();
    let signer = trust
        .check(&bytes, &digest(&bytes), &signatures)
        .map_err(|source| LoadFileError::Untrusted { path: path.to_owned(), source })?;
    let loaded = engine
        .load_async(bytes)
        .await
        .map_err(|source| LoadFileError::Invalid { path: path.to_owned(), source })?;
    Ok(LoadedFile { loaded, signer })
}
