//! The command line. `main.rs` calls [`main`]; every subcommand's work lives in the
//! library (`runtime`, `operator`), so this module only parses, sets up logging and
//! maps results to exit codes.

mod module;
mod offline;
mod rbac;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// `wasm-operator`: run sandboxed, hot-swappable WebAssembly reconcile modules (ABI v1)
/// as a Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "wasm-operator", version, propagate_version = true)]
#[command(long_about = "Runs a Kubernetes operator whose reconcile logic is a WebAssembly module.\n\n\
The module (ABI v1, see DESIGN.md) declares in its manifest which kinds it manages; the host \
watches them, calls the module in a sandbox with a snapshot of the cluster, checks every action \
it returns against the manifest and applies the allowed ones.")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WASM_OPERATOR_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against a cluster (KUBECONFIG, or the in-cluster config).
    Run(RunArgs),
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
    /// Manage the module of a running operator (hot swap).
    #[command(subcommand)]
    Module(ModuleCommand),
}

/// `wasm-operator module ...`.
#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Validate a module locally and upload it, gzip-compressed, to the ConfigMap a
    /// running operator follows (`run --module-configmap`); the operator swaps to it
    /// without a restart.
    ///
    /// The module passes the same checks the operator runs before a swap (no
    /// imports, ABI 1, manifest, compiles, a smoke reconcile within the deadline,
    /// with the same sandbox limits); a module that fails them, or that does not fit
    /// a ConfigMap after compression (about 960 KiB), is refused and nothing is
    /// uploaded. The key is server-side applied; other keys are left alone.
    /// Exit status: 0 uploaded, 1 refused, 2 could not try (file, cluster).
    Push(PushArgs),
}

/// `wasm-operator module push`.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// The ConfigMap and key to upload to, as NAMESPACE/NAME[:KEY] (key default
    /// `module.wasm`); created if missing.
    #[arg(long, value_name = "NS/NAME[:KEY]")]
    pub configmap: crate::operator::source::ConfigMapSource,
    /// The module (a `.wasm` file).
    #[arg(value_name = "FILE.wasm")]
    pub file: PathBuf,
    /// Validate and compress, but upload nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The field manager of the server-side apply.
    #[arg(long, default_value = "wasm-operator-push", value_name = "NAME")]
    pub field_manager: String,
    /// Limits of the module sandbox; use the operator's.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// The sandbox every module call runs in.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Maximum linear memory of one module instance, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub memory_limit_mib: u64,
    /// Wall-clock deadline of one module call, in milliseconds (epoch interruption).
    #[arg(long, default_value_t = 250, value_name = "MS")]
    pub deadline_ms: u64,
    /// Maximum size of a module's output (manifest or outcome), in MiB.
    #[arg(long, default_value_t = 4, value_name = "MIB")]
    pub output_limit_mib: u64,
    /// Maximum wasm stack of one module call, in KiB.
    #[arg(long, default_value_t = 512, value_name = "KIB")]
    pub stack_limit_kib: u64,
    /// Directory of the on-disk cache of compiled modules (default:
    /// `${XDG_CACHE_HOME:-$HOME/.cache}/wasm-operator`).
    #[arg(long, value_name = "DIR", env = "WASM_OPERATOR_MODULE_CACHE_DIR")]
    pub module_cache_dir: Option<PathBuf>,
    /// Compile modules on every load instead of using the on-disk cache.
    #[arg(long, conflicts_with = "module_cache_dir")]
    pub no_module_cache: bool,
}

/// `wasm-operator run`.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("module_source").required(true).args(["module", "module_configmap"]))]
pub struct RunArgs {
    /// The module to run (a `.wasm` file, gzip allowed). The file is watched (polled
    /// every second, following symlinks, so a mounted ConfigMap's atomic update is
    /// seen): a new version is validated and swapped in without a restart, a bad one
    /// refused while the running one keeps serving. It must be valid at start.
    #[arg(long, value_name = "PATH", env = "WASM_OPERATOR_MODULE")]
    pub module: Option<PathBuf>,
    /// Load the module from a ConfigMap key instead, as NAMESPACE/NAME[:KEY] (key
    /// default `module.wasm`; binaryData, gzip allowed; `module push` uploads
    /// there). The ConfigMap is watched through the API: a new version is validated
    /// and swapped in without a restart, a bad one refused (Warning event on the
    /// ConfigMap) while the running one keeps serving. At start the operator waits,
    /// logging why, until the key holds a valid module; it reconciles nothing before.
    #[arg(
        long,
        value_name = "NS/NAME[:KEY]",
        env = "WASM_OPERATOR_MODULE_CONFIGMAP",
        conflicts_with = "module"
    )]
    pub module_configmap: Option<crate::operator::source::ConfigMapSource>,
    /// Watch and reconcile only this namespace (default: all namespaces).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Reconcile only primaries matching this label selector, e.g. `shard=a`.
    #[arg(long, value_name = "SELECTOR")]
    pub label_selector: Option<String>,
    /// How many primaries may reconcile at once; also bounds concurrent module calls.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Only reconcile while holding a coordination.k8s.io Lease, so that several
    /// replicas can run for availability.
    #[arg(long)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the pod's namespace, else `default`).
    #[arg(long, value_name = "NS")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "wasm-operator", value_name = "NAME")]
    pub lease_name: String,
    /// Address of the HTTP server for /metrics, /healthz, /readyz and /module.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub http_addr: SocketAddr,
    /// Limits of the module sandbox.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `wasm-operator reconcile`.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// The module (a `.wasm` file).
    #[arg(long, value_name = "PATH")]
    pub module: PathBuf,
    /// The snapshot JSON file (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub snapshot: PathBuf,
    /// Limits of the module sandbox.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `wasm-operator manifest`.
#[derive(Debug, Clone, Args)]
pub struct ManifestArgs {
    /// The module (a `.wasm` file).
    #[arg(long, value_name = "PATH")]
    pub module: PathBuf,
    /// Limits of the module sandbox.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `wasm-operator snapshot`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    /// The primary object, as NAMESPACE/NAME.
    #[arg(value_name = "NAMESPACE/NAME")]
    pub object: String,
    /// The module whose manifest says what the snapshot holds.
    #[arg(long, value_name = "PATH", env = "WASM_OPERATOR_MODULE")]
    pub module: PathBuf,
    /// Limits of the module sandbox.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `wasm-operator rbac`.
#[derive(Debug, Clone, Args)]
pub struct RbacArgs {
    /// The module (a `.wasm` file).
    #[arg(long, value_name = "PATH")]
    pub module: PathBuf,
    /// Grant rights only in this namespace (a Role; run the operator with the same
    /// `--namespace`). Default: all namespaces (a ClusterRole).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The ServiceAccount the operator runs as; also the name of the roles and bindings.
    #[arg(long, default_value = "wasm-operator", value_name = "NAME")]
    pub service_account: String,
    /// The namespace the operator runs in (its ServiceAccount, Lease and module ConfigMap).
    #[arg(long, default_value = "wasm-operator", value_name = "NS")]
    pub operator_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "wasm-operator", value_name = "NAME")]
    pub lease_name: String,
    /// Also grant reading this ConfigMap of the operator's namespace, the module's source.
    #[arg(long, value_name = "NAME")]
    pub module_configmap: Option<String>,
    /// Limits of the module sandbox.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Parses the command line, runs the subcommand and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Reconcile(args) => offline::reconcile(&args),
        Command::Manifest(args) => offline::manifest(&args),
        Command::Run(args) => in_runtime(crate::operator::run(args)),
        Command::Snapshot(args) => in_runtime(crate::operator::snapshot(args)),
        Command::Rbac(args) => rbac::rbac(&args),
        Command::Module(ModuleCommand::Push(args)) => module::push(&args),
    }
}

/// Runs a cluster subcommand on a multi-threaded tokio runtime; errors are printed
/// with their whole chain of causes.
fn in_runtime(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
