//! Confinement: which actions and requirements a module has the right to ask for.
//!
//! Every action is checked here before the executor sees it, and a rejected action is
//! never written: the host stops the batch, records a Warning event `ActionRejected`
//! on the primary and counts it. The rules (docs/abi.md, *Confinement*) only depend on the manifest,
//! the primary's identity and the objects associated with it, so this module is pure
//! and exhaustively unit-tested. The executor re-verifies association on a fresh read
//! before a delete or an orphan, since the cache may lag.

use super::pod_security::{Violation, WorkloadPolicy, check_object};
use crate::cluster::{KindKey, ObjectKey};
use reconcile_sdk::{Action, Manifest, Requirement};
use serde_json::Value;
use std::collections::HashSet;

/// The primary an outcome is about.
#[derive(Debug, Clone, Copy)]
pub struct PrimaryRef<'a> {
    /// Its namespace and name.
    pub key: &'a ObjectKey,
    /// Its uid: the only owner a module's objects may reference.
    pub uid: &'a str,
}

/// Why an action or requirement is outside the module's rights.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `apply` of an object that does not say what it is.
    #[error("apply of an object without apiVersion, kind and metadata.name")]
    ApplyIncomplete,
    /// `apply`, `delete` or `orphan` of a kind the manifest does not list in `related`.
    #[error("{op} of {kind} {name:?}: the kind is not in the manifest's related kinds")]
    KindNotRelated {
        /// The action.
        op: &'static str,
        /// The kind asked for.
        kind: KindKey,
        /// The object's name.
        name: String,
    },
    /// `apply` into a namespace other than the primary's.
    #[error(
        "apply of {kind} {name:?} into namespace {namespace:?}: only the primary's namespace {expected:?} is allowed"
    )]
    OtherNamespace {
        /// The kind.
        kind: KindKey,
        /// The object's name.
        name: String,
        /// The namespace asked for.
        namespace: String,
        /// The primary's namespace.
        expected: String,
    },
    /// `apply` of an object without `ownerLabel: <primary name>`.
    #[error("apply of {kind} {name:?} without the label {label}={expected:?}")]
    MissingOwnerLabel {
        /// The kind.
        kind: KindKey,
        /// The object's name.
        name: String,
        /// The manifest's owner label.
        label: String,
        /// The primary's name.
        expected: String,
    },
    /// `apply` of an object with an ownerReference to something other than the primary.
    #[error("apply of {kind} {name:?} with an ownerReference to {owner}: only the primary may own it")]
    ForeignOwnerReference {
        /// The kind.
        kind: KindKey,
        /// The object's name.
        name: String,
        /// The referenced owner, as `kind name (uid)`.
        owner: String,
    },
    /// `delete` or `orphan` of an object that is not associated with the primary, or
    /// `apply` over an existing one (found by the executor's fresh read).
    #[error("{op} of {kind} {name:?}: the object is not associated with the primary")]
    NotAssociated {
        /// The action.
        op: &'static str,
        /// The kind.
        kind: KindKey,
        /// The object's name.
        name: String,
    },
    /// A finalizer the manifest does not declare.
    #[error("{op} of finalizer {finalizer:?}: not one of the manifest's finalizers")]
    ForeignFinalizer {
        /// The action.
        op: &'static str,
        /// The finalizer.
        finalizer: String,
    },
    /// A name that is not a valid object name for its kind: a `/` would put a
    /// subresource into the request path.
    #[error("{op} of {kind} {name:?}: not a valid name ({rule})")]
    InvalidName {
        /// The action, or `requires`.
        op: &'static str,
        /// The kind.
        kind: KindKey,
        /// The name given (cut to 253 characters).
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// An event whose reason the events API would refuse.
    #[error(
        "event with reason {reason:?}: a reason is one CamelCase word of at most {MAX_REASON_BYTES} bytes"
    )]
    BadEventReason {
        /// The reason given.
        reason: String,
    },
    /// `apply` of an object whose content the administrator's workload rules refuse
    /// (Pod Security, ServiceAccount, Service `externalIPs`).
    #[error("apply of {kind} {name:?}: {violation}")]
    Workload {
        /// The kind.
        kind: KindKey,
        /// The object's name.
        name: String,
        /// The refused field and the rule.
        violation: Violation,
    },
    /// A requirement of a kind neither in `reads` nor in `related`.
    #[error("requires {kind} {name:?}: the kind is in neither the manifest's reads nor its related kinds")]
    UnlistedRequirement {
        /// The kind.
        kind: KindKey,
        /// The object's name.
        name: String,
    },
}

/// Checks one action against the module's rights.
///
/// `associated` holds the kind and name of every object associated with the primary,
/// i.e. exactly the snapshot's `related` objects.
pub fn check_action(
    action: &Action,
    manifest: &Manifest,
    workload: &WorkloadPolicy,
    primary: PrimaryRef<'_>,
    associated: &HashSet<(KindKey, String)>,
) -> Result<(), Rejection> {
    match action {
        Action::AddFinalizer { finalizer } | Action::RemoveFinalizer { finalizer } => {
            if manifest.finalizers.iter().any(|f| f == finalizer) {
                Ok(())
            } else {
                Err(Rejection::ForeignFinalizer { op: action.op(), finalizer: finalizer.clone() })
            }
        }
        Action::Apply { object } => {
            check_apply(object, manifest, primary).and_then(|()| check_content(object, workload))
        }
        Action::Delete { api_version, kind, name, .. } | Action::Orphan { api_version, kind, name } => {
            let kind = KindKey::new(api_version, kind);
            check_name(action.op(), &kind, name)?;
            if !manifest.related.iter().any(|k| k.is(&kind.api_version, &kind.kind)) {
                return Err(Rejection::KindNotRelated { op: action.op(), kind, name: name.clone() });
            }
            if associated.contains(&(kind.clone(), name.clone())) {
                Ok(())
            } else {
                Err(Rejection::NotAssociated { op: action.op(), kind, name: name.clone() })
            }
        }
        // Both only ever touch the primary itself; an event's reason must be one the
        // events API takes, or its write fails (422) and says nothing.
        Action::Event { reason, .. } if !is_event_reason(reason) => {
            Err(Rejection::BadEventReason { reason: reason.chars().take(MAX_REASON_BYTES).collect() })
        }
        Action::PatchStatus { .. } | Action::Event { .. } => Ok(()),
    }
}

/// Checks that `name` is a valid name for `kind` before any request path is built
/// from it: a DNS-1123 label for a Service (its name becomes a DNS label), a DNS-1123
/// subdomain for everything else.
fn check_name(op: &'static str, kind: &KindKey, name: &str) -> Result<(), Rejection> {
    let service = kind.api_version == "v1" && kind.kind == "Service";
    let rule = if service { dns_label(name) } else { dns_subdomain(name) };
    rule.map_err(|rule| Rejection::InvalidName {
        op,
        kind: kind.clone(),
        name: name.chars().take(253).collect(),
        rule,
    })
}

/// A DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending with `[a-z0-9]`.
fn dns_label(name: &str) -> Result<(), &'static str> {
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    ok.then_some(())
        .ok_or("a DNS-1123 label: at most 63 of a-z, 0-9 and '-', starting and ending alphanumeric")
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated labels.
fn dns_subdomain(name: &str) -> Result<(), &'static str> {
    const RULE: &str = "a DNS-1123 subdomain: at most 253 of a-z, 0-9, '-' and '.', each part starting and ending alphanumeric";
    let ok = (1..=253).contains(&name.len())
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    ok.then_some(()).ok_or(RULE)
}

/// The longest event reason: the events API's limit.
pub const MAX_REASON_BYTES: usize = 128;

/// Whether `reason` is a CamelCase word (`[A-Z][A-Za-z0-9]*`) of at most
/// [`MAX_REASON_BYTES`] bytes, as Kubernetes' own reasons are.
fn is_event_reason(reason: &str) -> bool {
    reason.len() <= MAX_REASON_BYTES
        && reason.starts_with(|c: char| c.is_ascii_uppercase())
        && reason.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn check_apply(object: &Value, manifest: &Manifest, primary: PrimaryRef<'_>) -> Result<(), Rejection> {
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    let metadata = object.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str);
    let (Some(api_version), Some(kind), Some(name)) = (api_version, kind, name) else {
        return Err(Rejection::ApplyIncomplete);
    };
    let kind = KindKey::new(api_version, kind);
    check_name("apply", &kind, name)?;
    let name = name.to_owned();
    if !manifest.related.iter().any(|k| k.is(api_version, &kind.kind)) {
        return Err(Rejection::KindNotRelated { op: "apply", kind, name });
    }
    // An absent namespace means the primary's: the executor sets it.
    match metadata.and_then(|m| m.get("namespace")) {
        None | Some(Value::Null) => {}
        Some(ns) if ns.as_str() == Some(primary.key.namespace.as_str()) => {}
        Some(ns) => {
            let namespace = ns.as_str().map_or_else(|| ns.to_string(), str::to_owned);
            return Err(Rejection::OtherNamespace {
                kind,
                name,
                namespace,
                expected: primary.key.namespace.clone(),
            });
        }
    }
    let label = metadata.and_then(|m| m.get("labels")).and_then(|l| l.get(&manifest.owner_label));
    if label.and_then(Value::as_str) != Some(primary.key.name.as_str()) {
        return Err(Rejection::MissingOwnerLabel {
            kind,
            name,
            label: manifest.owner_label.clone(),
            expected: primary.key.name.clone(),
        });
    }
    let refs = metadata.and_then(|m| m.get("ownerReferences"));
    match refs {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(refs)) => {
            for owner in refs {
                let field = |f: &str| owner.get(f).and_then(Value::as_str);
                let is_primary = field("uid") == Some(primary.uid)
                    && field("name") == Some(primary.key.name.as_str())
                    && field("kind") == Some(manifest.primary.kind.as_str())
                    && field("apiVersion") == Some(manifest.primary.api_version.as_str());
                if !is_primary {
                    let owner = format!(
                        "{} {:?} (uid {:?})",
                        field("kind").unwrap_or("?"),
                        field("name").unwrap_or("?"),
                        field("uid").unwrap_or("?")
                    );
                    return Err(Rejection::ForeignOwnerReference { kind, name, owner });
                }
            }
            Ok(())
        }
        Some(other) => Err(Rejection::ForeignOwnerReference { kind, name, owner: other.to_string() }),
    }
}

/// Checks what an applied object contains against the administrator's workload rules.
fn check_content(object: &Value, workload: &WorkloadPolicy) -> Result<(), Rejection> {
    check_object(object, workload).map_err(|violation| {
        // check_apply has found these present.
        let field = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or_default().to_owned();
        let kind = KindKey::new(field(object.get("apiVersion")), field(object.get("kind")));
        let name = field(object.get("metadata").and_then(|m| m.get("name")));
        Rejection::Workload { kind, name, violation }
    })
}

/// Checks one requirement against the module's rights: its kind must be in `reads` or
/// `related` (the namespace is always the primary's).
pub fn check_requirement(requirement: &Requirement, manifest: &Manifest) -> Result<(), Rejection> {
    let kind = KindKey::new(&requirement.api_version, &requirement.kind);
    check_name("requires", &kind, &requirement.name)?;
    let listed = manifest
        .reads
        .iter()
        .chain(&manifest.related)
        .any(|k| k.is(&requirement.api_version, &requirement.kind));
    if listed {
        Ok(())
    } else {
        Err(Rejection::UnlistedRequirement {
            kind: KindKey::new(&requirement.api_version, &requirement.kind),
            name: requirement.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reconcile_sdk::{EventType, KindRef, PropagationPolicy};
    use serde_json::json;

    fn manifest() -> Manifest {
        let kind = |api_version: &str, kind: &str, plural: &str| KindRef {
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
            optional: false,
            digest_only: false,
        };
        Manifest {
            abi: 1,
            name: "test".into(),
            version: "0.1.0".into(),
            primary: kind("example.com/v1", "Thing", "things"),
            related: vec![kind("v1", "ConfigMap", "configmaps")],
            reads: vec![KindRef { digest_only: true, ..kind("v1", "Secret", "secrets") }],
            owner_label: "example.com/thing".into(),
            field_manager: "thing-operator".into(),
            finalizers: vec!["example.com/cleanup".into()],
        }
    }

    const UID: &str = "uid-primary";

    fn check(action: Action) -> Result<(), Rejection> {
        let key = ObjectKey::new("ns", "p");
        let associated: HashSet<_> = [(KindKey::new("v1", "ConfigMap"), "p-config".to_owned())].into();
        check_action(
            &action,
            &manifest(),
            &WorkloadPolicy::default(),
            PrimaryRef { key: &key, uid: UID },
            &associated,
        )
    }

    fn config_map(metadata: Value) -> Action {
        Action::Apply { object: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}) }
    }

    fn owner(uid: &str, name: &str) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Thing", "name": name, "uid": uid, "controller": true})
    }

    #[test]
    fn apply_of_an_owned_related_object_is_allowed() {
        let labels = json!({"example.com/thing": "p"});
        assert_eq!(check(config_map(json!({"name": "c", "labels": labels}))), Ok(()));
        assert_eq!(check(config_map(json!({"name": "c", "namespace": "ns", "labels": labels}))), Ok(()));
        let with_owner = json!({"name": "c", "labels": labels, "ownerReferences": [owner(UID, "p")]});
        assert_eq!(check(config_map(with_owner)), Ok(()));
    }

    #[test]
    fn apply_into_another_namespace_is_rejected() {
        let metadata = json!({"name": "c", "namespace": "kube-system", "labels": {"example.com/thing": "p"}});
        assert!(matches!(check(config_map(metadata)), Err(Rejection::OtherNamespace { .. })));
    }

    #[test]
    fn apply_of_an_unlisted_kind_is_rejected() {
        let action = Action::Apply {
            object: json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "labels": {"example.com/thing": "p"}}}),
        };
        assert!(matches!(check(action), Err(Rejection::KindNotRelated { op: "apply", .. })));
        // Same kind name, other group: still not listed.
        let action = Action::Apply {
            object: json!({"apiVersion": "evil.example.com/v1", "kind": "ConfigMap",
                "metadata": {"name": "s", "labels": {"example.com/thing": "p"}}}),
        };
        assert!(matches!(check(action), Err(Rejection::KindNotRelated { .. })));
    }

    #[test]
    fn apply_without_the_owner_label_is_rejected() {
        for labels in [
            json!(null),
            json!({}),
            json!({"example.com/thing": "someone-else"}),
            json!({"example.com/thing": 1}),
        ] {
            let result = check(config_map(json!({"name": "c", "labels": labels})));
            assert!(matches!(result, Err(Rejection::MissingOwnerLabel { .. })), "{labels}: {result:?}");
        }
    }

    #[test]
    fn apply_with_a_foreign_owner_reference_is_rejected() {
        let labels = json!({"example.com/thing": "p"});
        for refs in [
            json!([owner("uid-other", "p")]),
            json!([owner(UID, "other-name")]),
            json!([owner(UID, "p"), owner("uid-other", "q")]),
            json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "p", "uid": UID}]),
            json!("not a list"),
        ] {
            let result = check(config_map(json!({"name": "c", "labels": labels, "ownerReferences": refs})));
            assert!(matches!(result, Err(Rejection::ForeignOwnerReference { .. })), "{refs}: {result:?}");
        }
    }

    #[test]
    fn apply_of_an_incomplete_object_is_rejected() {
        let result = check(Action::Apply { object: json!({"apiVersion": "v1", "kind": "ConfigMap"}) });
        assert_eq!(result, Err(Rejection::ApplyIncomplete));
        assert_eq!(check(Action::Apply { object: json!("x") }), Err(Rejection::ApplyIncomplete));
    }

    #[test]
    fn delete_and_orphan_need_an_associated_object_of_a_related_kind() {
        let delete = |api_version: &str, kind: &str, name: &str| Action::Delete {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            propagation_policy: Some(PropagationPolicy::Background),
        };
        let orphan = |name: &str| Action::Orphan {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: name.into(),
        };
        assert_eq!(check(delete("v1", "ConfigMap", "p-config")), Ok(()));
        assert_eq!(check(orphan("p-config")), Ok(()));
        assert!(matches!(
            check(delete("v1", "ConfigMap", "unowned")),
            Err(Rejection::NotAssociated { op: "delete", .. })
        ));
        assert!(matches!(check(orphan("unowned")), Err(Rejection::NotAssociated { op: "orphan", .. })));
        assert!(matches!(check(delete("v1", "Secret", "p-config")), Err(Rejection::KindNotRelated { .. })));
    }

    #[test]
    fn only_the_manifest_finalizers_are_allowed() {
        let add = |f: &str| Action::AddFinalizer { finalizer: f.into() };
        let remove = |f: &str| Action::RemoveFinalizer { finalizer: f.into() };
        assert_eq!(check(add("example.com/cleanup")), Ok(()));
        assert_eq!(check(remove("example.com/cleanup")), Ok(()));
        assert!(matches!(check(add("kubernetes")), Err(Rejection::ForeignFinalizer { .. })));
        assert!(matches!(check(remove("foregroundDeletion")), Err(Rejection::ForeignFinalizer { .. })));
    }

    #[test]
    fn status_and_events_concern_only_the_primary() {
        assert_eq!(check(Action::PatchStatus { status: json!({"phase": "Ready"}) }), Ok(()));
        let event =
            Action::Event { event_type: EventType::Normal, reason: "Done".into(), message: "ok".into() };
        assert_eq!(check(event), Ok(()));
    }

    #[test]
    fn requirements_must_name_a_read_or_related_kind() {
        let req = |api_version: &str, kind: &str| Requirement {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "x".into(),
        };
        assert_eq!(check_requirement(&req("v1", "Secret"), &manifest()), Ok(()));
        assert_eq!(check_requirement(&req("v1", "ConfigMap"), &manifest()), Ok(()));
        assert!(matches!(
            check_requirement(&req("v1", "ServiceAccount"), &manifest()),
            Err(Rejection::UnlistedRequirement { .. })
        ));
    }

    #[test]
    fn event_reasons_are_camel_case_words_the_events_api_takes() {
        let manifest = manifest();
        let key = ObjectKey::new("ns", "p");
        let primary = PrimaryRef { key: &key, uid: "uid" };
        let event = |reason: &str| Action::Event {
            event_type: EventType::Normal,
            reason: reason.into(),
            message: "m".into(),
        };
        for good in ["Ready", "CleanupTimeout", "Step2Done", &"A".repeat(MAX_REASON_BYTES)] {
            assert_eq!(
                check_action(&event(good), &manifest, &WorkloadPolicy::default(), primary, &HashSet::new()),
                Ok(()),
                "{good}"
            );
        }
        for bad in ["", "ready", "Two words", "Dotted.Reason", "Ünicode", &"A".repeat(MAX_REASON_BYTES + 1)]
        {
            let err =
                check_action(&event(bad), &manifest, &WorkloadPolicy::default(), primary, &HashSet::new())
                    .expect_err(bad);
            assert!(matches!(err, Rejection::BadEventReason { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn names_must_be_valid_for_their_kind_before_any_request_is_built() {
        let manifest = manifest();
        let key = ObjectKey::new("ns", "p");
        let primary = PrimaryRef { key: &key, uid: "uid" };
        let associated: HashSet<_> = [(KindKey::new("v1", "ConfigMap"), "svc/proxy".to_owned())].into();
        let delete = |name: &str| Action::Delete {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: name.into(),
            propagation_policy: None,
        };
        let requires = |kind: &str, name: &str| Requirement {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
        };
        let long = "a".repeat(254);
        for bad in ["svc/proxy", "..", "", "UPPER", "-lead", "trail-", "a..b", "x y", long.as_str()] {
            let err = check_action(&delete(bad), &manifest, &WorkloadPolicy::default(), primary, &associated)
                .expect_err(bad);
            assert!(matches!(err, Rejection::InvalidName { op: "delete", .. }), "{bad}: {err}");
            let err = check_requirement(&requires("ConfigMap", bad), &manifest).expect_err(bad);
            assert!(matches!(err, Rejection::InvalidName { op: "requires", .. }), "{bad}: {err}");
        }
        for good in ["a", "p-config", "a.b-c.d", &"a".repeat(253)] {
            assert!(!matches!(
                check_requirement(&requires("ConfigMap", good), &manifest),
                Err(Rejection::InvalidName { .. })
            ));
        }
        // A dotted name is a fine ConfigMap name but not a Service's.
        assert!(dns_subdomain("p.metrics").is_ok());
        assert!(dns_label("p.metrics").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        let apply = Action::Apply {
            object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a/status", "labels": {"example.com/owner": "p"}}}),
        };
        let err = check_action(&apply, &manifest, &WorkloadPolicy::default(), primary, &associated)
            .expect_err("a slash");
        assert!(matches!(err, Rejection::InvalidName { op: "apply", .. }), "{err}");
    }
}
