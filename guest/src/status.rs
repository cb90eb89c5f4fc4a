//! The DittoServer's status: phase, conditions and counts, computed on every
//! reconcile and written only when it changed.
//!
//! The status is computed as it will be once this reconcile's actions have run: the
//! host runs actions in order and stops at the first failure, and `patchStatus`
//! comes last, so a status claiming "ConfigMap current" is only written after the
//! ConfigMap apply succeeded.

use crate::api::{Condition, ConditionStatus, DittoServerSpec, DittoServerStatus, Phase};
use crate::meta::StatefulSetState;
use crate::names;
use crate::objects::percona::Readiness;

/// Condition types.
pub mod types {
    /// The ConfigMap is present and current.
    pub const CONFIG_READY: &str = "ConfigReady";
    /// The Percona cluster is ready (only with Percona).
    pub const DATABASE_READY: &str = "DatabaseReady";
    /// At least one replica is ready (or the server is stopped).
    pub const AVAILABLE: &str = "Available";
    /// The StatefulSet is rolling out or scaling.
    pub const PROGRESSING: &str = "Progressing";
    /// Everything above holds.
    pub const READY: &str = "Ready";
}

/// What the status is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Observations<'a> {
    /// The DittoServer's name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its `metadata.generation`.
    pub generation: Option<i64>,
    /// The observed StatefulSet, if any.
    pub statefulset: Option<StatefulSetState<'a>>,
    /// Whether this reconcile applies the StatefulSet (so it is about to roll).
    pub statefulset_applied: bool,
    /// The Percona cluster's readiness, when Percona is enabled.
    pub database: Option<Readiness<'a>>,
    /// The config hash the pod runs with once this reconcile's actions have run.
    pub config_hash: &'a str,
    /// The snapshot's `now`, as Kubernetes writes times.
    pub now: &'a str,
}

/// The status of a DittoServer whose spec is usable.
pub fn compute(
    spec: &DittoServerSpec,
    obs: &Observations<'_>,
    previous: Option<&DittoServerStatus>,
) -> DittoServerStatus {
    let sts = obs.statefulset.unwrap_or_default();
    let desired = spec.replicas;
    let ready = sts.ready_replicas;
    let mut conditions = Vec::with_capacity(5);
    let mut unmet = Vec::new();
    let mut add = |kind: &'static str, status: ConditionStatus, reason: &str, message: String, good: bool| {
        if !good {
            unmet.push(kind);
        }
        conditions.push((kind, status, reason.to_string(), message));
    };

    add(
        types::CONFIG_READY,
        ConditionStatus::True,
        "ConfigMapCurrent",
        format!("ConfigMap {} is current", names::config_map(obs.name)),
        true,
    );

    if let Some(database) = obs.database {
        let cluster = names::percona_cluster(obs.name);
        let (status, reason, message) = match database {
            Readiness::NotFound => (
                ConditionStatus::False,
                "PerconaNotFound",
                format!("PerconaPGCluster {cluster} does not exist yet"),
            ),
            Readiness::NotReady(state) => (
                ConditionStatus::False,
                "PerconaNotReady",
                match state {
                    Some(state) => format!("PerconaPGCluster {cluster} is {state}"),
                    None => format!("PerconaPGCluster {cluster} is not ready yet"),
                },
            ),
            Readiness::Ready => {
                (ConditionStatus::True, "PerconaReady", format!("PerconaPGCluster {cluster} is ready"))
            }
        };
        add(types::DATABASE_READY, status, reason, message, status == ConditionStatus::True);
    }

    let counts = format!("{ready} of {desired} replicas ready");
    let waiting = if obs.statefulset.is_none() && !obs.statefulset_applied {
        ": the StatefulSet waits for the database"
    } else {
        ""
    };
    if desired == 0 {
        add(types::AVAILABLE, ConditionStatus::True, "Stopped", "replicas is 0".into(), true);
    } else if ready >= 1 {
        add(types::AVAILABLE, ConditionStatus::True, "MinimumReplicasAvailable", counts.clone(), true);
    } else {
        add(
            types::AVAILABLE,
            ConditionStatus::False,
            "NoReplicasAvailable",
            format!("{counts}{waiting}"),
            false,
        );
    }

    if obs.statefulset_applied || (obs.statefulset.is_some() && sts.is_updating()) {
        add(
            types::PROGRESSING,
            ConditionStatus::True,
            "StatefulSetUpdating",
            format!("StatefulSet {} is being updated", obs.name),
            false,
        );
    } else if ready != desired {
        add(
            types::PROGRESSING,
            ConditionStatus::True,
            "ScalingReplicas",
            format!("{counts}{waiting}"),
            false,
        );
    } else {
        add(
            types::PROGRESSING,
            ConditionStatus::False,
            "ReconcileComplete",
            format!("StatefulSet {} is up to date", obs.name),
            true,
        );
    }

    let (ready_status, ready_reason, ready_message) = if unmet.is_empty() {
        (ConditionStatus::True, "AllConditionsMet", "all conditions are met".to_string())
    } else {
        (ConditionStatus::False, "ConditionsNotMet", format!("not met: {}", unmet.join(", ")))
    };
    conditions.push((types::READY, ready_status, ready_reason.to_string(), ready_message));

    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions[..]);
    let phase = if desired == 0 {
        Phase::Stopped
    } else if obs.statefulset.is_some() && ready == desired {
        Phase::Running
    } else {
        Phase::Pending
    };
    DittoServerStatus {
        observed_generation: obs.generation,
        replicas: sts.replicas,
        ready_replicas: sts.ready_replicas,
        available_replicas: sts.available_replicas,
        nfs_endpoint: Some(format!(
            "{}.{}.svc.cluster.local:{}",
            names::file_service(obs.name),
            obs.namespace,
            spec.nfs_port
        )),
        phase: Some(phase),
        config_hash: Some(obs.config_hash.to_string()),
        percona_cluster_name: spec.percona.enabled.then(|| names::percona_cluster(obs.name)),
        conditions: conditions
            .into_iter()
            .map(|(kind, status, reason, message)| {
                condition(previous_conditions, kind, status, reason, message, obs.generation, obs.now)
            })
            .collect(),
    }
}

/// The status of a DittoServer whose spec cannot be used: the previous status with
/// phase Failed, and ConfigReady and Ready false with reason `InvalidSpec`.
pub fn failed(
    previous: Option<&DittoServerStatus>,
    generation: Option<i64>,
    message: &str,
    now: &str,
) -> DittoServerStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.phase = Some(Phase::Failed);
    status.observed_generation = generation;
    for kind in [types::CONFIG_READY, types::READY] {
        let updated = condition(
            &status.conditions,
            kind,
            ConditionStatus::False,
            "InvalidSpec".into(),
            message.into(),
            generation,
            now,
        );
        match status.conditions.iter_mut().find(|c| c.kind == kind) {
            Some(existing) => *existing = updated,
            None => status.conditions.push(updated),
        }
    }
    status
}

/// A condition, keeping the previous `lastTransitionTime` when its status is unchanged.
fn condition(
    previous: &[Condition],
    kind: &str,
    status: ConditionStatus,
    reason: String,
    message: String,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.kind == kind && c.status == status)
        .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
    Condition {
        kind: kind.into(),
        status,
        observed_generation: generation,
        last_transition_time,
        reason,
        message,
    }
}
