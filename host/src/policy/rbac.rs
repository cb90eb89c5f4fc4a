//! Least-privilege RBAC derived from a module's manifest (`wasm-operator rbac`).
//!
//! The host only ever touches what the manifest declares, so the manifest is also the
//! exact list of rights the host's identity needs:
//!
//! | resource              | verbs                                         |
//! |-----------------------|-----------------------------------------------|
//! | primary               | get, list, watch, patch                       |
//! | primary `/status`     | patch                                         |
//! | primary `/finalizers` | update (authorization only, see below)        |
//! | related kinds         | get, list, watch, create, patch, delete       |
//! | `reads` kinds         | get, list, watch                              |
//! | events.k8s.io         | create, patch                                 |
//! | leases (own ns)       | leader election: get, create, update          |
//! | module ConfigMap      | get, list, watch; events in its ns: create, patch |
//!
//! Nothing more. By default the rights are cluster-wide (ClusterRole); with a
//! namespace they are a Role there. Leases and the module ConfigMap always get a Role
//! in the operator's own namespace. [`access_checks`] lists the same workload rights
//! as single (group, resource, verb, namespace) checks, which a hot swap runs as
//! SelfSubjectAccessReviews before accepting a module that may need more.
//!
//! Why each right, from what the host calls (`operator/`):
//! - primary: the watch (list, watch), a fresh `get` before deciding, finalizers as
//!   JSON `patch`; `/status` by merge `patch`. `update` on `/finalizers` is never
//!   called: CRDs do not serve that subresource. It is what the
//!   `OwnerReferencesPermissionEnforcement` admission plugin (on in OpenShift and
//!   hardened clusters) checks before anyone sets `blockOwnerDeletion` in an
//!   ownerReference to the primary, which is what a module's `apply` of an owned
//!   object does; without it those applies fail there.
//! - related: label-filtered watches, fresh `get` before `delete`/`orphan`,
//!   server-side apply (`patch`, and `create` when the object does not exist yet),
//!   `delete`; `orphan` is a JSON `patch`.
//! - reads: `get` for requirements, a metadata-only watch (list, watch). Note that
//!   list/watch on Secrets is also the right to read their values: RBAC cannot
//!   grant metadata-only access.
//! - events: kube-runtime's `Recorder` creates `events.k8s.io/v1` Events and patches
//!   a repeated one (series).
//! - leases: `operator::leader` reads, creates and replaces (update) its Lease; never
//!   patch, list or watch. `create` cannot be limited to a name (the Lease does not
//!   exist yet); `get` and `update` are.
//! - the module ConfigMap: limited to its name. A list or watch is only authorized by
//!   such a rule when it carries the field selector `metadata.name=<name>`, so the
//!   ConfigMap source must watch with that selector. The hot swap reports each
//!   candidate with an Event regarding the ConfigMap, hence events in the
//!   operator's namespace.
//! - API discovery and the hot swap's SelfSubjectAccessReviews need nothing:
//!   `system:discovery` and `system:basic-user` allow them to every authenticated
//!   user.

use k8s_openapi::api::authorization::v1::ResourceAttributes;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use reconcile_sdk::{KindRef, Manifest};
use std::collections::BTreeMap;

/// Where the operator's rights apply and who holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacOptions {
    /// Manage only this namespace (a Role), or all of them (a ClusterRole) when `None`.
    pub namespace: Option<String>,
    /// The ServiceAccount the operator runs as.
    pub service_account: String,
    /// The namespace the operator runs in: its ServiceAccount, Lease and module ConfigMap.
    pub operator_namespace: String,
    /// The leader-election Lease's name.
    pub lease_name: String,
    /// The ConfigMap the module is loaded from, in the operator's namespace.
    pub module_configmap: Option<String>,
}

/// One right: verbs on a resource of an API group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Right {
    /// The API group (`""` for the core group).
    pub group: String,
    /// The resource, possibly with a subresource (`dittoservers/status`).
    pub resource: String,
    /// The verbs, in a fixed order.
    pub verbs: Vec<&'static str>,
}

const PRIMARY_VERBS: &[&str] = &["get", "list", "watch", "patch"];
const PRIMARY_STATUS_VERBS: &[&str] = &["patch"];
const PRIMARY_FINALIZERS_VERBS: &[&str] = &["update"];
const EVENT_VERBS: &[&str] = &["create", "patch"];
const RELATED_VERBS: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
const READ_VERBS: &[&str] = &["get", "list", "watch"];

/// The rights a module's manifest needs in the namespaces it manages, merged per
/// resource (a kind both related and read gets the union of the verbs).
pub fn workload_rights(manifest: &Manifest) -> Vec<Right> {
    let mut rights: BTreeMap<(String, String), Vec<&'static str>> = BTreeMap::new();
    let mut grant = |kind: &KindRef, subresource: Option<&str>, verbs: &[&'static str]| {
        let resource = match subresource {
            Some(sub) => format!("{}/{sub}", kind.plural),
            None => kind.plural.clone(),
        };
        let entry = rights.entry((api_group(&kind.api_version).to_owned(), resource)).or_default();
        for verb in verbs {
            if !entry.contains(verb) {
                entry.push(verb);
            }
        }
    };
    grant(&manifest.primary, None, PRIMARY_VERBS);
    grant(&manifest.primary, Some("status"), PRIMARY_STATUS_VERBS);
    grant(&manifest.primary, Some("finalizers"), PRIMARY_FINALIZERS_VERBS);
    for kind in &manifest.related {
        grant(kind, None, RELATED_VERBS);
    }
    for kind in &manifest.reads {
        grant(kind, None, READ_VERBS);
    }
    rights.insert(("events.k8s.io".to_owned(), "events".to_owned()), EVENT_VERBS.to_vec());
    rights.into_iter().map(|((group, resource), verbs)| Right { group, resource, verbs }).collect()
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → core `""`).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// One authorization question: may the operator's identity `verb` the `resource`
/// (and `subresource`) of `group` in `namespace` (`None`: in every namespace)?
///
/// It maps one to one onto a SelfSubjectAccessReview's `resourceAttributes`
/// ([`AccessCheck::resource_attributes`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AccessCheck {
    /// The API group (`""` for the core group).
    pub group: String,
    /// The resource, without subresource (`dittoservers`).
    pub resource: String,
    /// The subresource (`status`), if any.
    pub subresource: Option<String>,
    /// The verb.
    pub verb: &'static str,
    /// The namespace; `None` asks about all namespaces at once (a ClusterRole).
    pub namespace: Option<String>,
}

impl AccessCheck {
    /// The check as a SelfSubjectAccessReview's (or SubjectAccessReview's)
    /// `spec.resourceAttributes`. An empty namespace means "all namespaces".
    pub fn resource_attributes(&self) -> ResourceAttributes {
        ResourceAttributes {
            group: Some(self.group.clone()),
            resource: Some(self.resource.clone()),
            subresource: self.subresource.clone(),
            verb: Some(self.verb.to_owned()),
            namespace: Some(self.namespace.clone().unwrap_or_default()),
            ..ResourceAttributes::default()
        }
    }
}

impl std::fmt::Display for AccessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if let Some(sub) = &self.subresource {
            write!(f, "/{sub}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " in all namespaces"),
        }
    }
}

/// Every single right `manifest` needs where the operator works (`namespace`, or all
/// namespaces when `None`): one [`AccessCheck`] per verb of [`workload_rights`], in a
/// fixed order.
///
/// Pure, so that a hot swap can ask the API server about exactly these (one
/// SelfSubjectAccessReview each) and refuse a module whose manifest needs a right
/// the host's identity does not hold. The Lease and module ConfigMap rights do not
/// depend on the manifest and are not listed.
pub fn access_checks(manifest: &Manifest, namespace: Option<&str>) -> Vec<AccessCheck> {
    let mut checks = Vec::new();
    for right in workload_rights(manifest) {
        let (resource, subresource) = match right.resource.split_once('/') {
            Some((resource, sub)) => (resource.to_owned(), Some(sub.to_owned())),
            None => (right.resource.clone(), None),
        };
        for verb in right.verbs {
            checks.push(AccessCheck {
                group: right.group.clone(),
                resource: resource.clone(),
                subresource: subresource.clone(),
                verb,
                namespace: namespace.map(str::to_owned),
            });
        }
    }
    checks
}

/// The RBAC objects for `manifest`, in apply order: the workload (Cluster)Role and its
/// binding, then the Role and binding for the Lease and module ConfigMap.
pub fn rbac_objects(manifest: &Manifest, options: &RbacOptions) -> Vec<serde_json::Value> {
    let name = options.service_account.clone();
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: options.service_account.clone(),
        namespace: Some(options.operator_namespace.clone()),
        ..Subject::default()
    };
    let rules = workload_rights(manifest).into_iter().map(rule).collect::<Vec<_>>();
    let mut objects = Vec::new();
    match &options.namespace {
        None => {
            objects.push(to_value(ClusterRole {
                metadata: meta(&name, None),
                rules: Some(rules),
                ..ClusterRole::default()
            }));
            objects.push(to_value(ClusterRoleBinding {
                metadata: meta(&name, None),
                role_ref: role_ref("ClusterRole", &name),
                subjects: Some(vec![subject.clone()]),
            }));
        }
        Some(namespace) => {
            objects.push(to_value(Role { metadata: meta(&name, Some(namespace)), rules: Some(rules) }));
            objects.push(to_value(RoleBinding {
                metadata: meta(&name, Some(namespace)),
                role_ref: role_ref("Role", &name),
                subjects: Some(vec![subject.clone()]),
            }));
        }
    }

    let own = format!("{name}-self");
    let mut own_rules = vec![
        // `create` cannot be limited to a name: the Lease does not exist yet.
        PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".to_owned()]),
            resources: Some(vec!["leases".to_owned()]),
            verbs: vec!["create".to_owned()],
            ..PolicyRule::default()
        },
        PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".to_owned()]),
            resources: Some(vec!["leases".to_owned()]),
            resource_names: Some(vec![options.lease_name.clone()]),
            verbs: vec!["get".to_owned(), "update".to_owned()],
            ..PolicyRule::default()
        },
    ];
    if let Some(configmap) = &options.module_configmap {
        own_rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            resource_names: Some(vec![configmap.clone()]),
            verbs: READ_VERBS.iter().map(|v| (*v).to_owned()).collect(),
            ..PolicyRule::default()
        });
        // A refused or activated module is reported as an Event regarding the
        // ConfigMap, in its namespace (which a namespaced workload Role may not cover).
        own_rules.push(PolicyRule {
            api_groups: Some(vec!["events.k8s.io".to_owned()]),
            resources: Some(vec!["events".to_owned()]),
            verbs: EVENT_VERBS.iter().map(|v| (*v).to_owned()).collect(),
            ..PolicyRule::default()
        });
    }
    objects.push(to_value(Role {
        metadata: meta(&own, Some(&options.operator_namespace)),
        rules: Some(own_rules),
    }));
    objects.push(to_value(RoleBinding {
        metadata: meta(&own, Some(&options.operator_namespace)),
        role_ref: role_ref("Role", &own),
        subjects: Some(vec![subject]),
    }));
    objects
}

/// `objects` as one multi-document YAML stream.
pub fn to_yaml(objects: &[serde_json::Value]) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(object)?);
    }
    Ok(out)
}

fn rule(right: Right) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![right.group]),
        resources: Some(vec![right.resource]),
        verbs: right.verbs.into_iter().map(str::to_owned).collect(),
        ..PolicyRule::default()
    }
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(BTreeMap::from([("app.kubernetes.io/name".to_owned(), "wasm-operator".to_owned())])),
        ..ObjectMeta::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

/// Serializes an RBAC object with its apiVersion and kind.
fn to_value<K: k8s_openapi::Resource + serde::Serialize>(object: K) -> serde_json::Value {
    let mut value = serde_json::to_value(&object).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".to_owned(), K::API_VERSION.into());
        map.insert("kind".to_owned(), K::KIND.into());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest() -> Manifest {
        serde_json::from_value(json!({ "abi": 1, "name": "m", "version": "1",
          "primary": {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer", "plural": "dittoservers"},
          "related": [ {"apiVersion": "v1", "kind": "ConfigMap", "plural": "configmaps"},
                       {"apiVersion": "apps/v1", "kind": "StatefulSet", "plural": "statefulsets"} ],
          "reads": [ {"apiVersion": "v1", "kind": "Secret", "plural": "secrets", "digestOnly": true},
                     {"apiVersion": "v1", "kind": "ConfigMap", "plural": "configmaps"} ],
          "ownerLabel": "x/server", "fieldManager": "m", "finalizers": [] }))
        .expect("test manifest")
    }

    fn options(namespace: Option<&str>) -> RbacOptions {
        RbacOptions {
            namespace: namespace.map(str::to_owned),
            service_account: "wasm-operator".to_owned(),
            operator_namespace: "ops".to_owned(),
            lease_name: "wasm-operator".to_owned(),
            module_configmap: Some("module".to_owned()),
        }
    }

    #[test]
    fn rights_are_exactly_what_the_manifest_needs() {
        let rights = workload_rights(&manifest());
        let table: Vec<(String, String, Vec<&str>)> =
            rights.into_iter().map(|r| (r.group, r.resource, r.verbs)).collect();
        assert_eq!(
            table,
            vec![
                ("".into(), "configmaps".into(), vec!["get", "list", "watch", "create", "patch", "delete"]),
                ("".into(), "secrets".into(), vec!["get", "list", "watch"]),
                (
                    "apps".into(),
                    "statefulsets".into(),
                    vec!["get", "list", "watch", "create", "patch", "delete"]
                ),
                ("dittofs.dittofs.com".into(), "dittoservers".into(), vec!["get", "list", "watch", "patch"]),
                ("dittofs.dittofs.com".into(), "dittoservers/finalizers".into(), vec!["update"]),
                ("dittofs.dittofs.com".into(), "dittoservers/status".into(), vec!["patch"]),
                ("events.k8s.io".into(), "events".into(), vec!["create", "patch"]),
            ]
        );
    }

    #[test]
    fn no_rule_uses_a_wildcard_and_bindings_point_at_their_roles() {
        for scope in [None, Some("team-a")] {
            let objects = rbac_objects(&manifest(), &options(scope));
            for object in &objects {
                for rule in object["rules"].as_array().into_iter().flatten() {
                    for field in ["apiGroups", "resources", "verbs"] {
                        let values = rule[field].as_array().cloned().unwrap_or_default();
                        assert!(!values.is_empty(), "{field} empty in {rule}");
                        assert!(values.iter().all(|v| v != "*"), "wildcard in {rule}");
                    }
                }
            }
            for (role, binding) in [(&objects[0], &objects[1]), (&objects[2], &objects[3])] {
                assert_eq!(binding["roleRef"]["kind"], role["kind"]);
                assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
                assert_eq!(binding["metadata"]["namespace"], role["metadata"]["namespace"]);
                assert_eq!(
                    binding["subjects"],
                    json!([{"kind": "ServiceAccount", "name": "wasm-operator", "namespace": "ops"}])
                );
            }
        }
    }

    #[test]
    fn without_a_module_configmap_only_the_lease_is_granted() {
        let mut opts = options(None);
        opts.module_configmap = None;
        let objects = rbac_objects(&manifest(), &opts);
        let own_rules = objects[2]["rules"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            own_rules,
            vec![
                json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}),
                json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                       "resourceNames": ["wasm-operator"], "verbs": ["get", "update"]}),
            ]
        );
    }

    #[test]
    fn access_checks_are_the_workload_rules_one_verb_at_a_time() {
        let manifest = manifest();
        for scope in [None, Some("team-a")] {
            let checks = access_checks(&manifest, scope);
            let objects = rbac_objects(&manifest, &options(scope));
            let mut from_rules = Vec::new();
            for rule in objects[0]["rules"].as_array().into_iter().flatten() {
                for verb in rule["verbs"].as_array().into_iter().flatten() {
                    from_rules.push(format!("{} {} {}", rule["apiGroups"][0], rule["resources"][0], verb));
                }
            }
            let from_checks: Vec<_> = checks
                .iter()
                .map(|c| {
                    let resource = match &c.subresource {
                        Some(sub) => format!("{}/{sub}", c.resource),
                        None => c.resource.clone(),
                    };
                    format!("{} {} {}", json!(c.group), json!(resource), json!(c.verb))
                })
                .collect();
            assert_eq!(from_checks, from_rules);
            assert!(checks.iter().all(|c| c.namespace.as_deref() == scope));
        }
    }

    #[test]
    fn access_checks_map_onto_resource_attributes() {
        let checks = access_checks(&manifest(), Some("team-a"));
        let status =
            checks.iter().find(|c| c.subresource.as_deref() == Some("status")).expect("a status check");
        assert_eq!(status.to_string(), "patch dittofs.dittofs.com/dittoservers/status in namespace team-a");
        let attributes = status.resource_attributes();
        assert_eq!(attributes.group.as_deref(), Some("dittofs.dittofs.com"));
        assert_eq!(attributes.resource.as_deref(), Some("dittoservers"));
        assert_eq!(attributes.subresource.as_deref(), Some("status"));
        assert_eq!(attributes.verb.as_deref(), Some("patch"));
        assert_eq!(attributes.namespace.as_deref(), Some("team-a"));

        let everywhere = access_checks(&manifest(), None);
        let secrets = everywhere.iter().find(|c| c.resource == "secrets").expect("a secrets check");
        assert_eq!(secrets.to_string(), "get core/secrets in all namespaces");
        assert_eq!(secrets.resource_attributes().namespace.as_deref(), Some(""));
        assert_eq!(secrets.resource_attributes().group.as_deref(), Some(""));
    }

    #[test]
    fn a_module_with_more_kinds_needs_more_checks() {
        let base = manifest();
        let mut wider = base.clone();
        wider.related.push(
            serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job", "plural": "jobs"}))
                .expect("kind"),
        );
        let before = access_checks(&base, None);
        let after = access_checks(&wider, None);
        let new: Vec<_> = after.iter().filter(|c| !before.contains(c)).map(ToString::to_string).collect();
        assert_eq!(
            new,
            [
                "get batch/jobs in all namespaces",
                "list batch/jobs in all namespaces",
                "watch batch/jobs in all namespaces",
                "create batch/jobs in all namespaces",
                "patch batch/jobs in all namespaces",
                "delete batch/jobs in all namespaces",
            ]
        );
    }

    #[test]
    fn cluster_scope_gives_a_cluster_role_and_namespaced_scope_a_role() {
        let cluster = rbac_objects(&manifest(), &options(None));
        let kinds: Vec<_> = cluster.iter().map(|o| o["kind"].as_str().unwrap_or_default()).collect();
        assert_eq!(kinds, ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]);
        assert_eq!(cluster[1]["subjects"][0]["namespace"], "ops");

        let namespaced = rbac_objects(&manifest(), &options(Some("team-a")));
        let kinds: Vec<_> = namespaced.iter().map(|o| o["kind"].as_str().unwrap_or_default()).collect();
        assert_eq!(kinds, ["Role", "RoleBinding", "Role", "RoleBinding"]);
        assert_eq!(namespaced[0]["metadata"]["namespace"], "team-a");
        assert_eq!(namespaced[2]["metadata"]["namespace"], "ops");
    }

    #[test]
    fn leases_and_the_module_configmap_are_limited_by_name() {
        let objects = rbac_objects(&manifest(), &options(None));
        let own_rules = objects[2]["rules"].as_array().cloned().unwrap_or_default();
        assert_eq!(own_rules.len(), 4);
        assert_eq!(own_rules[1]["resourceNames"], json!(["wasm-operator"]));
        assert_eq!(own_rules[2]["resourceNames"], json!(["module"]));
        assert_eq!(own_rules[2]["verbs"], json!(["get", "list", "watch"]));
        assert_eq!(
            own_rules[3],
            json!({"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]})
        );
    }

    #[test]
    fn yaml_is_a_document_stream() {
        let yaml = to_yaml(&rbac_objects(&manifest(), &options(None))).expect("yaml");
        assert_eq!(yaml.matches("---\n").count(), 4);
        assert!(yaml.contains("kind: ClusterRole\n"));
    }
}
