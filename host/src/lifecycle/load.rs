//! Loading a module file at start-up: read, gunzip when gzip, and the runtime's whole
//! acceptance check, before the operator connects to anything.

use super::source::{self, SourceError};
use crate::module::WasmModule;
use crate::runtime::{EngineError, LoadError, LoadedModule, ModuleCaller, SandboxConfig, SandboxEngine};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a module file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadFileError {
    /// The wasm engine could not start (limits out of range, say).
    #[error("cannot start the wasm engine")]
    Engine(#[source] EngineError),
    /// The module file could not be read.
    #[error("cannot read module {}", path.display())]
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

/// Loads and validates the module at `path` with a new engine for `concurrency`
/// concurrent calls, called through a caller that bounds them to that.
pub async fn load_module(
    path: &Path,
    sandbox: &SandboxConfig,
    concurrency: usize,
) -> Result<Arc<WasmModule>, LoadFileError> {
    let engine =
        SandboxEngine::new(&sandbox.clone().for_concurrency(concurrency)).map_err(LoadFileError::Engine)?;
    let loaded = load_file(&engine, path).await?;
    Ok(Arc::new(WasmModule::new(loaded, ModuleCaller::new(concurrency))))
}

/// Loads and validates the module at `path` with `engine`.
pub async fn load_file(engine: &SandboxEngine, path: &Path) -> Result<Arc<LoadedModule>, LoadFileError> {
    let raw = tokio::fs::read(path)
        .await
        .map_err(|source| LoadFileError::Read { path: path.to_owned(), source })?;
    let bytes =
        source::decode(&raw).map_err(|source| LoadFileError::Decode { path: path.to_owned(), source })?;
    engine.load_async(bytes).await.map_err(|source| LoadFileError::Invalid { path: path.to_owned(), source })
}
