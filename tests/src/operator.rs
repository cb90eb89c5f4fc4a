//! The real host, `wasm-operator run`, as a child process running the built module.
//!
//! Each test starts its own host, scoped to the test's namespace (`--namespace`), so
//! tests run in parallel without seeing each other's objects. The host serves its
//! metrics and probe endpoints on ephemeral loopback ports
//! (`--metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0`),
//! found in its JSON log; the log is kept under `target/e2e/<namespace>/` for diagnosis. The
//! process is killed when its [`Operator`] is dropped, also when the test panics.
//!
//! Both artifacts are checked once per test process, so a plain `cargo test -p e2e`
//! never runs a stale host or module. The module is built with `make wasm` (the
//! Makefile is the one place that knows how; a no-op when fresh). The host binary in
//! the tests' profile directory is used when it is newer than every source it is
//! built from: `make test` (`cargo test --workspace`) has just built it, with the
//! workspace's unified features, and rebuilding it here with `cargo build -p
//! wasm-operator` would compile a second variant of wasmtime, tokio and kube for
//! nothing. Otherwise it is built that way. `E2E_WASM_OPERATOR` and `E2E_MODULE` name
//! prebuilt files instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::sync::OnceCell;

use crate::build::build_command;
use crate::cluster::{Cluster, repo_root};
use crate::host_process::{HostOptions, HostProcess};

/// Names a prebuilt `wasm-operator` binary to run instead of building one.
pub const HOST_ENV: &str = "E2E_WASM_OPERATOR";
/// Names a prebuilt module to run instead of building `target/modules/dittofs-reconciler.wasm`.
pub const MODULE_ENV: &str = "E2E_MODULE";

/// The module `make wasm` builds, relative to the repository root.
const MODULE_PATH: &str = "target/modules/dittofs-reconciler.wasm";

/// The host binary and the module the tests run.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// `wasm-operator`.
    pub host: PathBuf,
    /// The DittoFS reconcile module (`.wasm`).
    pub module: PathBuf,
}

static ARTIFACTS: OnceCell<std::result::Result<Artifacts, String>> = OnceCell::const_new();

/// Builds (once per test process) and returns the host binary and the module.
pub async fn artifacts() -> Result<&'static Artifacts> {
    ARTIFACTS
        .get_or_init(|| async {
            tokio::task::spawn_blocking(build_artifacts)
                .await
                .map_err(|e| format!("the build task panicked: {e}"))?
                .map_err(|e| format!("{e:#}"))
        })
        .await
        .as_ref()
        .map_err(|message| anyhow!("cannot build the host and the module: {message}"))
}

/// The directory of the profile the tests were built with (`target/debug`), from
/// the path of the running test binary (`target/debug/deps/<test>-<hash>`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the test binary's path")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("unexpected test binary path {}", exe.display()))
}

fn run_build(mut command: Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); its output is above");
    }
    Ok(())
}

fn build_artifacts() -> Result<Artifacts> {
    let root = repo_root();
    let host = match std::env::var_os(HOST_ENV) {
        Some(path) => PathBuf::from(path),
        None => {
            let dir = profile_dir()?;
            let host = dir.join("wasm-operator");
            if !is_newer_than_sources(&host, &root) {
                let profile = match dir.file_name().and_then(|n| n.to_str()) {
                    Some("debug") | None => "dev".to_owned(),
                    Some(name) => name.to_owned(),
                };
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
                let mut command = build_command(&cargo);
                command.args([
                    "build",
                    "--quiet",
                    "-p",
                    "wasm-operator",
                    "--bin",
                    "wasm-operator",
                    "--profile",
                ]);
                command.arg(&profile);
                run_build(command, "cargo build -p wasm-operator")?;
            }
            host
        }
    };
    let module = match std::env::var_os(MODULE_ENV) {
        Some(path) => PathBuf::from(path),
        None => {
            let mut command = build_command("make");
            command.args(["--no-print-directory", "--quiet", "wasm"]);
            run_build(command, "make wasm")?;
            root.join(MODULE_PATH)
        }
    };
    if !host.is_file() {
        bail!("the host binary {} does not exist", host.display());
    }
    let module = private_copy(&module)?;
    Ok(Artifacts { host, module })
}

/// Copies the module to a file of this test process's own. The host watches its
/// `--module` file and hot-swaps to whatever appears there, and `make wasm` rewrites
/// `target/modules/` in place (not atomically): a build started elsewhere meanwhile
/// must neither swap the tests' module nor be read half-written.
fn private_copy(module: &Path) -> Result<PathBuf> {
    let read =
        || std::fs::read(module).with_context(|| format!("cannot read the module {}", module.display()));
    let mut bytes = read()?;
    // Stable across two reads a moment apart: not caught in the middle of a copy.
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let again = read()?;
        if again == bytes && bytes.starts_with(b"\0asm") {
            let dir = artifact_dir("modules")?;
            // Named after its content: one file per module version, however many runs.
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&bytes, &mut hasher);
            let copy =
                dir.join(format!("dittofs-reconciler-{:016x}.wasm", std::hash::Hasher::finish(&hasher)));
            let partial = dir.join(format!(".dittofs-reconciler-{}.wasm.partial", std::process::id()));
            std::fs::write(&partial, &bytes)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            std::fs::rename(&partial, &copy).with_context(|| format!("cannot write {}", copy.display()))?;
            return Ok(copy);
        }
        bytes = again;
    }
    bail!("the module {} is not a stable WebAssembly file (being rewritten?)", module.display())
}

/// What the host binary is built from (the workspace's path dependencies of
/// `wasm-operator`, and the lock file).
const HOST_SOURCES: [&str; 6] =
    ["Cargo.toml", "Cargo.lock", "host/Cargo.toml", "host/src", "guest/sdk/Cargo.toml", "guest/sdk/src"];

/// Whether `binary` exists and is newer than every file of [`HOST_SOURCES`], as
/// cargo would judge it (modification times).
fn is_newer_than_sources(binary: &Path, root: &Path) -> bool {
    fn newest(path: &Path) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path).ok()?.filter_map(|e| e.ok()).filter_map(|e| newest(&e.path())).max()
    }
    let Some(built) = std::fs::metadata(binary).and_then(|m| m.modified()).ok() else { return false };
    HOST_SOURCES.iter().all(|source| newest(&root.join(source)).is_some_and(|changed| changed <= built))
}

/// Where test artifacts (host logs, kubeconfigs, the module's copy) go:
/// `<target>/e2e/<namespace>/`.
pub fn artifact_dir(namespace: &str) -> Result<PathBuf> {
    let target = profile_dir()?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("the profile directory has no parent"))?;
    let dir = target.join("e2e").join(namespace);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// A running `wasm-operator run` as the tests' one host: a [`HostProcess`] named
/// `operator`, started ready. Everything else ([`HostProcess::get`],
/// [`HostProcess::metrics`], its log) comes through `Deref`; killed on drop.
#[derive(Debug)]
pub struct Operator {
    host: HostProcess,
}

impl Operator {
    /// Starts the host as the cluster's admin, watching only `namespace`, and waits
    /// until it is ready (every watch has listed).
    pub async fn start(cluster: &Cluster, namespace: &str) -> Result<Self> {
        Self::start_with(cluster, namespace, None).await
    }

    /// Starts the host with `kubeconfig` (default: the cluster's own), watching only
    /// `namespace`, and waits until it is ready.
    pub async fn start_with(cluster: &Cluster, namespace: &str, kubeconfig: Option<&Path>) -> Result<Self> {
        let mut options = HostOptions::new(namespace, "operator");
        if let Some(path) = kubeconfig {
            options = options.kubeconfig(path);
        }
        let host = HostProcess::spawn(cluster, options).await?;
        host.wait_ready().await?;
        Ok(Self { host })
    }

    /// Stops the host with SIGTERM (as Kubernetes would) and waits for it to exit;
    /// fails when it does not within 30 seconds (it is killed then).
    pub fn stop(self) -> Result<ExitStatus> {
        self.host.terminate()
    }
}

impl std::ops::Deref for Operator {
    type Target = HostProcess;

    fn deref(&self) -> &HostProcess {
        &self.host
    }
}

/// One scrape of `/metrics`: every sample, keyed by its series
/// (`name{label="value",...}` exactly as the host writes it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    samples: BTreeMap<String, f64>,
}

impl Metrics {
    /// Parses the Prometheus/OpenMetrics text format (comments skipped).
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self { samples }
    }

    /// The sum of every sample of metric `name` whose labels include all of
    /// `labels`; 0 when there is none (a counter not incremented yet is absent).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
                series_name == name
                    && labels.iter().all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// `wasm_operator_writes_total`, all ops: every mutating request the host issued.
    pub fn writes(&self) -> f64 {
        self.sum("wasm_operator_writes_total", &[])
    }

    /// `wasm_operator_reconciles_total{result}`.
    pub fn reconciles(&self, result: &str) -> f64 {
        self.sum("wasm_operator_reconciles_total", &[("result", result)])
    }

    /// `wasm_operator_actions_total{op, result}`.
    pub fn actions(&self, op: &str, result: &str) -> f64 {
        self.sum("wasm_operator_actions_total", &[("op", op), ("result", result)])
    }

    /// Every sample, for failure messages.
    pub fn samples(&self) -> &BTreeMap<String, f64> {
        &self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sums_series() {
        let metrics = Metrics::parse(
            "# HELP wasm_operator_writes Mutating API requests issued.\n\
             # TYPE wasm_operator_writes counter\n\
             wasm_operator_writes_total{op=\"apply\"} 5\n\
             wasm_operator_writes_total{op=\"event\"} 2\n\
             wasm_operator_actions_total{op=\"delete\",result=\"error\"} 3\n\
             wasm_operator_leader 1\n\
             # EOF\n",
        );
        assert_eq!(metrics.writes(), 7.0);
        assert_eq!(metrics.sum("wasm_operator_writes_total", &[("op", "apply")]), 5.0);
        assert_eq!(metrics.actions("delete", "error"), 3.0);
        assert_eq!(metrics.actions("delete", "success"), 0.0);
        assert_eq!(metrics.sum("wasm_operator_leader", &[]), 1.0);
        assert_eq!(metrics.sum("wasm_operator_writes", &[]), 0.0);
    }
}
