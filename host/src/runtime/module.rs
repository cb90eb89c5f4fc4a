//! Module validation and loading: the full acceptance check (docs/abi.md, *Hot swap
//! acceptance checks*), run on every module before its first real call (at start-up,
//! and on hot-swap candidates).
//!
//! Guarantees of a [`LoadedModule`]:
//! - it imports nothing, exports the ABI v1 functions with their exact signatures and
//!   one 32-bit memory, and its `reconcile_abi_version` returned 1;
//! - its manifest decoded strictly and passed [`validate_manifest`];
//! - a smoke `reconcile` of a synthetic snapshot returned a valid Outcome within the
//!   deadline and limits;
//! - it is immutable: swapping modules means swapping `Arc`s, and calls in flight
//!   keep the version they started on.
//!
//! The checks run in the order of [`LoadError`]'s variants and stop at the first
//! failure, which is named in the error. The first ones ([`precheck`]: size and
//! shape, imports, the `memory` and `reconcile_abi_version` exports) read only the
//! bytes, so a module that would be costly to compile is refused before it is
//! compiled; compiling then runs with a timeout ([`compile_with_timeout`]). Only a
//! module that passed every check is written to the compiled-module cache.

use super::call::{CallError, ExportIndices, Program, Reply};
use super::engine::SandboxEngine;
use super::manifest::{ManifestError, validate_manifest};
use super::precheck::{CompileError, PrecheckError, compile_with_timeout, precheck};
use reconcile_sdk::{ABI_VERSION, Manifest, Snapshot};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use wasmtime::{ExternType, FuncType, Module, ModuleExport, ValType};

/// Why a module was rejected. Each variant names the check that failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The module file could not be read.
    #[error("cannot read module {path}", path = path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The module is larger or more costly to compile than
    /// [`CompileLimits`](super::CompileLimits) allow, or compiling it took longer than
    /// their timeout.
    #[error("module exceeds the compile limits")]
    Limits(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The bytes are not a valid WebAssembly module, or do not fit the sandbox.
    #[error("module does not compile")]
    Compile(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The module imports something; ABI v1 modules import nothing.
    #[error("module has imports, but abi v1 modules import nothing: {}", imports.join(", "))]
    Imports {
        /// Each import as `module::name (kind)`.
        imports: Vec<String>,
    },
    /// A required export is missing.
    #[error("module does not export `{name}` ({expected})")]
    MissingExport {
        /// The export.
        name: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A required export has the wrong type.
    #[error("module export `{name}` is {found}, expected {expected}")]
    WrongExport {
        /// The export.
        name: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it is.
        found: String,
    },
    /// `reconcile_abi_version` returned another version.
    #[error("module implements abi {found}, but the host implements abi {ABI_VERSION}")]
    WrongAbi {
        /// What it returned.
        found: i32,
    },
    /// The module could not be prepared for instantiation.
    #[error("module cannot be instantiated")]
    Link(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Calling `reconcile_abi_version` or `reconcile_manifest` failed.
    #[error("module failed while describing itself")]
    Describe(#[source] CallError),
    /// The manifest is not JSON or not shaped like an ABI v1 manifest.
    #[error("module manifest does not decode")]
    ManifestDecode(#[source] serde_json::Error),
    /// The manifest decodes but is not valid.
    #[error("module manifest is invalid")]
    ManifestInvalid(#[source] ManifestError),
    /// The smoke reconcile of a synthetic snapshot failed.
    #[error("module failed its smoke reconcile")]
    SmokeTest(#[source] CallError),
    /// The blocking load task died (a host bug).
    #[error("module load task failed: {0}")]
    Task(String),
}

/// `sha256:<hex>` of a module's bytes: the digest the host shows, logs and compares.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl LoadError {
    /// Whether the module itself is at fault (as opposed to the file or the host).
    pub fn is_module_fault(&self) -> bool {
        !matches!(self, LoadError::Read { .. } | LoadError::Task(_))
    }
}

/// One validated module version: compiled code, its one `InstancePre`, its manifest
/// and digest. Share it as `Arc<LoadedModule>`.
pub struct LoadedModule {
    program: Program,
    manifest: Manifest,
    manifest_json: String,
    digest: String,
    size: usize,
    // Keeps the engine (and its epoch clock) alive as long as the module can be called.
    engine: SandboxEngine,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The exports of ABI v1 and their types, in the order they are checked.
pub(super) const MEMORY: &str = "memory";
pub(super) const MEMORY_TYPE: &str = "a 32-bit unshared memory";
pub(super) const ABI_VERSION_FN: (&str, &str) = ("reconcile_abi_version", "() -> i32");
const FUNCTIONS: [(&str, &str); 4] = [
    ("reconcile_alloc", "(i32) -> i32"),
    ("reconcile_free", "(i32, i32) -> ()"),
    ("reconcile_manifest", "() -> i64"),
    ("reconcile", "(i32, i32) -> i64"),
];

impl SandboxEngine {
    /// Validates and loads a module: see [`LoadedModule`] for what is checked.
    ///
    /// Compiles (through the on-disk cache) and runs guest code twice: call it off the
    /// async executor (see [`SandboxEngine::load_async`]).
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<LoadedModule>, LoadError> {
        let digest = digest(bytes);
        let limits = self.compile_limits();
        precheck(bytes, limits).map_err(refused_before_compiling)?;
        let digest_hex = &digest["sha256:".len()..];
        let cached = self.cache().and_then(|cache| cache.load(self.engine(), digest_hex));
        let from_cache = cached.is_some();
        let module = match cached {
            Some(module) => module,
            None => {
                compile_with_timeout(self.engine(), bytes, limits.compile_timeout).map_err(
                    |err| match err {
                        CompileError::Refused(err) => LoadError::Compile(err),
                        err @ CompileError::Timeout { .. } => LoadError::Limits(err.into()),
                        err @ (CompileError::Thread(_) | CompileError::Panicked) => {
                            LoadError::Task(err.to_string())
                        }
                    },
                )?
            }
        };

        // The ABI version first: a module of another ABI may export other functions,
        // and "wrong abi" is the useful answer for it.
        let memory = memory_export(&module)?;
        let abi_version = func_export(&module, ABI_VERSION_FN)?;
        let pre = self.linker().instantiate_pre(&module).map_err(|err| LoadError::Link(err.into()))?;
        let mut exports = ExportIndices {
            memory,
            abi_version,
            // Placeholders until the version is known to be 1; unused before.
            alloc: abi_version,
            free: abi_version,
            manifest: abi_version,
            reconcile: abi_version,
        };
        let probe = Program::new(pre.clone(), exports, *self.limits(), self.deadline_ticks());
        let mut call = probe.instantiate().map_err(LoadError::Describe)?;
        let found = call.abi_version().map_err(LoadError::Describe)?;
        if u32::try_from(found).ok() != Some(ABI_VERSION) {
            return Err(LoadError::WrongAbi { found });
        }
        drop(call);

        let [alloc, free, manifest, reconcile] = FUNCTIONS;
        exports.alloc = func_export(&module, alloc)?;
        exports.free = func_export(&module, free)?;
        exports.manifest = func_export(&module, manifest)?;
        exports.reconcile = func_export(&module, reconcile)?;
        let program = Program::new(pre, exports, *self.limits(), self.deadline_ticks());

        let manifest_json =
            program.instantiate().and_then(|mut call| call.manifest()).map_err(LoadError::Describe)?;
        let manifest: Manifest = serde_json::from_str(&manifest_json).map_err(LoadError::ManifestDecode)?;
        validate_manifest(&manifest).map_err(LoadError::ManifestInvalid)?;

        let smoke = smoke_snapshot(&manifest);
        program.reconcile(&smoke).map_err(LoadError::SmokeTest)?;
        if !from_cache && let Some(cache) = self.cache() {
            cache.store(digest_hex, &module);
        }

        tracing::debug!(name = %manifest.name, version = %manifest.version, %digest, "module loaded");
        Ok(Arc::new(LoadedModule {
            program,
            manifest,
            manifest_json,
            digest,
            size: bytes.len(),
            engine: self.clone(),
        }))
    }

    /// [`SandboxEngine::load`] of a file.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedModule>, LoadError> {
        let bytes =
            std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        self.load(&bytes)
    }

    /// [`SandboxEngine::load`] on a blocking thread, for async callers (hot swap).
    pub async fn load_async(&self, bytes: Vec<u8>) -> Result<Arc<LoadedModule>, LoadError> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.load(&bytes))
            .await
            .unwrap_or_else(|err| Err(LoadError::Task(err.to_string())))
    }
}

impl LoadedModule {
    /// Runs `reconcile` on a JSON snapshot in a fresh sandboxed instance, blocking the
    /// thread (up to the deadline). Async code uses [`ModuleCaller`](super::ModuleCaller).
    ///
    /// The snapshot is passed as given; the module decodes it (and answers an `error`
    /// outcome when it cannot).
    pub fn call(&self, snapshot_json: &[u8]) -> Result<Reply, CallError> {
        self.program.reconcile(snapshot_json)
    }

    /// [`LoadedModule::call`] of a typed snapshot.
    pub fn call_snapshot(&self, snapshot: &Snapshot) -> Result<Reply, CallError> {
        // Serializing a `Snapshot` (strings, numbers, JSON values) cannot fail.
        let json = serde_json::to_vec(snapshot).unwrap_or_default();
        self.call(&json)
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest exactly as the module returned it.
    pub fn manifest_json(&self) -> &str {
        &self.manifest_json
    }

    /// `sha256:<hex>` of the module's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Size of the module's bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The engine the module runs on.
    pub fn engine(&self) -> &SandboxEngine {
        &self.engine
    }
}

/// The synthetic snapshot of the smoke reconcile: a primary with only identity.
fn smoke_snapshot(manifest: &Manifest) -> Vec<u8> {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let snapshot = serde_json::json!({
        "abi": ABI_VERSION,
        "now": now,
        "object": {
            "apiVersion": manifest.primary.api_version,
            "kind": manifest.primary.kind,
            "metadata": {
                "name": "wasm-operator-smoke-test",
                "namespace": "default",
                "uid": "00000000-0000-0000-0000-000000000000",
            },
        },
    });
    serde_json::to_vec(&snapshot).unwrap_or_default()
}

/// The load error for a module [`precheck`] refused: the same variant (and message)
/// as the checks after compiling give, where there is one.
fn refused_before_compiling(err: PrecheckError) -> LoadError {
    match err {
        PrecheckError::Imports { imports } => LoadError::Imports { imports },
        PrecheckError::MissingExport { name, expected } => LoadError::MissingExport { name, expected },
        PrecheckError::WrongExport { name, expected, found } => {
            LoadError::WrongExport { name, expected, found }
        }
        PrecheckError::MemoryType { found } => {
            LoadError::WrongExport { name: MEMORY, expected: MEMORY_TYPE, found: found.into() }
        }
        err @ (PrecheckError::TooLarge { .. }
        | PrecheckError::TooManyFunctions { .. }
        | PrecheckError::FunctionTooLarge { .. }
        | PrecheckError::CodeTooLarge { .. }
        | PrecheckError::CodeTooCostly { .. }) => LoadError::Limits(err.into()),
        err => LoadError::Compile(err.into()),
    }
}

fn memory_export(module: &Module) -> Result<ModuleExport, LoadError> {
    // Its type was checked on the bytes, before compiling (`precheck`).
    module.get_export_index(MEMORY).ok_or(LoadError::MissingExport { name: MEMORY, expected: MEMORY_TYPE })
}

fn func_export(
    module: &Module,
    (name, expected): (&'static str, &'static str),
) -> Result<ModuleExport, LoadError> {
    let missing = LoadError::MissingExport { name, expected };
    match module.get_export(name) {
        Some(ExternType::Func(ty)) => {
            let found = signature(&ty);
            if found != expected {
                return Err(LoadError::WrongExport { name, expected, found });
            }
        }
        Some(other) => {
            return Err(LoadError::WrongExport { name, expected, found: extern_kind(&other).into() });
        }
        None => return Err(missing),
    }
    module.get_export_index(name).ok_or(missing)
}

/// A function type as `(i32, i32) -> i64`; `()` for no results.
fn signature(ty: &FuncType) -> String {
    let list = |types: &mut dyn Iterator<Item = ValType>| {
        types.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    };
    let params = list(&mut ty.params());
    let results: Vec<String> = ty.results().map(|t| t.to_string()).collect();
    match results.as_slice() {
        [one] => format!("({params}) -> {one}"),
        many => format!("({params}) -> ({})", many.join(", ")),
    }
}

fn extern_kind(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "function",
        ExternType::Global(_) => "global",
        ExternType::Table(_) => "table",
        ExternType::Memory(_) => "memory",
        ExternType::Tag(_) => "tag",
    }
}
