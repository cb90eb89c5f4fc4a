//! Running as someone other than the admin: a ServiceAccount bound to a Role, and a
//! kubeconfig that impersonates it (the admin, `system:masters`, may impersonate
//! anyone; the API server then decides with the account's own RBAC).

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{AuthInfo, Kubeconfig};

use crate::Cluster;

/// A policy rule: `verbs` on `resources` of `api_group` (`""` is the core group).
pub fn rule(api_group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![api_group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// Every verb of a kind the DittoFS module manages.
const EVERYTHING: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];

/// What the DittoFS module needs for its primaries, the Secrets it reads and its
/// events (`wasm-operator rbac` prints the same).
pub fn dittofs_primary_rules() -> Vec<PolicyRule> {
    vec![
        rule("dittofs.dittofs.com", &["dittoservers"], &["get", "list", "watch", "update", "patch"]),
        rule("dittofs.dittofs.com", &["dittoservers/status"], &["get", "update", "patch"]),
        rule("", &["secrets"], &["get", "list", "watch"]),
        rule("", &["events"], &["create", "update", "patch"]),
        rule("events.k8s.io", &["events"], &["create", "update", "patch"]),
    ]
}

/// What it needs for its related kinds, but the `denied` (resource, verb) pairs.
pub fn dittofs_related_rules(denied: &[(&str, &str)]) -> Vec<PolicyRule> {
    let verbs = |resource: &str| -> Vec<&str> {
        EVERYTHING.into_iter().filter(|verb| !denied.contains(&(resource, *verb))).collect()
    };
    vec![
        rule("", &["configmaps"], &verbs("configmaps")),
        rule("", &["services"], &verbs("services")),
        rule("apps", &["statefulsets"], &verbs("statefulsets")),
        rule("pgv2.percona.com", &["perconapgclusters"], &verbs("perconapgclusters")),
    ]
}

/// Everything the DittoFS module needs in one namespace, but the `denied` pairs.
pub fn dittofs_rules(denied: &[(&str, &str)]) -> Vec<PolicyRule> {
    let mut rules = dittofs_primary_rules();
    rules.extend(dittofs_related_rules(denied));
    rules
}

/// Waits until `request` (made as some identity) is no longer forbidden: RBAC's
/// informers see a new binding a moment after it is written.
pub async fn wait_until_allowed<T, F, Fut>(what: impl std::fmt::Display, mut request: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    crate::wait_until(what, crate::DEFAULT_TIMEOUT, || {
        let response = request();
        async move {
            match response.await {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(status)) if status.code == 403 => Ok(None),
                Err(err) => Err(err.into()),
            }
        }
    })
    .await
}

/// Creates ServiceAccount `name` in `namespace` and a Role and RoleBinding (both
/// `name`) granting it `rules` there. Returns the account's user name,
/// `system:serviceaccount:<namespace>:<name>`.
pub async fn service_account_with_role(
    client: &Client,
    namespace: &str,
    name: &str,
    rules: Vec<PolicyRule>,
) -> Result<String> {
    create_service_account(client, namespace, name).await?;
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: name.to_owned(),
        namespace: Some(namespace.to_owned()),
        ..Subject::default()
    };
    bind_role(client, namespace, name, subject, rules).await?;
    Ok(format!("system:serviceaccount:{namespace}:{name}"))
}

/// Grants user `user` `rules` in `namespace`: a Role and a RoleBinding, both `name`.
pub async fn grant_in_namespace(
    client: &Client,
    namespace: &str,
    name: &str,
    user: &str,
    rules: Vec<PolicyRule>,
) -> Result<()> {
    bind_role(client, namespace, name, user_subject(user), rules).await
}

/// Creates Role `namespace/name` with `rules` and a RoleBinding `name` to `subject`.
async fn bind_role(
    client: &Client,
    namespace: &str,
    name: &str,
    subject: Subject,
    rules: Vec<PolicyRule>,
) -> Result<()> {
    let meta = || ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() };
    let params = PostParams::default();
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(&params, &Role { metadata: meta(), rules: Some(rules) })
        .await
        .with_context(|| format!("cannot create Role {namespace}/{name}"))?;
    let binding = RoleBinding {
        metadata: meta(),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(vec![subject]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&params, &binding)
        .await
        .with_context(|| format!("cannot create RoleBinding {namespace}/{name}"))?;
    Ok(())
}

/// Grants user `user` `rules` in every namespace: a ClusterRole and a
/// ClusterRoleBinding, both named after `owner`, the test's namespace, which owns them
/// so that the garbage collector deletes them with it.
pub async fn grant_cluster_wide(
    client: &Client,
    owner: &str,
    user: &str,
    rules: Vec<PolicyRule>,
) -> Result<()> {
    let namespace = Api::<Namespace>::all(client.clone())
        .get(owner)
        .await
        .with_context(|| format!("cannot read namespace {owner}"))?;
    let meta = || ObjectMeta {
        name: Some(format!("e2e-{owner}")),
        owner_references: Some(vec![OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Namespace".to_owned(),
            name: owner.to_owned(),
            uid: namespace.metadata.uid.clone().unwrap_or_default(),
            ..OwnerReference::default()
        }]),
        ..ObjectMeta::default()
    };
    let params = PostParams::default();
    Api::<ClusterRole>::all(client.clone())
        .create(&params, &ClusterRole { metadata: meta(), rules: Some(rules), ..ClusterRole::default() })
        .await
        .with_context(|| format!("cannot create ClusterRole e2e-{owner}"))?;
    let binding = ClusterRoleBinding {
        metadata: meta(),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "ClusterRole".to_owned(),
            name: format!("e2e-{owner}"),
        },
        subjects: Some(vec![user_subject(user)]),
    };
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&params, &binding)
        .await
        .with_context(|| format!("cannot create ClusterRoleBinding e2e-{owner}"))?;
    Ok(())
}

fn user_subject(user: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
        kind: "User".to_owned(),
        name: user.to_owned(),
        ..Subject::default()
    }
}

/// Creates ServiceAccount `namespace/name`, with no rights of its own.
pub async fn create_service_account(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let account = ServiceAccount {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &account)
        .await
        .with_context(|| format!("cannot create ServiceAccount {name}"))?;
    Ok(())
}

/// Writes to `path` (mode 0600: it holds the admin's credentials) a copy of the
/// cluster's kubeconfig whose current user impersonates `user`.
pub fn write_impersonating_kubeconfig(cluster: &Cluster, user: &str, path: &Path) -> Result<()> {
    write_kubeconfig_as(cluster, path, |auth| {
        auth.impersonate = Some(user.to_owned());
        auth.impersonate_groups = None;
    })
}

/// Writes to `path` (mode 0600) a copy of the cluster's kubeconfig (the file the
/// tests use, or `KUBECONFIG`'s) after `edit` changed the current user's credentials:
/// same cluster and CA, another identity.
pub fn write_kubeconfig_as(cluster: &Cluster, path: &Path, edit: impl FnOnce(&mut AuthInfo)) -> Result<()> {
    let mut config = match cluster.kubeconfig() {
        Some(file) => {
            Kubeconfig::read_from(file).with_context(|| format!("cannot read {}", file.display()))?
        }
        None => Kubeconfig::read().context("cannot read the kubeconfig of KUBECONFIG")?,
    };
    let context_name =
        config.current_context.clone().ok_or_else(|| anyhow!("the kubeconfig has no current context"))?;
    let user_name = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.user.clone())
        .ok_or_else(|| anyhow!("the kubeconfig has no context {context_name}"))?
        .ok_or_else(|| anyhow!("context {context_name} names no user"))?;
    let auth = config
        .auth_infos
        .iter_mut()
        .find(|a| a.name == user_name)
        .ok_or_else(|| anyhow!("the kubeconfig has no user {user_name}"))?;
    edit(auth.auth_info.get_or_insert_with(AuthInfo::default));
    let yaml = serde_yaml_ng::to_string(&config).context("cannot serialize the kubeconfig")?;
    write_private(path, yaml.as_bytes())
}

/// Writes `bytes` to `path`, readable by its owner only (credentials).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}
