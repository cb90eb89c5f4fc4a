//! One decision: snapshot, module call, requirements, up to the final outcome.
//!
//! Guarantees:
//! - the snapshot's `related` comes from the association index (the caller passes
//!   the objects claimed by the owner label; the uid rule is applied here);
//! - a `requires` of a kind outside `reads`/`related` is rejected before anything is
//!   read; the others are read fresh in the primary's namespace (digested for
//!   `digestOnly` kinds) and the module is called again, at most [`MAX_ROUNDS`] calls
//!   in all, and only the final outcome is returned;
//! - the first snapshot already answers the primary's remembered requirements, so a
//!   steady-state reconcile is a single call.
//!
//! Nothing here writes to the cluster.

use super::confine::{Rejection, check_requirement};
use super::discovery::{KindLookup, KindRegistry};
use super::execute::PrimaryTarget;
use super::index::{KindKey, is_associated};
use super::metrics::Metrics;
use super::module::{Module, ModuleCallError};
use super::snapshot;
use kube::Client;
use kube::api::{Api, DynamicObject};
use reconcile_sdk::{LastFailure, Manifest, Outcome, RequiredObject, Requirement, Snapshot};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

/// Module calls per reconcile, the first included.
pub const MAX_ROUNDS: usize = 4;

/// Why no final outcome was reached.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The module trapped, timed out or answered garbage.
    #[error("module call failed: {0}")]
    Call(#[source] ModuleCallError),
    /// A requirement is outside the module's rights.
    #[error(transparent)]
    Rejected(Box<Rejection>),
    /// The module kept asking for new objects.
    #[error("the module still required new objects after {MAX_ROUNDS} rounds: {pending}")]
    TooManyRounds {
        /// The requirements left unanswered, as `Kind/name`.
        pending: String,
    },
    /// A required object could not be read.
    #[error("cannot read required {kind} {name:?}")]
    Read {
        /// The kind.
        kind: KindKey,
        /// The name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The snapshot could not be serialized (should not happen).
    #[error("cannot encode the snapshot")]
    Encode(#[source] serde_json::Error),
}

/// The final outcome and what led to it.
#[derive(Debug)]
pub struct Decision {
    /// The module's final outcome.
    pub outcome: Outcome,
    /// The snapshot that produced it.
    pub snapshot: Snapshot,
    /// Kind and name of every associated object (the snapshot's `related`).
    pub associated: HashSet<(KindKey, String)>,
    /// How many module calls it took.
    pub rounds: usize,
}

/// What a decision needs besides the module.
pub struct DecideInput<'a> {
    /// The manifest of the module being called.
    pub manifest: &'a Manifest,
    /// The discovered kinds.
    pub kinds: &'a KindRegistry,
    /// For reading required objects.
    pub client: &'a Client,
    /// The primary.
    pub primary: &'a PrimaryTarget,
    /// Objects of related kinds claiming the primary by the owner label.
    pub claimed: Vec<(KindKey, Arc<DynamicObject>)>,
    /// The primary's requirements from its previous reconcile.
    pub remembered: Vec<Requirement>,
    /// The snapshot's `lastFailure`.
    pub last_failure: Option<LastFailure>,
    /// The snapshot's `now`.
    pub now: String,
    /// Where to record call durations, if anywhere.
    pub metrics: Option<&'a Metrics>,
}

/// The snapshot's view of the primary and its associated objects, and the set of
/// (kind, name) that confinement checks `delete`/`orphan` against.
pub fn view(input: &DecideInput<'_>) -> (Value, Vec<Value>, HashSet<(KindKey, String)>) {
    let primary = snapshot::object_value(to_value(&input.primary.object), &input.manifest.primary);
    let mut related = Vec::new();
    let mut associated = HashSet::new();
    for (kind, obj) in &input.claimed {
        if !is_associated(obj, &input.manifest.owner_label, &input.primary.key, &input.primary.uid) {
            continue;
        }
        let decl = match input.kinds.lookup(kind) {
            KindLookup::Served(decl, _) | KindLookup::Absent(decl) => decl,
            KindLookup::Undeclared => continue,
        };
        if let Some(name) = &obj.metadata.name {
            associated.insert((kind.clone(), name.clone()));
        }
        related.push(snapshot::object_value(to_value(obj), &decl));
    }
    snapshot::sort_objects(&mut related);
    (primary, related, associated)
}

fn to_value(obj: &DynamicObject) -> Value {
    // A DynamicObject is a JSON object by construction.
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// Reads one required object, fresh, in `namespace`: `object: null` when it does not
/// exist or its (optional) kind is not served.
pub async fn read_required(
    client: &Client,
    kinds: &KindRegistry,
    namespace: &str,
    req: &Requirement,
) -> Result<RequiredObject, DecideError> {
    let kind = KindKey::new(&req.api_version, &req.kind);
    let object = match kinds.lookup(&kind) {
        KindLookup::Served(decl, resource) => {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
            let found = api.get_opt(&req.name).await.map_err(|source| DecideError::Read {
                kind: kind.clone(),
                name: req.name.clone(),
                source,
            })?;
            found.map(|obj| snapshot::object_value(to_value(&obj), &decl))
        }
        KindLookup::Absent(_) | KindLookup::Undeclared => None,
    };
    Ok(RequiredObject {
        api_version: req.api_version.clone(),
        kind: req.kind.clone(),
        name: req.name.clone(),
        object,
    })
}

/// Calls the module until its outcome asks for nothing it has not been given.
pub async fn decide(module: &dyn Module, input: DecideInput<'_>) -> Result<Decision, DecideError> {
    let (object, related, associated) = view(&input);
    let namespace = input.primary.key.namespace.clone();
    let mut required: Vec<RequiredObject> = Vec::new();
    for req in dedup(&input.remembered) {
        // A remembered requirement was confined when it was made; the manifest may
        // have changed since (hot swap), so check again rather than trust it.
        if check_requirement(&req, input.manifest).is_ok() {
            required.push(read_required(input.client, input.kinds, &namespace, &req).await?);
        }
    }
    let mut rounds = 0;
    loop {
        rounds += 1;
        let snapshot = snapshot::build(
            input.now.clone(),
            object.clone(),
            related.clone(),
            required.clone(),
            input.last_failure.clone(),
        );
        let bytes = serde_json::to_vec(&snapshot).map_err(DecideError::Encode)?;
        let (outcome, guest_time) = module.reconcile(bytes).await.map_err(DecideError::Call)?;
        if let Some(metrics) = input.metrics {
            metrics.wasm_call_duration.observe(guest_time.as_secs_f64());
        }
        let requires = match &outcome {
            Outcome::Actions { requires, .. } => dedup(requires),
            Outcome::Error(_) => Vec::new(),
        };
        for req in &requires {
            check_requirement(req, input.manifest).map_err(|r| DecideError::Rejected(Box::new(r)))?;
        }
        let missing: Vec<Requirement> =
            requires.iter().filter(|req| !required.iter().any(|r| r.answers(req))).cloned().collect();
        if missing.is_empty() {
            return Ok(Decision { outcome, snapshot, associated, rounds });
        }
        if rounds >= MAX_ROUNDS {
            let pending =
                missing.iter().map(|r| format!("{}/{}", r.kind, r.name)).collect::<Vec<_>>().join(", ");
            return Err(DecideError::TooManyRounds { pending });
        }
        // Keep only what the module asks for now: answers to stale requests would
        // only grow the snapshot.
        required.retain(|r| requires.iter().any(|req| r.answers(req)));
        for req in &missing {
            required.push(read_required(input.client, input.kinds, &namespace, req).await?);
        }
    }
}

fn dedup(requirements: &[Requirement]) -> Vec<Requirement> {
    let mut seen = HashSet::new();
    requirements.iter().filter(|r| seen.insert((*r).clone())).cloned().collect()
}
