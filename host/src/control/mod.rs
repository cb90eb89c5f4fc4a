//! Reconciling: the workers that take primaries from the queue, decide with the
//! module (snapshot, calls, requirements), confine and execute, and turn how each
//! attempt ended into the next step (requeue, backoff, events, metrics); and the
//! Lease that decides whether this replica reconciles at all.

pub(crate) mod attempt;
pub(crate) mod backoff;
pub(crate) mod capture;
pub(crate) mod controller;
pub(crate) mod decide;
pub(crate) mod leader;

pub use backoff::Backoff;
pub use capture::{CaptureError, capture};
pub use controller::{Controller, Wiring};
pub use leader::{LeaderElector, LeaseConfig};
