//! The work queue between the watches and the controller's workers: which primaries
//! to reconcile, when, and why.
//!
//! Guarantees:
//! - a key is handed out at most once at a time: a key triggered while it is being
//!   reconciled is marked dirty and handed out again once [`WorkQueue::done`] is
//!   called, so no change is lost and no primary is reconciled twice at once;
//! - a key waiting to run is queued once, however often it is triggered;
//! - a delayed key ([`WorkQueue::enqueue_after`]) keeps its earliest deadline, and an
//!   immediate trigger supersedes it;
//! - keys run in the order they became ready;
//! - each run is handed out with its [`Cause`]: the first trigger of the run, or the
//!   immediate trigger that superseded a delay.
//!
//! Concurrency across keys is the caller's: each worker takes one key at a time.
//!
//! With [`WorkQueue::with_metrics`] it records client-go's workqueue metrics: adds,
//! retries (delayed runs because of [`Cause::Retry`]), how long a key waited between
//! becoming ready and being handed out, and how long it was in flight;
//! [`WorkQueue::in_flight`] gives the rest (depth, unfinished work) at scrape time.

use crate::observe::WorkQueueMetrics;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a key was enqueued; the reconcile's span carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A watch event on the primary itself.
    Primary,
    /// A watch event on an object of this related kind that claims the primary.
    Related(Arc<str>),
    /// A watch event on an object of this kind that the primary required.
    Required(Arc<str>),
    /// The module asked to be called again later, or an unwatched requirement is polled.
    Requeue,
    /// A retry after a failure or a rejection, with backoff.
    Retry,
    /// The caches were not synced yet when the key came up.
    CacheSync,
    /// A hot swap: every primary runs once with the new module.
    Swap,
    /// Leadership was taken, or an optional kind appeared: every primary runs once.
    Resync,
    /// A batch waited for the primary's write budget.
    WriteBudget,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Primary => f.write_str("primary changed"),
            Cause::Related(kind) => write!(f, "related {kind} changed"),
            Cause::Required(kind) => write!(f, "required {kind} changed"),
            Cause::Requeue => f.write_str("requeue"),
            Cause::Retry => f.write_str("retry"),
            Cause::CacheSync => f.write_str("waiting for the caches"),
            Cause::Swap => f.write_str("module swapped"),
            Cause::Resync => f.write_str("resync"),
            Cause::WriteBudget => f.write_str("write budget"),
        }
    }
}

#[derive(Debug)]
struct State<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    // The cause of each key's next immediate run (queued, or dirty while in flight).
    causes: HashMap<K, Cause>,
    delayed: HashMap<K, (Instant, u64, Cause)>,
    deadlines: BTreeSet<(Instant, u64)>,
    by_seq: HashMap<u64, K>,
    seq: u64,
    // Keys handed out, with when.
    in_flight: HashMap<K, Instant>,
    // When each queued key became ready.
    ready_since: HashMap<K, Instant>,
    dirty: HashSet<K>,
    // Since when ready work has waited with no key handed out (`None`: none waits).
    waiting_since: Option<Instant>,
}

/// A deduplicating, delaying work queue of keys.
#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
    metrics: Option<WorkQueueMetrics>,
}

/// The keys in flight at one moment, for the metrics read at scrape time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct InFlight {
    /// Keys ready and waiting for a worker.
    pub depth: usize,
    /// Keys being reconciled.
    pub count: usize,
    /// The sum of how long each has been in flight, seconds.
    pub unfinished_seconds: f64,
    /// How long the oldest has been in flight, seconds.
    pub longest_seconds: f64,
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                queued: HashSet::new(),
                causes: HashMap::new(),
                delayed: HashMap::new(),
                deadlines: BTreeSet::new(),
                by_seq: HashMap::new(),
                seq: 0,
                in_flight: HashMap::new(),
                ready_since: HashMap::new(),
                dirty: HashSet::new(),
                waiting_since: None,
            }),
            notify: Notify::new(),
            metrics: None,
        }
    }

    /// An empty queue recording into `metrics`.
    pub fn with_metrics(metrics: WorkQueueMetrics) -> Self {
        Self { metrics: Some(metrics), ..Self::new() }
    }

    /// Depth and keys in flight now.
    pub fn in_flight(&self) -> InFlight {
        let state = self.lock();
        let now = Instant::now();
        let ages = state.in_flight.values().map(|since| now.saturating_duration_since(*since).as_secs_f64());
        let (unfinished, longest) = ages.fold((0.0, 0.0_f64), |(sum, max), age| (sum + age, max.max(age)));
        InFlight {
            depth: state.ready.len(),
            count: state.in_flight.len(),
            unfinished_seconds: unfinished,
            longest_seconds: longest,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // The state stays consistent even if a holder panicked: every method finishes
        // its updates before it could panic.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reconcile `key` as soon as possible, because of `cause`.
    pub fn enqueue(&self, key: K, cause: Cause) {
        let mut state = self.lock();
        self.make_ready(&mut state, key, cause);
        drop(state);
        self.notify.notify_one();
    }

    /// Reconcile `key` after `delay`, because of `cause`, unless it is due earlier
    /// anyway. A delay too large to represent is capped at about a year.
    pub fn enqueue_after(&self, key: K, delay: Duration, cause: Cause) {
        if delay.is_zero() {
            return self.enqueue(key, cause);
        }
        let now = Instant::now();
        let at = now.checked_add(delay).unwrap_or_else(|| now + FAR_FUTURE);
        let mut state = self.lock();
        if state.queued.contains(&key) {
            return;
        }
        if cause == Cause::Retry
            && let Some(metrics) = &self.metrics
        {
            metrics.retries.inc();
        }
        if let Some(&(existing, _, _)) = state.delayed.get(&key) {
            if existing <= at {
                return;
            }
            Self::undelay(&mut state, &key);
        }
        state.seq += 1;
        let seq = state.seq;
        state.deadlines.insert((at, seq));
        state.by_seq.insert(seq, key.clone());
        state.delayed.insert(key, (at, seq, cause));
        drop(state);
        // A worker may be sleeping until a later deadline.
        self.notify.notify_one();
    }

    /// Drops `key`'s delayed run; returns its cause if it had one.
    fn undelay(state: &mut State<K>, key: &K) -> Option<Cause> {
        let (at, seq, cause) = state.delayed.remove(key)?;
        state.deadlines.remove(&(at, seq));
        state.by_seq.remove(&seq);
        Some(cause)
    }

    fn make_ready(&self, state: &mut State<K>, key: K, cause: Cause) {
        Self::undelay(state, &key);
        if state.in_flight.contains_key(&key) {
            state.causes.entry(key.clone()).or_insert(cause);
            state.dirty.insert(key);
        } else if state.queued.insert(key.clone()) {
            let now = Instant::now();
            state.causes.insert(key.clone(), cause);
            state.ready_since.insert(key.clone(), now);
            state.ready.push_back(key);
            state.waiting_since.get_or_insert(now);
            if let Some(metrics) = &self.metrics {
                metrics.adds.inc();
            }
        }
    }

    fn promote_due(&self, state: &mut State<K>, now: Instant) -> Option<Instant> {
        while let Some(&(at, seq)) = state.deadlines.first() {
            if at > now {
                return Some(at);
            }
            state.deadlines.remove(&(at, seq));
            if let Some(key) = state.by_seq.remove(&seq)
                && let Some((_, _, cause)) = state.delayed.remove(&key)
            {
                self.make_ready(state, key, cause);
            }
        }
        None
    }

    /// Waits for the next key to reconcile, with why it was enqueued, and marks it in
    /// flight; the caller must call [`WorkQueue::done`] with it afterwards.
    pub async fn next(&self) -> (K, Cause) {
        loop {
            // Registered before looking, so a trigger between the look and the wait
            // is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_deadline = {
                let mut state = self.lock();
                let now = Instant::now();
                let next_deadline = self.promote_due(&mut state, now);
                if let Some(key) = state.ready.pop_front() {
                    state.queued.remove(&key);
                    if let Some(since) = state.ready_since.remove(&key)
                        && let Some(metrics) = &self.metrics
                    {
                        metrics.queue_duration.observe(now.saturating_duration_since(since).as_secs_f64());
                    }
                    state.in_flight.insert(key.clone(), now);
                    let cause = state.causes.remove(&key).unwrap_or(Cause::Requeue);
                    let more = !state.ready.is_empty();
                    state.waiting_since = more.then(Instant::now);
                    drop(state);
                    if more {
                        // Pass the baton: another worker may take the next key.
                        self.notify.notify_one();
                    }
                    return (key, cause);
                }
                next_deadline
            };
            match next_deadline {
                Some(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// How long work has been waiting with no key handed out: ready keys, or delayed
    /// ones past their time (which only a waiting worker promotes). `None` when
    /// nothing waits. Long waits mean no worker is taking work.
    pub fn unserved_for(&self) -> Option<Duration> {
        let state = self.lock();
        let now = Instant::now();
        let due = state.deadlines.first().map(|&(at, _)| at).filter(|at| *at <= now);
        let since = match (state.waiting_since, due) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(now.saturating_duration_since(since))
    }

    /// Marks `key` as no longer in flight; if it was triggered meanwhile it is queued
    /// again at once.
    pub fn done(&self, key: &K) {
        let mut state = self.lock();
        if let Some(since) = state.in_flight.remove(key)
            && let Some(metrics) = &self.metrics
        {
            metrics.work_duration.observe(Instant::now().saturating_duration_since(since).as_secs_f64());
        }
        if state.dirty.remove(key) {
            let cause = state.causes.remove(key).unwrap_or(Cause::Requeue);
            self.make_ready(&mut state, key.clone(), cause);
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Forgets any pending or delayed run of `key` (e.g. the primary was deleted).
    pub fn forget(&self, key: &K) {
        let mut state = self.lock();
        Self::undelay(&mut state, key);
        state.dirty.remove(key);
        state.causes.remove(key);
        if state.queued.remove(key) {
            state.ready_since.remove(key);
            state.ready.retain(|k| k != key);
            if state.ready.is_empty() {
                state.waiting_since = None;
            }
        }
    }

    /// How many keys are waiting to run now (not delayed, not in flight).
    pub fn ready_len(&self) -> usize {
        self.lock().ready.len()
    }
}

/// Where a delay that `Instant` cannot represent is capped.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn next_now(queue: &WorkQueue<&'static str>) -> Option<&'static str> {
        tokio::time::timeout(Duration::from_millis(1), queue.next()).await.ok().map(|(key, _)| key)
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_deduplicated_and_ordered() {
        let queue = WorkQueue::new();
        queue.enqueue("a", Cause::Primary);
        queue.enqueue("b", Cause::Primary);
        queue.enqueue("a", Cause::Primary);
        assert_eq!(queue.ready_len(), 2);
        assert_eq!(next_now(&queue).await, Some("a"));
        assert_eq!(next_now(&queue).await, Some("b"));
        assert_eq!(next_now(&queue).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_in_flight_is_not_handed_out_twice_but_runs_again_after() {
        let queue = WorkQueue::new();
        queue.enqueue("a", Cause::Primary);
        assert_eq!(next_now(&queue).await, Some("a"));
        queue.enqueue("a", Cause::Primary);
        queue.enqueue("a", Cause::Primary);
        assert_eq!(next_now(&queue).await, None, "a is still in flight");
        queue.done(&"a");
        assert_eq!(next_now(&queue).await, Some("a"));
        queue.done(&"a");
        assert_eq!(next_now(&queue).await, None, "one rerun for any number of triggers");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_wait_keep_the_earliest_deadline_and_yield_to_triggers() {
        let queue = Arc::new(WorkQueue::new());
        queue.enqueue_after("a", Duration::from_secs(10), Cause::Requeue);
        queue.enqueue_after("a", Duration::from_secs(30), Cause::Requeue);
        queue.enqueue_after("b", Duration::from_secs(20), Cause::Requeue);
        assert_eq!(next_now(&queue).await, None);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(next_now(&queue).await, Some("a"));
        queue.done(&"a");
        assert_eq!(next_now(&queue).await, None);
        // A trigger runs b now and cancels its delayed run.
        queue.enqueue("b", Cause::Primary);
        assert_eq!(next_now(&queue).await, Some("b"));
        queue.done(&"b");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(next_now(&queue).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_worker_wakes_for_a_delayed_key() {
        let queue = Arc::new(WorkQueue::new());
        let worker = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await.0 }
        });
        tokio::task::yield_now().await;
        queue.enqueue_after("a", Duration::from_secs(5), Cause::Requeue);
        assert_eq!(worker.await.ok(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn forget_drops_pending_and_delayed_runs() {
        let queue = WorkQueue::new();
        queue.enqueue("a", Cause::Primary);
        queue.enqueue_after("b", Duration::from_secs(1), Cause::Requeue);
        queue.forget(&"a");
        queue.forget(&"b");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(next_now(&queue).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn unserved_work_is_measured_from_when_it_became_ready() {
        let queue = WorkQueue::new();
        assert_eq!(queue.unserved_for(), None, "an empty queue waits for nothing");
        tokio::time::advance(Duration::from_secs(600)).await;
        queue.enqueue("a", Cause::Primary);
        queue.enqueue("b", Cause::Primary);
        // An idle hour before does not count: the wait starts at the enqueue.
        assert_eq!(queue.unserved_for(), Some(Duration::ZERO));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(queue.unserved_for(), Some(Duration::from_secs(5)));
        // A handout restarts the clock for what is left; the last one stops it.
        assert_eq!(next_now(&queue).await, Some("a"));
        assert_eq!(queue.unserved_for(), Some(Duration::ZERO));
        assert_eq!(next_now(&queue).await, Some("b"));
        assert_eq!(queue.unserved_for(), None);
        // A delayed key past its time waits too, though no worker promoted it.
        queue.enqueue_after("c", Duration::from_secs(1), Cause::Requeue);
        assert_eq!(queue.unserved_for(), None);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(queue.unserved_for(), Some(Duration::from_secs(3)));
        queue.forget(&"c");
        assert_eq!(queue.unserved_for(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn each_run_carries_the_cause_of_its_first_trigger() {
        let queue = WorkQueue::new();
        let kind: Arc<str> = Arc::from("ConfigMap");
        queue.enqueue("a", Cause::Related(kind.clone()));
        queue.enqueue("a", Cause::Primary);
        assert_eq!(queue.next().await, ("a", Cause::Related(kind)));
        // Dirty while in flight: the rerun carries the first trigger since.
        queue.enqueue("a", Cause::Swap);
        queue.enqueue("a", Cause::Primary);
        queue.done(&"a");
        assert_eq!(queue.next().await, ("a", Cause::Swap));
        queue.done(&"a");
        // A delayed run keeps its cause; an immediate trigger supersedes it and its cause.
        queue.enqueue_after("b", Duration::from_secs(5), Cause::Retry);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(queue.next().await, ("b", Cause::Retry));
        queue.done(&"b");
        queue.enqueue_after("b", Duration::from_secs(5), Cause::Retry);
        queue.enqueue("b", Cause::Primary);
        assert_eq!(queue.next().await, ("b", Cause::Primary));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_too_large_for_the_clock_does_not_panic() {
        let queue = WorkQueue::new();
        queue.enqueue_after("a", Duration::from_secs(u64::MAX), Cause::Requeue);
        assert_eq!(next_now(&queue).await, None);
        queue.enqueue("a", Cause::Primary);
        assert_eq!(next_now(&queue).await, Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_records_client_gos_workqueue_metrics() {
        let metrics = crate::observe::Metrics::new();
        let queue = WorkQueue::with_metrics(metrics.work_queue("thing"));
        queue.enqueue("a", Cause::Primary);
        queue.enqueue("a", Cause::Primary);
        queue.enqueue("b", Cause::Primary);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(next_now(&queue).await, Some("a"));
        tokio::time::advance(Duration::from_secs(3)).await;
        let now = queue.in_flight();
        assert_eq!((now.depth, now.count), (1, 1));
        assert_eq!(now.longest_seconds, 3.0);
        assert_eq!(now.unfinished_seconds, 3.0);
        queue.done(&"a");
        queue.enqueue_after("a", Duration::from_secs(1), Cause::Retry);
        queue.enqueue_after("c", Duration::from_secs(1), Cause::Requeue);
        metrics.set_queue("thing", queue.in_flight(), 4);
        let text = metrics.encode();
        for line in [
            "workqueue_adds_total{name=\"thing\"} 2",
            "workqueue_retries_total{name=\"thing\"} 1",
            "workqueue_queue_duration_seconds_count{name=\"thing\"} 1",
            "workqueue_queue_duration_seconds_sum{name=\"thing\"} 2.0",
            "workqueue_work_duration_seconds_count{name=\"thing\"} 1",
            "workqueue_work_duration_seconds_sum{name=\"thing\"} 3.0",
            "workqueue_depth{name=\"thing\"} 1",
            "workqueue_unfinished_work_seconds{name=\"thing\"} 0.0",
            "controller_runtime_active_workers{controller=\"thing\"} 0",
            "controller_runtime_max_concurrent_reconciles{controller=\"thing\"} 4",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
