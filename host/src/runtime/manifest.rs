//! Semantic checks of a module's [`Manifest`], beyond what its JSON shape enforces.
//!
//! The operator watches, confines and builds RBAC from the manifest, so a manifest
//! that names nothing sensible must be refused at load, with the offending field
//! named, rather than fail later against the API server. The checks are syntactic
//! (Kubernetes naming rules); whether the kinds exist is for the operator to find.

use reconcile_sdk::{ABI_VERSION, KindRef, Manifest};
use std::collections::HashSet;

/// What is wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The manifest declares another ABI.
    #[error("manifest declares abi {found}, but the host implements abi {ABI_VERSION}")]
    WrongAbi {
        /// The declared version.
        found: u32,
    },
    /// A field that must name something is empty.
    #[error("manifest field `{field}` is empty")]
    Empty {
        /// The field's path, e.g. `related[1].plural`.
        field: String,
    },
    /// A field does not follow the Kubernetes naming rule it must.
    #[error("manifest field `{field}` is not a valid {rule}: {value:?}")]
    Invalid {
        /// The field's path.
        field: String,
        /// The rule, e.g. `qualified name`.
        rule: &'static str,
        /// The value found.
        value: String,
    },
    /// A flag is set on a kind where it means nothing (or something unsafe).
    #[error("manifest field `{field}` may not be set: {why}")]
    FlagNotAllowed {
        /// The field's path.
        field: String,
        /// Why not.
        why: &'static str,
    },
    /// The primary kind is also listed as related or read.
    #[error("manifest lists its primary kind {kind} again in `{list}`")]
    PrimaryListedAgain {
        /// `apiVersion/kind`.
        kind: String,
        /// `related` or `reads`.
        list: &'static str,
    },
    /// A kind is listed twice.
    #[error("manifest lists kind {kind} twice (`{first}` and `{second}`)")]
    DuplicateKind {
        /// `apiVersion/kind`.
        kind: String,
        /// Where first.
        first: String,
        /// Where again.
        second: String,
    },
    /// The owner label is not in the primary's API group: a generic label
    /// (`app.kubernetes.io/instance`) would let the module claim objects that Helm,
    /// kubectl or kustomize made.
    #[error(
        "manifest field `ownerLabel` {label:?} must have the primary's API group {group:?} or a subdomain of it as its prefix, e.g. \"{group}/owner\""
    )]
    ForeignOwnerLabel {
        /// The label.
        label: String,
        /// The primary's API group (empty for the core group).
        group: String,
    },
    /// The field manager is one that well-known clients write under: objects they
    /// made would count as the module's own (its field manager in `managedFields` is
    /// one proof of ownership).
    #[error(
        "manifest field `fieldManager` {0:?} is the name kubectl, Helm, a GitOps tool, a Kubernetes component or an \
         unnamed client writes under, so objects they made would count as the module's own; give the module a name of its own"
    )]
    ForeignFieldManager(String),
    /// A finalizer is listed twice.
    #[error("manifest lists finalizer {0:?} twice")]
    DuplicateFinalizer(String),
}

/// Checks a decoded manifest. See [`ManifestError`] for the rules.
pub fn validate_manifest(manifest: &Manifest) -> Result<(), ManifestError> {
    if manifest.abi != ABI_VERSION {
        return Err(ManifestError::WrongAbi { found: manifest.abi });
    }
    non_empty("name", &manifest.name)?;
    non_empty("version", &manifest.version)?;
    non_empty("fieldManager", &manifest.field_manager)?;
    // The API server's limit on managedFields managers.
    if manifest.field_manager.len() > 128 {
        return Err(invalid("fieldManager", "field manager (at most 128 bytes)", &manifest.field_manager));
    }
    // It is also the events' reportingController, which the events API refuses unless
    // it is a qualified name: every event of the module would fail.
    if !is_qualified_name(&manifest.field_manager) {
        return Err(invalid("fieldManager", "qualified name", &manifest.field_manager));
    }
    if is_well_known_manager(&manifest.field_manager) {
        return Err(ManifestError::ForeignFieldManager(manifest.field_manager.clone()));
    }
    non_empty("ownerLabel", &manifest.owner_label)?;
    if !is_qualified_name(&manifest.owner_label) {
        return Err(invalid("ownerLabel", "qualified name", &manifest.owner_label));
    }

    check_kind("primary", &manifest.primary)?;
    check_owner_label(&manifest.owner_label, &manifest.primary.api_version)?;
    if manifest.primary.optional {
        return Err(ManifestError::FlagNotAllowed {
            field: "primary.optional".into(),
            why: "the host must be able to watch the primary kind",
        });
    }
    if manifest.primary.digest_only {
        return Err(ManifestError::FlagNotAllowed {
            field: "primary.digestOnly".into(),
            why: "the module must see the objects it reconciles",
        });
    }
    let primary = (manifest.primary.api_version.as_str(), manifest.primary.kind.as_str());
    let mut seen: Vec<((&str, &str), String)> = Vec::new();
    for (list, kinds) in [("related", &manifest.related), ("reads", &manifest.reads)] {
        for (i, kind) in kinds.iter().enumerate() {
            let field = format!("{list}[{i}]");
            check_kind(&field, kind)?;
            if list == "related" && kind.digest_only {
                // The module applies related objects whole: digests in place of data
                // would be written back over the real values.
                return Err(ManifestError::FlagNotAllowed {
                    field: format!("{field}.digestOnly"),
                    why: "the module owns and applies related objects, so it must see their data",
                });
            }
            let key = (kind.api_version.as_str(), kind.kind.as_str());
            if key == primary {
                return Err(ManifestError::PrimaryListedAgain { kind: display_kind(kind), list });
            }
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                return Err(ManifestError::DuplicateKind {
                    kind: display_kind(kind),
                    first: first.clone(),
                    second: field,
                });
            }
            seen.push((key, field));
        }
    }

    let mut finalizers = HashSet::new();
    for (i, finalizer) in manifest.finalizers.iter().enumerate() {
        let field = format!("finalizers[{i}]");
        non_empty(&field, finalizer)?;
        if !is_qualified_name(finalizer) {
            return Err(invalid(&field, "qualified name", finalizer));
        }
        if !finalizers.insert(finalizer.as_str()) {
            return Err(ManifestError::DuplicateFinalizer(finalizer.clone()));
        }
    }
    Ok(())
}

/// The owner label's prefix must be the primary's API group or a subdomain of it
/// (`dittofs.dittofs.com/server` for `dittofs.dittofs.com`, or
/// `x.dittofs.dittofs.com/server`): no other controller's objects carry it.
/// Field managers that common clients write under (kubectl's commands, Helm,
/// kustomize, Argo CD and Flux, the Kubernetes components, and the user-agent names an
/// unnamed client gets). A list, so not complete: it stops a module from claiming
/// what people made with the usual tools.
fn is_well_known_manager(manager: &str) -> bool {
    const PREFIXES: [&str; 8] =
        ["kubectl", "kube-", "helm", "kustomize", "argocd", "argo-cd", "flux", "gotk-"];
    const NAMES: [&str; 6] =
        ["kubelet", "before-first-apply", "go-http-client", "curl", "python-requests", "unknown"];
    let manager = manager.to_ascii_lowercase();
    PREFIXES.iter().any(|prefix| manager.starts_with(prefix)) || NAMES.contains(&manager.as_str())
}

fn check_owner_label(label: &str, api_version: &str) -> Result<(), ManifestError> {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let prefix = label.rsplit_once('/').map_or("", |(prefix, _)| prefix);
    let ours = !group.is_empty()
        && (prefix == group || prefix.strip_suffix(group).is_some_and(|sub| sub.ends_with('.')));
    if ours {
        Ok(())
    } else {
        Err(ManifestError::ForeignOwnerLabel { label: label.to_owned(), group: group.to_owned() })
    }
}

fn check_kind(field: &str, kind: &KindRef) -> Result<(), ManifestError> {
    let api_version_field = format!("{field}.apiVersion");
    non_empty(&api_version_field, &kind.api_version)?;
    let api_version_ok = match kind.api_version.split_once('/') {
        Some((group, version)) => is_dns_subdomain(group) && is_dns_label(version),
        None => is_dns_label(&kind.api_version),
    };
    if !api_version_ok {
        return Err(invalid(&api_version_field, "apiVersion (`group/version` or `v1`)", &kind.api_version));
    }
    let kind_field = format!("{field}.kind");
    non_empty(&kind_field, &kind.kind)?;
    let kind_ok = kind.kind.starts_with(|c: char| c.is_ascii_alphabetic())
        && kind.kind.chars().all(|c| c.is_ascii_alphanumeric())
        && kind.kind.len() <= 63;
    if !kind_ok {
        return Err(invalid(&kind_field, "kind (alphanumeric, starting with a letter)", &kind.kind));
    }
    let plural_field = format!("{field}.plural");
    non_empty(&plural_field, &kind.plural)?;
    if !is_dns_label(&kind.plural) {
        return Err(invalid(&plural_field, "plural resource name (lowercase DNS label)", &kind.plural));
    }
    Ok(())
}

fn non_empty(field: &str, value: &str) -> Result<(), ManifestError> {
    if value.trim().is_empty() {
        return Err(ManifestError::Empty { field: field.to_owned() });
    }
    Ok(())
}

fn invalid(field: &str, rule: &'static str, value: &str) -> ManifestError {
    ManifestError::Invalid { field: field.to_owned(), rule, value: value.to_owned() }
}

fn display_kind(kind: &KindRef) -> String {
    format!("{}/{}", kind.api_version, kind.kind)
}

/// RFC 1123 label: lowercase alphanumerics and `-`, alphanumeric at both ends, at
/// most 63 bytes.
fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 bytes.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes qualified name (label keys, finalizers): an optional DNS subdomain
/// prefix and `/`, then at most 63 alphanumerics, `-`, `_` or `.`, alphanumeric at
/// both ends.
fn is_qualified_name(s: &str) -> bool {
    let name = match s.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return false;
            }
            name
        }
        None => s,
    };
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn design_manifest() -> serde_json::Value {
        json!({ "abi": 1, "name": "dittofs-reconciler", "version": "0.1.0",
          "primary": {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer", "plural": "dittoservers"},
          "related": [ {"apiVersion": "v1", "kind": "ConfigMap", "plural": "configmaps"},
                       {"apiVersion": "pgv2.percona.com/v2", "kind": "PerconaPGCluster",
                        "plural": "perconapgclusters", "optional": true} ],
          "reads": [ {"apiVersion": "v1", "kind": "Secret", "plural": "secrets", "digestOnly": true} ],
          "ownerLabel": "dittofs.dittofs.com/server",
          "fieldManager": "dittofs-operator",
          "finalizers": ["dittofs.dittofs.com/finalizer"] })
    }

    fn check(value: serde_json::Value) -> Result<(), ManifestError> {
        let manifest: Manifest = serde_json::from_value(value).expect("manifest decodes");
        validate_manifest(&manifest)
    }

    fn with(path: &[&str], value: serde_json::Value) -> serde_json::Value {
        let mut manifest = design_manifest();
        let mut node = &mut manifest;
        for key in path {
            node = match key.parse::<usize>() {
                Ok(i) => &mut node[i],
                Err(_) => &mut node[*key],
            };
        }
        *node = value;
        manifest
    }

    #[test]
    fn the_design_manifest_is_valid() {
        assert_eq!(check(design_manifest()), Ok(()));
    }

    #[test]
    fn an_owner_label_in_a_subdomain_of_the_primary_group_is_valid() {
        assert_eq!(check(with(&["ownerLabel"], json!("servers.dittofs.dittofs.com/name"))), Ok(()));
    }

    #[test]
    fn invalid_manifests_name_the_offending_field() {
        let cases = [
            (with(&["abi"], json!(2)), "declares abi 2"),
            (with(&["name"], json!("")), "`name` is empty"),
            (with(&["version"], json!(" ")), "`version` is empty"),
            (with(&["fieldManager"], json!("")), "`fieldManager` is empty"),
            (
                with(&["fieldManager"], json!("bounded events")),
                "`fieldManager` is not a valid qualified name",
            ),
            (with(&["fieldManager"], json!("-dash")), "`fieldManager` is not a valid qualified name"),
            (with(&["fieldManager"], json!("kubectl-client-side-apply")), "writes under"),
            (with(&["fieldManager"], json!("kubectl-create")), "writes under"),
            (with(&["fieldManager"], json!("helm")), "writes under"),
            (with(&["fieldManager"], json!("kustomize-controller")), "writes under"),
            (with(&["fieldManager"], json!("argocd-controller")), "writes under"),
            (with(&["fieldManager"], json!("kube-controller-manager")), "writes under"),
            (with(&["fieldManager"], json!("Go-http-client")), "writes under"),
            (with(&["ownerLabel"], json!("not a label")), "`ownerLabel` is not a valid qualified name"),
            (with(&["ownerLabel"], json!("Bad_Domain/x")), "`ownerLabel` is not a valid qualified name"),
            (with(&["ownerLabel"], json!("app.kubernetes.io/instance")), "must have the primary's API group"),
            (with(&["ownerLabel"], json!("server")), "must have the primary's API group"),
            (
                with(&["ownerLabel"], json!("evildittofs.dittofs.com/server")),
                "must have the primary's API group",
            ),
            (with(&["ownerLabel"], json!("dittofs.com/server")), "must have the primary's API group"),
            (with(&["primary", "plural"], json!("")), "`primary.plural` is empty"),
            (with(&["primary", "plural"], json!("DittoServers")), "`primary.plural` is not a valid plural"),
            (with(&["primary", "kind"], json!("")), "`primary.kind` is empty"),
            (with(&["primary", "kind"], json!("Ditto Server")), "`primary.kind` is not a valid kind"),
            (
                with(&["primary", "apiVersion"], json!("a/b/c")),
                "`primary.apiVersion` is not a valid apiVersion",
            ),
            (with(&["primary", "optional"], json!(true)), "`primary.optional` may not be set"),
            (with(&["related", "0", "plural"], json!("config maps")), "`related[0].plural`"),
            (with(&["related", "0", "digestOnly"], json!(true)), "`related[0].digestOnly` may not be set"),
            (with(&["finalizers"], json!(["dittofs.dittofs.com/finalizer", ""])), "`finalizers[1]` is empty"),
            (with(&["finalizers"], json!(["-bad-"])), "`finalizers[0]` is not a valid qualified name"),
            (with(&["finalizers"], json!(["a.b/f", "a.b/f"])), "finalizer \"a.b/f\" twice"),
            (
                with(
                    &["related", "1"],
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "plural": "configmaps"}),
                ),
                "kind v1/ConfigMap twice (`related[0]` and `related[1]`)",
            ),
            (
                with(
                    &["reads", "0"],
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "plural": "configmaps"}),
                ),
                "kind v1/ConfigMap twice (`related[0]` and `reads[0]`)",
            ),
            (
                with(
                    &["related", "1"],
                    json!({"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer", "plural": "dittoservers"}),
                ),
                "primary kind dittofs.dittofs.com/v1alpha1/DittoServer again in `related`",
            ),
        ];
        for (manifest, expected) in cases {
            let err = check(manifest).expect_err(expected);
            assert!(err.to_string().contains(expected), "{err} lacks {expected:?}");
        }
    }
}
