//! The work queue: which primaries to reconcile, and when.
//!
//! Guarantees:
//! - a key is handed out at most once at a time: a key triggered while it is being
//!   reconciled is marked dirty and handed out again once [`WorkQueue::done`] is
//!   called, so no change is lost and no primary is reconciled twice at once;
//! - a key waiting to run is queued once, however often it is triggered;
//! - a delayed key ([`WorkQueue::enqueue_after`]) keeps its earliest deadline, and an
//!   immediate trigger supersedes it;
//! - keys run in the order they became ready.
//!
//! Concurrency across keys is the caller's: each worker takes one key at a time.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug)]
struct State<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    delayed: HashMap<K, (Instant, u64)>,
    deadlines: BTreeSet<(Instant, u64)>,
    by_seq: HashMap<u64, K>,
    seq: u64,
    in_flight: HashSet<K>,
    dirty: HashSet<K>,
}

/// A deduplicating, delaying work queue of keys.
#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
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
                delayed: HashMap::new(),
                deadlines: BTreeSet::new(),
                by_seq: HashMap::new(),
                seq: 0,
                in_flight: HashSet::new(),
                dirty: HashSet::new(),
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // The state stays consistent even if a holder panicked: every method finishes
        // its updates before it could panic.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reconcile `key` as soon as possible.
    pub fn enqueue(&self, key: K) {
        let mut state = self.lock();
        Self::make_ready(&mut state, key);
        drop(state);
        self.notify.notify_one();
    }

    /// Reconcile `key` after `delay`, unless it is due earlier anyway.
    pub fn enqueue_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.enqueue(key);
        }
        let at = Instant::now() + delay;
        let mut state = self.lock();
        if state.queued.contains(&key) {
            return;
        }
        if let Some(&(existing, _)) = state.delayed.get(&key) {
            if existing <= at {
                return;
            }
            Self::undelay(&mut state, &key);
        }
        state.seq += 1;
        let seq = state.seq;
        state.deadlines.insert((at, seq));
        state.by_seq.insert(seq, key.clone());
        state.delayed.insert(key, (at, seq));
        drop(state);
        // A worker may be sleeping until a later deadline.
        self.notify.notify_one();
    }

    fn undelay(state: &mut State<K>, key: &K) {
        if let Some(entry) = state.delayed.remove(key) {
            state.deadlines.remove(&entry);
            state.by_seq.remove(&entry.1);
        }
    }

    fn make_ready(state: &mut State<K>, key: K) {
        Self::undelay(state, &key);
        if state.in_flight.contains(&key) {
            state.dirty.insert(key);
        } else if state.queued.insert(key.clone()) {
            state.ready.push_back(key);
        }
    }

    fn promote_due(state: &mut State<K>, now: Instant) -> Option<Instant> {
        while let Some(&(at, seq)) = state.deadlines.first() {
            if at > now {
                return Some(at);
            }
            state.deadlines.remove(&(at, seq));
            if let Some(key) = state.by_seq.remove(&seq) {
                state.delayed.remove(&key);
                Self::make_ready(state, key);
            }
        }
        None
    }

    /// Waits for the next key to reconcile and marks it in flight; the caller must
    /// call [`WorkQueue::done`] with it afterwards.
    pub async fn next(&self) -> K {
        loop {
            // Registered before looking, so a trigger between the look and the wait
            // is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_deadline = {
                let mut state = self.lock();
                let next_deadline = Self::promote_due(&mut state, Instant::now());
                if let Some(key) = state.ready.pop_front() {
                    state.queued.remove(&key);
                    state.in_flight.insert(key.clone());
                    let more = !state.ready.is_empty();
                    drop(state);
                    if more {
                        // Pass the baton: another worker may take the next key.
                        self.notify.notify_one();
                    }
                    return key;
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

    /// Marks `key` as no longer in flight; if it was triggered meanwhile it is queued
    /// again at once.
    pub fn done(&self, key: &K) {
        let mut state = self.lock();
        state.in_flight.remove(key);
        if state.dirty.remove(key) {
            Self::make_ready(&mut state, key.clone());
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Forgets any pending or delayed run of `key` (e.g. the primary was deleted).
    pub fn forget(&self, key: &K) {
        let mut state = self.lock();
        Self::undelay(&mut state, key);
        state.dirty.remove(key);
        if state.queued.remove(key) {
            state.ready.retain(|k| k != key);
        }
    }

    /// How many keys are waiting to run now (not delayed, not in flight).
    pub fn ready_len(&self) -> usize {
        self.lock().ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn next_now(queue: &WorkQueue<&'static str>) -> Option<&'static str> {
        tokio::time::timeout(Duration::from_millis(1), queue.next()).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_deduplicated_and_ordered() {
        let queue = WorkQueue::new();
        queue.enqueue("a");
        queue.enqueue("b");
        queue.enqueue("a");
        assert_eq!(queue.ready_len(), 2);
        assert_eq!(next_now(&queue).await, Some("a"));
        assert_eq!(next_now(&queue).await, Some("b"));
        assert_eq!(next_now(&queue).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_in_flight_is_not_handed_out_twice_but_runs_again_after() {
        let queue = WorkQueue::new();
        queue.enqueue("a");
        assert_eq!(next_now(&queue).await, Some("a"));
        queue.enqueue("a");
        queue.enqueue("a");
        assert_eq!(next_now(&queue).await, None, "a is still in flight");
        queue.done(&"a");
        assert_eq!(next_now(&queue).await, Some("a"));
        queue.done(&"a");
        assert_eq!(next_now(&queue).await, None, "one rerun for any number of triggers");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_wait_keep_the_earliest_deadline_and_yield_to_triggers() {
        let queue = Arc::new(WorkQueue::new());
        queue.enqueue_after("a", Duration::from_secs(10));
        queue.enqueue_after("a", Duration::from_secs(30));
        queue.enqueue_after("b", Duration::from_secs(20));
        assert_eq!(next_now(&queue).await, None);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(next_now(&queue).await, Some("a"));
        queue.done(&"a");
        assert_eq!(next_now(&queue).await, None);
        // A trigger runs b now and cancels its delayed run.
        queue.enqueue("b");
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
            async move { queue.next().await }
        });
        tokio::task::yield_now().await;
        queue.enqueue_after("a", Duration::from_secs(5));
        assert_eq!(worker.await.ok(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn forget_drops_pending_and_delayed_runs() {
        let queue = WorkQueue::new();
        queue.enqueue("a");
        queue.enqueue_after("b", Duration::from_secs(1));
        queue.forget(&"a");
        queue.forget(&"b");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(next_now(&queue).await, None);
    }
}
