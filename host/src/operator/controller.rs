//! The controller: workers that take primaries from the work queue, decide with the
//! active module, confine and execute, and schedule the next run.
//!
//! Guarantees:
//! - different primaries reconcile in parallel (one worker each, `--concurrency`
//!   workers), one primary never twice at once (the queue hands a key out once);
//! - the active module is read once per reconcile, so a hot swap never mixes two
//!   modules in one reconcile;
//! - a batch is confined as a whole before its first write: a batch with any action
//!   outside the module's rights writes nothing at all, records a Warning event
//!   `ActionRejected` on the primary and counts the rejection (stricter than stopping
//!   at the rejected action, and what "a hostile module can touch nothing" needs);
//! - allowed actions run in order and the first failure stops the batch; the failure
//!   becomes the next snapshot's `lastFailure` and the primary is retried with
//!   exponential backoff; a guarded patch that conflicts re-reads the primary and
//!   decides again (bounded), which is not a failure;
//! - no reconcile runs before every watch has delivered its initial list, so a
//!   snapshot never shows an existing object as missing;
//! - workers run only while `leading` is true; when it turns false, or on shutdown,
//!   they finish their reconcile in flight and stop.

use super::backoff::{Backoff, Failures};
use super::confine::{PrimaryRef, Rejection, check_action};
use super::discovery::KindRegistry;
use super::execute::{ActionError, Executor, PrimaryTarget, apply_target};
use super::index::{KindKey, ObjectKey, RequirementTarget};
use super::metrics::Metrics;
use super::module::ActiveModule;
use super::queue::WorkQueue;
use super::reconcile::{DecideError, DecideInput, decide};
use super::snapshot;
use super::watch::Watches;
use arc_swap::ArcSwap;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::EventType as KubeEventType;
use reconcile_sdk::{Action, Outcome, RequiredObject, Requirement};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::Instrument;

/// How often a primary is reconciled again while it requires an object that no watch
/// sees (see [`requires_unwatched`]).
pub const UNWATCHED_REQUIREMENT_POLL: Duration = Duration::from_secs(15);

/// Whether some required object is one whose change no watch reports: an object of a
/// related kind (not also a `reads` kind) without the owner label, or not there at
/// all. The related watches list only labelled objects (the others can never be
/// associated), so such a requirement is polled instead of watched.
fn requires_unwatched(required: &[RequiredObject], manifest: &reconcile_sdk::Manifest) -> bool {
    required.iter().any(|answer| {
        let is =
            |kinds: &[reconcile_sdk::KindRef]| kinds.iter().any(|k| k.is(&answer.api_version, &answer.kind));
        let labelled = answer
            .object
            .as_ref()
            .and_then(|object| object.pointer("/metadata/labels"))
            .and_then(|labels| labels.get(&manifest.owner_label))
            .is_some();
        is(&manifest.related) && !is(&manifest.reads) && !labelled
    })
}

/// How often one reconcile re-reads the primary and decides again after a guarded
/// patch conflicted, before giving up until the next trigger.
const CONFLICT_RETRIES: usize = 3;

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
    metrics: Arc<Metrics>,
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
    ) -> Self {
        Self {
            client,
            active,
            wiring: ArcSwap::from_pointee(wiring),
            queue,
            failures: Mutex::new(Failures::new(backoff)),
            metrics,
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

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures<ObjectKey>> {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
                self.queue.enqueue(key);
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            let workers: Vec<_> =
                (0..concurrency.max(1)).map(|_| tokio::spawn(self.clone().worker(stop_rx.clone()))).collect();
            let shutting_down = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => true,
                _ = leading.wait_for(|l| !*l) => false,
            };
            // The elector ends (closing `leading`) on shutdown too: that is not a
            // loss of leadership.
            let shutting_down = shutting_down || *shutdown.borrow();
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
        loop {
            let key = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                key = self.queue.next() => key,
            };
            if !self.wiring().watches.caches.synced() {
                // A snapshot from a half-listed cache could show an existing object as
                // missing, and a module would re-create (overwrite) it: wait for every
                // watch's initial list, at startup and when an optional kind appears.
                self.queue.enqueue_after(key.clone(), CACHE_SYNC_POLL);
                self.queue.done(&key);
                continue;
            }
            let span = tracing::info_span!("reconcile", namespace = %key.namespace, name = %key.name);
            let started = tokio::time::Instant::now();
            let verdict = self.reconcile(&key).instrument(span.clone()).await;
            self.metrics.reconciled(verdict.label(), started.elapsed());
            let _entered = span.enter();
            match &verdict {
                Verdict::Done { requeue } => {
                    tracing::debug!(?requeue, "reconciled");
                    if let Some(delay) = requeue {
                        self.queue.enqueue_after(key.clone(), *delay);
                    }
                }
                Verdict::Failed { message, retry } => {
                    tracing::warn!(?retry, "reconcile failed: {message}");
                    if let Some(delay) = retry {
                        self.queue.enqueue_after(key.clone(), *delay);
                    }
                }
                Verdict::Rejected { message, retry } => {
                    tracing::warn!(?retry, "action rejected: {message}");
                    self.queue.enqueue_after(key.clone(), *retry);
                }
                Verdict::Gone => tracing::debug!("primary is gone"),
            }
            self.queue.done(&key);
        }
    }

    /// Reconciles one primary: decide, confine, execute. Idempotent: with the cluster
    /// converged, a module that writes only differences makes it issue no write.
    pub async fn reconcile(&self, key: &ObjectKey) -> Verdict {
        let module = self.active.current();
        let manifest = module.module.manifest();
        let wiring = self.wiring();
        let caches = &wiring.watches.caches;
        let Some(cached) = caches.primary(key) else {
            self.failures().succeeded(key);
            caches.forget(key);
            return Verdict::Gone;
        };
        let Some(mut primary) = PrimaryTarget::new(cached) else {
            return self.fail(key, "the primary has no uid".into(), false);
        };
        for _ in 0..CONFLICT_RETRIES {
            let remembered: Vec<Requirement> = caches
                .requirements_of(key)
                .into_iter()
                .map(|t| Requirement { api_version: t.kind.api_version, kind: t.kind.kind, name: t.key.name })
                .collect();
            let input = DecideInput {
                manifest,
                kinds: wiring.kinds(),
                client: &self.client,
                primary: &primary,
                claimed: caches.claimed_by(key),
                remembered,
                last_failure: self.failures().last(key),
                now: snapshot::rfc3339((self.clock)()),
                metrics: Some(&self.metrics),
            };
            let decision = match decide(module.module.as_ref(), input).await {
                Ok(decision) => decision,
                Err(DecideError::Rejected(rejection)) => {
                    return self.reject("requires", *rejection, &wiring, manifest, &primary).await;
                }
                Err(err) => return self.fail(key, error_chain(&err), true),
            };
            let (actions, requires, requeue) = match decision.outcome {
                Outcome::Error(err) => {
                    let message = format!("module error: {}", err.message);
                    return self.fail(key, message, err.retryable);
                }
                Outcome::Actions { actions, requires, requeue_after_seconds } => {
                    (actions, requires, requeue_after_seconds.map(Duration::from_secs))
                }
            };
            // A required object no watch sees (see `requires_unwatched`) is polled.
            let requeue = if requires_unwatched(&decision.snapshot.required, manifest) {
                Some(
                    requeue.map_or(UNWATCHED_REQUIREMENT_POLL, |asked| asked.min(UNWATCHED_REQUIREMENT_POLL)),
                )
            } else {
                requeue
            };
            let targets = requires
                .iter()
                .map(|r| RequirementTarget {
                    kind: KindKey::new(&r.api_version, &r.kind),
                    key: ObjectKey::new(&key.namespace, &r.name),
                })
                .collect();
            caches.set_requirements(key, targets);
            let rights = PrimaryRef { key, uid: &primary.uid };
            for action in &actions {
                if let Err(rejection) = check_action(action, manifest, rights, &decision.associated) {
                    return self.reject(action.op(), rejection, &wiring, manifest, &primary).await;
                }
            }
            // An apply of an object the snapshot did not show as the primary's creates
            // it, unless a foreign namesake exists that the related watch (labelled
            // objects only) cannot see: read each fresh before anything is written.
            for action in &actions {
                let Action::Apply { object } = action else { continue };
                let (kind, name) = apply_target(object);
                if decision.associated.contains(&(kind.clone(), name.to_owned())) {
                    continue;
                }
                if let Err(err) = wiring.executor.check_apply_target(&kind, name, manifest, &primary).await {
                    return self
                        .stop_batch(action.op(), err, key, requeue, &wiring, manifest, &primary)
                        .await;
                }
            }
            let mut conflicted = false;
            for action in &actions {
                match wiring.executor.execute(action, manifest, &primary).await {
                    Ok(written) => {
                        self.metrics.action(action.op(), "success");
                        // Guard the rest of the batch against the primary as it is now.
                        if let Some(fresh) = written.and_then(|o| PrimaryTarget::new(Arc::new(o))) {
                            primary = fresh;
                        }
                    }
                    Err(ActionError::Conflict { message, .. }) => {
                        self.metrics.action(action.op(), "conflict");
                        tracing::info!(
                            op = action.op(),
                            "guarded patch conflicted; re-reading the primary: {message}"
                        );
                        conflicted = true;
                        break;
                    }
                    Err(err) => {
                        return self
                            .stop_batch(action.op(), err, key, requeue, &wiring, manifest, &primary)
                            .await;
                    }
                }
            }
            if !conflicted {
                self.failures().succeeded(key);
                return Verdict::Done { requeue };
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &key.namespace, wiring.kinds().primary());
            match api.get_opt(&key.name).await {
                Ok(Some(fresh)) => match PrimaryTarget::new(Arc::new(fresh)) {
                    Some(fresh) => primary = fresh,
                    None => return self.fail(key, "the primary has no uid".into(), false),
                },
                Ok(None) => {
                    self.failures().succeeded(key);
                    caches.forget(key);
                    return Verdict::Gone;
                }
                Err(err) => {
                    return self.fail(
                        key,
                        format!("cannot re-read the primary: {}", error_chain(&err)),
                        true,
                    );
                }
            }
        }
        self.fail(key, format!("guarded patches kept conflicting after {CONFLICT_RETRIES} attempts"), true)
    }

    fn fail(&self, key: &ObjectKey, message: String, retry: bool) -> Verdict {
        let delay = self.failures().failed(key, message.clone());
        Verdict::Failed { message, retry: retry.then_some(delay) }
    }

    /// A failed action: retried with backoff, but never later than the module asked
    /// to look again (a module retrying a cleanup every 5 s is retried every 5 s at
    /// most, however long it has been failing).
    fn fail_batch(&self, key: &ObjectKey, message: String, requeue: Option<Duration>) -> Verdict {
        let delay = self.failures().failed(key, message.clone());
        let delay = requeue.map_or(delay, |asked| delay.min(asked));
        Verdict::Failed { message, retry: Some(delay) }
    }

    /// Ends a batch at an action that failed other than by a conflict: a rejection
    /// found by a fresh read is reported as any rejection, anything else fails the
    /// batch (retried with backoff).
    #[allow(clippy::too_many_arguments)]
    async fn stop_batch(
        &self,
        op: &'static str,
        err: ActionError,
        key: &ObjectKey,
        requeue: Option<Duration>,
        wiring: &Wiring,
        manifest: &reconcile_sdk::Manifest,
        primary: &PrimaryTarget,
    ) -> Verdict {
        match err {
            ActionError::Rejected(rejection) => {
                self.metrics.action(op, "rejected");
                self.reject(op, *rejection, wiring, manifest, primary).await
            }
            err => {
                self.metrics.action(op, "error");
                self.fail_batch(key, error_chain(&err), requeue)
            }
        }
    }

    async fn reject(
        &self,
        op: &'static str,
        rejection: Rejection,
        wiring: &Wiring,
        manifest: &reconcile_sdk::Manifest,
        primary: &PrimaryTarget,
    ) -> Verdict {
        self.metrics.rejection(op);
        let message = format!("rejected {op}: {rejection}");
        if let Err(err) = wiring
            .executor
            .event(KubeEventType::Warning, "ActionRejected", &message, op, manifest, primary)
            .await
        {
            tracing::warn!("cannot record the ActionRejected event: {}", error_chain(&err));
        }
        let retry = self.failures().failed(&primary.key, message.clone());
        Verdict::Rejected { message, retry }
    }
}

/// An error and its causes on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
