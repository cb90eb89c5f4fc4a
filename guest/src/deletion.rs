//! The deletion of a DittoServer (the seed's finalizer lifecycle).
//!
//! While the module's finalizer holds the object: the phase becomes `Deleting` (written
//! once, with a Normal event `Deleting`); the Percona cluster, when present, is deleted
//! (`deleteWithServer: true`, Warning `PerconaDeleted`) or left without any
//! ownerReference to the server (Normal `PerconaOrphaned`); then the finalizer is
//! removed, last in the same batch, so that a failed cleanup step (the host stops a
//! batch at its first failure) keeps the finalizer and is retried every 5 seconds.
//! ConfigMap, Services and StatefulSet go with the garbage collector.
//!
//! 60 seconds after `deletionTimestamp` the finalizer is removed whatever still fails
//! (Warning `CleanupTimeout`), so nothing hangs in Terminating.
//!
//! The spec is read leniently here: a DittoServer whose spec no longer decodes can
//! still be deleted, and then keeps its database (the safe default).

use reconcile_sdk::{Action, EventType, Outcome, PropagationPolicy};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::ReconcileError;
use crate::input::Input;
use crate::names::{self, FINALIZER, PERCONA_API_VERSION, PERCONA_KIND};
use crate::objects::percona;
use crate::time::parse_rfc3339;

/// How long cleanup may keep failing before the finalizer is removed anyway.
pub const CLEANUP_TIMEOUT_SECONDS: i64 = 60;
/// How soon a failed cleanup is tried again.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// Reconciles a DittoServer that has a `deletionTimestamp`.
pub fn reconcile(snapshot: &Input<'_>) -> Result<Outcome, ReconcileError> {
    let primary = &snapshot.primary;
    if !primary.has_finalizer {
        return Ok(Outcome::actions(Vec::new()));
    }
    let deletion = primary.deletion_timestamp.as_deref().unwrap_or_default();
    let deleted_at = parse_rfc3339(deletion).ok_or_else(|| {
        ReconcileError::InvalidObject(format!(
            "metadata.deletionTimestamp {deletion:?} is not an RFC 3339 timestamp"
        ))
    })?;
    let remove_finalizer = Action::RemoveFinalizer { finalizer: FINALIZER.into() };
    let elapsed = snapshot.now.saturating_sub(deleted_at);

    if elapsed > CLEANUP_TIMEOUT_SECONDS {
        // The finalizer goes first here: the point is that nothing (not even a
        // failing events API) keeps the object in Terminating.
        let mut message =
            format!("cleanup did not finish within {CLEANUP_TIMEOUT_SECONDS}s; finalizer removed");
        if let Some(failure) = &snapshot.last_failure {
            message.push_str(&format!(" (last failure: {})", failure.message));
        }
        return Ok(Outcome::actions(vec![
            remove_finalizer,
            event(EventType::Warning, "CleanupTimeout", message),
        ]));
    }

    // Read as trees here, leniently: whatever they hold, deletion goes on.
    let status = tree(snapshot.object.status);
    let spec = tree(snapshot.object.spec);
    let mut actions = Vec::new();
    if status["phase"] != "Deleting" {
        actions.push(Action::PatchStatus { status: deleting_status(status) });
        actions.push(event(
            EventType::Normal,
            "Deleting",
            format!("DittoServer {} is being deleted", primary.name),
        ));
    }

    let cluster_name = names::percona_cluster(&primary.name);
    let cluster = snapshot.find(PERCONA_API_VERSION, PERCONA_KIND, &cluster_name);
    if cluster.is_some() {
        let flag = |field: &str| spec["percona"][field] == true;
        if flag("enabled") && flag("deleteWithServer") {
            actions.push(Action::Delete {
                api_version: PERCONA_API_VERSION.into(),
                kind: PERCONA_KIND.into(),
                name: cluster_name.clone(),
                propagation_policy: Some(PropagationPolicy::Background),
            });
            actions.push(event(
                EventType::Warning,
                "PerconaDeleted",
                format!("PerconaPGCluster {cluster_name} and its data are deleted with the server (deleteWithServer)"),
            ));
        } else {
            actions.push(percona::orphan(&primary.name));
            actions.push(event(
                EventType::Normal,
                "PerconaOrphaned",
                format!("PerconaPGCluster {cluster_name} is kept, with no ownerReference to the server"),
            ));
        }
    }
    actions.push(remove_finalizer);

    Ok(Outcome::Actions {
        actions,
        requires: Vec::new(),
        requeue_after_seconds: snapshot.last_failure.is_some().then_some(RETRY_AFTER_SECONDS),
    })
}

/// A part of the primary as a JSON tree (`null` when absent).
fn tree(part: Option<&RawValue>) -> Value {
    part.and_then(|raw| serde_json::from_str(raw.get()).ok()).unwrap_or_default()
}

/// The observed status, whatever it holds, with phase `Deleting`.
fn deleting_status(status: Value) -> Value {
    let mut status = match status {
        Value::Object(status) => status,
        _ => Map::new(),
    };
    status.insert("phase".into(), "Deleting".into());
    Value::Object(status)
}

fn event(event_type: EventType, reason: &str, message: String) -> Action {
    Action::Event { event_type, reason: reason.into(), message }
}
