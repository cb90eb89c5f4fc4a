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
use crate::input::Primary;
use crate::input::{self, Input};
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
    let outcome = match Input::read(snapshot) {
        Ok(input) => {
            let outcome = run(&input);
            // The plain module runs in a fresh instance per call and its allocator
            // never reuses memory: walking the input to drop it would be wasted time.
            #[cfg(all(target_arch = "wasm32", not(feature = "js")))]
            std::mem::forget(input);
            outcome
        }
        Err(err) => Err(err),
    };
    // Every error is about the snapshot itself: the same input fails the same way.
    outcome.unwrap_or_else(|err| Outcome::error(err.to_string(), false))
}

fn run(snapshot: &Input<'_>) -> Result<Outcome, ReconcileError> {
    let now = snapshot.now;
    let primary = &snapshot.primary;
    if primary.deletion_timestamp.is_some() {
        return deletion::reconcile(snapshot);
    }
    if !primary.has_finalizer {
        // Nothing is created before the finalizer is in place; its addition
        // triggers the next reconcile.
        return Ok(Outcome::actions(vec![Action::AddFinalizer { finalizer: FINALIZER.into() }]));
    }

    let spec = decode_spec(snapshot.object.spec)?;
    // A status that does not decode is rewritten whole.
    let previous = snapshot.object.status.and_then(|status| serde_json::from_str(status.get()).ok());
    let now = format_rfc3339(now);

    let problems = validate::problems(&primary.name, &spec);
    if !problems.is_empty() {
        return Ok(invalid_spec(primary, previous.as_ref(), &problems.join("; "), &now));
    }

    let secret_names = secrets::referenced(&primary.name, &spec);
    let requires = secrets::missing(&secret_names, &snapshot.required);
    if !requires.is_empty() {
        return Ok(Outcome::Actions { actions: Vec::new(), requires, requeue_after_seconds: None });
    }

    let owner = primary;
    let name = primary.name.as_str();
    let observed = snapshot;
    let mut actions = Vec::new();

    let cluster = observed.find(PERCONA_API_VERSION, PERCONA_KIND, &names::percona_cluster(name));
    let mut cluster_actions = Vec::new();
    percona::plan(owner, &spec, cluster, &mut cluster_actions);
    // A cluster created by this batch exists, not ready, once the status is written;
    // unless creating it already failed (the PerconaPGCluster CRD may be missing):
    // then the status says so, and is written before the next attempt.
    let creation_failing = spec.percona.enabled && cluster.is_none() && snapshot.last_failure.is_some();
    let database = spec.percona.enabled.then(|| match cluster {
        None if !creation_failing => Readiness::NotReady(None),
        cluster => percona::readiness(cluster),
    });

    let config_yaml = config::render(name, &spec);
    let mut config_hasher = ConfigHasher::new();
    config_hasher.part(config_yaml.as_bytes());
    secrets::hash_digests(&mut config_hasher, &secret_names, &snapshot.required);
    config_hasher.part(&primary.generation.unwrap_or_default().to_le_bytes());
    let config_hash = config_hasher.finish();
    apply_if_changed(
        configmap::build(owner, config_yaml),
        observed.find("v1", "ConfigMap", &names::config_map(name)),
        &mut actions,
    )?;

    let service = |service_name: &str| observed.find("v1", "Service", service_name);
    for desired in
        [services::headless(owner, &spec), services::file(owner, &spec), services::api(owner, &spec)]
    {
        let observed = service(&desired.metadata.name);
        apply_if_changed(desired, observed, &mut actions)?;
    }
    let metrics_name = names::metrics_service(name);
    if spec.metrics.enabled {
        apply_if_changed(services::metrics(owner, &spec), service(&metrics_name), &mut actions)?;
    } else if service(&metrics_name).is_some() {
        actions.push(Action::Delete {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: metrics_name,
            propagation_policy: Some(reconcile_sdk::PropagationPolicy::Background),
        });
    }

    if !creation_failing {
        actions.append(&mut cluster_actions);
    }

    let observed_sts = observed.find("apps/v1", "StatefulSet", name);
    // With Percona, the server is not created before its database is ready; once it
    // exists it is kept up to date whatever the cluster's state.
    let may_create = database.is_none_or(|database| database == Readiness::Ready);
    let mut statefulset_applied = false;
    if observed_sts.is_some() || may_create {
        let claims = observed_sts.and_then(Claim::from_observed).unwrap_or_else(|| Claim::from_spec(&spec));
        statefulset_applied = apply_if_changed(
            statefulset::build(owner, &spec, &config_hash, &claims),
            observed_sts,
            &mut actions,
        )?;
    }

    let observations = Observations {
        name,
        namespace: &primary.namespace,
        generation: primary.generation,
        statefulset: observed_sts.map(StatefulSetState::read),
        statefulset_applied,
        database,
        config_hash: &config_hash,
        now: &now,
    };
    let status = status::compute(&spec, &observations, previous.as_ref());
    if previous.as_ref() != Some(&status) {
        actions.push(Action::PatchStatus { status: serde_json::to_value(&status)? });
    }
    actions.append(&mut cluster_actions);
    // Every Secret the config hash covers, so that the host watches them for us.
    Ok(Outcome::Actions {
        actions,
        requires: secrets::requirements(&secret_names),
        requeue_after_seconds: None,
    })
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
