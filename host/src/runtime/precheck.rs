//! Checks of a module's bytes before they are compiled, and compilation with a
//! wall-clock limit.
//!
//! Compiling is the one step of a load whose cost the module controls and the host
//! cannot interrupt: Cranelift runs to completion, and its time and memory grow faster
//! than linearly with the size of a function (measured with wasmtime 48, release
//! build, two cores: a hostile 64 KiB function of sequential loops takes 12 s to compile, a
//! 128 KiB one 50 s; a 256 KiB chain of `if`/`else` peaks at 2.9 GB). [`precheck`]
//! bounds that cost from the bytes alone, before anything is compiled, and refuses a
//! module that is not shaped like an ABI v1 module (docs/abi.md, *Exports*) without
//! compiling it either.
//!
//! Guarantees of [`precheck`]:
//! - Its own cost is linear in the size of the bytes, which is checked first: it walks
//!   the sections once without decoding function bodies, and keeps at most
//!   [`MAX_LISTED_IMPORTS`] import names, whatever the module declares.
//! - The checks run in the order of [`PrecheckError`]'s variants (the last three
//!   export by export: `memory`, then `reconcile_abi_version`) and stop at the first
//!   failure, which the error names. The bytes are parsed completely before any rule
//!   is applied, so malformed bytes are always reported as such.
//! - It never panics, whatever the bytes.
//! - It is not a validator: a module that passes may still fail to compile. Full
//!   validation is wasmtime's, when it compiles.
//!
//! Of the exports, only `memory` and `reconcile_abi_version` are checked here. The
//! other ABI v1 functions are checked after `reconcile_abi_version` has returned 1
//! (docs/abi.md: a module of another ABI is refused as such, rather than for a
//! missing export), which needs the compiled module.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use wasmparser::{
    CompositeInnerType, Encoding, ExternalKind, FuncType, FunctionSectionReader, MemoryType, Parser, Payload,
    TypeRef, TypeSectionReader,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// How many imports a [`PrecheckError::Imports`] names; the rest are counted.
pub const MAX_LISTED_IMPORTS: usize = 16;

/// The exports checked before compiling, with their types, in the order they are
/// checked. The wording matches the load checks', so a module gets the same message
/// whichever check refuses it.
const MEMORY: (&str, &str) = (super::module::MEMORY, super::module::MEMORY_TYPE);
const ABI_VERSION_FN: (&str, &str) = super::module::ABI_VERSION_FN;

/// What compiling one module may cost: bounds on the module's size and shape, checked
/// by [`precheck`], and the wall-clock limit of [`compile_with_timeout`].
///
/// Plain data, like [`SandboxLimits`](super::SandboxLimits). The defaults admit the
/// DittoFS module (667 KiB, 866 functions, the largest 15.4 KiB) with a wide margin
/// on every limit; see [`CompileLimits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Size of the module's bytes.
    pub max_module_bytes: usize,
    /// Functions, imported and defined.
    pub max_functions: u32,
    /// Size of one function body (its locals and code), in bytes.
    pub max_function_body_bytes: u32,
    /// Size of the code section, in bytes.
    pub max_total_code_bytes: usize,
    /// The sum, over the functions, of the square of each body's size in bytes.
    ///
    /// The worst-case cost of compiling a function grows with the square of its size,
    /// so this bounds the module's worst-case compile time, where the total size does
    /// not: within the total, a module could otherwise hold a hundred functions each as
    /// expensive as the largest allowed.
    pub max_code_cost: u64,
    /// How long [`compile_with_timeout`] waits for the compiler.
    pub compile_timeout: Duration,
}

impl Default for CompileLimits {
    /// Each limit is at least 3.5 times what the DittoFS module needs (measured on
    /// `target/modules/dittofs-reconciler.wasm`, and its v2), and keeps the worst case
    /// bounded (measured with wasmtime 48, release build, epoch interruption on):
    ///
    /// - 16 MiB of module (DittoFS: 667 KiB, 24 times less). Data segments cost
    ///   nothing to compile; the other limits bound the code.
    /// - 50,000 functions (DittoFS: 866). Fifty thousand trivial functions compile in
    ///   about 2 s and 300 MB.
    /// - 64 KiB per function body (DittoFS: 15,743 bytes at most; v2: 18,631). The
    ///   limit that matters most: a hostile 64 KiB body compiles in at most about 12 s
    ///   and 210 MB (of the patterns tried), twice the size costs four times as much.
    ///   The compiler works on several functions at once, one per core.
    /// - 8 MiB of code (DittoFS: 634,086 bytes, 13 times less); ordinary code compiles
    ///   at about 1 MB/s per core.
    /// - A code cost of 2^35, the cost of eight bodies of 64 KiB (DittoFS: 2.8e9, 12
    ///   times less): about 100 s of compiler CPU time for the worst module tried,
    ///   instead of 25 minutes for 128 such bodies within the 8 MiB.
    /// - 60 s to compile (DittoFS: 0.5 s on two cores, 120 times less; 15 s with a
    ///   debug build of wasmtime, as the tests run it). It bounds how long a load
    ///   waits, not the CPU time a hostile module within the limits above can still
    ///   cost in the background.
    fn default() -> Self {
        Self {
            max_module_bytes: 16 * MIB,
            max_functions: 50_000,
            max_function_body_bytes: 64 * KIB as u32,
            max_total_code_bytes: 8 * MIB,
            max_code_cost: 1 << 35,
            compile_timeout: Duration::from_secs(60),
        }
    }
}

/// What [`precheck`] measured of a module that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Functions, imported and defined.
    pub functions: u32,
    /// Size of the code section, in bytes.
    pub code_bytes: usize,
    /// Size of the largest function body, in bytes.
    pub largest_function_bytes: usize,
    /// The sum of the squares of the body sizes (see [`CompileLimits::max_code_cost`]).
    pub code_cost: u64,
}

/// Why a module was refused before compiling. Each variant names the check that
/// failed; the checks run in the order of the variants.
#[derive(Debug, thiserror::Error)]
pub enum PrecheckError {
    /// The bytes are larger than [`CompileLimits::max_module_bytes`].
    #[error("module is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Size of the bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes do not parse as WebAssembly.
    #[error("bytes are not a WebAssembly module")]
    Malformed(#[source] wasmparser::BinaryReaderError),
    /// The bytes are a component; ABI v1 modules are core modules.
    #[error("bytes are a WebAssembly component, but abi v1 modules are core modules")]
    Component,
    /// The module imports something; ABI v1 modules import nothing.
    #[error("module has imports, but abi v1 modules import nothing: {}", imports.join(", "))]
    Imports {
        /// Each import as `module::name (kind)`, at most [`MAX_LISTED_IMPORTS`] of
        /// them, then `and N more` when there are more.
        imports: Vec<String>,
    },
    /// More functions than [`CompileLimits::max_functions`].
    #[error("module has {count} functions, more than the limit of {limit}")]
    TooManyFunctions {
        /// Functions, imported and defined.
        count: u64,
        /// The limit.
        limit: u32,
    },
    /// A function body larger than [`CompileLimits::max_function_body_bytes`]; the
    /// first one.
    #[error("function {index} is {size} bytes, more than the limit of {limit}")]
    FunctionTooLarge {
        /// Its index in the function index space.
        index: u32,
        /// Size of its body.
        size: usize,
        /// The limit.
        limit: u32,
    },
    /// A code section larger than [`CompileLimits::max_total_code_bytes`].
    #[error("module has {size} bytes of code, more than the limit of {limit}")]
    CodeTooLarge {
        /// Size of the code section.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Code whose cost is more than [`CompileLimits::max_code_cost`].
    #[error(
        "module's code cost (the sum of its squared function sizes) is {cost}, more than the limit of {limit}"
    )]
    CodeTooCostly {
        /// The module's code cost.
        cost: u64,
        /// The limit.
        limit: u64,
    },
    /// Not exactly one memory.
    #[error("module has {count} memories, but abi v1 modules have exactly one")]
    MemoryCount {
        /// Memories, imported and defined.
        count: u64,
    },
    /// The memory is 64-bit or shared.
    #[error("module memory is {found}, expected {expected}", expected = MEMORY.1)]
    MemoryType {
        /// What it is.
        found: &'static str,
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
    /// An export refers to a memory, function or function type the module does not
    /// define (invalid wasm, which compiling would refuse too).
    #[error("module refers to {what} {index}, which it does not define")]
    Dangling {
        /// `function`, `function type` or `memory`.
        what: &'static str,
        /// The index it refers to.
        index: u32,
    },
}

/// Checks untrusted module bytes against `limits` and the shape of ABI v1 modules,
/// without compiling them: see the [module documentation](self) for what is
/// guaranteed.
pub fn precheck(bytes: &[u8], limits: &CompileLimits) -> Result<Shape, PrecheckError> {
    if bytes.len() > limits.max_module_bytes {
        return Err(PrecheckError::TooLarge { size: bytes.len(), limit: limits.max_module_bytes });
    }
    let walk = Walk::of(bytes, limits)?;

    if walk.imports > 0 {
        let mut imports = walk.listed_imports.clone();
        let unlisted = walk.imports - imports.len() as u64;
        if unlisted > 0 {
            imports.push(format!("and {unlisted} more"));
        }
        return Err(PrecheckError::Imports { imports });
    }

    let functions = walk.imported_functions + u64::from(walk.defined_functions);
    if functions > u64::from(limits.max_functions) {
        return Err(PrecheckError::TooManyFunctions { count: functions, limit: limits.max_functions });
    }
    if let Some((index, size)) = walk.first_body_over_limit {
        return Err(PrecheckError::FunctionTooLarge { index, size, limit: limits.max_function_body_bytes });
    }
    if walk.code_bytes > limits.max_total_code_bytes {
        return Err(PrecheckError::CodeTooLarge {
            size: walk.code_bytes,
            limit: limits.max_total_code_bytes,
        });
    }
    if walk.code_cost > limits.max_code_cost {
        return Err(PrecheckError::CodeTooCostly { cost: walk.code_cost, limit: limits.max_code_cost });
    }

    let memories = walk.imported_memories + u64::from(walk.defined_memories);
    let memory = match walk.first_memory {
        Some(memory) if memories == 1 => memory,
        _ => return Err(PrecheckError::MemoryCount { count: memories }),
    };
    match (memory.memory64, memory.shared) {
        (false, false) => {}
        (true, false) => return Err(PrecheckError::MemoryType { found: "a 64-bit memory" }),
        (false, true) => return Err(PrecheckError::MemoryType { found: "a shared memory" }),
        (true, true) => return Err(PrecheckError::MemoryType { found: "a 64-bit shared memory" }),
    }

    // The memory first, then the ABI version, as the load checks do.
    let (name, expected) = MEMORY;
    match walk.exports.memory {
        Some((ExternalKind::Memory, 0)) => {}
        Some((ExternalKind::Memory, index)) => return Err(PrecheckError::Dangling { what: "memory", index }),
        Some((kind, _)) => {
            return Err(PrecheckError::WrongExport { name, expected, found: export_kind(kind).into() });
        }
        None => return Err(PrecheckError::MissingExport { name, expected }),
    }
    walk.check_function_export(walk.exports.abi_version, ABI_VERSION_FN)?;

    Ok(Shape {
        // At most `max_functions`, checked above.
        functions: u32::try_from(functions).unwrap_or(u32::MAX),
        code_bytes: walk.code_bytes,
        largest_function_bytes: walk.largest_body,
        code_cost: walk.code_cost,
    })
}

/// Why [`compile_with_timeout`] returned no module.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// wasmtime refused the module (invalid, or beyond what the engine supports).
    #[error(transparent)]
    Refused(Box<dyn std::error::Error + Send + Sync>),
    /// The compiler did not finish in time. It goes on in the background.
    #[error("compilation did not finish within {timeout:?}")]
    Timeout {
        /// The time waited.
        timeout: Duration,
    },
    /// The compile thread could not start.
    #[error("cannot start the compile thread")]
    Thread(#[source] std::io::Error),
    /// The compile thread ended without a result: wasmtime panicked (a bug).
    #[error("the compile thread panicked")]
    Panicked,
}

/// Compiles `bytes` on a thread of its own and waits at most `timeout` for it.
///
/// wasmtime cannot cancel a compilation. On timeout the thread is left to finish in
/// the background and its result is dropped; the host gets its answer in time, not its
/// CPU back. What bounds the work left behind is [`precheck`], which must have passed
/// first: its limits bound how long any compilation can take. The bytes are copied
/// for the thread (they are at most [`CompileLimits::max_module_bytes`]).
pub fn compile_with_timeout(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    timeout: Duration,
) -> Result<wasmtime::Module, CompileError> {
    let (done, result) = mpsc::sync_channel(1);
    let engine = engine.clone();
    let bytes = bytes.to_vec();
    thread::Builder::new()
        .name("wasm-compile".into())
        .spawn(move || {
            let compiled =
                wasmtime::Module::new(&engine, &bytes).map_err(|err| CompileError::Refused(err.into()));
            // Fails only when the caller stopped waiting: the module is dropped here.
            let _ = done.send(compiled);
        })
        .map_err(CompileError::Thread)?;
    match result.recv_timeout(timeout) {
        Ok(compiled) => compiled,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(CompileError::Timeout { timeout }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(CompileError::Panicked),
    }
}

/// What one pass over the sections found: counts, sizes and the few entries the rules
/// look at, never a list as long as the module makes it.
#[derive(Default)]
struct Walk<'a> {
    imports: u64,
    listed_imports: Vec<String>,
    imported_functions: u64,
    imported_memories: u64,
    defined_functions: u32,
    defined_memories: u32,
    first_memory: Option<MemoryType>,
    types: Option<TypeSectionReader<'a>>,
    function_types: Option<FunctionSectionReader<'a>>,
    exports: Exports,
    code_bytes: usize,
    bodies: u32,
    largest_body: usize,
    // Index and size of the first body over the limit: the limit is known while
    // walking, and a list of every body would be as long as the module makes it.
    first_body_over_limit: Option<(u32, usize)>,
    code_cost: u64,
}

/// The exports [`precheck`] looks at: kind and index of the first of each name.
#[derive(Default)]
struct Exports {
    memory: Option<(ExternalKind, u32)>,
    abi_version: Option<(ExternalKind, u32)>,
}

impl<'a> Walk<'a> {
    /// Parses every section `precheck` reads; other sections are only delimited.
    fn of(bytes: &'a [u8], limits: &CompileLimits) -> Result<Self, PrecheckError> {
        let body_limit = usize::try_from(limits.max_function_body_bytes).unwrap_or(usize::MAX);
        let mut walk = Walk::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.map_err(PrecheckError::Malformed)? {
                Payload::Version { encoding: Encoding::Component, .. } => {
                    return Err(PrecheckError::Component);
                }
                Payload::TypeSection(reader) => {
                    for group in reader.clone() {
                        group.map_err(PrecheckError::Malformed)?;
                    }
                    walk.types = Some(reader);
                }
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        walk.import(import.map_err(PrecheckError::Malformed)?);
                    }
                }
                Payload::FunctionSection(reader) => {
                    for ty in reader.clone() {
                        ty.map_err(PrecheckError::Malformed)?;
                    }
                    walk.defined_functions = reader.count();
                    walk.function_types = Some(reader);
                }
                Payload::MemorySection(reader) => {
                    walk.defined_memories = reader.count();
                    for memory in reader {
                        let memory = memory.map_err(PrecheckError::Malformed)?;
                        walk.first_memory.get_or_insert(memory);
                    }
                }
                Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export.map_err(PrecheckError::Malformed)?;
                        let slot = match export.name {
                            name if name == MEMORY.0 => &mut walk.exports.memory,
                            name if name == ABI_VERSION_FN.0 => &mut walk.exports.abi_version,
                            _ => continue,
                        };
                        slot.get_or_insert((export.kind, export.index));
                    }
                }
                Payload::CodeSectionStart { range, .. } => walk.code_bytes = range.len(),
                Payload::CodeSectionEntry(body) => walk.body(body.range().len(), body_limit),
                _ => {}
            }
        }
        Ok(walk)
    }

    fn import(&mut self, import: wasmparser::Import<'_>) {
        self.imports += 1;
        let kind = match import.ty {
            TypeRef::Func(_) | TypeRef::FuncExact(_) => {
                self.imported_functions += 1;
                "function"
            }
            TypeRef::Memory(memory) => {
                self.imported_memories += 1;
                self.first_memory.get_or_insert(memory);
                "memory"
            }
            TypeRef::Table(_) => "table",
            TypeRef::Global(_) => "global",
            TypeRef::Tag(_) => "tag",
        };
        if self.listed_imports.len() < MAX_LISTED_IMPORTS {
            self.listed_imports.push(format!("{}::{} ({kind})", import.module, import.name));
        }
    }

    fn body(&mut self, size: usize, limit: usize) {
        // Function indices count imported functions first.
        let index = u32::try_from(self.imported_functions).unwrap_or(u32::MAX).saturating_add(self.bodies);
        self.bodies = self.bodies.saturating_add(1);
        self.largest_body = self.largest_body.max(size);
        let size_u64 = u64::try_from(size).unwrap_or(u64::MAX);
        self.code_cost = self.code_cost.saturating_add(size_u64.saturating_mul(size_u64));
        if size > limit {
            self.first_body_over_limit.get_or_insert((index, size));
        }
    }

    fn check_function_export(
        &self,
        export: Option<(ExternalKind, u32)>,
        (name, expected): (&'static str, &'static str),
    ) -> Result<(), PrecheckError> {
        let index = match export {
            Some((ExternalKind::Func | ExternalKind::FuncExact, index)) => index,
            Some((kind, _)) => {
                return Err(PrecheckError::WrongExport { name, expected, found: export_kind(kind).into() });
            }
            None => return Err(PrecheckError::MissingExport { name, expected }),
        };
        let ty = self.function_type(index)?;
        let found = signature(&ty);
        if found != expected {
            return Err(PrecheckError::WrongExport { name, expected, found });
        }
        Ok(())
    }

    /// The type of a defined function. Imports are refused before exports are
    /// checked, so function indices are indices into the function section.
    fn function_type(&self, index: u32) -> Result<FuncType, PrecheckError> {
        let dangling_function = || PrecheckError::Dangling { what: "function", index };
        let defined = u32::try_from(self.imported_functions)
            .ok()
            .and_then(|imported| index.checked_sub(imported))
            .ok_or_else(dangling_function)?;
        let type_index = self
            .function_types
            .clone()
            .and_then(|functions| functions.into_iter().nth(usize::try_from(defined).ok()?))
            .ok_or_else(dangling_function)?
            .map_err(PrecheckError::Malformed)?;

        let dangling_type = || PrecheckError::Dangling { what: "function type", index: type_index };
        let types = self.types.clone().ok_or_else(dangling_type)?;
        // Type indices count the types of every recursion group, in order.
        let mut next: u32 = 0;
        for group in types {
            for sub_type in group.map_err(PrecheckError::Malformed)?.into_types() {
                if next == type_index {
                    return match sub_type.composite_type.inner {
                        CompositeInnerType::Func(ty) => Ok(ty),
                        _ => Err(dangling_type()),
                    };
                }
                next = next.checked_add(1).ok_or_else(dangling_type)?;
            }
        }
        Err(dangling_type())
    }
}

/// A function type as `(i32, i32) -> i64`; `()` for no results, as the load checks
/// write it.
fn signature(ty: &FuncType) -> String {
    let list = |types: &[wasmparser::ValType]| types.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    let params = list(ty.params()).join(", ");
    match list(ty.results()).as_slice() {
        [one] => format!("({params}) -> {one}"),
        many => format!("({params}) -> ({})", many.join(", ")),
    }
}

fn export_kind(kind: ExternalKind) -> &'static str {
    match kind {
        ExternalKind::Func | ExternalKind::FuncExact => "function",
        ExternalKind::Global => "global",
        ExternalKind::Table => "table",
        ExternalKind::Memory => "memory",
        ExternalKind::Tag => "tag",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An ABI v1 module in the text format, with `extra` inside the `(module ...)`.
    fn abi_module(extra: &str) -> Vec<u8> {
        wat(&format!(
            r#"(module
                (memory (export "memory") 1)
                (func (export "reconcile_abi_version") (result i32) (i32.const 1))
                (func (export "reconcile_alloc") (param i32) (result i32) (i32.const 1024))
                (func (export "reconcile_free") (param i32 i32))
                (func (export "reconcile_manifest") (result i64) (i64.const 0))
                (func (export "reconcile") (param i32 i32) (result i64) (i64.const 0))
                {extra})"#
        ))
    }

    fn wat(source: &str) -> Vec<u8> {
        wat::parse_str(source).expect("test module parses")
    }

    /// An ABI v1 module in the binary format, followed by one function of type
    /// `() -> ()` per body in `extra` (each a complete body: locals and code, `end`
    /// included). Written directly, because the text of the large modules the tests
    /// need would be slow to parse.
    fn binary_abi_module(extra: &[Vec<u8>]) -> Vec<u8> {
        // Types: 0 () -> i32, 1 (i32) -> i32, 2 (i32, i32) -> (), 3 () -> i64,
        // 4 (i32, i32) -> i64, 5 () -> ().
        const I32: u8 = 0x7f;
        const I64: u8 = 0x7e;
        let types: [(&[u8], &[u8]); 6] = [
            (&[], &[I32]),
            (&[I32], &[I32]),
            (&[I32, I32], &[]),
            (&[], &[I64]),
            (&[I32, I32], &[I64]),
            (&[], &[]),
        ];
        let abi: [(&str, u32, &[u8]); 5] = [
            ("reconcile_abi_version", 0, &[0, 0x41, 1, 0x0b]),
            ("reconcile_alloc", 1, &[0, 0x41, 0x80, 0x08, 0x0b]),
            ("reconcile_free", 2, &[0, 0x0b]),
            ("reconcile_manifest", 3, &[0, 0x42, 0, 0x0b]),
            ("reconcile", 4, &[0, 0x42, 0, 0x0b]),
        ];
        let count = |n: usize| leb(u64::try_from(n).expect("count fits"));
        let mut module = b"\0asm\x01\0\0\0".to_vec();

        let mut section = count(types.len());
        for (params, results) in types {
            section.push(0x60);
            section.extend(count(params.len()));
            section.extend_from_slice(params);
            section.extend(count(results.len()));
            section.extend_from_slice(results);
        }
        push_section(&mut module, 1, &section);

        let mut section = count(abi.len() + extra.len());
        section.extend(abi.iter().flat_map(|&(_, ty, _)| leb(ty.into())));
        section.extend(std::iter::repeat_n(5, extra.len()));
        push_section(&mut module, 3, &section);

        push_section(&mut module, 5, &[1, 0, 1]);

        let mut section = count(abi.len() + 1);
        section.extend(name("memory"));
        section.extend([2, 0]);
        for (index, (export, _, _)) in abi.iter().enumerate() {
            section.extend(name(export));
            section.push(0);
            section.extend(count(index));
        }
        push_section(&mut module, 7, &section);

        let mut section = count(abi.len() + extra.len());
        for body in abi.iter().map(|&(_, _, body)| body).chain(extra.iter().map(Vec::as_slice)) {
            section.extend(count(body.len()));
            section.extend_from_slice(body);
        }
        push_section(&mut module, 10, &section);
        module
    }

    fn push_section(module: &mut Vec<u8>, id: u8, contents: &[u8]) {
        module.push(id);
        module.extend(leb(u64::try_from(contents.len()).expect("size fits")));
        module.extend_from_slice(contents);
    }

    fn name(name: &str) -> Vec<u8> {
        let mut bytes = leb(u64::try_from(name.len()).expect("size fits"));
        bytes.extend_from_slice(name.as_bytes());
        bytes
    }

    fn leb(mut value: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                bytes.push(byte);
                return bytes;
            }
            bytes.push(byte | 0x80);
        }
    }

    /// A body of `size` bytes: no locals, `i32.const 0; drop` repeated, padded with
    /// `nop`, then `end`.
    fn body_of(size: usize) -> Vec<u8> {
        let mut body = vec![0];
        while body.len() + 3 < size {
            body.extend_from_slice(&[0x41, 0, 0x1a]);
        }
        body.resize(size - 1, 0x01);
        body.push(0x0b);
        body
    }

    fn refused(bytes: &[u8], limits: &CompileLimits) -> PrecheckError {
        precheck(bytes, limits).expect_err("module is refused")
    }

    fn unlimited() -> CompileLimits {
        CompileLimits {
            max_module_bytes: usize::MAX,
            max_functions: u32::MAX,
            max_function_body_bytes: u32::MAX,
            max_total_code_bytes: usize::MAX,
            max_code_cost: u64::MAX,
            compile_timeout: Duration::MAX,
        }
    }

    #[test]
    fn an_abi_v1_module_passes_and_compiles() {
        let bytes = abi_module("");
        let shape = precheck(&bytes, &CompileLimits::default()).expect("passes");
        assert_eq!(shape.functions, 5);
        assert!(shape.code_bytes > 0 && shape.largest_function_bytes > 0, "{shape:?}");
        let binary = binary_abi_module(&[body_of(10)]);
        assert_eq!(precheck(&binary, &CompileLimits::default()).expect("passes").functions, 6);
        // The hand-written binary is a real module: the tests below rely on it.
        wasmtime::Module::new(&wasmtime::Engine::default(), &binary).expect("the binary module compiles");
    }

    #[test]
    fn the_dittofs_module_passes_the_defaults_with_a_wide_margin() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/modules/dittofs-reconciler.wasm");
        let Ok(bytes) = std::fs::read(path) else {
            println!("note: {path} is absent (build it with `make modules`); test skipped");
            return;
        };
        let limits = CompileLimits::default();
        let shape = precheck(&bytes, &limits).expect("the DittoFS module passes");
        println!("DittoFS module: {} bytes, {shape:?}", bytes.len());
        // Three times the module in every dimension must still pass.
        assert!(bytes.len() * 3 <= limits.max_module_bytes);
        assert!(u64::from(shape.functions) * 3 <= u64::from(limits.max_functions));
        assert!(shape.largest_function_bytes * 3 <= limits.max_function_body_bytes as usize);
        assert!(shape.code_bytes * 3 <= limits.max_total_code_bytes);
        assert!(shape.code_cost * 3 <= limits.max_code_cost);
    }

    #[test]
    fn oversized_bytes_are_refused_before_they_are_parsed() {
        let limits = CompileLimits { max_module_bytes: 1000, ..CompileLimits::default() };
        // Not wasm at all: the size is checked first.
        let err = refused(&[0xff; 1001], &limits);
        assert!(matches!(err, PrecheckError::TooLarge { size: 1001, limit: 1000 }), "{err}");
        assert_eq!(err.to_string(), "module is 1001 bytes, more than the limit of 1000");
        precheck(&abi_module(""), &limits).expect("a small module passes");
    }

    #[test]
    fn garbage_and_truncated_bytes_are_errors_not_panics() {
        for garbage in [
            &b""[..],
            b"\0asm",
            b"\0asm\x02\0\0\0",
            b"not wasm at all",
            b"\0asm\x01\0\0\0garbage after a valid header",
        ] {
            let err = refused(garbage, &CompileLimits::default());
            assert!(matches!(err, PrecheckError::Malformed(_)), "{garbage:?}: {err}");
        }
        // Every truncation of a valid module: refused (a prefix that ends between two
        // sections is a valid module that lacks what follows), never a panic.
        let bytes = binary_abi_module(&[body_of(40)]);
        for len in 0..bytes.len() {
            let _ = refused(&bytes[..len], &CompileLimits::default());
        }
        // Pseudo-random bytes after a valid header, deterministic.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut bytes = b"\0asm\x01\0\0\0".to_vec();
            for _ in 0..64 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(state as u8);
            }
            let _ = precheck(&bytes, &CompileLimits::default());
        }
    }

    #[test]
    fn a_component_is_refused() {
        let err = refused(&wat("(component)"), &CompileLimits::default());
        assert!(matches!(err, PrecheckError::Component), "{err}");
    }

    #[test]
    fn imports_are_refused_before_compiling_naming_them() {
        let bytes = wat(r#"(module
            (import "env" "log" (func (param i32 i32)))
            (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1))"#);
        let err = refused(&bytes, &CompileLimits::default());
        // The same message as the load check's (LoadError::Imports).
        assert_eq!(
            err.to_string(),
            "module has imports, but abi v1 modules import nothing: \
             env::log (function), wasi_snapshot_preview1::fd_write (function)"
        );

        let kinds = wat(r#"(module
            (import "env" "memory" (memory 1))
            (import "env" "table" (table 1 funcref))
            (import "env" "global" (global i32)))"#);
        let PrecheckError::Imports { imports } = refused(&kinds, &CompileLimits::default()) else {
            panic!("imports are refused")
        };
        assert_eq!(imports, ["env::memory (memory)", "env::table (table)", "env::global (global)"]);
    }

    #[test]
    fn a_module_with_many_imports_is_named_in_bounded_space() {
        let imports: String = (0..1000).map(|i| format!(r#"(import "env" "f{i}" (func))"#)).collect();
        let err = refused(
            &wat(&format!(r#"(module {imports} (memory (export "memory") 1))"#)),
            &CompileLimits::default(),
        );
        let PrecheckError::Imports { imports } = &err else { panic!("{err}") };
        assert_eq!(imports.len(), MAX_LISTED_IMPORTS + 1);
        assert_eq!(imports[0], "env::f0 (function)");
        assert_eq!(imports[MAX_LISTED_IMPORTS], format!("and {} more", 1000 - MAX_LISTED_IMPORTS));
    }

    #[test]
    fn sixty_thousand_functions_are_refused() {
        let bytes = binary_abi_module(&vec![vec![0, 0x0b]; 60_000]);
        let err = refused(&bytes, &CompileLimits::default());
        assert!(matches!(err, PrecheckError::TooManyFunctions { count: 60_005, limit: 50_000 }), "{err}");
        assert_eq!(err.to_string(), "module has 60005 functions, more than the limit of 50000");
        // The function count is the only rule the module breaks.
        precheck(&bytes, &CompileLimits { max_functions: 60_005, ..CompileLimits::default() })
            .expect("passes");
    }

    #[test]
    fn a_compile_bomb_is_refused_quickly_by_the_body_size_limit() {
        // One function of 8 MiB of `i32.const 0; drop`.
        let bytes = binary_abi_module(&[body_of(8 * MIB)]);
        let started = Instant::now();
        let err = refused(&bytes, &CompileLimits { max_module_bytes: 16 * MIB, ..CompileLimits::default() });
        let elapsed = started.elapsed();
        let PrecheckError::FunctionTooLarge { index: 5, size, limit } = err else { panic!("{err}") };
        assert_eq!((size, limit), (8 * MIB, 64 * KIB as u32));
        // Far from what compiling it would take; generous for slow debug builds.
        assert!(elapsed < Duration::from_secs(2), "precheck took {elapsed:?}");
        // The body size is what refuses it.
        let limits = CompileLimits { max_function_body_bytes: u32::MAX, ..unlimited() };
        precheck(&bytes, &limits).expect("passes without the body limit");

        // The pattern that is really costly: sequential loops (measured: 12 s for
        // 64 KiB, 50 s for 128 KiB). One of 1 MiB would take many minutes.
        let mut loops = vec![0];
        while loops.len() + 7 < MIB {
            // loop; i32.const 0; br_if 0; end
            loops.extend_from_slice(&[0x03, 0x40, 0x41, 0, 0x0d, 0, 0x0b]);
        }
        loops.push(0x0b);
        let err = refused(&binary_abi_module(&[loops]), &CompileLimits::default());
        assert!(matches!(err, PrecheckError::FunctionTooLarge { index: 5, .. }), "{err}");
    }

    #[test]
    fn the_first_function_over_the_limit_is_named() {
        let bytes = binary_abi_module(&[body_of(100), body_of(300), body_of(200), body_of(400)]);
        let limits = CompileLimits { max_function_body_bytes: 150, ..CompileLimits::default() };
        let err = refused(&bytes, &limits);
        assert!(matches!(err, PrecheckError::FunctionTooLarge { index: 6, size: 300, limit: 150 }), "{err}");
        assert_eq!(err.to_string(), "function 6 is 300 bytes, more than the limit of 150");
    }

    #[test]
    fn too_much_code_in_total_is_refused() {
        let bytes = binary_abi_module(&vec![body_of(1000); 20]);
        let limits = CompileLimits { max_total_code_bytes: 10_000, ..CompileLimits::default() };
        let err = refused(&bytes, &limits);
        let PrecheckError::CodeTooLarge { size, limit: 10_000 } = err else { panic!("{err}") };
        assert!(size > 20_000, "{size}");
        precheck(&bytes, &CompileLimits { max_total_code_bytes: size, ..limits })
            .expect("passes at the limit");
    }

    #[test]
    fn costly_code_is_refused() {
        // Nine bodies of 64 KiB fit every other default limit, but cost more than
        // eight of them.
        let bytes = binary_abi_module(&vec![body_of(64 * KIB); 9]);
        let err = refused(&bytes, &CompileLimits::default());
        let PrecheckError::CodeTooCostly { cost, limit } = err else { panic!("{err}") };
        assert_eq!(limit, 1 << 35);
        assert!(cost > 9 * (1 << 32), "{cost}");
        // Seven, and the five small ABI functions, pass.
        let seven = binary_abi_module(&vec![body_of(64 * KIB); 7]);
        let shape = precheck(&seven, &CompileLimits::default()).expect("seven pass");
        assert!(shape.code_cost > 7 * (1 << 32), "{shape:?}");
    }

    #[test]
    fn exactly_one_32_bit_unshared_memory_is_required() {
        let functions = r#"(func (export "reconcile_abi_version") (result i32) (i32.const 1))"#;
        let none = wat(&format!("(module {functions})"));
        let err = refused(&none, &CompileLimits::default());
        assert!(matches!(err, PrecheckError::MemoryCount { count: 0 }), "{err}");

        let two = abi_module("(memory 1)");
        let err = refused(&two, &CompileLimits::default());
        assert!(matches!(err, PrecheckError::MemoryCount { count: 2 }), "{err}");
        assert_eq!(err.to_string(), "module has 2 memories, but abi v1 modules have exactly one");

        let memory64 = wat(&format!(r#"(module (memory (export "memory") i64 1) {functions})"#));
        let err = refused(&memory64, &CompileLimits::default());
        assert!(matches!(err, PrecheckError::MemoryType { found: "a 64-bit memory" }), "{err}");
        assert_eq!(err.to_string(), "module memory is a 64-bit memory, expected a 32-bit unshared memory");

        let shared = wat(&format!(r#"(module (memory (export "memory") 1 1 shared) {functions})"#));
        let err = refused(&shared, &CompileLimits::default());
        assert!(matches!(err, PrecheckError::MemoryType { found: "a shared memory" }), "{err}");
    }

    #[test]
    fn the_memory_must_be_exported_as_memory() {
        // The module of the load checks' own test (host/tests/sandbox.rs).
        let bytes = wat(
            r#"(module (memory (export "mem") 1) (func (export "reconcile_abi_version") (result i32) (i32.const 1)))"#,
        );
        let err = refused(&bytes, &CompileLimits::default());
        assert!(matches!(err, PrecheckError::MissingExport { name: "memory", .. }), "{err}");
        assert_eq!(err.to_string(), "module does not export `memory` (a 32-bit unshared memory)");

        let global = wat(r#"(module
            (memory 1)
            (global (export "memory") i32 (i32.const 0))
            (func (export "reconcile_abi_version") (result i32) (i32.const 1)))"#);
        let err = refused(&global, &CompileLimits::default());
        assert_eq!(err.to_string(), "module export `memory` is global, expected a 32-bit unshared memory");
    }

    #[test]
    fn reconcile_abi_version_must_have_its_exact_type() {
        let missing = wat(r#"(module (memory (export "memory") 1))"#);
        let err = refused(&missing, &CompileLimits::default());
        assert_eq!(err.to_string(), "module does not export `reconcile_abi_version` (() -> i32)");

        let mistyped = wat(r#"(module
            (memory (export "memory") 1)
            (func (export "reconcile_abi_version") (param i32) (result i32) (i32.const 1)))"#);
        let err = refused(&mistyped, &CompileLimits::default());
        assert_eq!(
            err.to_string(),
            "module export `reconcile_abi_version` is (i32) -> i32, expected () -> i32"
        );

        let no_result = wat(r#"(module
            (memory (export "memory") 1)
            (func (export "reconcile_abi_version")))"#);
        let err = refused(&no_result, &CompileLimits::default());
        assert_eq!(err.to_string(), "module export `reconcile_abi_version` is () -> (), expected () -> i32");

        let table = wat(r#"(module
            (memory (export "memory") 1)
            (table (export "reconcile_abi_version") 1 funcref))"#);
        let err = refused(&table, &CompileLimits::default());
        assert_eq!(err.to_string(), "module export `reconcile_abi_version` is table, expected () -> i32");
    }

    #[test]
    fn the_other_functions_are_left_to_the_load_checks() {
        // A module of another ABI, with other functions: refused later for its
        // version (LoadError::WrongAbi), not here for a missing export.
        let abi2 = wat(r#"(module
            (memory (export "memory") 1)
            (func (export "reconcile_abi_version") (result i32) (i32.const 2))
            (func (export "reconcile_v2") (param i64) (result i64) (local.get 0)))"#);
        precheck(&abi2, &CompileLimits::default()).expect("passes");
    }

    #[test]
    fn a_dangling_export_is_refused() {
        // Not valid wasm (`wat` checks syntax, not validity); wasmtime would refuse it
        // when compiling.
        let mut bytes = binary_abi_module(&[]);
        // The export section's `reconcile_abi_version` entry names function 0: point
        // it past the five functions.
        let entry = b"\x15reconcile_abi_version\x00\x00";
        let at = bytes.windows(entry.len()).position(|w| w == entry).expect("export entry");
        bytes[at + entry.len() - 1] = 9;
        let err = refused(&bytes, &CompileLimits::default());
        assert!(matches!(err, PrecheckError::Dangling { what: "function", index: 9 }), "{err}");
    }

    #[test]
    fn the_first_failing_check_is_reported() {
        // Imports, too many functions and no memory: the imports are named.
        let mut source = String::from(r#"(module (import "env" "f" (func))"#);
        source.extend((0..100).map(|_| "(func)"));
        source.push(')');
        let limits = CompileLimits { max_functions: 10, ..CompileLimits::default() };
        assert!(matches!(refused(&wat(&source), &limits), PrecheckError::Imports { .. }));
        // Too many functions, one too large, too much code: the function count.
        let bytes = binary_abi_module(&[body_of(5000), body_of(10)]);
        let limits = CompileLimits {
            max_functions: 6,
            max_function_body_bytes: 1000,
            max_total_code_bytes: 1000,
            ..CompileLimits::default()
        };
        assert!(matches!(refused(&bytes, &limits), PrecheckError::TooManyFunctions { .. }));
        // Malformed after an import: malformed.
        let mut bytes = wat(r#"(module (import "env" "f" (func)))"#);
        bytes.extend_from_slice(b"\x0btruncated");
        assert!(matches!(refused(&bytes, &CompileLimits::default()), PrecheckError::Malformed(_)));
    }

    #[test]
    fn compilation_gives_up_at_the_timeout() {
        // Big enough that compiling takes far longer than starting a thread.
        let bytes = binary_abi_module(&vec![body_of(2000); 500]);
        let engine = wasmtime::Engine::default();
        for timeout in [Duration::ZERO, Duration::from_nanos(1)] {
            let started = Instant::now();
            let err = compile_with_timeout(&engine, &bytes, timeout).expect_err("times out");
            assert!(matches!(err, CompileError::Timeout { timeout: t } if t == timeout), "{err}");
            assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        }
        let module = compile_with_timeout(&engine, &bytes, Duration::from_secs(600)).expect("compiles");
        assert!(module.get_export("reconcile").is_some());
    }

    #[test]
    fn a_module_wasmtime_refuses_is_a_compile_error() {
        let engine = wasmtime::Engine::default();
        let err = compile_with_timeout(&engine, b"\0asm\x01\0\0\0garbage", Duration::from_secs(600))
            .expect_err("refused");
        assert!(matches!(err, CompileError::Refused(_)), "{err}");
    }
}
