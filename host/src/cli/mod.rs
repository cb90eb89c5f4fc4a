//! The command line, the only part of the crate that knows clap. `main.rs` calls
//! [`main`]; the flags ([`args`]) become the library's plain configuration types, and
//! every subcommand's work lives in the library, so this module parses, sets up
//! logging, reads the environment, and maps results to exit codes ([`failure`]).

mod admission;
mod args;
mod failure;
mod module;
mod offline;
mod rbac;
mod run;
mod snapshot;

use args::{
    AdmissionArgs, ManifestArgs, PushArgs, RbacArgs, ReconcileArgs, RunArgs, SignArgs, SnapshotArgs,
    VerifyArgs,
};
use clap::{Parser, Subcommand, ValueEnum};
use failure::Failure;
use std::process::ExitCode;

/// `wasm-operator`: run sandboxed, hot-swappable WebAssembly reconcile modules (ABI v1)
/// as a Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "wasm-operator", version, propagate_version = true)]
#[command(long_about = "Runs a Kubernetes operator whose reconcile logic is a WebAssembly module.\n\n\
The module (ABI v1, see docs/abi.md) declares in its manifest which kinds it manages; the host \
watches them, calls the module in a sandbox with a snapshot of the cluster, checks every action \
it returns against the manifest and applies the allowed ones.")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WASM_OPERATOR_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log level. Without it, RUST_LOG's directives apply (e.g.
    /// `info,wasm_operator::control=debug`), else `info`; with it, RUST_LOG is ignored.
    #[arg(long, global = true, value_enum, value_name = "LEVEL", env = "WASM_OPERATOR_LOG_LEVEL")]
    pub log_level: Option<LogLevel>,
}

/// Log levels, most to least severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and what may need attention.
    Warn,
    /// What the operator does (the default).
    Info,
    /// Every decision.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against a cluster (KUBECONFIG, or the in-cluster config).
    Run(Box<RunArgs>),
    /// Reconcile one snapshot offline and print the module's Outcome JSON (dry run and
    /// replay). Exit status 0 for a valid Outcome (an `error` outcome included), 1 when
    /// the module fails or is rejected, 2 when the module or snapshot cannot be read.
    Reconcile(ReconcileArgs),
    /// Print a module's manifest as JSON.
    Manifest(ManifestArgs),
    /// Capture a live snapshot of one primary object, for `reconcile` to replay.
    Snapshot(SnapshotArgs),
    /// Print the least-privilege RBAC (Role or ClusterRole and bindings) a module's
    /// manifest needs, as YAML.
    Rbac(RbacArgs),
    /// Print a ValidatingAdmissionPolicy and its binding, as YAML, with which the API
    /// server itself refuses what confinement and the workload rules refuse, for
    /// requests of the operator's ServiceAccount: objects outside the manifest's
    /// related kinds, without the owner label, cluster-scoped, or with pod templates
    /// or Services that break the rules. The module must pass the policy given.
    /// Exit status as `rbac`.
    AdmissionPolicy(AdmissionArgs),
    /// Manage the module of a running operator (hot swap).
    #[command(subcommand)]
    Module(ModuleCommand),
}

/// `wasm-operator module ...`.
#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Validate a module locally and upload it, with its signature, to the ConfigMap
    /// (`--configmap`, gzip-compressed) or the registry tag (`--oci`) a running
    /// operator follows; the operator swaps to it without a restart.
    ///
    /// The module passes the same checks the operator runs before a swap (no
    /// imports, ABI 1, manifest, compiles, a smoke reconcile within the deadline,
    /// with the same sandbox limits, and the trust policy when keys or digests are
    /// given); a module that fails them, or that does not fit a ConfigMap after
    /// compression (about 960 KiB), is refused and nothing is uploaded. Its signature
    /// (`--signature`, default `FILE.wasm.sig` when it exists) goes to the key
    /// `<KEY>.sig` in the same request, or beside the module in the registry
    /// (`--oci-signature`). ConfigMap keys are server-side applied; other keys are
    /// left alone. Exit status: 0 uploaded, 1 refused, 2 could not try (file,
    /// cluster, registry).
    Push(Box<PushArgs>),
    /// Sign a module for operators run with `--module-public-key`: an ECDSA P-256
    /// signature over the uncompressed module's SHA-256, base64, as `cosign sign-blob`
    /// makes it, written to `FILE.wasm.sig` (or `--output`). Make a key with `openssl
    /// genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem` and its
    /// public half with `openssl pkey -in key.pem -pubout -out key.pub`.
    /// Exit status: 0 signed, 1 the module does not decode, 2 could not try.
    Sign(SignArgs),
    /// Check a module and its signature offline, as `run --module-public-key` and
    /// `--module-digest` would. Exit status: 0 trusted, 1 not trusted (unsigned,
    /// another key's or another module's signature, not pinned), 2 could not try.
    Verify(VerifyArgs),
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses the command line, runs the subcommand and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.log_level);
    let result = match cli.command {
        Command::Reconcile(args) => offline::reconcile(&args),
        Command::Manifest(args) => offline::manifest(&args),
        Command::Run(args) => in_runtime(run::run(*args)),
        Command::Snapshot(args) => in_runtime(snapshot::snapshot(args)),
        Command::Rbac(args) => rbac::rbac(&args),
        Command::AdmissionPolicy(args) => admission::admission_policy(&args),
        Command::Module(ModuleCommand::Push(args)) => module::push(&args),
        Command::Module(ModuleCommand::Sign(args)) => module::sign(&args),
        Command::Module(ModuleCommand::Verify(args)) => module::verify(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// Runs a cluster subcommand on a multi-threaded tokio runtime.
fn in_runtime(work: impl std::future::Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::cannot_run(format_args!("cannot start the async runtime: {err}")))?;
    runtime.block_on(work).inspect_err(|failure| tracing::error!("{}", failure.message()))
}

fn init_logging(format: LogFormat, level: Option<LogLevel>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::new(level.directive()),
        None => EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
