//! The reconcile of a DittoServer that is not being deleted.
//!
//! Order of the actions: the ConfigMap, the Services, the Percona cluster, the
//! StatefulSet (which mounts the ConfigMap and, with Percona, waits for the cluster),
//! and the status last, so that it is only written once everything before it
//! succeeded. One exception: while creating the Percona cluster keeps failing, the
//! status (DatabaseReady False, PerconaNotFound) goes before the next attempt.

use reconcile_sdk::{Action, EventType, Outcome, Snapshot};
use serde_json::value::RawValue;

use crate::api::{DittoServerSpec, DittoServerStatus};
use crate::error::ReconcileError;
use crate::hash::ConfigHasher;
use crate::input::{self, Input, Primary};
use crate::meta::StatefulSetState;
use crate::names::{self, FINALIZER, PERCONA_API_VERSION, PERCONA_KIND};
use crate::objects::percona::{self, Readiness};
use crate::objects::statefulset::{self, Claim};
use crate::objects::{apply_if_changed, configmap, services};
use crate::status::{self, Observations};
use crate::time::format_rfc3339;
use crate::{config, deletion, secrets, validate};

/// Reconciles one DittoServer snapshot; see the crate docs. Idempotent: a snapshot of
/// a converged DittoServer gives no action at all.
///
/// The same as [`reconcile_raw`] (which the module's exports call) on the same JSON.
pub fn reconcile(snapshot: Snapshot) -> Outcome {
    // One path for every caller: the snapshot goes back to JSON and is read as the
    // exports read it (natively only: tests and tools, never the module's hot path).
    let json = match serde_json::to_vec(&snapshot) {
        Ok(json) => json,
        Err(err) => return Outcome::error(format!("snapshot does not encode: {err}"), false),
    };
    match reconcile_sdk::decode_snapshot_of(&json) {
        Ok(snapshot) => reconcile_raw(snapshot),
        Err(err) => Outcome::error(err.to_string(), false),
    }
}

/// Reconciles one DittoServer snapshot as the module's exports decode it (in one
/// pass, reading only what the reconcile needs: [`input`](crate::input));
/// idempotent like [`reconcile`].
pub fn reconcile_raw(snapshot: input::Snapshot<'_>) -> Outcome {
    // Every error is about the snapshot itself: the same input fails the same way.
    Input::read(snapshot)
        .and_then(|input| run(&input))
        .unwrap_or_else(|err| Outcome::error(err.to_string(), false))
}

/// Deletion, the finalizer, the spec's checks and the Secrets it needs come first;
/// then the objects and the status ([`converge`]).
fn run(input: &Input<'_>) -> Result<Outcome, ReconcileError> {
    let primary = &input.primary;
    if primary.deletion_timestamp.is_some() {
        return deletion::reconcile(input);
    }
    if !primary.has_finalizer {
        // Nothing is created before the finalizer is in place; its addition
        // triggers the next reconcile.
        return Ok(Outcome::actions(vec![Action::AddFinalizer { finalizer: FINALIZER.into() }]));
    }
    let spec = decode_spec(input.object.spec)?;
    // A status that does not decode is rewritten whole.
    let previous = input.object.status.and_then(|status| serde_json::from_str(status.get()).ok());
    let now = format_rfc3339(input.now);
    let problems = validate::problems(&primary.name, &spec);
    if !problems.is_empty() {
        return Ok(invalid_spec(primary, previous.as_ref(), &problems.join("; "), &now));
    }
    let secret_names = secrets::referenced(&primary.name, &spec);
    let requires = secrets::missing(&secret_names, &input.required);
    if !requires.is_empty() {
        return Ok(Outcome::Actions { actions: Vec::new(), requires, requeue_after_seconds: None });
    }
    converge(input, &spec, previous.as_ref(), &secret_names, &now)
}

/// The applies, deletes and status write that bring the cluster to `spec`, in the
/// order of the module docs.
fn converge(
    input: &Input<'_>,
    spec: &DittoServerSpec,
    previous: Option<&DittoServerStatus>,
    secret_names: &[String],
    now: &str,
) -> Result<Outcome, ReconcileError> {
    let primary = &input.primary;
    let (mut cluster_actions, database, creation_failing) = plan_percona(input, spec);
    let mut actions = Vec::new();
    let config_yaml = config::render(&primary.name, spec);
    let config_hash = config_hash(input, &config_yaml, secret_names);
    let observed = input.find("v1", "ConfigMap", &names::config_map(&primary.name));
    apply_if_changed(configmap::build(primary, config_yaml), observed, &mut actions)?;
    apply_services(input, spec, &mut actions)?;
    if !creation_failing {
        actions.append(&mut cluster_actions);
    }
    let statefulset = input.find("apps/v1", "StatefulSet", &primary.name);
    let statefulset_applied = apply_statefulset(input, spec, database, &config_hash, &mut actions)?;
    let observations = Observations {
        name: &primary.name,
        namespace: &primary.namespace,
        generation: primary.generation,
        statefulset: statefulset.map(StatefulSetState::read),
        statefulset_applied,
        database,
        config_hash: &config_hash,
        now,
    };
    let status = status::compute(spec, &observations, previous);
    if previous != Some(&status) {
        actions.push(Action::PatchStatus { status: serde_json::to_value(&status)? });
    }
    actions.append(&mut cluster_actions);
    // Every Secret the config hash covers, so that the host watches them for us.
    Ok(Outcome::Actions {
        actions,
        requires: secrets::requirements(secret_names),
        requeue_after_seconds: None,
    })
}

/// The Percona cluster's actions, its readiness (with Percona enabled), and whether
/// creating it keeps failing.
///
/// A cluster created by this batch exists, not ready, once the status is written;
/// unless creating it already failed (the PerconaPGCluster CRD may be missing): then
/// the status says so, and is written before the next attempt.
fn plan_percona<'a>(
    input: &'a Input<'_>,
    spec: &DittoServerSpec,
) -> (Vec<Action>, Option<Readiness<'a>>, bool) {
    let cluster = input.find(PERCONA_API_VERSION, PERCONA_KIND, &names::percona_cluster(&input.primary.name));
    let mut actions = Vec::new();
    percona::plan(&input.primary, spec, cluster, &mut actions);
    let creation_failing = spec.percona.enabled && cluster.is_none() && input.last_failure.is_some();
    let database = spec.percona.enabled.then(|| match cluster {
        None if !creation_failing => Readiness::NotReady(None),
        cluster => percona::readiness(cluster),
    });
    (actions, database, creation_failing)
}

/// The pod's config hash: the configuration file, the referenced Secrets' digests
/// and the generation.
fn config_hash(input: &Input<'_>, config_yaml: &str, secret_names: &[String]) -> String {
    let mut hasher = ConfigHasher::new();
    hasher.part(config_yaml.as_bytes());
    secrets::hash_digests(&mut hasher, secret_names, &input.required);
    hasher.part(&input.primary.generation.unwrap_or_default().to_le_bytes());
    hasher.finish()
}

/// The Services that changed; the metrics Service is deleted once metrics are off.
fn apply_services(
    input: &Input<'_>,
    spec: &DittoServerSpec,
    actions: &mut Vec<Action>,
) -> Result<(), ReconcileError> {
    let owner = &input.primary;
    let mut desired =
        vec![services::headless(owner, spec), services::file(owner, spec), services::api(owner, spec)];
    if spec.metrics.enabled {
        desired.push(services::metrics(owner, spec));
    }
    for service in desired {
        let name = service["metadata"]["name"].as_str().unwrap_or_default();
        let observed = input.find("v1", "Service", name);
        apply_if_changed(service, observed, actions)?;
    }
    let metrics_name = names::metrics_service(&owner.name);
    if !spec.metrics.enabled && input.find("v1", "Service", &metrics_name).is_some() {
        actions.push(Action::Delete {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: metrics_name,
            propagation_policy: Some(reconcile_sdk::PropagationPolicy::Background),
        });
    }
    Ok(())
}

/// The StatefulSet, when it changed; returns whether it is applied. With Percona, the
/// server is not created before its database is ready; once it exists it is kept up
/// to date whatever the cluster's state.
fn apply_statefulset(
    input: &Input<'_>,
    spec: &DittoServerSpec,
    database: Option<Readiness<'_>>,
    config_hash: &str,
    actions: &mut Vec<Action>,
) -> Result<bool, ReconcileError> {
    let observed = input.find("apps/v1", "StatefulSet", &input.primary.name);
    if observed.is_none() && database.is_some_and(|database| database != Readiness::Ready) {
        return Ok(false);
    }
    // Claim templates are immutable: once the StatefulSet exists, its own are kept.
    let claims = observed.and_then(Claim::from_observed).unwrap_or_else(|| Claim::from_spec(spec));
    apply_if_changed(statefulset::build(&input.primary, spec, config_hash, &claims), observed, actions)
}

/// Decodes `spec`, naming the field that does not decode.
fn decode_spec(spec: Option<&RawValue>) -> Result<DittoServerSpec, ReconcileError> {
    let spec = spec.ok_or(ReconcileError::MissingField("spec"))?;
    serde_json::from_str(spec.get())
        .map_err(|_| ReconcileError::undecodable::<DittoServerSpec>("spec", spec.get()))
}

/// Phase Failed, with the problems in the ConfigReady and Ready conditions; no object
/// is applied from a spec that cannot work.
fn invalid_spec(
    primary: &Primary,
    previous: Option<&DittoServerStatus>,
    problems: &str,
    now: &str,
) -> Outcome {
    let status = status::failed(previous, primary.generation, problems, now);
    if previous == Some(&status) {
        return Outcome::actions(Vec::new());
    }
    let mut actions = Vec::with_capacity(2);
    if let Ok(status) = serde_json::to_value(&status) {
        actions.push(Action::PatchStatus { status });
    }
    actions.push(Action::Event {
        event_type: EventType::Warning,
        reason: "InvalidSpec".into(),
        message: problems.into(),
    });
    Outcome::actions(actions)
}
