//! The administrator's policy: what any module may do on this operator, whatever its
//! manifest asks for. The manifest can only ask for less.
//!
//! Guarantees, under the default policy:
//! - **Kinds.** A manifest whose `primary` or `related` kinds (what the module writes)
//!   include a refused kind ([`refusal`]: RBAC, ServiceAccounts, Secrets, Pods,
//!   admission, CRDs, certificates, Nodes) is rejected at load and at hot swap, with a
//!   message naming the kind and the flag that opens it (`--allow-kind GROUP/KIND`,
//!   `--allow-secret-values` for Secrets). Cluster-scoped kinds are refused by
//!   discovery ([`crate::cluster`]). `reads` kinds are only read, by name, in the
//!   primary's namespace, and are not refused.
//! - **Secrets.** A core `Secret` read through `requires` is always digested, whatever
//!   `digestOnly` says (the registry forces it, [`crate::cluster::KindRegistry`]), so
//!   its values never enter the sandbox. Only with `--allow-secret-values` may a
//!   module list Secret in `related`, and then it sees (and writes) their values.
//! - **Cost.** Every outcome is held to [`OutcomeLimits`] before any action runs.
//! - **Workload content.** Every applied object passes [`super::pod_security`] at
//!   confinement: Pod Security baseline in every pod template, no `externalIPs` on a
//!   Service, no ServiceAccount but `default` unless allowed.

use super::budget::WriteBudgetConfig;
use super::outcome::OutcomeLimits;
use super::pod_security::WorkloadPolicy;
use crate::cluster::KindKey;
use reconcile_sdk::{KindRef, Manifest};

/// What the administrator allows every module (`run`'s policy flags).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdminPolicy {
    /// Refused kinds opened one by one (`--allow-kind GROUP/KIND`).
    pub allowed_kinds: Vec<GroupKind>,
    /// Whether a module may own Secrets, and so see their values
    /// (`--allow-secret-values`).
    pub allow_secret_values: bool,
    /// The rules for the content of applied objects.
    pub workload: WorkloadPolicy,
    /// The caps on one outcome.
    pub outcome: OutcomeLimits,
    /// How much each primary's module may write over time.
    pub writes: WriteBudgetConfig,
}

/// A kind by API group (`""` for the core group) and name, as `--allow-kind` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKind {
    /// The API group; empty for the core group.
    pub group: String,
    /// The kind.
    pub kind: String,
}

impl GroupKind {
    /// Parses `GROUP/KIND`, with `core/KIND` or a bare `KIND` for the core group.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (group, kind) = text.rsplit_once('/').unwrap_or(("", text));
        let group = if group == "core" { "" } else { group };
        let is_kind = kind.starts_with(|c: char| c.is_ascii_uppercase())
            && kind.bytes().all(|b| b.is_ascii_alphanumeric());
        if !is_kind {
            return Err(format!("{text:?} is not GROUP/KIND (for example apps/Deployment or core/Pod)"));
        }
        Ok(GroupKind { group: group.to_owned(), kind: kind.to_owned() })
    }

    /// The group and kind of `api_version`/`kind`.
    pub fn of(api_version: &str, kind: &str) -> Self {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        GroupKind { group: group.to_owned(), kind: kind.to_owned() }
    }
}

impl std::fmt::Display for GroupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(f, "{group}/{}", self.kind)
    }
}

/// A manifest that asks for more than the policy allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{list} kind {kind} is refused by the operator's policy ({why}); to allow it, start the operator with {flag}"
)]
pub struct PolicyViolation {
    /// `primary` or `related[i]`.
    pub list: String,
    /// The kind.
    pub kind: KindKey,
    /// Why the kind is refused by default.
    pub why: &'static str,
    /// The flag that opens it.
    pub flag: String,
}

/// Why `kind` is refused by default, or `None` when any module may write it.
pub fn refusal(kind: &GroupKind) -> Option<&'static str> {
    let why = match (kind.group.as_str(), kind.kind.as_str()) {
        ("rbac.authorization.k8s.io", _) => "a Role or binding can hand the operator's rights to anyone",
        ("", "ServiceAccount") => "a ServiceAccount's token carries its rights",
        ("", "Secret") => "a module that owns Secrets sees their values",
        ("", "Pod") => "a Pod runs code with a ServiceAccount's rights",
        ("admissionregistration.k8s.io", _) => "admission webhooks and policies see or decide every write",
        ("apiextensions.k8s.io", _) => "a CustomResourceDefinition changes the API for everyone",
        ("certificates.k8s.io", _) => "a signed certificate is a credential",
        ("", "Node") => "Nodes are cluster-wide",
        _ => return None,
    };
    Some(why)
}

impl AdminPolicy {
    /// Checks the kinds `manifest` writes (its primary and related kinds) against the
    /// policy.
    pub fn check_manifest(&self, manifest: &Manifest) -> Result<(), PolicyViolation> {
        let written = std::iter::once(("primary".to_owned(), &manifest.primary))
            .chain(manifest.related.iter().enumerate().map(|(i, kind)| (format!("related[{i}]"), kind)));
        for (list, kind) in written {
            self.check_kind(list, kind)?;
        }
        Ok(())
    }

    fn check_kind(&self, list: String, kind: &KindRef) -> Result<(), PolicyViolation> {
        let group_kind = GroupKind::of(&kind.api_version, &kind.kind);
        let Some(why) = refusal(&group_kind) else { return Ok(()) };
        let secret = group_kind.group.is_empty() && group_kind.kind == "Secret";
        let allowed =
            if secret { self.allow_secret_values } else { self.allowed_kinds.contains(&group_kind) };
        if allowed {
            return Ok(());
        }
        let flag =
            if secret { "--allow-secret-values".to_owned() } else { format!("--allow-kind {group_kind}") };
        Err(PolicyViolation { list, kind: KindKey::new(&kind.api_version, &kind.kind), why, flag })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(api_version: &str, kind: &str) -> KindRef {
        KindRef {
            api_version: api_version.into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
            optional: false,
            digest_only: false,
        }
    }

    fn manifest(related: Vec<KindRef>) -> Manifest {
        Manifest {
            abi: 1,
            name: "m".into(),
            version: "1".into(),
            primary: kind("example.com/v1", "Thing"),
            related,
            reads: vec![kind("v1", "Secret"), kind("rbac.authorization.k8s.io/v1", "Role")],
            owner_label: "example.com/owner".into(),
            field_manager: "m".into(),
            finalizers: vec![],
        }
    }

    const REFUSED: &[(&str, &str, &str)] = &[
        ("rbac.authorization.k8s.io/v1", "Role", "--allow-kind rbac.authorization.k8s.io/Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", "--allow-kind rbac.authorization.k8s.io/RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", "--allow-kind rbac.authorization.k8s.io/ClusterRole"),
        ("v1", "ServiceAccount", "--allow-kind core/ServiceAccount"),
        ("v1", "Secret", "--allow-secret-values"),
        ("v1", "Pod", "--allow-kind core/Pod"),
        ("v1", "Node", "--allow-kind core/Node"),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            "--allow-kind admissionregistration.k8s.io/ValidatingWebhookConfiguration",
        ),
        (
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "--allow-kind apiextensions.k8s.io/CustomResourceDefinition",
        ),
        (
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            "--allow-kind certificates.k8s.io/CertificateSigningRequest",
        ),
    ];

    #[test]
    fn every_refused_kind_is_refused_in_related_naming_the_flag() {
        for (api_version, name, flag) in REFUSED {
            let manifest = manifest(vec![kind("v1", "ConfigMap"), kind(api_version, name)]);
            let err = AdminPolicy::default().check_manifest(&manifest).expect_err(name);
            assert_eq!(err.list, "related[1]");
            assert_eq!(err.flag, *flag);
            let message = err.to_string();
            assert!(message.contains(name) && message.contains(flag), "{message}");
        }
    }

    #[test]
    fn each_flag_opens_only_its_kind() {
        for (api_version, name, _) in REFUSED {
            let manifest = manifest(vec![kind(api_version, name)]);
            let group_kind = GroupKind::of(api_version, name);
            let policy = if *name == "Secret" {
                AdminPolicy { allow_secret_values: true, ..AdminPolicy::default() }
            } else {
                AdminPolicy { allowed_kinds: vec![group_kind], ..AdminPolicy::default() }
            };
            assert_eq!(policy.check_manifest(&manifest), Ok(()), "{name}");
            let other = manifest_with_pod_and(api_version, name);
            if *name != "Pod" {
                assert!(policy.check_manifest(&other).is_err(), "{name} must not open Pod");
            }
        }
        // --allow-kind core/Secret is not the Secret flag: values need their own.
        let policy = AdminPolicy {
            allowed_kinds: vec![GroupKind::parse("core/Secret").expect("parses")],
            ..AdminPolicy::default()
        };
        assert!(policy.check_manifest(&manifest(vec![kind("v1", "Secret")])).is_err());
    }

    fn manifest_with_pod_and(api_version: &str, name: &str) -> Manifest {
        manifest(vec![kind(api_version, name), kind("v1", "Pod")])
    }

    #[test]
    fn the_primary_is_checked_and_ordinary_kinds_and_reads_pass() {
        let mut pods = manifest(vec![]);
        pods.primary = kind("v1", "Pod");
        assert_eq!(AdminPolicy::default().check_manifest(&pods).expect_err("pod").list, "primary");
        let ordinary = manifest(vec![
            kind("v1", "ConfigMap"),
            kind("v1", "Service"),
            kind("apps/v1", "StatefulSet"),
            kind("pgv2.percona.com/v2", "PerconaPGCluster"),
        ]);
        assert_eq!(AdminPolicy::default().check_manifest(&ordinary), Ok(()));
    }

    #[test]
    fn group_kinds_parse_and_print() {
        assert_eq!(
            GroupKind::parse("apps/Deployment").expect("parses"),
            GroupKind::of("apps/v1", "Deployment")
        );
        assert_eq!(GroupKind::parse("core/Pod").expect("parses"), GroupKind::of("v1", "Pod"));
        assert_eq!(GroupKind::parse("Pod").expect("parses"), GroupKind::of("v1", "Pod"));
        assert_eq!(GroupKind::of("v1", "Pod").to_string(), "core/Pod");
        for bad in ["", "apps/", "apps/deployment", "apps/Deploy-ment", "a/b/c d"] {
            assert!(GroupKind::parse(bad).is_err(), "{bad:?}");
        }
    }
}
