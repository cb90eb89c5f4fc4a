//! The operator's Prometheus metrics, served as text on `/metrics`.
//!
//! Every counter is monotonic and labelled with a small, bounded set of values
//! (results, action ops), never with object names, so cardinality stays constant
//! whatever the cluster holds. `wasm_operator_writes_total` counts every mutating API
//! request the executor issues, so an idle, converged operator shows it flat.
//!
//! Beside the operator's own `wasm_operator_*` families, the ones client-go and
//! controller-runtime users already chart, under their names: `workqueue_*` (labelled
//! `name`, the primary kind in lower case), `rest_client_*` ([`super::rest`]),
//! `controller_runtime_active_workers` and `controller_runtime_max_concurrent_reconciles`
//! (labelled `controller`, the same name), and `process_*` ([`super::process`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use super::process::ProcessCollector;
use super::rest::RestClientMetrics;
use crate::queue::InFlight;

/// A gauge of seconds.
type SecondsGauge = Gauge<f64, AtomicU64>;
use std::time::{Duration, SystemTime};

/// Labels of a reconcile's result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success`, `error`, `rejected` or `conflict`.
    pub result: String,
}

/// Labels of one executed action.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action's `op`.
    pub op: String,
    /// `success`, `error` or `rejected`.
    pub result: String,
}

/// Labels of a rejected action.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// The action's `op` (or `requires`).
    pub op: String,
}

/// Labels of the module info metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    /// The manifest's name.
    pub name: String,
    /// The manifest's version.
    pub version: String,
    /// `sha256:<hex>` of the module.
    pub digest: String,
    /// Where it came from (`file PATH`, `configmap NS/NAME:KEY@RV`, ...).
    pub source: String,
    /// The fingerprint of the key that signed it; empty when no keys are required.
    pub signer: String,
}

/// Labels with a reason: the failed check of a refused hot-swap candidate, or the kind
/// of a failed module call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The failed check: `decode`, `compile`, `imports`, `exports`, `abi`, `manifest`,
    /// `smoke`, `rights`, `discovery`, `sync`, ...
    pub reason: String,
}

/// Labels of a count of cached objects.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// The watch's role: `primary` or `related`.
    pub role: String,
    /// The kind (empty for the primary).
    pub kind: String,
}

/// The results of a reconcile (`wasm_operator_reconciles_total`).
const RECONCILE_RESULTS: &[&str] = &["success", "error", "rejected", "delayed", "gone"];

/// The ops an action (or a requirement, `requires`) can be rejected as.
const ACTION_OPS: &[&str] =
    &["apply", "addFinalizer", "removeFinalizer", "orphan", "patchStatus", "delete", "event", "requires"];

/// The checks a hot-swap candidate can fail (`lifecycle::swap`'s refusal reasons).
const MODULE_CHECKS: &[&str] = &[
    "decode",
    "digest",
    "signature",
    "read",
    "limits",
    "compile",
    "imports",
    "exports",
    "abi",
    "link",
    "describe",
    "manifest",
    "smoke",
    "policy",
    "identity",
    "finalizer",
    "discovery",
    "internal",
];

/// Labels of client-go's workqueue metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue's name: the controller's (the primary kind in lower case).
    pub name: String,
}

/// Labels of controller-runtime's controller metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The controller's name (the primary kind in lower case).
    pub controller: String,
}

/// What one work queue records as it runs ([`crate::queue::WorkQueue::with_metrics`]);
/// handles into [`Metrics`]' families.
#[derive(Debug, Clone)]
pub struct WorkQueueMetrics {
    /// Keys made ready (not counting triggers of a key already queued).
    pub adds: Counter,
    /// Runs delayed for a retry after a failure.
    pub retries: Counter,
    /// Seconds from ready to handed out.
    pub queue_duration: Histogram,
    /// Seconds from handed out to done.
    pub work_duration: Histogram,
}

/// client-go's and controller-runtime's queue and worker families.
#[derive(Debug)]
struct QueueFamilies {
    adds: Family<QueueLabels, Counter>,
    retries: Family<QueueLabels, Counter>,
    queue_duration: Family<QueueLabels, Histogram>,
    work_duration: Family<QueueLabels, Histogram>,
    depth: Family<QueueLabels, Gauge>,
    unfinished: Family<QueueLabels, SecondsGauge>,
    longest: Family<QueueLabels, SecondsGauge>,
    active_workers: Family<ControllerLabels, Gauge>,
    max_concurrent: Family<ControllerLabels, Gauge>,
}

impl QueueFamilies {
    fn register(registry: &mut Registry) -> Self {
        // client-go's buckets: 1 µs to 1000 s, by tens.
        let seconds = || Histogram::new(exponential_buckets(1e-6, 10.0, 10));
        let families = Self {
            adds: Family::default(),
            retries: Family::default(),
            queue_duration: Family::new_with_constructor(seconds),
            work_duration: Family::new_with_constructor(seconds),
            depth: Family::default(),
            unfinished: Family::default(),
            longest: Family::default(),
            active_workers: Family::default(),
            max_concurrent: Family::default(),
        };
        registry.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            families.adds.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            families.retries.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            families.queue_duration.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            families.work_duration.clone(),
        );
        registry.register("workqueue_depth", "Current depth of workqueue", families.depth.clone());
        registry.register(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been observed by \
             work_duration; large values indicate stuck threads",
            families.unfinished.clone(),
        );
        registry.register(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
            families.longest.clone(),
        );
        registry.register(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            families.active_workers.clone(),
        );
        registry.register(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            families.max_concurrent.clone(),
        );
        families
    }
}

/// The operator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Reconcile duration, seconds, from the first snapshot to the last action.
    pub reconcile_duration: Histogram,
    /// Guest time of one `reconcile` call, seconds.
    pub wasm_call_duration: Histogram,
    /// Executed actions by op and result.
    pub actions: Family<ActionLabels, Counter>,
    /// Actions (and requirements) rejected by confinement, by op.
    pub rejected: Family<OpLabels, Counter>,
    /// Mutating API requests issued, by op.
    pub writes: Family<OpLabels, Counter>,
    /// 1 for the active module.
    pub module_info: Family<ModuleLabels, Gauge>,
    /// When the active module became active, seconds since the epoch.
    pub module_loaded: Gauge,
    /// Whether this replica is the leader (1) or not (0).
    pub leader: Gauge,
    /// Watches that have not delivered their initial list within the sync timeout.
    pub watches_overdue: Gauge,
    /// Objects in the watch caches, by role and kind; set from the caches just before
    /// each scrape ([`Metrics::set_cached`]).
    pub cached_objects: Family<CacheLabels, Gauge>,
    /// Hot-swap candidates refused, by the check that failed.
    pub module_rejected: Family<ReasonLabels, Counter>,
    /// Hot swaps done (a new module became active).
    pub module_swaps: Counter,
    /// Failed looks at the module source (a registry that is down or refuses).
    pub module_source_errors: Counter,
    /// Reconciles that panicked (caught; the key is retried with backoff).
    pub reconcile_panics: Counter,
    /// Module calls that gave no outcome, by kind of failure (`deadline`, `memory`,
    /// `trap`, `output`, `host`, `other`).
    pub module_call_errors: Family<ReasonLabels, Counter>,
    /// Batches held back by the write budget, by the limit they ran into (`rate`,
    /// `bytes`, `overall`).
    pub write_budget_exceeded: Family<ReasonLabels, Counter>,
    queues: QueueFamilies,
    active: Mutex<Option<ModuleLabels>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics: the operator's under `wasm_operator_`, with no API request
    /// counts (see [`Metrics::with_rest_client`]).
    pub fn new() -> Self {
        Self::with_rest_client(&RestClientMetrics::default())
    }

    /// Fresh metrics that include `rest`, the API request counts the client's layer
    /// records.
    pub fn with_rest_client(rest: &RestClientMetrics) -> Self {
        let mut root = Registry::default();
        let queues = QueueFamilies::register(&mut root);
        rest.register(&mut root);
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("wasm_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        let wasm_call_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "wasm_call_duration_seconds",
            "Guest time of one reconcile call into the module",
            wasm_call_duration.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register("actions", "Executed actions by op and result", actions.clone());
        let rejected = Family::<OpLabels, Counter>::default();
        registry.register(
            "actions_rejected",
            "Actions and requirements rejected by confinement",
            rejected.clone(),
        );
        let writes = Family::<OpLabels, Counter>::default();
        registry.register("writes", "Mutating API requests issued", writes.clone());
        let module_info = Family::<ModuleLabels, Gauge>::default();
        registry.register("module_info", "The active module (value 1)", module_info.clone());
        let module_loaded = Gauge::default();
        registry.register(
            "module_loaded_timestamp_seconds",
            "When the active module became active",
            module_loaded.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader lease", leader.clone());
        let watches_overdue = Gauge::default();
        registry.register(
            "watches_overdue",
            "Watches that have not delivered their initial list within the sync timeout (see /readyz)",
            watches_overdue.clone(),
        );
        let cached_objects = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cached_objects",
            "Objects held in the watch caches, by watch role and kind",
            cached_objects.clone(),
        );
        let module_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "module_rejected",
            "Hot-swap candidates refused (the active module kept serving), by failed check",
            module_rejected.clone(),
        );
        let module_swaps = Counter::default();
        registry.register("module_swaps", "Hot swaps: a new module became active", module_swaps.clone());
        let module_source_errors = Counter::default();
        registry.register(
            "module_source_errors",
            "Failed looks at the module source (a registry that is down, refuses or serves no usable artifact)",
            module_source_errors.clone(),
        );
        let reconcile_panics = Counter::default();
        registry.register(
            "reconcile_panics",
            "Reconciles that panicked; the worker lives on and the key is retried",
            reconcile_panics.clone(),
        );
        let module_call_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "module_call_errors",
            "Module calls that gave no outcome, by kind of failure",
            module_call_errors.clone(),
        );
        let write_budget_exceeded = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "write_budget_exceeded",
            "Batches of a module's writes held back by the write budget, by the limit reached",
            write_budget_exceeded.clone(),
        );
        let metrics = Self {
            registry: root,
            reconciles,
            reconcile_duration,
            wasm_call_duration,
            actions,
            rejected,
            writes,
            module_info,
            module_loaded,
            leader,
            watches_overdue,
            cached_objects,
            module_rejected,
            module_swaps,
            module_source_errors,
            reconcile_panics,
            module_call_errors,
            write_budget_exceeded,
            queues,
            active: Mutex::new(None),
        };
        metrics.initialize_series();
        metrics
    }

    /// Creates the series of the label values known in advance at zero, so that
    /// `/metrics` lists every family from the start and `increase()` and `rate()` see
    /// the first event (a series that appears at 1 has no increase to show).
    fn initialize_series(&self) {
        // get_or_create makes the series; the guard it returns is not needed.
        let reason = |reason: &str| ReasonLabels { reason: reason.to_owned() };
        for result in RECONCILE_RESULTS {
            drop(self.reconciles.get_or_create(&ResultLabels { result: (*result).to_owned() }));
        }
        for op in ACTION_OPS {
            drop(self.rejected.get_or_create(&OpLabels { op: (*op).to_owned() }));
        }
        for limit in ["rate", "bytes", "overall"] {
            drop(self.write_budget_exceeded.get_or_create(&reason(limit)));
        }
        for kind in ["deadline", "memory", "trap", "output", "host", "other"] {
            drop(self.module_call_errors.get_or_create(&reason(kind)));
        }
        for check in MODULE_CHECKS {
            drop(self.module_rejected.get_or_create(&reason(check)));
        }
    }

    /// Sets `wasm_operator_cached_objects` to `counts` (role, kind, objects), dropping
    /// kinds a hot swap stopped watching.
    pub fn set_cached(&self, counts: Vec<(&'static str, String, usize)>) {
        self.cached_objects.clear();
        for (role, kind, count) in counts {
            let labels = CacheLabels { role: role.to_owned(), kind };
            self.cached_objects.get_or_create(&labels).set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Counts a batch held back by the write budget's `limit`.
    pub fn write_budget_exceeded(&self, limit: &str) {
        self.write_budget_exceeded.get_or_create(&ReasonLabels { reason: limit.to_owned() }).inc();
    }

    /// Batches held back by the write budget so far, all limits.
    pub fn write_budget_exceeded_total(&self) -> u64 {
        ["rate", "bytes", "overall"]
            .into_iter()
            .map(|limit| {
                self.write_budget_exceeded.get_or_create(&ReasonLabels { reason: limit.to_owned() }).get()
            })
            .sum()
    }

    /// Counts a module call that gave no outcome, by `reason`.
    pub fn module_call_error(&self, reason: &str) {
        self.module_call_errors.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// Records the active module (replacing the previous one's info).
    pub fn set_module(&self, labels: ModuleLabels, loaded_at: SystemTime) {
        let mut active = self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(previous) = active.take() {
            self.module_info.remove(&previous);
        }
        self.module_info.get_or_create(&labels).set(1);
        *active = Some(labels);
        let seconds = loaded_at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        self.module_loaded.set(i64::try_from(seconds).unwrap_or(i64::MAX));
    }

    /// Counts a refused hot-swap candidate.
    pub fn module_rejection(&self, reason: &str) {
        self.module_rejected.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// Refused hot-swap candidates with `reason` so far.
    pub fn module_rejections(&self, reason: &str) -> u64 {
        self.module_rejected.get_or_create(&ReasonLabels { reason: reason.to_owned() }).get()
    }

    /// Counts a reconcile.
    pub fn reconciled(&self, result: &str, duration: Duration) {
        self.reconciles.get_or_create(&ResultLabels { result: result.to_owned() }).inc();
        self.reconcile_duration.observe(duration.as_secs_f64());
    }

    /// Counts an action.
    pub fn action(&self, op: &str, result: &str) {
        self.actions.get_or_create(&ActionLabels { op: op.to_owned(), result: result.to_owned() }).inc();
    }

    /// Counts a rejection.
    pub fn rejection(&self, op: &str) {
        self.rejected.get_or_create(&OpLabels { op: op.to_owned() }).inc();
    }

    /// Counts a write request.
    pub fn write(&self, op: &str) {
        self.writes.get_or_create(&OpLabels { op: op.to_owned() }).inc();
    }

    /// Total write requests so far, all ops.
    pub fn writes_total(&self) -> u64 {
        let mut total = 0;
        for op in ["apply", "addFinalizer", "removeFinalizer", "orphan", "patchStatus", "delete", "event"] {
            total += self.writes.get_or_create(&OpLabels { op: op.to_owned() }).get();
        }
        total
    }

    /// Total rejections so far, all ops.
    pub fn rejections_total(&self) -> u64 {
        let mut total = 0;
        for op in ACTION_OPS {
            total += self.rejected.get_or_create(&OpLabels { op: (*op).to_owned() }).get();
        }
        total
    }

    /// What the work queue of controller `name` records into.
    pub fn work_queue(&self, name: &str) -> WorkQueueMetrics {
        let labels = QueueLabels { name: name.to_owned() };
        WorkQueueMetrics {
            adds: self.queues.adds.get_or_create(&labels).clone(),
            retries: self.queues.retries.get_or_create(&labels).clone(),
            queue_duration: self.queues.queue_duration.get_or_create(&labels).clone(),
            work_duration: self.queues.work_duration.get_or_create(&labels).clone(),
        }
    }

    /// Sets controller `name`'s gauges read at scrape time: queue depth, unfinished
    /// work, active workers, and the worker count.
    pub fn set_queue(&self, name: &str, now: InFlight, workers: usize) {
        let queue = QueueLabels { name: name.to_owned() };
        let controller = ControllerLabels { controller: name.to_owned() };
        self.queues.depth.get_or_create(&queue).set(i64::try_from(now.depth).unwrap_or(i64::MAX));
        self.queues.unfinished.get_or_create(&queue).set(now.unfinished_seconds);
        self.queues.longest.get_or_create(&queue).set(now.longest_seconds);
        self.queues
            .active_workers
            .get_or_create(&controller)
            .set(i64::try_from(now.count).unwrap_or(i64::MAX));
        self.queues.max_concurrent.get_or_create(&controller).set(i64::try_from(workers).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_prefix_and_module_info_is_replaced() {
        let metrics = Metrics::new();
        metrics.reconciled("success", Duration::from_millis(3));
        metrics.action("apply", "success");
        metrics.write("apply");
        metrics.rejection("delete");
        metrics.module_rejection("abi");
        let labels = |v: &str| ModuleLabels {
            name: "m".into(),
            version: v.into(),
            digest: "sha256:ab".into(),
            source: "file m.wasm".into(),
            signer: String::new(),
        };
        metrics.set_module(labels("1"), SystemTime::UNIX_EPOCH);
        metrics.set_module(labels("2"), SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        let text = metrics.encode();
        assert!(text.contains("wasm_operator_reconciles_total{result=\"success\"} 1"), "{text}");
        assert!(text.contains("wasm_operator_writes_total{op=\"apply\"} 1"), "{text}");
        assert!(text.contains("wasm_operator_actions_rejected_total{op=\"delete\"} 1"), "{text}");
        assert!(text.contains("version=\"2\""), "{text}");
        assert!(!text.contains("version=\"1\""), "{text}");
        assert!(text.contains("wasm_operator_module_loaded_timestamp_seconds 5"), "{text}");
        assert!(text.contains("wasm_operator_module_rejected_total{reason=\"abi\"} 1"), "{text}");
        assert_eq!(metrics.module_rejections("abi"), 1);
        assert_eq!(metrics.writes_total(), 1);
        assert_eq!(metrics.rejections_total(), 1);
    }
}
