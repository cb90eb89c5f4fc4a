//! Which watches have not delivered their initial list yet, since when, and why.
//!
//! Reconciling waits for every watch's first list (a half-listed cache could show an
//! existing object as missing). A watch that can never list (no RBAC for its kind, a
//! CRD whose conversion webhook is down) would make that wait silent and endless; this
//! keeps what is needed to say so: each pending watch's name, when it started, and
//! the last error it got. Past the sync timeout, `/readyz` names it, and the first error
//! after that is logged at ERROR with what to do.

use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The watches still waiting for their initial list.
#[derive(Debug)]
pub struct SyncState {
    pending: Mutex<BTreeMap<u64, Pending>>,
    next: AtomicU64,
    timeout: Duration,
    // Watches reported overdue and still pending (`wasm_operator_watches_overdue`).
    overdue: Gauge,
}

#[derive(Debug)]
struct Pending {
    /// `related apps/v1 StatefulSet`, say.
    name: String,
    since: Instant,
    last_error: Option<String>,
    reported: bool,
}

/// A watch that has waited for its initial list longer than the sync timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    /// The watch, as `role apiVersion kind`.
    pub name: String,
    /// How long it has waited.
    pub waited: Duration,
    /// The last error its list or watch got, if any.
    pub last_error: Option<String>,
}

impl std::fmt::Display for Overdue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} watch has not listed in {}s", self.name, self.waited.as_secs())?;
        match &self.last_error {
            Some(error) => write!(f, " (last error: {error})"),
            None => Ok(()),
        }
    }
}

/// One watch's place in a [`SyncState`], until it is [`SyncState::done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchId(u64);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves bookkeeping at worst one update behind.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SyncState {
    /// No watch yet; one is overdue after `timeout`, and counted in `overdue` then.
    pub fn new(timeout: Duration, overdue: Gauge) -> Self {
        Self { pending: Mutex::default(), next: AtomicU64::new(0), timeout, overdue }
    }

    /// Records a watch that starts now, waiting for its initial list.
    pub fn start(&self, name: String) -> WatchId {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending)
            .insert(id, Pending { name, since: Instant::now(), last_error: None, reported: false });
        WatchId(id)
    }

    /// The watch delivered its initial list. Idempotent.
    pub fn done(&self, id: WatchId) {
        if lock(&self.pending).remove(&id.0).is_some_and(|watch| watch.reported) {
            self.overdue.dec();
        }
    }

    /// The watch failed with `error` (it retries). When it has waited longer than the
    /// timeout, the first such failure is returned, to be logged loudly once, and the
    /// watch is counted as overdue until it lists.
    pub fn failed(&self, id: WatchId, error: String) -> Option<Overdue> {
        let mut pending = lock(&self.pending);
        let watch = pending.get_mut(&id.0)?;
        watch.last_error = Some(error);
        let waited = watch.since.elapsed();
        if waited < self.timeout || watch.reported {
            return None;
        }
        watch.reported = true;
        self.overdue.inc();
        Some(Overdue { name: watch.name.clone(), waited, last_error: watch.last_error.clone() })
    }

    /// Whether every watch has delivered its initial list.
    pub fn synced(&self) -> bool {
        lock(&self.pending).is_empty()
    }

    /// The watches that have waited longer than the timeout, in the order they started.
    pub fn overdue(&self) -> Vec<Overdue> {
        lock(&self.pending)
            .values()
            .filter(|watch| watch.since.elapsed() >= self.timeout)
            .map(|watch| Overdue {
                name: watch.name.clone(),
                waited: watch.since.elapsed(),
                last_error: watch.last_error.clone(),
            })
            .collect()
    }
}

impl Drop for SyncState {
    // Watches dropped while overdue (a hot swap replaced them) no longer count.
    fn drop(&mut self) {
        let reported = lock(&self.pending).values().filter(|watch| watch.reported).count();
        self.overdue.dec_by(i64::try_from(reported).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_is_pending_until_done_and_overdue_past_the_timeout() {
        let patient = SyncState::new(Duration::from_secs(3600), Gauge::default());
        let watch = patient.start("related v1 ConfigMap".into());
        assert!(!patient.synced());
        assert!(patient.overdue().is_empty());
        patient.done(watch);
        assert!(patient.synced());

        let state = SyncState::new(Duration::ZERO, Gauge::default());
        assert!(state.synced());
        let primary = state.start("primary v1 Mirror".into());
        let related = state.start("related v1 ConfigMap".into());
        state.done(primary);
        state.done(primary);
        let overdue = state.overdue();
        assert_eq!(overdue.len(), 1);
        assert_eq!(overdue[0].name, "related v1 ConfigMap");
        state.done(related);
        assert!(state.synced());
    }

    #[test]
    fn only_the_first_failure_past_the_timeout_is_reported_and_counted_until_listed() {
        let patient = SyncState::new(Duration::from_secs(3600), Gauge::default());
        let watch = patient.start("related v1 ConfigMap".into());
        // Before the timeout: recorded, not reported.
        assert_eq!(patient.failed(watch, "403 Forbidden".into()), None);

        let gauge = Gauge::default();
        let state = SyncState::new(Duration::ZERO, gauge.clone());
        let watch = state.start("related v1 ConfigMap".into());
        let reported = state.failed(watch, "403 Forbidden".into()).expect("reported once");
        assert_eq!(reported.last_error.as_deref(), Some("403 Forbidden"));
        assert!(reported.to_string().starts_with("the related v1 ConfigMap watch has not listed in "));
        assert_eq!(gauge.get(), 1);
        assert_eq!(state.failed(watch, "403 again".into()), None);
        assert_eq!(state.overdue()[0].last_error.as_deref(), Some("403 again"));
        // Listed at last: no longer counted, and reports nothing more.
        state.done(watch);
        assert_eq!(gauge.get(), 0);
        assert_eq!(state.failed(watch, "late".into()), None);
        // Dropped while overdue: no longer counted either.
        let other = state.start("reads v1 Secret".into());
        assert!(state.failed(other, "403".into()).is_some());
        assert_eq!(gauge.get(), 1);
        drop(state);
        assert_eq!(gauge.get(), 0);
    }
}
