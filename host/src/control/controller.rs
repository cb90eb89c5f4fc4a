//! The controller: workers that take primaries from the work queue, run one
//! [`Attempt`] each, and turn how it ended into what happens next.
//!
//! Guarantees:
//! - different primaries reconcile in parallel (one worker each, `--concurrency`
//!   workers), one primary never twice at once (the queue hands a key out once);
//! - one function, [`Controller::settle`], turns an attempt's result into the requeue,
//!   the backoff, the `ActionRejected` event and the metrics;
//! - a failure becomes the next snapshot's `lastFailure` and the primary is retried
//!   with exponential backoff; a rejection writes nothing, records a Warning event
//!   `ActionRejected` on the primary and counts the rejection;
//! - a batch over the primary's write budget writes nothing and is delayed until it
//!   fits, which is not a failure (no `lastFailure`, no backoff); it is counted, and a
//!   Warning event `WriteBudgetExceeded` goes on the primary at most once a minute;
//! - no reconcile runs before every watch has delivered its initial list, so a
//!   snapshot never shows an existing object as missing;
//! - workers run only while `leading` is true; when it turns false, or on shutdown,
//!   they finish their reconcile in flight and stop;
//! - [`Controller::health`] fails while leading if no worker is alive, or if work has
//!   waited in the queue longer than the stall timeout with no key handed out, so
//!   that `/healthz` makes Kubernetes restart a replica that stopped reconciling.

use super::attempt::{Attempt, Done, Stop};
use super::backoff::{Backoff, Failures};
use crate::cluster::watches::Watches;
use crate::cluster::{KindRegistry, ObjectKey};
use crate::error_chain;
use crate::execute::Executor;
use crate::module::ActiveModule;
use crate::observe::Metrics;
use crate::policy::{AdminPolicy, OverBudget, WriteBudget};
use crate::queue::{Cause, WorkQueue};
use arc_swap::ArcSwap;
use futures::FutureExt as _;
use kube::Client;
use kube::runtime::events::EventType as KubeEventType;
use reconcile_sdk::LastFailure;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::Instrument;

/// How often a primary waiting for the caches to sync is looked at again.
const CACHE_SYNC_POLL: Duration = Duration::from_millis(200);

/// What the watches and the executor are built from; replaced as a whole when a hot
/// swap changes the manifest's kinds.
#[derive(Debug)]
pub struct Wiring {
    /// The running watches and their caches.
    pub watches: Watches,
    /// The executor for the manifest.
    pub executor: Executor,
}

impl Wiring {
    /// The discovered kinds.
    pub fn kinds(&self) -> &Arc<KindRegistry> {
        &self.watches.kinds
    }
}

/// When a batch cut short by the loss of leadership is looked at again (by this
/// replica only if it leads again).
const NOT_LEADING_RETRY: Duration = Duration::from_secs(1);

/// How one reconcile ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The final outcome's actions all ran.
    Done {
        /// When to look again even without a change.
        requeue: Option<Duration>,
    },
    /// The module or an action failed.
    Failed {
        /// The failure, as the next `lastFailure` reports it.
        message: String,
        /// When to retry (`None`: only on the next change).
        retry: Option<Duration>,
    },
    /// Confinement refused the batch or a requirement; nothing was written.
    Rejected {
        /// Why.
        message: String,
        /// When to retry.
        retry: Duration,
    },
    /// The batch did not fit the write budget; nothing was written.
    Delayed {
        /// Why.
        message: String,
        /// When to try again.
        after: Duration,
    },
    /// The primary is gone; its state was forgotten.
    Gone,
}

impl Verdict {
    /// The `result` label of the reconcile metric.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Done { .. } => "success",
            Verdict::Failed { .. } => "error",
            Verdict::Rejected { .. } => "rejected",
            Verdict::Delayed { .. } => "delayed",
            Verdict::Gone => "gone",
        }
    }
}

/// The reconcile loop's shared state.
pub struct Controller {
    client: Client,
    active: Arc<ActiveModule>,
    wiring: ArcSwap<Wiring>,
    queue: Arc<WorkQueue<ObjectKey>>,
    failures: Mutex<Failures<ObjectKey>>,
    budget: Mutex<WriteBudget<ObjectKey>>,
    // Workers alive, and whether they should be (this replica leads).
    workers: AtomicUsize,
    leading: AtomicBool,
    metrics: Arc<Metrics>,
    policy: AdminPolicy,
    clock: fn() -> SystemTime,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("active", &self.active).finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller over `wiring`, taking work from `queue`.
    pub fn new(
        client: Client,
        active: Arc<ActiveModule>,
        wiring: Wiring,
        queue: Arc<WorkQueue<ObjectKey>>,
        metrics: Arc<Metrics>,
        backoff: Backoff,
        policy: AdminPolicy,
    ) -> Self {
        Self {
            client,
            active,
            wiring: ArcSwap::from_pointee(wiring),
            queue,
            failures: Mutex::new(Failures::new(backoff)),
            budget: Mutex::new(WriteBudget::new(policy.writes)),
            workers: AtomicUsize::new(0),
            leading: AtomicBool::new(false),
            metrics,
            policy,
            clock: SystemTime::now,
        }
    }

    /// The current wiring (watches, caches, executor).
    pub fn wiring(&self) -> Arc<Wiring> {
        self.wiring.load_full()
    }

    /// Replaces the wiring (hot swap with new kinds); reconciles in flight finish on
    /// the old one.
    pub fn set_wiring(&self, wiring: Wiring) {
        self.wiring.store(Arc::new(wiring));
    }

    /// The work queue.
    pub fn queue(&self) -> &Arc<WorkQueue<ObjectKey>> {
        &self.queue
    }

    /// The active module's holder.
    pub fn active(&self) -> &ActiveModule {
        &self.active
    }

    /// The API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The metrics reconciles record into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The administrator's policy: the caps on one outcome and the workload rules.
    pub fn policy(&self) -> &AdminPolicy {
        &self.policy
    }

    /// The host's clock now.
    pub fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// The last failure of `key`, for its next snapshot.
    pub fn last_failure(&self, key: &ObjectKey) -> Option<LastFailure> {
        self.failures().last(key)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures<ObjectKey>> {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, WriteBudget<ObjectKey>> {
        self.budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether reconciling goes on: while this replica leads, some worker is alive and
    /// no work has waited unserved for longer than `stall`. The error says which.
    /// Whether this replica reconciles now: it holds the Lease (or runs without
    /// leader election). Checked before every action, so that a batch stops writing
    /// as soon as leadership is lost.
    pub(crate) fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    pub fn health(&self, stall: Duration) -> Result<(), String> {
        if !self.leading.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.workers.load(Ordering::Acquire) == 0 {
            return Err("leading, but no reconcile worker is running".to_owned());
        }
        match self.queue.unserved_for() {
            Some(waited) if waited > stall => Err(format!(
                "work has waited {}s in the queue with no worker taking it (stall timeout {}s)",
                waited.as_secs(),
                stall.as_secs()
            )),
            _ => Ok(()),
        }
    }

    /// Takes `writes` mutating requests of `bytes` from `key`'s write budget, all or
    /// nothing.
    pub(crate) fn take_writes(&self, key: &ObjectKey, writes: u32, bytes: u64) -> Result<(), OverBudget> {
        self.budget().take(key, writes, bytes, std::time::Instant::now())
    }

    /// Runs workers while `leading` is true, until `shutdown` turns true; every
    /// reconcile in flight finishes before this returns.
    pub async fn run(
        self: Arc<Self>,
        concurrency: usize,
        mut leading: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                led = leading.wait_for(|l| *l) => if led.is_err() { return },
            }
            tracing::info!("leading: reconciling");
            // Whatever happened while another replica led, look at everything once.
            for key in self.wiring().watches.caches.primary_keys() {
                self.queue.enqueue(key, Cause::Resync);
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            // Counted before they start, so that health never sees a leader without.
            let workers: Vec<_> = (0..concurrency.max(1))
                .map(|_| {
                    self.workers.fetch_add(1, Ordering::AcqRel);
                    tokio::spawn(self.clone().worker(stop_rx.clone()))
                })
                .collect();
            self.leading.store(true, Ordering::Release);
            let shutting_down = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => true,
                _ = leading.wait_for(|l| !*l) => false,
            };
            // The elector ends (closing `leading`) on shutdown too: that is not a
            // loss of leadership.
            let shutting_down = shutting_down || *shutdown.borrow();
            self.leading.store(false, Ordering::Release);
            let _ = stop_tx.send(true);
            for worker in workers {
                if let Err(err) = worker.await {
                    tracing::error!(error = %err, "a reconcile worker panicked");
                }
            }
            if shutting_down {
                return;
            }
            tracing::warn!("lost leadership: stopped reconciling");
        }
    }

    async fn worker(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // Uncounted however the task ends (a panic outside a reconcile too).
        struct Alive<'a>(&'a AtomicUsize);
        impl Drop for Alive<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _alive = Alive(&self.workers);
        loop {
            let (key, cause) = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                next = self.queue.next() => next,
            };
            if !self.wiring().watches.caches.synced_for(&key) {
                // A snapshot from a half-listed cache could show an existing object as
                // missing, and a module would re-create (overwrite) it: wait for the
                // initial list of every watch this primary depends on, at startup, when
                // its namespace gets its watches and when an optional kind appears.
                self.queue.enqueue_after(key.clone(), CACHE_SYNC_POLL, Cause::CacheSync);
                self.queue.done(&key);
                continue;
            }
            let span = tracing::info_span!("reconcile", namespace = %key.namespace, name = %key.name, %cause);
            let started = tokio::time::Instant::now();
            // A panic in one reconcile (a host bug, or a module double that panics)
            // must not kill the worker and leave its key in flight for good.
            let verdict =
                match AssertUnwindSafe(self.reconcile(&key).instrument(span.clone())).catch_unwind().await {
                    Ok(verdict) => verdict,
                    Err(panic) => self.panicked(&key, panic.as_ref()),
                };
            self.metrics.reconciled(verdict.label(), started.elapsed());
            let _entered = span.enter();
            match &verdict {
                Verdict::Done { requeue } => {
                    tracing::debug!(?requeue, "reconciled");
                    if let Some(delay) = requeue {
                        self.queue.enqueue_after(key.clone(), *delay, Cause::Requeue);
                    }
                }
                Verdict::Failed { message, retry } => {
                    tracing::warn!(?retry, "reconcile failed: {message}");
                    if let Some(delay) = retry {
                        self.queue.enqueue_after(key.clone(), *delay, Cause::Retry);
                    }
                }
                Verdict::Rejected { message, retry } => {
                    tracing::warn!(?retry, "action rejected: {message}");
                    self.queue.enqueue_after(key.clone(), *retry, Cause::Retry);
                }
                Verdict::Delayed { message, after } => {
                    tracing::info!(?after, "{message}");
                    self.queue.enqueue_after(key.clone(), *after, Cause::WriteBudget);
                }
                Verdict::Gone => tracing::debug!("primary is gone"),
            }
            self.queue.done(&key);
        }
    }

    /// Reconciles one primary: one [`Attempt`] with the active module and wiring,
    /// settled into a [`Verdict`].
    pub async fn reconcile(&self, key: &ObjectKey) -> Verdict {
        let attempt = Attempt::new(self, key);
        let result = attempt.run().await;
        self.settle(&attempt, result).await
    }

    /// Turns how an attempt ended into the verdict, the backoff, the event and the
    /// metrics. The one place that does.
    pub(crate) async fn settle(&self, attempt: &Attempt<'_>, result: Result<Done, Stop>) -> Verdict {
        let key = attempt.key;
        let stop = match result {
            Ok(Done { requeue }) => {
                self.failures().succeeded(key);
                return Verdict::Done { requeue };
            }
            Err(stop) => stop,
        };
        let message = stop.message();
        match stop {
            Stop::Gone => {
                self.failures().succeeded(key);
                self.budget().forget(key);
                attempt.wiring.watches.caches.forget(key);
                Verdict::Gone
            }
            // Whoever leads now reconciles it (a new leader looks at every primary).
            Stop::NotLeading => Verdict::Delayed { message, after: NOT_LEADING_RETRY },
            Stop::OverBudget { over: OverBudget::Wait { after, exceeded }, primary, .. } => {
                self.metrics.write_budget_exceeded(exceeded.label());
                // The warning is the host's own write and is not budgeted; it is
                // rate-limited instead, so that it cannot become a loop of its own.
                if self.budget().should_warn(key, std::time::Instant::now()) {
                    let note = format!(
                        "{message}. The host holds back a module that writes more than the \
                         administrator allows (run's --write-* flags)"
                    );
                    let manifest = attempt.module.module.manifest();
                    if let Err(err) = attempt
                        .wiring
                        .executor
                        .event(
                            KubeEventType::Warning,
                            "WriteBudgetExceeded",
                            &note,
                            "write",
                            manifest,
                            &primary,
                        )
                        .await
                    {
                        tracing::warn!("cannot record the WriteBudgetExceeded event: {}", error_chain(&err));
                    }
                }
                Verdict::Delayed { message, after }
            }
            Stop::Rejected { op, primary, .. } => {
                self.metrics.rejection(op);
                let manifest = attempt.module.module.manifest();
                if let Err(err) = attempt
                    .wiring
                    .executor
                    .event(KubeEventType::Warning, "ActionRejected", &message, op, manifest, &primary)
                    .await
                {
                    tracing::warn!("cannot record the ActionRejected event: {}", error_chain(&err));
                }
                let retry = self.failures().failed(key, message.clone());
                Verdict::Rejected { message, retry }
            }
            Stop::NoUid => self.fail(key, message, false),
            Stop::ModuleError { retryable, .. } => self.fail(key, message, retryable),
            // A failed action is retried with backoff, never sooner, whatever the
            // module asked: `requeueAfterSeconds: 0` must not make a retry loop.
            Stop::ActionFailed { .. }
            | Stop::TooLarge(_)
            | Stop::Undecided(_)
            | Stop::Reread(_)
            | Stop::Conflicts => self.fail(key, message, true),
        }
    }

    /// A reconcile that panicked: counted, logged, and retried with backoff.
    fn panicked(&self, key: &ObjectKey, panic: &(dyn std::any::Any + Send)) -> Verdict {
        self.metrics.reconcile_panics.inc();
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        tracing::error!(namespace = %key.namespace, name = %key.name, "the reconcile panicked: {what}");
        self.fail(key, format!("the reconcile panicked: {what}"), true)
    }

    fn fail(&self, key: &ObjectKey, message: String, retry: bool) -> Verdict {
        let delay = self.failures().failed(key, message.clone());
        Verdict::Failed { message, retry: retry.then_some(delay) }
    }
}
