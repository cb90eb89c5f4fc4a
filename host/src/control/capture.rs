//! `wasm-operator snapshot`'s work: the snapshot `run` would pass for one primary,
//! read fresh from the API server, for `reconcile` to replay offline.

use super::decide::{DecideInput, decide, view};
use crate::cluster::{KindKey, KindLookup, KindRegistry, ObjectKey, PrimaryTarget};
use crate::error_chain;
use crate::module::Module;
use crate::snapshot;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use std::sync::Arc;
use std::time::SystemTime;

/// Why no snapshot could be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The module's kinds could not be discovered.
    #[error("cannot discover the module's kinds")]
    Discovery(#[source] crate::cluster::DiscoveryError),
    /// The primary does not exist (or has no uid).
    #[error("{kind} {key} not found")]
    PrimaryNotFound {
        /// The primary kind.
        kind: String,
        /// Its namespace and name.
        key: ObjectKey,
    },
    /// A read failed.
    #[error("cannot read {what}")]
    Read {
        /// What was read.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Reads `key` and its associated objects fresh and returns the snapshot `run` would
/// pass: the one of the decision's last round (requirements answered). If the module
/// fails or asks for something forbidden, the first round's snapshot is returned,
/// since that is the input to replay.
pub async fn capture(
    client: &Client,
    server: &str,
    module: &dyn Module,
    key: &ObjectKey,
) -> Result<reconcile_sdk::Snapshot, CaptureError> {
    let manifest = module.manifest();
    let kinds = KindRegistry::discover(client, server, manifest).await.map_err(CaptureError::Discovery)?;
    let not_found =
        || CaptureError::PrimaryNotFound { kind: manifest.primary.kind.clone(), key: key.clone() };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, kinds.primary());
    let object = api
        .get_opt(&key.name)
        .await
        .map_err(|source| CaptureError::Read { what: format!("{} {key}", manifest.primary.kind), source })?
        .ok_or_else(not_found)?;
    let primary = PrimaryTarget::new(Arc::new(object)).ok_or_else(not_found)?;
    let mut claimed = Vec::new();
    let selector = format!("{}={}", manifest.owner_label, key.name);
    for kind in &manifest.related {
        let kind_key = KindKey::new(&kind.api_version, &kind.kind);
        let KindLookup::Served(_, resource) = kinds.lookup(&kind_key) else { continue };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, &resource);
        let list = api.list(&ListParams::default().labels(&selector)).await.map_err(|source| {
            CaptureError::Read { what: format!("{} in {}", kind.kind, key.namespace), source }
        })?;
        claimed.extend(list.items.into_iter().map(|o| (kind_key.clone(), Arc::new(o))));
    }
    let input = DecideInput {
        manifest,
        kinds: &kinds,
        client,
        primary: &primary,
        claimed,
        remembered: Vec::new(),
        last_failure: None,
        now: snapshot::rfc3339(SystemTime::now()),
        metrics: None,
    };
    let (object, related, _) = view(&input);
    let first = snapshot::build(input.now.clone(), object, related, Vec::new(), None);
    match decide(module, input).await {
        Ok(decision) => Ok(decision.snapshot),
        Err(err) => {
            tracing::warn!(
                "requirements not answered ({}); printing the first round's snapshot",
                error_chain(&err)
            );
            Ok(first)
        }
    }
}
