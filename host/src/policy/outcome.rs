//! What one outcome may hold. The sandbox caps a call's output at a few MiB; these
//! caps bound what that output may make the host do, so that one reconcile cannot
//! cost the API server, etcd or the host without bound. They are checked before any
//! action of the outcome runs: an outcome over a cap is a module failure, reported
//! (`lastFailure`, the log, the reconcile metric) and retried with backoff.

use reconcile_sdk::{Action, Outcome};
use serde::Serialize;

/// The caps on one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeLimits {
    /// Actions in one outcome.
    pub actions: usize,
    /// `event` actions in one outcome.
    pub events: usize,
    /// Entries of `requires`.
    pub requires: usize,
    /// The JSON size of one applied object or of the status, in bytes: under the API
    /// server's own request limit, and what one write may put into etcd.
    pub object_bytes: usize,
}

impl Default for OutcomeLimits {
    /// Far above what a real module needs (DittoFS: at most 8 actions, 1 event, a few
    /// requirements and objects of a few KiB), far below what hurts.
    fn default() -> Self {
        Self { actions: 256, events: 16, requires: 64, object_bytes: 512 << 10 }
    }
}

/// Which cap an outcome went over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutcomeTooLarge {
    /// Too many actions.
    #[error("the outcome has {count} actions, more than the limit of {limit}")]
    Actions {
        /// How many.
        count: usize,
        /// The cap.
        limit: usize,
    },
    /// Too many events.
    #[error("the outcome has {count} events, more than the limit of {limit}")]
    Events {
        /// How many.
        count: usize,
        /// The cap.
        limit: usize,
    },
    /// Too many requirements.
    #[error("the outcome requires {count} objects, more than the limit of {limit}")]
    Requires {
        /// How many.
        count: usize,
        /// The cap.
        limit: usize,
    },
    /// An applied object or the status is too large.
    #[error("{what} is over the limit of {limit} bytes of JSON")]
    Object {
        /// `apply of Kind "name"` or `the status`.
        what: String,
        /// The cap.
        limit: usize,
    },
}

/// Checks `outcome` against `limits`. An `error` outcome passes: it does nothing.
pub fn check_outcome(outcome: &Outcome, limits: &OutcomeLimits) -> Result<(), OutcomeTooLarge> {
    let Outcome::Actions { actions, requires, .. } = outcome else { return Ok(()) };
    if actions.len() > limits.actions {
        return Err(OutcomeTooLarge::Actions { count: actions.len(), limit: limits.actions });
    }
    let events = actions.iter().filter(|a| matches!(a, Action::Event { .. })).count();
    if events > limits.events {
        return Err(OutcomeTooLarge::Events { count: events, limit: limits.events });
    }
    if requires.len() > limits.requires {
        return Err(OutcomeTooLarge::Requires { count: requires.len(), limit: limits.requires });
    }
    for action in actions {
        let (what, value) = match action {
            Action::Apply { object } => (describe_apply(object), object),
            Action::PatchStatus { status } => ("the status".to_owned(), status),
            _ => continue,
        };
        if !fits(value, limits.object_bytes) {
            return Err(OutcomeTooLarge::Object { what, limit: limits.object_bytes });
        }
    }
    Ok(())
}

fn describe_apply(object: &serde_json::Value) -> String {
    let field = |path: &str| object.pointer(path).and_then(serde_json::Value::as_str).unwrap_or("?");
    format!("apply of {} {:?}", field("/kind"), field("/metadata/name"))
}

/// The size of `value`'s JSON, in bytes, counted without building it.
pub fn json_size(value: &impl Serialize) -> u64 {
    counted(value, u64::MAX).unwrap_or(u64::MAX)
}

/// Whether `value`'s JSON is at most `limit` bytes; stops serializing once over.
fn fits(value: &impl Serialize, limit: usize) -> bool {
    counted(value, limit as u64).is_some()
}

/// The size of `value`'s JSON if it is at most `limit` bytes; serializing stops once
/// it is over.
fn counted(value: &impl Serialize, limit: u64) -> Option<u64> {
    struct Counter {
        written: u64,
        limit: u64,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written = self.written.saturating_add(buf.len() as u64);
            if self.written > self.limit {
                return Err(std::io::ErrorKind::FileTooLarge.into());
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { written: 0, limit };
    serde_json::to_writer(&mut counter, value).ok().map(|()| counter.written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reconcile_sdk::{EventType, Requirement};
    use serde_json::json;

    fn limits() -> OutcomeLimits {
        OutcomeLimits { actions: 4, events: 2, requires: 2, object_bytes: 100 }
    }

    fn outcome(actions: Vec<Action>, requires: usize) -> Outcome {
        let requires = (0..requires)
            .map(|i| Requirement { api_version: "v1".into(), kind: "Secret".into(), name: format!("s{i}") })
            .collect();
        Outcome::Actions { actions, requires, requeue_after_seconds: None }
    }

    fn event() -> Action {
        Action::Event { event_type: EventType::Normal, reason: "R".into(), message: "m".into() }
    }

    fn status(bytes: usize) -> Action {
        // `{"s":"…"}` is 8 bytes around the string.
        Action::PatchStatus { status: json!({"s": "x".repeat(bytes - 8)}) }
    }

    #[test]
    fn outcomes_within_every_cap_pass() {
        let ok = outcome(vec![event(), event(), status(100), Action::Apply { object: json!({"a": 1}) }], 2);
        assert_eq!(check_outcome(&ok, &limits()), Ok(()));
        assert_eq!(check_outcome(&Outcome::error("e", true), &limits()), Ok(()));
    }

    #[test]
    fn each_cap_is_enforced_and_named() {
        let cases = [
            (outcome(vec![status(10); 5], 0), "5 actions, more than the limit of 4"),
            (outcome(vec![event(), event(), event()], 0), "3 events, more than the limit of 2"),
            (outcome(vec![], 3), "requires 3 objects, more than the limit of 2"),
            (outcome(vec![status(101)], 0), "the status is over the limit of 100 bytes"),
            (
                outcome(
                    vec![Action::Apply {
                        object: json!({"kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "x".repeat(100)}}),
                    }],
                    0,
                ),
                "apply of ConfigMap \"big\" is over the limit of 100 bytes",
            ),
        ];
        for (outcome, expected) in cases {
            let err = check_outcome(&outcome, &limits()).expect_err(expected);
            assert!(err.to_string().contains(expected), "{err} lacks {expected:?}");
        }
    }

    #[test]
    fn a_status_of_many_small_numbers_is_measured_as_the_json_it_is() {
        let status = Action::PatchStatus { status: json!(vec![0; 60]) };
        // 60 zeros, 59 commas, 2 brackets: 121 bytes.
        assert!(check_outcome(&outcome(vec![status], 0), &limits()).is_err());
    }
}
