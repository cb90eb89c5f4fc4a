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

use crate::cluster::index::{Owner, is_associated};
use crate::cluster::{KindKey, KindLookup, KindRegistry, PrimaryTarget};
use crate::module::{Module, ModuleCallError};
use crate::observe::Metrics;
use crate::policy::Rejection;
use crate::policy::confine::check_requirement;
use crate::snapshot;
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
    #[error("module call failed")]
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
    build_view(input.manifest, input.kinds, input.primary, &input.claimed)
}

/// [`view`] from its parts: the primary, and the objects claiming it by the owner
/// label (from the association index), filtered by the uid rule and digested.
pub fn build_view(
    manifest: &Manifest,
    kinds: &KindRegistry,
    primary: &PrimaryTarget,
    claimed: &[(KindKey, Arc<DynamicObject>)],
) -> (Value, Vec<Value>, HashSet<(KindKey, String)>) {
    let object = snapshot::object_value(to_value(&primary.object), &manifest.primary);
    let mut related = Vec::new();
    let mut associated = HashSet::new();
    let owner = Owner {
        label: &manifest.owner_label,
        field_manager: &manifest.field_manager,
        primary: &primary.key,
        uid: &primary.uid,
    };
    for (kind, obj) in claimed {
        if !is_associated(obj, &owner) {
            continue;
        }
        let decl = match kinds.lookup(kind) {
            KindLookup::Served(decl, _) | KindLookup::Absent(decl) => decl,
            KindLookup::Undeclared => continue,
        };
        if let Some(name) = &obj.metadata.name {
            associated.insert((kind.clone(), name.clone()));
        }
        related.push(snapshot::object_value(to_value(obj), &decl));
    }
    snapshot::sort_objects(&mut related);
    (object, related, associated)
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
        let (outcome, guest_time) = match module.reconcile(bytes).await {
            Ok(reply) => reply,
            Err(err) => {
                if let Some(metrics) = input.metrics {
                    metrics.module_call_error(err.reason());
                }
                return Err(DecideError::Call(err));
            }
        };
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
            return Ok(Decision { outcome, snapshot, associated });
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use kube::discovery::ApiResource;
    use reconcile_sdk::{KindRef, Snapshot};
    use serde_json::json;
    use std::sync::Mutex;
    use std::time::Duration;

    fn kind(api_version: &str, kind: &str, optional: bool, digest_only: bool) -> KindRef {
        KindRef {
            api_version: api_version.into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
            optional,
            digest_only,
        }
    }

    fn resource(k: &KindRef) -> ApiResource {
        let (group, version) = k.api_version.split_once('/').unwrap_or(("", &k.api_version));
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: k.api_version.clone(),
            kind: k.kind.clone(),
            plural: k.plural.clone(),
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            abi: 1,
            name: "t".into(),
            version: "1".into(),
            primary: kind("example.com/v1", "Thing", false, false),
            related: vec![kind("v1", "ConfigMap", false, false), kind("v1", "Secret", false, true)],
            // Absent (optional, not served): answering it needs no API call.
            reads: vec![kind("example.com/v1", "Source", true, false)],
            owner_label: "example.com/thing".into(),
            field_manager: "t".into(),
            finalizers: Vec::new(),
        }
    }

    fn registry(manifest: &Manifest) -> KindRegistry {
        KindRegistry::from_parts(
            resource(&manifest.primary),
            vec![
                (manifest.related[0].clone(), Some(resource(&manifest.related[0]))),
                (manifest.related[1].clone(), Some(resource(&manifest.related[1]))),
                (manifest.reads[0].clone(), None),
            ],
        )
    }

    fn object(value: serde_json::Value) -> Arc<DynamicObject> {
        Arc::new(serde_json::from_value(value).expect("a valid object"))
    }

    fn primary() -> PrimaryTarget {
        let obj = object(json!({"apiVersion": "example.com/v1", "kind": "Thing",
            "metadata": {"name": "p", "namespace": "ns", "uid": "uid-p", "managedFields": [{"manager": "x"}]}}));
        PrimaryTarget::new(obj).expect("named, with a uid")
    }

    fn claimed(
        kind: &str,
        name: &str,
        controller_uid: &str,
        data: serde_json::Value,
    ) -> (KindKey, Arc<DynamicObject>) {
        let obj = object(json!({"metadata": {"name": name, "namespace": "ns",
            "labels": {"example.com/thing": "p"},
            "ownerReferences": [{"apiVersion": "x/v1", "kind": "X", "name": "o", "uid": controller_uid, "controller": true}]},
            "data": data}));
        (KindKey::new("v1", kind), obj)
    }

    #[test]
    fn the_view_keeps_associated_objects_in_order_and_digests_digest_only_kinds() {
        let manifest = manifest();
        let kinds = registry(&manifest);
        let claimed = vec![
            claimed("Secret", "s", "uid-p", json!({"k": "dmFsdWU="})),
            claimed("ConfigMap", "b", "uid-p", json!({"k": "v"})),
            claimed("ConfigMap", "a", "uid-p", json!({"k": "v"})),
            claimed("ConfigMap", "foreign", "uid-other", json!({})),
        ];
        let (object, related, associated) = build_view(&manifest, &kinds, &primary(), &claimed);
        assert!(object["metadata"].get("managedFields").is_none());
        assert_eq!(object["kind"], "Thing");
        let names: Vec<_> =
            related.iter().map(|o| o["metadata"]["name"].as_str().unwrap_or_default()).collect();
        assert_eq!(names, ["a", "b", "s"]);
        assert_eq!(related[0]["kind"], "ConfigMap", "kind filled in from the manifest");
        let digest = related[2]["data"]["k"].as_str().unwrap_or_default();
        assert!(digest.starts_with("sha256:"), "{digest}");
        assert!(associated.contains(&(KindKey::new("v1", "ConfigMap"), "a".to_owned())));
        assert!(!associated.contains(&(KindKey::new("v1", "ConfigMap"), "foreign".to_owned())));
    }

    /// Asks for a new object of one kind (`s1`, `s2`, ...) on every call.
    struct Asking {
        api_version: &'static str,
        kind: &'static str,
        calls: Mutex<Vec<Snapshot>>,
    }

    impl Asking {
        fn new(api_version: &'static str, kind: &'static str) -> Self {
            Asking { api_version, kind, calls: Mutex::new(Vec::new()) }
        }
    }

    impl Module for Asking {
        fn manifest(&self) -> &Manifest {
            unreachable!("not used by decide")
        }
        fn digest(&self) -> &str {
            "sha256:asking"
        }
        fn reconcile(
            &self,
            json: Vec<u8>,
        ) -> BoxFuture<'static, Result<(Outcome, Duration), ModuleCallError>> {
            let snapshot = reconcile_sdk::decode_snapshot(&json).expect("a valid snapshot");
            let mut calls = self.calls.lock().expect("not poisoned");
            calls.push(snapshot);
            let outcome = Outcome::Actions {
                actions: Vec::new(),
                requires: vec![Requirement {
                    api_version: self.api_version.into(),
                    kind: self.kind.into(),
                    name: format!("s{}", calls.len()),
                }],
                requeue_after_seconds: None,
            };
            Box::pin(async move { Ok((outcome, Duration::ZERO)) })
        }
    }

    /// Decides for `module` with the test manifest and primary, against a client that
    /// must never be used (every read the tests cause is of an absent kind).
    async fn decide_offline(module: &dyn Module) -> Result<Decision, DecideError> {
        let manifest = manifest();
        let kinds = registry(&manifest);
        let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().expect("a url")))
            .expect("a client");
        let primary = primary();
        let input = DecideInput {
            manifest: &manifest,
            kinds: &kinds,
            client: &client,
            primary: &primary,
            claimed: Vec::new(),
            remembered: Vec::new(),
            last_failure: None,
            now: "2026-11-26T12:00:00Z".into(),
            metrics: None,
        };
        decide(module, input).await
    }

    #[tokio::test]
    async fn requirements_are_answered_and_a_module_that_keeps_asking_fails_after_four_rounds() {
        // The only kind read is absent, which is answered with null.
        let module = Asking::new("example.com/v1", "Source");
        let err = decide_offline(&module).await.expect_err("never satisfied");
        assert!(matches!(err, DecideError::TooManyRounds { .. }), "{err}");
        assert!(err.to_string().contains("after 4 rounds"), "{err}");
        let calls = module.calls.lock().expect("not poisoned");
        assert_eq!(calls.len(), MAX_ROUNDS);
        // Each round answers exactly what the previous one asked for.
        assert!(calls[0].required.is_empty());
        assert_eq!(calls[1].required.len(), 1);
        assert_eq!(calls[1].required[0].name, "s1");
        assert_eq!(calls[1].required[0].object, None);
        assert_eq!(calls[3].required[0].name, "s3");
    }

    #[tokio::test]
    async fn a_requirement_of_an_unlisted_kind_is_rejected_before_any_read() {
        let module = Asking::new("v1", "Pod");
        let err = decide_offline(&module).await.expect_err("rejected");
        assert!(matches!(err, DecideError::Rejected(_)), "{err}");
        assert_eq!(module.calls.lock().expect("not poisoned").len(), 1, "no second round");
    }
}
