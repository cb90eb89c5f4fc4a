//! Leader election with a coordination.k8s.io/v1 Lease, so that several replicas can
//! run and exactly one reconciles.
//!
//! Guarantees:
//! - every write to the Lease is guarded by the resourceVersion it was read at
//!   (`replace` of the object as read; `create` when absent), so two candidates can
//!   never both believe they acquired it;
//! - expiry is judged on this replica's monotonic clock from when it last saw the
//!   Lease change, not by comparing another machine's `renewTime` with ours, so clock
//!   skew between nodes cannot cause two leaders;
//! - every Lease request is given at most the time left until the renew deadline
//!   (and at least one second): a request on a dead connection cannot hold a leader
//!   past it;
//! - a leader that cannot renew within [`LeaseConfig::renew_deadline`] (shorter than
//!   the lease duration) steps down before another replica may take over, and the
//!   controller checks leadership before every action, so no batch goes on writing;
//! - on shutdown the elector keeps renewing while the reconciles in flight finish
//!   (the operator stops it only then), and [`LeaderElector::release`] hands the
//!   Lease back, so a successor starts at once and never overlaps a draining leader.
//!
//! The worst-case overlap: a replica takes over no sooner than `lease_duration`
//! after it last saw the Lease change, which is after the old leader's last renewal.
//! The old leader stops starting actions `renew_deadline` after that renewal (10 s
//! of 15 by default, plus at most one second of a Lease request's timeout), so two
//! replicas write at once only if one action request of the old leader, started
//! before its step-down, is still in flight `lease_duration - renew_deadline`
//! (about 4 s) later. Clocks are not compared: both sides measure on their own
//! monotonic clocks.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Timing and identity of the election.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (pod name and a unique suffix).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down.
    pub renew_deadline: Duration,
    /// How often the leader renews.
    pub renew_period: Duration,
    /// How often a follower tries to acquire.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The default timing: 15 s lease, renew every 5 s, step down after 10 s without
    /// renewal, followers try every 2 s.
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why a Lease request failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server refused or failed a request.
    #[error("lease {namespace}/{name}: {action} failed")]
    Api {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// What was attempted.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A request got no answer in time.
    #[error("lease {namespace}/{name}: no answer within {after:?}")]
    Timeout {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The time given.
        after: Duration,
    },
}

/// Runs the election for one replica.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<(String, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

impl LeaderElector {
    /// An elector for `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &config.namespace), config, observed: None }
    }

    fn error(&self, action: &'static str, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            action,
            source,
        }
    }

    fn timeout(&self, after: Duration) -> LeaseError {
        LeaseError::Timeout {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            after,
        }
    }

    fn seconds(d: Duration) -> i32 {
        i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
    }

    /// One attempt to acquire or renew; `Ok(true)` while this replica holds the Lease.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let me = self.config.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await.map_err(|e| self.error("get", e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(Self::seconds(self.config.lease_duration)),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(err) if is_conflict(&err) => Ok(false),
                Err(err) => Err(self.error("create", err)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() != Some(me.as_str()) {
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            let changed = self.observed.as_ref().is_none_or(|(seen, _)| *seen != version);
            if changed {
                self.observed = Some((version, Instant::now()));
            }
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.config.lease_duration, Duration::from_secs);
            let expired = self.observed.as_ref().is_some_and(|(_, at)| at.elapsed() > duration);
            if holder.is_some() && !expired {
                return Ok(false);
            }
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(me);
        spec.lease_duration_seconds = Some(Self::seconds(self.config.lease_duration));
        spec.renew_time = Some(now());
        // `lease` still carries the resourceVersion it was read at: the replace fails
        // with 409 if anyone wrote it since.
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(err) if is_conflict(&err) => Ok(false),
            Err(err) => Err(self.error("update", err)),
        }
    }

    /// Runs the election until `shutdown` turns true, publishing leadership on
    /// `leading`. Does not release the Lease: call [`LeaderElector::release`] once the
    /// work in flight is done.
    pub async fn run(&mut self, leading: &watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            // A leader's request may take what is left until its renew deadline; a
            // follower's, the same deadline from now.
            let budget = last_renewal
                .map_or(self.config.renew_deadline, |at| {
                    self.config.renew_deadline.saturating_sub(at.elapsed())
                })
                .max(Duration::from_secs(1));
            let attempt = match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
                Ok(attempt) => attempt,
                Err(_) => Err(self.timeout(budget)),
            };
            match attempt {
                Ok(true) => {
                    if last_renewal.is_none() {
                        tracing::info!(identity = %self.config.identity, lease = %self.config.name, "acquired the leader lease");
                    }
                    last_renewal = Some(Instant::now());
                }
                Ok(false) => {
                    if last_renewal.take().is_some() {
                        tracing::warn!(identity = %self.config.identity, "lost the leader lease");
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "leader election request failed");
                    if last_renewal.is_some_and(|at| at.elapsed() >= self.config.renew_deadline) {
                        tracing::warn!("could not renew the leader lease in time: stepping down");
                        last_renewal = None;
                    }
                }
            }
            leading.send_if_modified(|l| {
                let now = last_renewal.is_some();
                std::mem::replace(l, now) != now
            });
            let pause =
                if last_renewal.is_some() { self.config.renew_period } else { self.config.retry_period };
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Gives the Lease up if this replica holds it, so another can take over at once;
    /// gives up after the renew deadline (the Lease then expires on its own).
    pub async fn release(&self) -> Result<(), LeaseError> {
        let after = self.config.renew_deadline;
        match tokio::time::timeout(after, self.release_now()).await {
            Ok(released) => released,
            Err(_) => Err(self.timeout(after)),
        }
    }

    async fn release_now(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await.map_err(|e| self.error("get", e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                tracing::info!(identity = %self.config.identity, "released the leader lease");
                Ok(())
            }
            // Someone else already wrote it: it is not ours to release any more.
            Err(err) if is_conflict(&err) => Ok(()),
            Err(err) => Err(self.error("release", err)),
        }
    }
}
