//! One sandboxed module call: a fresh store and instance, the ABI v1 buffer protocol,
//! and the typed errors of everything a hostile module can do wrong.
//!
//! Guarantees:
//! - Every call gets a new [`Store`] and instance from the module's one
//!   [`InstancePre`]: nothing a call leaves in guest memory is seen by the next.
//! - The store is capped: linear memory ([`SandboxLimits::memory_bytes`]; growing
//!   past it traps), one memory, one table of bounded size, one instance, and a
//!   wall-clock deadline by epoch interruption.
//! - Guest memory is hostile: every pointer and length the module returns is checked
//!   against the output limit and the memory's current size before a byte is copied,
//!   in `u64` arithmetic, so no value can overflow, read out of bounds or panic.
//! - A trap, a timeout or bad output is a [`CallError`], never a host panic.

use super::limits::SandboxLimits;
use reconcile_sdk::Outcome;
use std::fmt;
use std::time::{Duration, Instant};
use wasmtime::{
    Extern, Instance, InstancePre, Memory, ModuleExport, ResourceLimiter, Store, Trap, TypedFunc,
};

/// Which step of a call failed; named after the export being run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStage {
    /// Creating the instance (memory, tables, data segments).
    Instantiate,
    /// `reconcile_abi_version`.
    AbiVersion,
    /// `reconcile_manifest`.
    Manifest,
    /// `reconcile_alloc`, for the input buffer.
    Alloc,
    /// `reconcile`.
    Reconcile,
    /// `reconcile_free`, for the output buffer.
    Free,
}

impl fmt::Display for CallStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallStage::Instantiate => "instantiation",
            CallStage::AbiVersion => "reconcile_abi_version",
            CallStage::Manifest => "reconcile_manifest",
            CallStage::Alloc => "reconcile_alloc",
            CallStage::Reconcile => "reconcile",
            CallStage::Free => "reconcile_free",
        })
    }
}

/// Why a module call failed. Every variant but [`CallError::Host`] and
/// [`CallError::InputTooLarge`] is the module's fault.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call ran past its wall-clock deadline.
    #[error("module exceeded its {} ms deadline in {stage}", deadline.as_millis())]
    DeadlineExceeded {
        /// Where it was interrupted.
        stage: CallStage,
        /// The deadline.
        deadline: Duration,
    },
    /// The module tried to grow its memory past the limit.
    #[error("module exceeded its memory limit of {} MiB in {stage} (asked for {requested} bytes)", limit >> 20)]
    MemoryLimit {
        /// Where.
        stage: CallStage,
        /// The limit in bytes.
        limit: usize,
        /// The size it asked for, in bytes.
        requested: usize,
    },
    /// The module tried to grow a table past the limit.
    #[error("module exceeded its table limit of {limit} elements in {stage} (asked for {requested})")]
    TableLimit {
        /// Where.
        stage: CallStage,
        /// The limit in elements.
        limit: usize,
        /// The size it asked for.
        requested: usize,
    },
    /// The module trapped (`unreachable`, a Rust panic, out-of-bounds access, stack
    /// overflow, ...).
    #[error("module trapped in {stage}: {message}")]
    Trap {
        /// Where.
        stage: CallStage,
        /// wasmtime's description of the trap.
        message: String,
    },
    /// `reconcile_alloc` returned 0.
    #[error("module could not allocate {len} bytes for the input (reconcile_alloc returned 0)")]
    AllocationFailed {
        /// The size asked for.
        len: usize,
    },
    /// A buffer the module handed over is not inside its memory.
    #[error(
        "module returned a buffer outside its memory from {stage}: ptr {ptr:#x}, len {len}, memory {memory_size} bytes"
    )]
    BadPointer {
        /// Which export returned it.
        stage: CallStage,
        /// The pointer.
        ptr: u32,
        /// The length.
        len: u32,
        /// The memory's size when it was checked.
        memory_size: usize,
    },
    /// The module's output is larger than the output limit.
    #[error("module output of {len} bytes from {stage} exceeds the limit of {limit} bytes")]
    OutputTooLarge {
        /// Which export returned it.
        stage: CallStage,
        /// Its length.
        len: u64,
        /// The limit in bytes.
        limit: usize,
    },
    /// The outcome holds more JSON values than the limit; refused before decoding.
    #[error("module outcome has more than {limit} JSON values")]
    TooManyValues {
        /// The limit.
        limit: usize,
    },
    /// The module's output is not UTF-8.
    #[error("module output from {stage} is not UTF-8")]
    InvalidUtf8 {
        /// Which export returned it.
        stage: CallStage,
        /// Where the bytes went wrong.
        #[source]
        source: std::str::Utf8Error,
    },
    /// The module's output is not JSON.
    #[error("module output from {stage} is not JSON")]
    InvalidJson {
        /// Which export returned it.
        stage: CallStage,
        /// serde's description.
        #[source]
        source: serde_json::Error,
    },
    /// The module's output is JSON but not an ABI v1 Outcome.
    #[error("module output is not a valid outcome")]
    InvalidOutcome(#[source] serde_json::Error),
    /// The input does not fit a wasm32 buffer or the memory limit.
    #[error("input of {len} bytes is larger than the module's memory limit")]
    InputTooLarge {
        /// Its length.
        len: usize,
    },
    /// wasmtime failed for a reason that is not the module's (an exhausted instance
    /// pool, an I/O error mapping memory), or the call's task died.
    #[error("host error in {stage}: {message}")]
    Host {
        /// Where.
        stage: CallStage,
        /// What happened.
        message: String,
    },
}

/// A successful `reconcile` call.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The outcome, decoded strictly.
    pub outcome: Outcome,
    /// The module's output exactly as it returned it (valid UTF-8 JSON).
    pub json: String,
    /// Wall-clock time of the wasm call: instantiation, copy-in, `reconcile`,
    /// copy-out, `reconcile_free` and decoding.
    pub elapsed: Duration,
}

/// What a store carries: the limiter and what it saw.
pub(crate) struct CallState {
    limiter: SandboxLimiter,
}

/// Caps memories and tables, and remembers a refusal so that the resulting trap is
/// reported as the limit it is rather than as a generic error.
struct SandboxLimiter {
    memory_bytes: usize,
    table_elements: usize,
    refused: Option<DeniedGrowth>,
}

#[derive(Debug, Clone, Copy)]
enum DeniedGrowth {
    Memory { requested: usize },
    Table { requested: usize },
}

/// The error a refused growth traps with; its text is what wasmtime reports.
#[derive(Debug, thiserror::Error)]
#[error("resource limit exceeded")]
struct LimitExceeded;

impl ResourceLimiter for SandboxLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            // Trap rather than fail the grow: a module out of memory cannot reconcile,
            // and a loop that ignores `memory.grow` returning -1 would otherwise spin
            // until the deadline.
            self.refused = Some(DeniedGrowth::Memory { requested: desired });
            return Err(wasmtime::Error::new(LimitExceeded));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.refused = Some(DeniedGrowth::Table { requested: desired });
            return Err(wasmtime::Error::new(LimitExceeded));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// The typed entry points of one compiled module version, resolved once at load.
pub(crate) struct Program {
    pre: InstancePre<CallState>,
    memory: ModuleExport,
    abi_version: ModuleExport,
    alloc: ModuleExport,
    free: ModuleExport,
    manifest: ModuleExport,
    reconcile: ModuleExport,
    limits: SandboxLimits,
    deadline_ticks: u64,
}

/// Export indices of a module, as `Program::new` needs them.
#[derive(Clone, Copy)]
pub(crate) struct ExportIndices {
    pub memory: ModuleExport,
    pub abi_version: ModuleExport,
    pub alloc: ModuleExport,
    pub free: ModuleExport,
    pub manifest: ModuleExport,
    pub reconcile: ModuleExport,
}

/// A live instance in its own store, for the duration of one call.
pub(crate) struct Call<'p> {
    program: &'p Program,
    store: Store<CallState>,
    instance: Instance,
    memory: Memory,
}

impl Program {
    pub(crate) fn new(
        pre: InstancePre<CallState>,
        exports: ExportIndices,
        limits: SandboxLimits,
        deadline_ticks: u64,
    ) -> Self {
        let ExportIndices { memory, abi_version, alloc, free, manifest, reconcile } = exports;
        Self { pre, memory, abi_version, alloc, free, manifest, reconcile, limits, deadline_ticks }
    }

    /// A fresh store and instance, its deadline running from now.
    pub(crate) fn instantiate(&self) -> Result<Call<'_>, CallError> {
        let state = CallState {
            limiter: SandboxLimiter {
                memory_bytes: self.limits.memory_bytes,
                table_elements: self.limits.table_elements,
                refused: None,
            },
        };
        let mut store = Store::new(self.pre.module().engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.deadline_ticks);
        store.epoch_deadline_trap();
        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(err) => return Err(classify(&store, &self.limits, CallStage::Instantiate, &err)),
        };
        let memory = match instance.get_module_export(&mut store, &self.memory) {
            Some(Extern::Memory(memory)) => memory,
            // Checked at load; a mismatch here is a host bug, reported, not a panic.
            _ => return Err(host(CallStage::Instantiate, "the `memory` export is missing")),
        };
        Ok(Call { program: self, store, instance, memory })
    }

    /// The whole `reconcile` protocol in a fresh instance.
    pub(crate) fn reconcile(&self, input: &[u8]) -> Result<Reply, CallError> {
        let started = Instant::now();
        if input.len() > self.limits.memory_bytes {
            return Err(CallError::InputTooLarge { len: input.len() });
        }
        let mut call = self.instantiate()?;
        let ptr = call.write_input(input)?;
        // Input length fits i32: it is at most the memory limit, at most 4 GiB, and
        // `write_input` refused anything beyond i32.
        let len = input.len() as i32;
        let packed = call.invoke::<(i32, i32), i64>(CallStage::Reconcile, &self.reconcile, (ptr, len))?;
        let output = call.take_output(CallStage::Reconcile, packed)?;
        // The instance (up to the memory limit) is released before decoding, which
        // needs memory of its own.
        drop(call);
        let json = String::from_utf8(output).map_err(|err| CallError::InvalidUtf8 {
            stage: CallStage::Reconcile,
            source: err.utf8_error(),
        })?;
        check_value_count(&json, self.limits.output_values)?;
        let outcome = decode_outcome(&json)?;
        Ok(Reply { outcome, json, elapsed: started.elapsed() })
    }
}

impl Call<'_> {
    /// Calls `reconcile_abi_version`.
    pub(crate) fn abi_version(&mut self) -> Result<i32, CallError> {
        let program = self.program;
        self.invoke::<(), i32>(CallStage::AbiVersion, &program.abi_version, ())
    }

    /// Calls `reconcile_manifest` and returns its output, freed in the guest.
    pub(crate) fn manifest(&mut self) -> Result<String, CallError> {
        let program = self.program;
        let packed = self.invoke::<(), i64>(CallStage::Manifest, &program.manifest, ())?;
        let output = self.take_output(CallStage::Manifest, packed)?;
        String::from_utf8(output)
            .map_err(|err| CallError::InvalidUtf8 { stage: CallStage::Manifest, source: err.utf8_error() })
    }

    /// Copies `input` into a buffer from `reconcile_alloc`; returns its address.
    fn write_input(&mut self, input: &[u8]) -> Result<i32, CallError> {
        let len = i32::try_from(input.len()).map_err(|_| CallError::InputTooLarge { len: input.len() })?;
        let program = self.program;
        let ptr = self.invoke::<i32, i32>(CallStage::Alloc, &program.alloc, len)?;
        if ptr == 0 {
            return Err(CallError::AllocationFailed { len: input.len() });
        }
        let start = ptr as u32 as usize;
        let memory_size = self.memory.data_size(&self.store);
        let in_bounds = start.checked_add(input.len()).is_some_and(|end| end <= memory_size);
        if !in_bounds {
            return Err(CallError::BadPointer {
                stage: CallStage::Alloc,
                ptr: ptr as u32,
                len: len as u32,
                memory_size,
            });
        }
        self.memory
            .write(&mut self.store, start, input)
            .map_err(|err| host(CallStage::Alloc, &err.to_string()))?;
        Ok(ptr)
    }

    /// Copies out the `(ptr << 32) | len` buffer a call returned, then frees it.
    fn take_output(&mut self, stage: CallStage, packed: i64) -> Result<Vec<u8>, CallError> {
        let packed = packed as u64;
        let (ptr, len) = ((packed >> 32) as u32, packed as u32);
        let limit = self.program.limits.output_bytes;
        if len as usize > limit {
            return Err(CallError::OutputTooLarge { stage, len: len.into(), limit });
        }
        let memory_size = self.memory.data_size(&self.store);
        let (start, end) = (u64::from(ptr), u64::from(ptr) + u64::from(len));
        let bytes = (ptr != 0 && end <= memory_size as u64)
            .then(|| self.memory.data(&self.store).get(start as usize..end as usize))
            .flatten()
            .ok_or(CallError::BadPointer { stage, ptr, len, memory_size })?
            .to_vec();
        let program = self.program;
        self.invoke::<(i32, i32), ()>(CallStage::Free, &program.free, (ptr as i32, len as i32))?;
        Ok(bytes)
    }

    fn invoke<P, R>(&mut self, stage: CallStage, export: &ModuleExport, params: P) -> Result<R, CallError>
    where
        P: wasmtime::WasmParams,
        R: wasmtime::WasmResults,
    {
        let func: TypedFunc<P, R> = match self.instance.get_module_export(&mut self.store, export) {
            Some(Extern::Func(func)) => func
                .typed(&self.store)
                .map_err(|err| host(stage, &format!("export has the wrong type: {err}")))?,
            _ => return Err(host(stage, "the export is missing")),
        };
        func.call(&mut self.store, params)
            .map_err(|err| classify(&self.store, &self.program.limits, stage, &err))
    }
}

/// Tells what kind of failure a wasmtime error is.
fn classify(
    store: &Store<CallState>,
    limits: &SandboxLimits,
    stage: CallStage,
    err: &wasmtime::Error,
) -> CallError {
    match store.data().limiter.refused {
        Some(DeniedGrowth::Memory { requested }) => {
            return CallError::MemoryLimit { stage, limit: limits.memory_bytes, requested };
        }
        Some(DeniedGrowth::Table { requested }) => {
            return CallError::TableLimit { stage, limit: limits.table_elements, requested };
        }
        None => {}
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::DeadlineExceeded { stage, deadline: limits.deadline },
        Some(trap) => CallError::Trap { stage, message: trap.to_string() },
        None => host(stage, &crate::one_line(&format!("{err:#}"))),
    }
}

fn host(stage: CallStage, message: &str) -> CallError {
    CallError::Host { stage, message: message.to_owned() }
}

/// Refuses JSON text with more than `limit` values, counting without decoding: the
/// top-level value, and one for each `{`, `[` and `,` outside strings (which starts
/// a value, or for an empty container, counts one too many). Stops at the limit.
fn check_value_count(json: &str, limit: usize) -> Result<(), CallError> {
    let (mut values, mut in_string, mut escaped) = (1usize, false, false);
    for &byte in json.as_bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' | b',' => {
                values += 1;
                if values > limit {
                    return Err(CallError::TooManyValues { limit });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decodes an outcome strictly, telling non-JSON from JSON that is no outcome.
pub(crate) fn decode_outcome(json: &str) -> Result<Outcome, CallError> {
    use serde_json::error::Category;
    serde_json::from_str(json).map_err(|err| match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            CallError::InvalidJson { stage: CallStage::Reconcile, source: err }
        }
        Category::Data => CallError::InvalidOutcome(err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_outside_strings_and_stop_at_the_limit() {
        let count_within = |json: &str, limit| check_value_count(json, limit).is_ok();
        // The top-level value, the array, three numbers.
        let json = r#"{"n":[1,2,3]}"#;
        assert!(count_within(json, 5));
        assert!(!count_within(json, 4));
        // Brackets, commas and escaped quotes inside strings are text, not values: the
        // object and its one string.
        let json = r#"{"s":"{[,\",[{,\\"}"#;
        assert!(count_within(json, 2));
        assert!(!count_within(json, 1));
        assert!(matches!(check_value_count("[0,0,0]", 3), Err(CallError::TooManyValues { limit: 3 })));
        assert!(count_within("[0,0,0]", 4));
    }
}
