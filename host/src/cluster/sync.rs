//! Which watches have not delivered their initial list yet, since when, and why.
//!
//! A primary is reconciled only once every watch it depends on has listed (a
//! half-listed cache could show an existing object as missing): the watches of the
//! whole scope, and those of its own namespace. A watch that can never list (no RBAC
//! for its kind, a CRD whose conversion webhook is down) would make that wait silent
//! and endless; this keeps what is needed to say so: each pending watch's name, when
//! it started, and the last error it got. Past the sync timeout, `/readyz` names it,
//! and the first error after that is logged at ERROR with what to do.
//!
//! Past the sync timeout, a watch of an *optional* kind no longer holds up primaries
//! that are being deleted: their cleanup goes on as if the kind were absent, which
//! is how the module must already treat a kind whose CRD is not installed. Waiting
//! instead would leave them Terminating for as long as the kind cannot list.

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
    /// The namespace whose primaries it holds up; every primary's when `None`.
    namespace: Option<String>,
    /// Its kind is optional in the manifest.
    optional: bool,
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

/// What a starting watch is, for [`SyncState::start`].
#[derive(Debug, Clone)]
pub struct Watched {
    /// `related apps/v1 StatefulSet`, say; ` in <namespace>` is added for a
    /// namespace's watch.
    pub name: String,
    /// The namespace whose primaries wait for it; every primary's when `None`.
    pub namespace: Option<String>,
    /// Its kind is optional in the manifest.
    pub optional: bool,
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
    pub fn start(&self, watched: Watched) -> WatchId {
        let Watched { mut name, namespace, optional } = watched;
        if let Some(namespace) = &namespace {
            name = format!("{name} in {namespace}");
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let pending =
            Pending { name, namespace, optional, since: Instant::now(), last_error: None, reported: false };
        lock(&self.pending).insert(id, pending);
        WatchId(id)
    }

    /// The watch delivered its initial list, or was stopped. Idempotent.
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

    /// Whether a primary in `namespace` may be reconciled: every watch of the whole
    /// scope and of that namespace has listed, but for overdue optional kinds when the
    /// primary is `deleting` (see the module docs).
    pub fn synced_for(&self, namespace: &str, deleting: bool) -> bool {
        lock(&self.pending).values().all(|watch| {
            let holds = watch.namespace.as_deref().is_none_or(|ns| ns == namespace);
            let waived = deleting && watch.optional && watch.since.elapsed() >= self.timeout;
            !holds || waived
        })
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

    fn all(name: &str) -> Watched {
        Watched { name: name.into(), namespace: None, optional: false }
    }

    #[test]
    fn a_watch_is_pending_until_done_and_overdue_past_the_timeout() {
        let patient = SyncState::new(Duration::from_secs(3600), Gauge::default());
        let watch = patient.start(all("related v1 ConfigMap"));
        assert!(!patient.synced());
        assert!(patient.overdue().is_empty());
        patient.done(watch);
        assert!(patient.synced());

        let state = SyncState::new(Duration::ZERO, Gauge::default());
        assert!(state.synced());
        let primary = state.start(all("primary v1 Mirror"));
        let related = state.start(all("related v1 ConfigMap"));
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
        let watch = patient.start(all("related v1 ConfigMap"));
        // Before the timeout: recorded, not reported.
        assert_eq!(patient.failed(watch, "403 Forbidden".into()), None);

        let gauge = Gauge::default();
        let state = SyncState::new(Duration::ZERO, gauge.clone());
        let watch = state.start(all("related v1 ConfigMap"));
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
        let other = state.start(all("reads v1 Secret"));
        assert!(state.failed(other, "403".into()).is_some());
        assert_eq!(gauge.get(), 1);
        drop(state);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn a_namespace_watch_holds_up_only_its_namespace_and_an_overdue_optional_kind_no_deletion() {
        let state = SyncState::new(Duration::from_secs(3600), Gauge::default());
        let config_maps = state.start(Watched {
            name: "related v1 ConfigMap".into(),
            namespace: Some("a".into()),
            optional: false,
        });
        assert!(!state.synced_for("a", false));
        assert!(!state.synced_for("a", true));
        assert!(state.synced_for("b", false));
        assert_eq!(state.overdue().len(), 0);
        state.done(config_maps);
        assert!(state.synced_for("a", false));
        let reads = state.start(all("reads v1 Secret"));
        assert!(!state.synced_for("b", true), "a watch of the whole scope holds up every namespace");
        state.done(reads);

        // An optional kind: holds up everyone until the timeout, then no deletion.
        let overdue = SyncState::new(Duration::ZERO, Gauge::default());
        let percona = overdue.start(Watched {
            name: "related pgv2.percona.com/v2 PerconaPGCluster".into(),
            namespace: Some("a".into()),
            optional: true,
        });
        assert!(!overdue.synced_for("a", false), "a live primary still waits for it");
        assert!(overdue.synced_for("a", true), "a deletion goes on without it");
        assert_eq!(overdue.overdue()[0].name, "related pgv2.percona.com/v2 PerconaPGCluster in a");
        overdue.done(percona);
        let required = overdue.start(all("related apps/v1 StatefulSet"));
        assert!(!overdue.synced_for("a", true), "a required kind holds up deletions too");
        overdue.done(required);
    }
}
