//! Per-primary exponential backoff after failed reconciles, and the failure record
//! that becomes the next snapshot's `lastFailure`.
//!
//! The delay doubles with each consecutive failure from [`Backoff::base`] up to
//! [`Backoff::cap`], so a broken primary is retried promptly at first and then no more
//! than once per cap, without hammering the API server. A success clears the record.

use reconcile_sdk::LastFailure;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// The backoff policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_millis(500), cap: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The delay before retrying after `attempts` consecutive failures (1 = the first).
    pub fn delay(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << exponent).min(self.cap)
    }
}

/// The last failure of every primary that is currently failing.
#[derive(Debug)]
pub struct Failures<K> {
    policy: Backoff,
    failing: HashMap<K, LastFailure>,
}

impl<K: Eq + Hash + Clone> Failures<K> {
    /// No primary failing yet.
    pub fn new(policy: Backoff) -> Self {
        Self { policy, failing: HashMap::new() }
    }

    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn failed(&mut self, key: &K, message: impl Into<String>) -> Duration {
        let entry =
            self.failing.entry(key.clone()).or_insert(LastFailure { message: String::new(), attempts: 0 });
        entry.attempts = entry.attempts.saturating_add(1);
        entry.message = message.into();
        self.policy.delay(entry.attempts)
    }

    /// Clears `key`'s record after a success (or when the primary is gone).
    pub fn succeeded(&mut self, key: &K) {
        self.failing.remove(key);
    }

    /// The `lastFailure` of `key`'s next snapshot.
    pub fn last(&self, key: &K) -> Option<LastFailure> {
        self.failing.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_the_cap() {
        let policy = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(10) };
        let delays: Vec<u64> = (1..=6).map(|n| policy.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.delay(0), Duration::from_secs(1));
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn failures_count_up_and_clear_on_success() {
        let mut failures =
            Failures::new(Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(60) });
        assert_eq!(failures.last(&"p"), None);
        assert_eq!(failures.failed(&"p", "first"), Duration::from_secs(1));
        assert_eq!(failures.failed(&"p", "second"), Duration::from_secs(2));
        assert_eq!(failures.last(&"p"), Some(LastFailure { message: "second".into(), attempts: 2 }));
        assert_eq!(failures.last(&"q"), None);
        failures.succeeded(&"p");
        assert_eq!(failures.last(&"p"), None);
        assert_eq!(failures.failed(&"p", "again"), Duration::from_secs(1));
    }
}
