//! The subcommands' flags, and their conversion into the library's plain
//! configuration types. Nothing outside `cli/` sees these structs.

use crate::cluster::ConnectConfig;
use crate::lifecycle::trust::{KeyError, PinnedDigest, TrustPolicy, TrustedKey};
use crate::lifecycle::{ConfigMapSource, OciReference, RegistryConfig, SignatureLocation};
use crate::policy::{
    AdminPolicy, GroupKind, OutcomeLimits, PodSecurityLevel, WorkloadPolicy, WriteBudgetConfig,
};
use crate::runtime::{CompileLimits, ModuleCache, SandboxConfig, SandboxLimits};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `wasm-operator module push`.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("destination").required(true).args(["configmap", "oci"]))]
pub struct PushArgs {
    /// The ConfigMap and key to upload to, as NAMESPACE/NAME[:KEY] (key default
    /// `module.wasm`); created if missing.
    #[arg(long, value_name = "NS/NAME[:KEY]")]
    pub configmap: Option<ConfigMapSource>,
    /// Push to a registry instead, as REGISTRY/REPOSITORY:TAG (`oci://` optional), in
    /// the CNCF Wasm OCI artifact layout (config application/vnd.wasm.config.v0+json,
    /// one application/wasm layer), with the signature beside it (`--oci-signature`).
    #[arg(long, value_name = "REGISTRY/REPO:TAG", value_parser = parse_push_reference, conflicts_with = "configmap")]
    pub oci: Option<OciReference>,
    /// Where a registry gets the signature: as a referrer of the module's manifest
    /// (OCI 1.1), at cosign's tag `sha256-<hex>.sig`, or both (one manifest, found
    /// either way).
    #[arg(long, value_enum, default_value_t = OciSignature::Both, value_name = "WHERE")]
    pub oci_signature: OciSignature,
    /// How to reach the registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The cluster to upload to (`--configmap`).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The module (a `.wasm` file).
    #[arg(value_name = "FILE.wasm")]
    pub file: PathBuf,
    /// Validate and compress, but upload nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The field manager of the server-side apply.
    #[arg(long, default_value = "wasm-operator-push", value_name = "NAME")]
    pub field_manager: String,
    /// The module's signature (`module sign`, `cosign sign-blob`), uploaded beside the
    /// module: to the ConfigMap key `<KEY>.sig`, or to the registry (`--oci-signature`).
    /// Default: `FILE.wasm.sig` when it exists. Without one, a signature an earlier push
    /// left in the ConfigMap is removed.
    #[arg(long, value_name = "FILE.sig")]
    pub signature: Option<PathBuf>,
    /// Check the module against the operator's trust policy before uploading: the
    /// same `--module-public-key` and `--module-digest` flags as `run`.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Limits of the module sandbox; use the operator's.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Which cluster to talk to, as kubectl's flags say it.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cluster connection")]
pub struct ClusterArgs {
    /// The kubeconfig file (default: KUBECONFIG, else ~/.kube/config, else the
    /// in-cluster service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// The library's connection settings.
    pub fn config(&self) -> ConnectConfig {
        ConnectConfig { kubeconfig: self.kubeconfig.clone(), context: self.context.clone() }
    }
}

/// An endpoint's address: `None` when turned off (`0`).
pub type BindAddress = Option<SocketAddr>;

/// `--metrics-bind-address`, `--health-probe-bind-address`: `HOST:PORT`, `:PORT`
/// (every interface), or `0` (off), as controller-runtime takes them.
fn parse_bind_address(text: &str) -> Result<BindAddress, String> {
    if text == "0" {
        return Ok(None);
    }
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_owned(),
    };
    full.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!("expected HOST:PORT, :PORT or 0 (off), e.g. :8080 or 127.0.0.1:8080, not {text:?}")
    })
}

/// `--oci-signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OciSignature {
    /// A referrer of the module's manifest.
    Referrer,
    /// cosign's tag `sha256-<hex>.sig`.
    Tag,
    /// Both.
    Both,
}

impl OciSignature {
    /// The library's value.
    pub fn location(self) -> SignatureLocation {
        match self {
            Self::Referrer => SignatureLocation::Referrer,
            Self::Tag => SignatureLocation::Tag,
            Self::Both => SignatureLocation::Both,
        }
    }
}

/// `--oci`: a reference with or without `oci://`.
fn parse_push_reference(text: &str) -> Result<OciReference, String> {
    let full = if text.starts_with("oci://") { text.to_owned() } else { format!("oci://{text}") };
    full.parse().map_err(|err: crate::lifecycle::oci::OciError| err.to_string())
}

/// How registries are reached (`--module oci://…`, `module push --oci`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Registry")]
pub struct RegistryArgs {
    /// A Docker config file (`config.json`, e.g. a mounted
    /// kubernetes.io/dockerconfigjson Secret's `.dockerconfigjson`) with credentials
    /// for the registry: `auth` (base64 user:password), `username` and `password`, or
    /// `registrytoken` (a bearer token). Anonymous without it.
    #[arg(long, value_name = "PATH", env = "WASM_OPERATOR_REGISTRY_CONFIG")]
    pub registry_config: Option<PathBuf>,
    /// Speak plain HTTP to this registry (HOST[:PORT]), e.g. one on loopback.
    /// Repeatable. Every other registry is HTTPS, checked against the system's roots.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
}

impl RegistryArgs {
    /// The library's registry configuration.
    pub fn config(&self) -> RegistryConfig {
        RegistryConfig {
            insecure: self.insecure_registries.clone(),
            credentials: self.registry_config.clone(),
        }
    }
}

/// Which modules are trusted: signed by one of the keys, with one of the digests.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Module trust")]
pub struct TrustArgs {
    /// Accept only modules signed by this ECDSA P-256 public key (PEM, as `cosign
    /// generate-key-pair` or `openssl pkey -pubout` write it; the signature as
    /// `cosign sign-blob` or `module sign` make it, in `MODULE.sig` or the ConfigMap
    /// key `<KEY>.sig`). Repeatable: any one of the keys will do. Checked before a
    /// module is compiled, for every module, the first one included.
    #[arg(long = "module-public-key", value_name = "PEM")]
    pub public_keys: Vec<PathBuf>,
    /// Accept only the module with this digest (`sha256:<hex>`, as `/module` and
    /// `module sign` show it). Repeatable: an allowlist. With keys, a module must be
    /// both signed and pinned.
    #[arg(long = "module-digest", value_name = "sha256:HEX", value_parser = clap::value_parser!(PinnedDigest))]
    pub digests: Vec<PinnedDigest>,
}

impl TrustArgs {
    /// The trust policy: the keys read from their files.
    pub fn policy(&self) -> Result<TrustPolicy, KeyError> {
        let keys = self.public_keys.iter().map(|path| TrustedKey::read(path)).collect::<Result<_, _>>()?;
        Ok(TrustPolicy::new(keys, self.digests.clone()))
    }
}

/// `wasm-operator module sign`.
#[derive(Debug, Clone, Args)]
pub struct SignArgs {
    /// The private key: ECDSA P-256, unencrypted PEM (PKCS#8 or SEC1, as `openssl
    /// genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes it). For a
    /// cosign key, use `cosign sign-blob --key cosign.key` instead: the signatures are
    /// the same kind.
    #[arg(long, value_name = "KEY.pem")]
    pub key: PathBuf,
    /// The module (`.wasm`, gzip allowed: the signature covers the uncompressed module).
    #[arg(value_name = "FILE.wasm")]
    pub file: PathBuf,
    /// Where to write the signature. Default: `FILE.wasm.sig`, where the operator's
    /// file source and `module push` look for it.
    #[arg(long, short, value_name = "FILE.sig")]
    pub output: Option<PathBuf>,
}

/// `wasm-operator module verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The module (`.wasm`, gzip allowed).
    #[arg(value_name = "FILE.wasm")]
    pub file: PathBuf,
    /// The signature. Default: `FILE.wasm.sig`.
    #[arg(value_name = "FILE.sig")]
    pub signature: Option<PathBuf>,
    /// The keys and digests to check against, as `run` takes them; at least one.
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// The sandbox every module call runs in.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Module sandbox")]
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
    /// Maximum number of JSON values in one outcome, counted before it is decoded (each
    /// decoded value costs tens of bytes; the DittoFS module's largest outcome has
    /// 382).
    #[arg(long, default_value_t = 100_000, value_name = "COUNT")]
    pub max_outcome_values: usize,
    /// Maximum wasm stack of one module call, in KiB.
    #[arg(long, default_value_t = 512, value_name = "KIB")]
    pub stack_limit_kib: u64,
    /// Largest function body a module may have, in KiB. Checked before compiling:
    /// compile time grows with the square of a function's size (the DittoFS module's
    /// largest is 16 KiB).
    #[arg(long, default_value_t = 64, value_name = "KIB")]
    pub max_function_kib: u32,
    /// How long compiling a module may take, in seconds, before it is refused.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub compile_timeout: u64,
    /// Directory of the on-disk cache of compiled modules (default:
    /// `${XDG_CACHE_HOME:-$HOME/.cache}/wasm-operator`). Only modules that passed
    /// every load check are cached. The directory is created with mode 0700; an
    /// existing one must be owned by the operator's user and closed to others (or the
    /// cache is turned off, with a warning that says how to fix it).
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
    /// The module to run: a `.wasm` file (gzip allowed), or `oci://REGISTRY/REPO:TAG`
    /// (or `@sha256:<manifest digest>`) in a registry. The file is watched (polled
    /// every second, following symlinks, so a mounted ConfigMap's atomic update is
    /// seen), a tag is polled every `--module-poll-interval`: a new version is
    /// validated and swapped in without a restart, a bad one refused while the running
    /// one keeps serving. A file must be valid at start; a registry is waited for (or
    /// the last good module used). Pinning a digest is how to roll back.
    #[arg(long, value_name = "PATH|oci://REF", env = "WASM_OPERATOR_MODULE")]
    pub module: Option<PathBuf>,
    /// How often an `oci://` tag is resolved again, in seconds; a registry that fails
    /// is tried again sooner, from one second doubling to this (at least 60).
    #[arg(long = "module-poll-interval", default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub module_poll_interval_seconds: u64,
    /// How to reach the module's registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Load the module from a ConfigMap key instead, as NAMESPACE/NAME[:KEY] (key
    /// default `module.wasm`; binaryData, gzip allowed; `module push` uploads
    /// there). The ConfigMap is watched through the API: a new version is validated
    /// and swapped in without a restart, a bad one refused (Warning event on the
    /// ConfigMap) while the running one keeps serving. At start, when the key holds
    /// no valid module, the operator starts from the last module it accepted (kept in
    /// the module cache directory); without one it waits, logging why, and reconciles
    /// nothing before.
    #[arg(
        long,
        value_name = "NS/NAME[:KEY]",
        env = "WASM_OPERATOR_MODULE_CONFIGMAP",
        conflicts_with = "module"
    )]
    pub module_configmap: Option<ConfigMapSource>,
    /// Watch and reconcile only this namespace (default: all namespaces).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Reconcile only primaries matching this label selector, e.g. `shard=a`.
    #[arg(long, value_name = "SELECTOR")]
    pub label_selector: Option<String>,
    /// How many primaries may reconcile at once; also bounds concurrent module calls.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Seconds work may wait in the queue with no worker taking it before /healthz
    /// fails (and Kubernetes restarts the pod).
    #[arg(long = "stall-timeout", default_value_t = 300, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout_seconds: u64,
    /// Seconds a watch may take to deliver its first list before /readyz names it and
    /// it is logged at ERROR (the primaries that depend on it wait; a deletion no
    /// longer waits for an optional kind's); also how long a hot swap waits for a new
    /// manifest's watches.
    #[arg(long = "sync-timeout", default_value_t = 120, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_timeout_seconds: u64,
    /// Seconds shutdown (SIGTERM) waits for reconciles in flight before it stops
    /// without them; keep it under the pod's terminationGracePeriodSeconds (30).
    #[arg(long = "drain-timeout", default_value_t = 25, value_name = "SECONDS")]
    pub drain_timeout_seconds: u64,
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
    /// Where to serve /metrics, as HOST:PORT or :PORT (all interfaces); `0` turns the
    /// metrics endpoint off.
    #[arg(long, default_value = ":8080", value_name = "ADDR", value_parser = parse_bind_address, help_heading = "Endpoints")]
    pub metrics_bind_address: BindAddress,
    /// Where to serve /healthz, /readyz (the kubelet's probes) and /module (the active
    /// module, as JSON), as HOST:PORT or :PORT; `0` turns them off.
    #[arg(long, default_value = ":8081", value_name = "ADDR", value_parser = parse_bind_address, help_heading = "Endpoints")]
    pub health_probe_bind_address: BindAddress,
    /// Replaced by --metrics-bind-address and --health-probe-bind-address.
    #[arg(long, hide = true, value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// The cluster to connect to.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Limits of the module sandbox.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Caps on what one outcome may hold.
    #[command(flatten)]
    pub outcome: OutcomeArgs,
    /// What any module may do, whatever its manifest asks for.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Which modules are trusted.
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// The administrator's policy: what any module may do. A manifest can ask for less,
/// never for more; a module that needs more is refused at start and at hot swap.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Administrator's policy")]
pub struct PolicyArgs {
    /// Allow modules to write a kind refused by default (RBAC, ServiceAccounts, Pods,
    /// admission, CRDs, certificates, Nodes), as GROUP/KIND, e.g. core/Pod or
    /// rbac.authorization.k8s.io/RoleBinding. Repeatable.
    #[arg(long = "allow-kind", value_name = "GROUP/KIND", value_parser = GroupKind::parse)]
    pub allow_kinds: Vec<GroupKind>,
    /// Allow modules to own Secrets (list Secret in `related`), and so to see and write
    /// their values. Without it, every Secret a module reads is digested.
    #[arg(long)]
    pub allow_secret_values: bool,
    /// The Pod Security Standard every applied pod template must meet; `privileged`
    /// turns the check off.
    #[arg(long, value_enum, default_value_t = PodSecurity::Baseline, value_name = "LEVEL")]
    pub pod_security: PodSecurity,
    /// A ServiceAccount pod templates may name besides `default`. Repeatable.
    #[arg(long = "allow-service-account", value_name = "NAME")]
    pub allow_service_accounts: Vec<String>,
    /// Mutating requests per second each primary's module may make, sustained. A batch
    /// over the write budget is held back (delayed, not failed) until it fits.
    #[arg(long, default_value_t = 5.0, value_name = "N", value_parser = positive_rate)]
    pub write_rate: f64,
    /// Mutating requests a primary may make at once after being quiet.
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub write_burst: u32,
    /// KiB of request bodies (objects, statuses, notes) each primary may write in any
    /// minute.
    #[arg(long, default_value_t = 8192, value_name = "KIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub write_kib_per_minute: u64,
    /// Mutating requests per second across all primaries together. Off by default: the
    /// per-primary budget bounds each module, and the API server's priority and
    /// fairness protects itself.
    #[arg(long, value_name = "N", value_parser = positive_rate)]
    pub overall_write_rate: Option<f64>,
}

/// A rate flag: a positive, finite number.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a positive number of requests per second")),
    }
}

/// `--pod-security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodSecurity {
    /// No pod-security check.
    Privileged,
    /// The baseline standard: no known privilege escalation.
    Baseline,
    /// The restricted standard: hardened pods.
    Restricted,
}

impl PolicyArgs {
    /// The policy these flags describe, with the outcome caps.
    pub fn policy(&self, outcome: &OutcomeArgs) -> AdminPolicy {
        self.policy_with(outcome.limits())
    }

    /// The policy these flags describe, with `outcome` as the caps.
    pub fn policy_with(&self, outcome: OutcomeLimits) -> AdminPolicy {
        let level = match self.pod_security {
            PodSecurity::Privileged => PodSecurityLevel::Privileged,
            PodSecurity::Baseline => PodSecurityLevel::Baseline,
            PodSecurity::Restricted => PodSecurityLevel::Restricted,
        };
        AdminPolicy {
            allowed_kinds: self.allow_kinds.clone(),
            allow_secret_values: self.allow_secret_values,
            workload: WorkloadPolicy { level, allowed_service_accounts: self.allow_service_accounts.clone() },
            outcome,
            writes: WriteBudgetConfig {
                writes_per_second: self.write_rate,
                burst: self.write_burst,
                bytes_per_minute: self.write_kib_per_minute.saturating_mul(1024),
                overall_writes_per_second: self.overall_write_rate,
            },
        }
    }
}

/// What one outcome may hold; an outcome over a cap is a module failure, reported and
/// retried with backoff, and none of its actions runs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Outcome caps")]
pub struct OutcomeArgs {
    /// Most actions in one outcome.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_actions: usize,
    /// Most `event` actions in one outcome.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_events: usize,
    /// Most entries of one outcome's `requires`.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_requires: usize,
    /// Largest applied object or status, as JSON, in KiB (the API server's own limit
    /// is about 1.5 MiB a request).
    #[arg(long, default_value_t = 512, value_name = "KIB")]
    pub max_object_kib: usize,
}

impl OutcomeArgs {
    /// The caps these flags describe.
    pub fn limits(&self) -> OutcomeLimits {
        OutcomeLimits {
            actions: self.max_actions,
            events: self.max_events,
            requires: self.max_requires,
            object_bytes: self.max_object_kib.saturating_mul(1024),
        }
    }
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
    /// The cluster to connect to.
    #[command(flatten)]
    pub cluster: ClusterArgs,
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

/// `wasm-operator admission-policy`.
#[derive(Debug, Clone, Args)]
pub struct AdmissionArgs {
    /// The module (a `.wasm` file).
    #[arg(long, value_name = "PATH")]
    pub module: PathBuf,
    /// The ServiceAccount the operator runs as: the policy applies to its requests only.
    #[arg(long, default_value = "wasm-operator", value_name = "NAME")]
    pub service_account: String,
    /// The namespace the operator runs in (its ServiceAccount and Lease).
    #[arg(long, default_value = "wasm-operator", value_name = "NS")]
    pub operator_namespace: String,
    /// Name of the policy and its binding. Default: wasm-operator-<module name>.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The policy the operator runs with (the same flags as `run`'s).
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Limits of the module sandbox.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

impl SandboxArgs {
    /// The sandbox configuration these flags describe, for `concurrency` concurrent
    /// calls. The limits are checked when the engine is built.
    pub fn config(&self, concurrency: usize) -> SandboxConfig {
        // Saturating: a value too large for the machine is refused by the check as out
        // of range, never wrapped into a small one.
        let bytes = |count: u64, unit: u64| usize::try_from(count.saturating_mul(unit)).unwrap_or(usize::MAX);
        let limits = SandboxLimits {
            memory_bytes: bytes(self.memory_limit_mib, MIB),
            deadline: Duration::from_millis(self.deadline_ms),
            output_bytes: bytes(self.output_limit_mib, MIB),
            output_values: self.max_outcome_values,
            stack_bytes: bytes(self.stack_limit_kib, KIB),
            ..SandboxLimits::default()
        };
        let cache = match (&self.module_cache_dir, self.no_module_cache) {
            (_, true) => ModuleCache::Disabled,
            (Some(dir), false) => ModuleCache::Dir(dir.clone()),
            (None, false) => ModuleCache::Default,
        };
        let compile = CompileLimits {
            max_function_body_bytes: self.max_function_kib.saturating_mul(KIB as u32),
            compile_timeout: Duration::from_secs(self.compile_timeout),
            ..CompileLimits::default()
        };
        SandboxConfig { limits, compile, cache, ..SandboxConfig::default() }.for_concurrency(concurrency)
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Sandbox {
        #[command(flatten)]
        sandbox: SandboxArgs,
    }

    #[test]
    fn command_line_defaults_are_the_design_defaults() {
        let args = Sandbox::parse_from(["test"]).sandbox;
        let config = args.config(4);
        assert_eq!(config.limits, SandboxLimits::default());
        assert!(config.limits.validate().is_ok());
        assert_eq!(config.max_instances, 12);
    }

    #[test]
    fn outcome_caps_default_to_the_library_defaults() {
        #[derive(Debug, Parser)]
        struct Outcome {
            #[command(flatten)]
            outcome: OutcomeArgs,
        }
        assert_eq!(Outcome::parse_from(["test"]).outcome.limits(), OutcomeLimits::default());
    }

    #[test]
    fn limits_too_large_for_the_machine_are_refused_not_wrapped() {
        let args = Sandbox::parse_from(["test", "--memory-limit-mib", &u64::MAX.to_string()]).sandbox;
        let err = args.config(1).limits.validate().expect_err("refused");
        assert!(err.to_string().contains("memory limit of"), "{err}");
    }

    #[test]
    fn bind_addresses_take_controller_runtimes_forms() {
        assert_eq!(parse_bind_address(":8080"), Ok(Some("0.0.0.0:8080".parse().expect("an address"))));
        assert_eq!(parse_bind_address("127.0.0.1:0"), Ok(Some("127.0.0.1:0".parse().expect("an address"))));
        assert_eq!(parse_bind_address("[::1]:9090"), Ok(Some("[::1]:9090".parse().expect("an address"))));
        assert_eq!(parse_bind_address("0"), Ok(None));
        let err = parse_bind_address("8080").expect_err("a bare port is ambiguous");
        assert!(err.contains(":PORT"), "{err}");
        assert!(parse_bind_address("localhost:8080").is_err(), "names are not resolved");
    }
}
