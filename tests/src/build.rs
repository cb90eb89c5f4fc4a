//! Nested builds from inside a test (`make wasm`, `cargo build -p ...`).

use crate::cluster::repo_root;
use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// A command for `make`, cargo or a built tool, run at the repository root, without
/// the variables cargo and make set for the running test: some build scripts (ring's)
/// watch `CARGO_MANIFEST_DIR`, and seeing the test's values would make every nested
/// build recompile. Its output goes to stderr, where the test harness captures it.
pub fn build_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_for_tests = key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "MAKEFLAGS"
                    | "MFLAGS"
                    | "MAKELEVEL"
            );
        if set_for_tests {
            command.env_remove(key);
        }
    }
    command.current_dir(repo_root()).stdin(Stdio::null()).stdout(std::io::stderr());
    command
}
