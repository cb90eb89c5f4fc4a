//! The limits of the sandbox every module call runs in (docs/abi.md, *Sandbox limits*).
//!
//! [`SandboxLimits`] is plain data: the engine reads the stack limit once when it is
//! built, and every call reads the rest when it creates its store. The defaults are
//! the contract's (docs/abi.md, *Sandbox limits*): 64 MiB of linear memory, a 250 ms
//! wall-clock deadline, 4 MiB of output. [`SandboxLimits::validate`] (which
//! [`SandboxEngine::new`](super::SandboxEngine::new) runs) refuses a limit the sandbox
//! cannot honour at start-up, rather than mid-call.

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
    /// Maximum number of JSON values in one outcome, counted on its text before it is
    /// decoded: decoding costs memory per value (tens of bytes each), so within the
    /// size limit a dense outcome (`[0,0,…]`) would decode into tens of times its size.
    pub output_values: usize,
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
            output_values: 100_000,
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
    /// The limit of values per outcome is zero.
    #[error("limit of values per outcome must be at least 1")]
    OutputValues,
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

impl SandboxLimits {
    /// Checks that the sandbox can honour these limits, so that a bad limit is refused
    /// at start-up rather than discovered mid-call.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.memory_bytes == 0 || self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(LimitsError::Memory { mib: units(self.memory_bytes, MIB) });
        }
        if self.deadline.is_zero() {
            return Err(LimitsError::Deadline);
        }
        if self.output_bytes == 0 || self.output_bytes > self.memory_bytes {
            return Err(LimitsError::Output { mib: units(self.output_bytes, MIB) });
        }
        if self.output_values == 0 {
            return Err(LimitsError::OutputValues);
        }
        if !(MIN_STACK_BYTES..=MAX_STACK_BYTES).contains(&self.stack_bytes) {
            return Err(LimitsError::Stack { kib: units(self.stack_bytes, KIB) });
        }
        Ok(())
    }
}

fn units(bytes: usize, unit: u64) -> u64 {
    u64::try_from(bytes).unwrap_or(u64::MAX) / unit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(memory_mib: u64, deadline_ms: u64, output_mib: u64, stack_kib: u64) -> SandboxLimits {
        let bytes = |count: u64, unit: u64| usize::try_from(count.saturating_mul(unit)).unwrap_or(usize::MAX);
        SandboxLimits {
            memory_bytes: bytes(memory_mib, MIB),
            deadline: Duration::from_millis(deadline_ms),
            output_bytes: bytes(output_mib, MIB),
            stack_bytes: bytes(stack_kib, KIB),
            ..SandboxLimits::default()
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(SandboxLimits::default().validate().is_ok());
        assert_eq!(limits(64, 250, 4, 512), SandboxLimits::default());
    }

    #[test]
    fn limits_the_sandbox_cannot_honour_are_refused() {
        let cases = [
            (limits(0, 250, 4, 512), "memory limit of 0 MiB"),
            (limits(4097, 250, 4, 512), "memory limit of 4097 MiB"),
            (limits(u64::MAX, 250, 4, 512), "memory limit of"),
            (limits(64, 0, 4, 512), "deadline"),
            (limits(64, 250, 0, 512), "output limit of 0 MiB"),
            (limits(8, 250, 16, 512), "output limit of 16 MiB"),
            (limits(64, 250, 4, 8), "stack limit of 8 KiB"),
            (limits(64, 250, 4, 8192), "stack limit of 8192 KiB"),
        ];
        for (limits, expected) in cases {
            let err = limits.validate().expect_err("limit is refused");
            assert!(err.to_string().contains(expected), "{err} lacks {expected:?}");
        }
    }
}
