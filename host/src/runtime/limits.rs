//! The limits of the sandbox every module call runs in (DESIGN.md §3, *Sandbox*).
//!
//! [`SandboxLimits`] is plain data: the engine reads the stack limit once when it is
//! built, and every call reads the rest when it creates its store. The defaults are
//! DESIGN's: 64 MiB of linear memory, a 250 ms wall-clock deadline, 4 MiB of output.
//! Converting the command line's [`SandboxArgs`] checks the values, so that a limit
//! the sandbox cannot honour is refused at start-up rather than discovered mid-call.

use crate::cli::SandboxArgs;
use std::time::Duration;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Linear memory a wasm32 module can address at most (65536 pages of 64 KiB).
pub const MAX_MEMORY_BYTES: usize = 4 << 30;

/// The largest wasm stack a call may use.
///
/// Guest code runs on the calling thread's native stack. Tokio's blocking threads,
/// where the operator's calls run, have 2 MiB stacks, and the host's own frames (and
/// wasmtime's libcalls, which run beyond the wasm limit) need room too; a larger
/// limit could let a deep recursion overflow the native stack, which kills the
/// process instead of trapping.
pub const MAX_STACK_BYTES: usize = (MIB as usize) + (MIB as usize / 2);

/// The smallest wasm stack a call may use: below this even small modules trap.
pub const MIN_STACK_BYTES: usize = 64 * KIB as usize;

/// What a single module call may consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Maximum size of the instance's linear memory, in bytes. Growing past it traps
    /// (rather than making `memory.grow` return -1), so that a call that needs more
    /// fails at once with [`CallError::MemoryLimit`](super::CallError::MemoryLimit).
    pub memory_bytes: usize,
    /// Wall-clock deadline of one call, enforced by epoch interruption with the
    /// granularity of the engine's epoch tick.
    pub deadline: Duration,
    /// Maximum size of one output (manifest or outcome), in bytes.
    pub output_bytes: usize,
    /// Maximum wasm stack of one call, in bytes.
    pub stack_bytes: usize,
    /// Maximum number of elements of a table (the function table of a Rust module
    /// holds one per address-taken function: a few hundred to a few thousand).
    pub table_elements: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 * MIB as usize,
            deadline: Duration::from_millis(250),
            output_bytes: 4 * MIB as usize,
            stack_bytes: 512 * KIB as usize,
            table_elements: 10_000,
        }
    }
}

/// A limit on the command line that the sandbox cannot honour.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The memory limit is zero or larger than wasm32 can address.
    #[error("memory limit of {mib} MiB is out of range (1 to {} MiB)", MAX_MEMORY_BYTES as u64 / MIB)]
    Memory {
        /// The limit given.
        mib: u64,
    },
    /// The deadline is zero.
    #[error("deadline must be at least 1 ms")]
    Deadline,
    /// The output limit is zero or larger than the memory limit.
    #[error("output limit of {mib} MiB is out of range (1 MiB to the memory limit)")]
    Output {
        /// The limit given.
        mib: u64,
    },
    /// The stack limit is too small to be useful or too large to be safe.
    #[error(
        "stack limit of {kib} KiB is out of range ({} to {} KiB)",
        MIN_STACK_BYTES as u64 / KIB,
        MAX_STACK_BYTES as u64 / KIB
    )]
    Stack {
        /// The limit given.
        kib: u64,
    },
}

impl TryFrom<&SandboxArgs> for SandboxLimits {
    type Error = LimitsError;

    fn try_from(args: &SandboxArgs) -> Result<Self, LimitsError> {
        let memory_bytes = bytes(args.memory_limit_mib, MIB)
            .filter(|&b| b > 0 && b <= MAX_MEMORY_BYTES)
            .ok_or(LimitsError::Memory { mib: args.memory_limit_mib })?;
        if args.deadline_ms == 0 {
            return Err(LimitsError::Deadline);
        }
        let output_bytes = bytes(args.output_limit_mib, MIB)
            .filter(|&b| b > 0 && b <= memory_bytes)
            .ok_or(LimitsError::Output { mib: args.output_limit_mib })?;
        let stack_bytes = bytes(args.stack_limit_kib, KIB)
            .filter(|b| (MIN_STACK_BYTES..=MAX_STACK_BYTES).contains(b))
            .ok_or(LimitsError::Stack { kib: args.stack_limit_kib })?;
        Ok(Self {
            memory_bytes,
            deadline: Duration::from_millis(args.deadline_ms),
            output_bytes,
            stack_bytes,
            ..Self::default()
        })
    }
}

fn bytes(count: u64, unit: u64) -> Option<usize> {
    count.checked_mul(unit).and_then(|b| usize::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(memory: u64, deadline: u64, output: u64, stack: u64) -> SandboxArgs {
        SandboxArgs {
            memory_limit_mib: memory,
            deadline_ms: deadline,
            output_limit_mib: output,
            stack_limit_kib: stack,
            module_cache_dir: None,
            no_module_cache: false,
        }
    }

    #[test]
    fn command_line_defaults_are_the_design_defaults() {
        let limits = SandboxLimits::try_from(&args(64, 250, 4, 512)).expect("defaults are valid");
        assert_eq!(limits, SandboxLimits::default());
    }

    #[test]
    fn limits_the_sandbox_cannot_honour_are_refused() {
        let cases = [
            (args(0, 250, 4, 512), "memory limit of 0 MiB"),
            (args(4097, 250, 4, 512), "memory limit of 4097 MiB"),
            (args(u64::MAX, 250, 4, 512), "memory limit of"),
            (args(64, 0, 4, 512), "deadline"),
            (args(64, 250, 0, 512), "output limit of 0 MiB"),
            (args(8, 250, 16, 512), "output limit of 16 MiB"),
            (args(64, 250, 4, 8), "stack limit of 8 KiB"),
            (args(64, 250, 4, 8192), "stack limit of 8192 KiB"),
        ];
        for (args, expected) in cases {
            let err = SandboxLimits::try_from(&args).expect_err("limit is refused");
            assert!(err.to_string().contains(expected), "{err} lacks {expected:?}");
        }
    }
}
