//! Least-privilege RBAC derived from a module's manifest (`wasm-operator rbac`).
//!
//! The host only ever touches what the manifest declares, so the manifest is also the
//! exact list of rights the host's identity needs:
//!
//! | resource            | verbs                                   |
//! |---------------------|-----------------------------------------|
//! | primary             | get, list, watch, patch                 |
//! | primary `/status`   | patch                                   |
//! | related kinds       | get, list, watch, create, patch, delete |
//! | `reads` kinds       | get, list, watch                        |
//! | events.k8s.io       | create, patch                           |
//! | leases (own ns)     | leader election: get, create, update    |
//! | module ConfigMap    | get, list, watch                        |
//!
//! Nothing more. By default the rights are cluster-wide (ClusterRole); with a
//! namespace they are a Role there. Leases and the module ConfigMap always get a Role
//! in the operator's own namespace. The same rules are what a hot swap checks with
//! SelfSubjectAccessReview before accepting a module that may need more.

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
    grant(&manifest.primary, Some("status"), &["patch"]);
    for kind in &manifest.related {
        grant(kind, None, RELATED_VERBS);
    }
    for kind in &manifest.reads {
        grant(kind, None, READ_VERBS);
    }
    rights.insert(("events.k8s.io".to_owned(), "events".to_owned()), vec!["create", "patch"]);
    rights.into_iter().map(|((group, resource), verbs)| Right { group, resource, verbs }).collect()
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → core `""`).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
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
                ("dittofs.dittofs.com".into(), "dittoservers/status".into(), vec!["patch"]),
                ("events.k8s.io".into(), "events".into(), vec!["create", "patch"]),
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
        assert_eq!(own_rules.len(), 3);
        assert_eq!(own_rules[1]["resourceNames"], json!(["wasm-operator"]));
        assert_eq!(own_rules[2]["resourceNames"], json!(["module"]));
        assert_eq!(own_rules[2]["verbs"], json!(["get", "list", "watch"]));
    }

    #[test]
    fn yaml_is_a_document_stream() {
        let yaml = to_yaml(&rbac_objects(&manifest(), &options(None))).expect("yaml");
        assert_eq!(yaml.matches("---\n").count(), 4);
        assert!(yaml.contains("kind: ClusterRole\n"));
    }
}
