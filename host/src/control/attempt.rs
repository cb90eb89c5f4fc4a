//! One reconcile attempt of one primary: decide, confine, pre-check, execute, and on a
//! conflict re-read the primary and go again. It ends in one [`Result<Done, Stop>`];
//! the controller turns that into requeues, backoff, events and metrics in one place
//! ([`Controller::settle`](super::controller::Controller)).
//!
//! Guarantees:
//! - the active module and the wiring are read once, when the attempt is made, so a
//!   hot swap never mixes two modules or two sets of watches in one attempt;
//! - a batch is confined as a whole before its first write: one action outside the
//!   module's rights and nothing at all is written;
//! - an `apply` of an object the snapshot did not show as the primary's is read fresh
//!   before anything is written, so that a forced apply never takes over a foreign
//!   namesake;
//! - a confined batch runs only if the primary's write budget covers all of it
//!   ([`WriteBudget`](crate::policy::WriteBudget)); otherwise nothing is written and
//!   the attempt is delayed, not failed;
//! - allowed actions run in order and the first failure stops the batch; a guarded
//!   patch that conflicts re-reads the primary and decides again, at most
//!   [`CONFLICT_RETRIES`] times, which is not a failure.

use super::controller::{Controller, Wiring};
use super::decide::{DecideError, DecideInput, Decision, decide};
use crate::cluster::{KindKey, ObjectKey, PrimaryTarget, index::RequirementTarget};
use crate::error_chain;
use crate::execute::{ActionError, apply_target};
use crate::module::LoadedModuleInfo;
use crate::policy::confine::{PrimaryRef, check_action};
use crate::policy::outcome::{check_outcome, json_size};
use crate::policy::{OutcomeTooLarge, OverBudget, Rejection};
use crate::snapshot;
use kube::api::{Api, DynamicObject};
use reconcile_sdk::{Action, Manifest, Outcome, RequiredObject, Requirement};
use std::sync::Arc;
use std::time::Duration;

/// How often one attempt re-reads the primary and decides again after a guarded patch
/// conflicted, before giving up until the next trigger.
pub const CONFLICT_RETRIES: usize = 3;

/// How often a primary is reconciled again while it requires an object that no watch
/// sees (see [`requires_unwatched`]).
pub const UNWATCHED_REQUIREMENT_POLL: Duration = Duration::from_secs(15);

/// The shortest `requeueAfterSeconds` the host honours: a module asking for 0 is
/// looked at again after this, not in a loop.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// The longest `requeueAfterSeconds` the host honours (a day): any larger number, up
/// to `u64::MAX`, means this.
pub const MAX_REQUEUE: Duration = Duration::from_secs(24 * 3600);

/// A module's `requeueAfterSeconds` within [`MIN_REQUEUE`] and [`MAX_REQUEUE`].
pub fn clamp_requeue(seconds: u64) -> Duration {
    Duration::from_secs(seconds).clamp(MIN_REQUEUE, MAX_REQUEUE)
}

/// An attempt whose final outcome's actions all ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// When to look again even without a change.
    pub requeue: Option<Duration>,
}

/// Why an attempt stopped before its batch ran to the end.
#[derive(Debug)]
pub enum Stop {
    /// The primary is gone.
    Gone,
    /// The primary has no uid: it can never be reconciled, so it is not retried.
    NoUid,
    /// No final outcome: the call failed, a required object could not be read, the
    /// module kept asking for more, or the attempt could not re-read the primary.
    Undecided(Box<DecideError>),
    /// The primary could not be re-read after a conflict.
    Reread(Box<kube::Error>),
    /// The outcome is over one of the caps on what an outcome may hold.
    TooLarge(OutcomeTooLarge),
    /// The module answered with an `error` outcome.
    ModuleError {
        /// Its message.
        message: String,
        /// Whether to retry with backoff.
        retryable: bool,
    },
    /// Confinement refused a requirement or an action (before the batch, or on a
    /// fresh read during it).
    Rejected {
        /// The refused operation (`requires`, or an action's op).
        op: &'static str,
        /// Why.
        rejection: Box<Rejection>,
        /// The primary as last read, for the event.
        primary: Box<PrimaryTarget>,
    },
    /// An action failed other than by a conflict.
    ActionFailed {
        /// Why.
        error: Box<ActionError>,
    },
    /// Guarded patches kept conflicting.
    Conflicts,
    /// This replica stopped leading during the batch; the rest was not written.
    NotLeading,
    /// The batch does not fit the primary's write budget now; nothing was written.
    OverBudget {
        /// How long to wait, and which limit.
        over: OverBudget,
        /// The batch's mutating requests.
        writes: u32,
        /// The primary as last read, for the event.
        primary: Box<PrimaryTarget>,
    },
}

impl Stop {
    /// The failure as the next snapshot's `lastFailure` (and the log) tells it.
    pub fn message(&self) -> String {
        match self {
            Stop::Gone => "the primary is gone".to_owned(),
            Stop::NoUid => "the primary has no uid".to_owned(),
            Stop::Undecided(err) => error_chain(err.as_ref()),
            Stop::Reread(err) => format!("cannot re-read the primary: {}", error_chain(err.as_ref())),
            Stop::ModuleError { message, .. } => format!("module error: {message}"),
            Stop::TooLarge(err) => format!("outcome refused: {}", error_chain(err)),
            Stop::Rejected { op, rejection, .. } => {
                format!("rejected {op}: {}", error_chain(rejection.as_ref()))
            }
            Stop::ActionFailed { error, .. } => error_chain(error.as_ref()),
            Stop::Conflicts => {
                format!("guarded patches kept conflicting after {CONFLICT_RETRIES} attempts")
            }
            Stop::OverBudget { over, writes, .. } => format!("{writes} writes held back: {over}"),
            Stop::NotLeading => {
                "this replica stopped leading; the rest of the batch was not written".to_owned()
            }
        }
    }
}

/// What one attempt works with; read once when it is made.
pub struct Attempt<'a> {
    /// The controller it runs for.
    pub controller: &'a Controller,
    /// The primary's key.
    pub key: &'a ObjectKey,
    /// The module, read once.
    pub module: Arc<LoadedModuleInfo>,
    /// The wiring, read once.
    pub wiring: Arc<Wiring>,
}

/// The final outcome's parts, once it is known not to be an `error` outcome.
struct Batch {
    actions: Vec<Action>,
    requires: Vec<Requirement>,
    requeue: Option<Duration>,
}

impl<'a> Attempt<'a> {
    /// An attempt for `key` with the active module and wiring of now.
    pub fn new(controller: &'a Controller, key: &'a ObjectKey) -> Self {
        Self { controller, key, module: controller.active().current(), wiring: controller.wiring() }
    }

    fn manifest(&self) -> &Manifest {
        self.module.module.manifest()
    }

    /// Runs the attempt. Idempotent: with the cluster converged, a module that writes
    /// only differences makes it issue no write.
    pub async fn run(&self) -> Result<Done, Stop> {
        let cached = self.wiring.watches.caches.primary(self.key).ok_or(Stop::Gone)?;
        let mut primary = PrimaryTarget::new(cached).ok_or(Stop::NoUid)?;
        for _ in 0..CONFLICT_RETRIES {
            let mut decision = self.decide(&primary).await?;
            let batch = self.batch(&mut decision)?;
            self.remember(&batch.requires);
            self.confine(&batch, &decision, &primary)?;
            self.check_apply_targets(&batch, &decision, &primary).await?;
            self.take_budget(&batch, &primary)?;
            if self.execute(&batch, &mut primary).await? {
                return Ok(Done { requeue: batch.requeue });
            }
            primary = self.reread().await?;
        }
        Err(Stop::Conflicts)
    }

    /// The module's final outcome for `primary`.
    async fn decide(&self, primary: &PrimaryTarget) -> Result<Decision, Stop> {
        let caches = &self.wiring.watches.caches;
        let remembered = caches
            .requirements_of(self.key)
            .into_iter()
            .map(|t| Requirement { api_version: t.kind.api_version, kind: t.kind.kind, name: t.key.name })
            .collect();
        let input = DecideInput {
            manifest: self.manifest(),
            kinds: self.wiring.kinds(),
            client: self.controller.client(),
            primary,
            claimed: caches.claimed_by(self.key),
            remembered,
            last_failure: self.controller.last_failure(self.key),
            now: snapshot::rfc3339(self.controller.now()),
            metrics: Some(self.controller.metrics()),
        };
        decide(self.module.module.as_ref(), input).await.map_err(|err| match err {
            DecideError::Rejected(rejection) => {
                Stop::Rejected { op: "requires", rejection, primary: Box::new(primary.clone()) }
            }
            err => Stop::Undecided(Box::new(err)),
        })
    }

    /// The outcome's batch; an `error` outcome stops the attempt.
    fn batch(&self, decision: &mut Decision) -> Result<Batch, Stop> {
        check_outcome(&decision.outcome, &self.controller.policy().outcome).map_err(Stop::TooLarge)?;
        let taken =
            Outcome::Actions { actions: Vec::new(), requires: Vec::new(), requeue_after_seconds: None };
        let (actions, requires, requeue) = match std::mem::replace(&mut decision.outcome, taken) {
            Outcome::Error(err) => {
                return Err(Stop::ModuleError { message: err.message, retryable: err.retryable });
            }
            Outcome::Actions { actions, requires, requeue_after_seconds } => {
                (actions, requires, requeue_after_seconds.map(clamp_requeue))
            }
        };
        // A required object no watch sees (see `requires_unwatched`) is polled.
        let requeue = if requires_unwatched(&decision.snapshot.required, self.manifest()) {
            Some(requeue.map_or(UNWATCHED_REQUIREMENT_POLL, |asked| asked.min(UNWATCHED_REQUIREMENT_POLL)))
        } else {
            requeue
        };
        Ok(Batch { actions, requires, requeue })
    }

    /// Remembers the outcome's requirements: their changes trigger the primary, and
    /// the next attempt's first snapshot answers them.
    fn remember(&self, requires: &[Requirement]) {
        let targets = requires
            .iter()
            .map(|r| RequirementTarget {
                kind: KindKey::new(&r.api_version, &r.kind),
                key: ObjectKey::new(&self.key.namespace, &r.name),
            })
            .collect();
        self.wiring.watches.caches.set_requirements(self.key, targets);
    }

    /// Confines the whole batch before anything is written.
    fn confine(&self, batch: &Batch, decision: &Decision, primary: &PrimaryTarget) -> Result<(), Stop> {
        let rights = PrimaryRef { key: self.key, uid: &primary.uid };
        for action in &batch.actions {
            check_action(
                action,
                self.manifest(),
                &self.controller.policy().workload,
                rights,
                &decision.associated,
            )
            .map_err(|rejection| Stop::Rejected {
                op: action.op(),
                rejection: Box::new(rejection),
                primary: Box::new(primary.clone()),
            })?;
        }
        Ok(())
    }

    /// Takes the batch's writes from the primary's budget, all or nothing: every
    /// action is one mutating request, and its body (object, status, note) counts
    /// towards the bytes.
    fn take_budget(&self, batch: &Batch, primary: &PrimaryTarget) -> Result<(), Stop> {
        let writes = u32::try_from(batch.actions.len()).unwrap_or(u32::MAX);
        let bytes = batch.actions.iter().map(body_bytes).fold(0, u64::saturating_add);
        self.controller.take_writes(self.key, writes, bytes).map_err(|over| Stop::OverBudget {
            over,
            writes,
            primary: Box::new(primary.clone()),
        })
    }

    /// Reads fresh the target of each `apply` the snapshot did not show as the
    /// primary's, before anything is written: a foreign namesake that the related
    /// watch (labelled objects only) cannot see rejects the batch. One read at a
    /// time: the reads count against `--concurrency` like every other request, so a
    /// batch of many applies never multiplies what the host has in flight. (With
    /// eight reads per worker, the throttling fault test's host, 16 workers on one
    /// API priority seat, did not converge 30 servers in 2 minutes.)
    async fn check_apply_targets(
        &self,
        batch: &Batch,
        decision: &Decision,
        primary: &PrimaryTarget,
    ) -> Result<(), Stop> {
        for action in &batch.actions {
            let Action::Apply { object } = action else { continue };
            let (kind, name) = apply_target(object);
            if decision.associated.contains(&(kind.clone(), name.to_owned())) {
                continue;
            }
            if let Err(error) =
                self.wiring.executor.check_apply_target(&kind, name, self.manifest(), primary).await
            {
                return Err(self.action_stop(action.op(), error, primary));
            }
        }
        Ok(())
    }

    /// Runs the batch in order; `false` when a guarded patch conflicted (decide again).
    async fn execute(&self, batch: &Batch, primary: &mut PrimaryTarget) -> Result<bool, Stop> {
        let metrics = self.controller.metrics();
        for action in &batch.actions {
            // Fencing: a leader that could not renew in time stops between actions,
            // before its Lease can expire and another replica starts writing.
            if !self.controller.is_leading() {
                return Err(Stop::NotLeading);
            }
            match self.wiring.executor.execute(action, self.manifest(), primary).await {
                Ok(written) => {
                    metrics.action(action.op(), "success");
                    // Guard the rest of the batch against the primary as it is now.
                    if let Some(fresh) = written.and_then(|o| PrimaryTarget::new(Arc::new(o))) {
                        *primary = fresh;
                    }
                }
                // Events are best effort: a refused one (a namespace being deleted, say)
                // must not keep a finalizer from being removed after it.
                Err(error) if matches!(action, Action::Event { .. }) => {
                    metrics.action(action.op(), "error");
                    tracing::warn!("cannot record the module's event: {}", error_chain(&error));
                }
                Err(ActionError::Conflict { message, .. }) => {
                    metrics.action(action.op(), "conflict");
                    tracing::info!(
                        op = action.op(),
                        "guarded patch conflicted; re-reading the primary: {message}"
                    );
                    return Ok(false);
                }
                Err(error) => return Err(self.action_stop(action.op(), error, primary)),
            }
        }
        Ok(true)
    }

    /// A failed action as the stop it is: a rejection found by a fresh read is a
    /// rejection like any other; anything else fails the batch.
    fn action_stop(&self, op: &'static str, error: ActionError, primary: &PrimaryTarget) -> Stop {
        match error {
            ActionError::Rejected(rejection) => {
                self.controller.metrics().action(op, "rejected");
                Stop::Rejected { op, rejection, primary: Box::new(primary.clone()) }
            }
            error => {
                self.controller.metrics().action(op, "error");
                Stop::ActionFailed { error: Box::new(error) }
            }
        }
    }

    /// Reads the primary fresh after a conflict.
    async fn reread(&self) -> Result<PrimaryTarget, Stop> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.controller.client().clone(),
            &self.key.namespace,
            self.wiring.kinds().primary(),
        );
        let fresh = api
            .get_opt(&self.key.name)
            .await
            .map_err(|err| Stop::Reread(Box::new(err)))?
            .ok_or(Stop::Gone)?;
        PrimaryTarget::new(Arc::new(fresh)).ok_or(Stop::NoUid)
    }
}

/// The request body an action sends, as the write budget counts it: the JSON of an
/// applied object or a status, the note of an event, and a name or finalizer
/// otherwise.
fn body_bytes(action: &Action) -> u64 {
    match action {
        Action::Apply { object } => json_size(object),
        Action::PatchStatus { status } => json_size(status),
        Action::Event { reason, message, .. } => (reason.len() + message.len()) as u64,
        Action::AddFinalizer { finalizer } | Action::RemoveFinalizer { finalizer } => finalizer.len() as u64,
        Action::Delete { name, .. } | Action::Orphan { name, .. } => name.len() as u64,
    }
}

/// Whether some required object is one whose change no watch reports: an object of a
/// related kind (not also a `reads` kind) without the owner label, or not there at
/// all. The related watches list only labelled objects (the others can never be
/// associated), so such a requirement is polled instead of watched.
fn requires_unwatched(required: &[RequiredObject], manifest: &Manifest) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeues_are_clamped_to_a_second_and_a_day() {
        assert_eq!(clamp_requeue(0), MIN_REQUEUE);
        assert_eq!(clamp_requeue(30), Duration::from_secs(30));
        assert_eq!(clamp_requeue(86_401), MAX_REQUEUE);
        assert_eq!(clamp_requeue(u64::MAX), MAX_REQUEUE);
    }
}
