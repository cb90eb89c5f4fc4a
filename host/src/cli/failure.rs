//! The one way a subcommand fails: an exit status and one line on stderr,
//! `error: <reason>`.
//!
//! Exit statuses:
//! - 1: the module failed or was refused (`reconcile`, `manifest`, `rbac`,
//!   `module push`), or the operator or capture failed (`run`, `snapshot`);
//! - 2: the host could not try (bad limits, an unreadable file, no cluster, a broken
//!   stdout).

use crate::{error_chain, one_line};
use std::fmt::Display;
use std::process::ExitCode;

/// The module failed or was refused; `run` or `snapshot` failed.
pub const FAILED: u8 = 1;
/// The host could not try.
pub const CANNOT_RUN: u8 = 2;

/// A failure to report.
#[derive(Debug)]
pub struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    /// Exit status 1 with `reason`.
    pub fn failed(reason: impl Display) -> Self {
        Self { status: FAILED, message: reason.to_string() }
    }

    /// Exit status 2 with `reason`.
    pub fn cannot_run(reason: impl Display) -> Self {
        Self { status: CANNOT_RUN, message: reason.to_string() }
    }

    /// Exit status 1 with `context: <the error's chain>`, or just the chain.
    pub fn failed_with(context: Option<&str>, err: &dyn std::error::Error) -> Self {
        Self::failed(with_context(context, err))
    }

    /// Exit status 2 with `context: <the error's chain>`, or just the chain.
    pub fn cannot_run_with(context: Option<&str>, err: &dyn std::error::Error) -> Self {
        Self::cannot_run(with_context(context, err))
    }

    /// The reason, on one line.
    pub fn message(&self) -> String {
        one_line(&self.message)
    }

    /// Prints `error: <reason>` (one line, whatever the reason held: wasmtime's texts
    /// may span several) and returns the exit status.
    pub fn report(self) -> ExitCode {
        eprintln!("error: {}", self.message());
        ExitCode::from(self.status)
    }
}

fn with_context(context: Option<&str>, err: &dyn std::error::Error) -> String {
    match context {
        Some(context) => format!("{context}: {}", error_chain(err)),
        None => error_chain(err),
    }
}
