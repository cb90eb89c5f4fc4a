//! The generated ValidatingAdmissionPolicy (`wasm-operator admission-policy`) against
//! the real API server: with it installed, writes the host's confinement refuses are
//! refused by the API server too when they are made directly with the operator
//! ServiceAccount's token, so a host bug cannot write them.
//!
//! The ServiceAccount gets every right in its namespace, far more than the generated
//! RBAC: every refusal below is the policy's, not RBAC's (a control
//! write of the same kinds, within the rules, is allowed).

use anyhow::{Context as _, Result, ensure};
use e2e::deploy::{client_from_kubeconfig, generate, service_account_kubeconfig, test_dir};
use e2e::{TestNamespace, apply_yaml, cluster};
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const OWNER_LABEL: &str = "dittofs.dittofs.com/server";

fn api(client: &kube::Client, namespace: &str, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn object(value: Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(value)?)
}

/// A StatefulSet owned by the DittoServer `nas` whose pod spec is `pod`.
fn statefulset(name: &str, pod: Value) -> Result<DynamicObject> {
    object(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": {OWNER_LABEL: "nas"}},
        "spec": {
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        },
    }))
}

/// The API server's refusal message of a write, or `None` when it was accepted.
async fn refusal(api: &Api<DynamicObject>, object: &DynamicObject) -> Result<Option<String>> {
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    match api.create(&dry_run, object).await {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) => Ok(Some(format!("{} ({})", status.message, status.code))),
        Err(err) => Err(err.into()),
    }
}

#[tokio::test]
async fn the_api_server_refuses_what_confinement_refuses_when_written_with_the_operator_token() -> Result<()>
{
    let cluster = cluster().await?;
    let admin = cluster.client()?;
    let ns = TestNamespace::create(cluster, "admission").await?;
    let namespace = ns.name();
    let account = "wasm-operator";
    e2e::identity::create_service_account(&admin, namespace, account).await?;
    // Every right in the namespace (the built-in `admin` role is aggregated by a
    // controller this control plane does not run).
    let rights = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: everything}}\n\
         rules: [{{apiGroups: ['*'], resources: ['*'], verbs: ['*']}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: everything}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: everything}}\n\
         subjects: [{{kind: ServiceAccount, name: {account}, namespace: {namespace}}}]\n"
    );
    apply_yaml(&admin, Some(namespace), &rights).await?;

    // The policy of the DittoFS module under the default policy, for this account; a
    // name of its own, since policies are cluster-scoped.
    let name = format!("e2e-{namespace}");
    let args: Vec<String> =
        ["--service-account", account, "--operator-namespace", namespace, "--name", name.as_str()]
            .map(str::to_owned)
            .into();
    let policy = generate("admission-policy", &args).await?;
    let installed = apply_yaml(&admin, None, &policy).await?;
    // Cluster-scoped: removed whether the checks pass or not.
    let checked = check_writes(cluster, namespace, account, installed.len()).await;
    for kind in ["ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy"] {
        let resource =
            ApiResource::from_gvk(&GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind));
        let api: Api<DynamicObject> = Api::all_with(admin.clone(), &resource);
        api.delete(&name, &DeleteParams::default()).await?;
    }
    checked
}

async fn check_writes(
    cluster: &e2e::Cluster,
    namespace: &str,
    account: &str,
    installed: usize,
) -> Result<()> {
    ensure!(installed == 2, "expected the policy and its binding, got {installed}");
    let kubeconfig =
        service_account_kubeconfig(cluster, namespace, account, &test_dir(namespace)?, "operator").await?;
    let operator = client_from_kubeconfig(&kubeconfig).await?;
    let configmaps = api(&operator, namespace, "", "v1", "ConfigMap");
    let services = api(&operator, namespace, "", "v1", "Service");
    let statefulsets = api(&operator, namespace, "apps", "v1", "StatefulSet");
    let rolebindings = api(&operator, namespace, "rbac.authorization.k8s.io", "v1", "RoleBinding");

    // The role binding and the policy each take a moment to reach the API server's
    // authorizer and admission chain: wait until the policy refuses an unlabelled
    // ConfigMap.
    let unlabelled = object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"}}))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let refused = refusal(&configmaps, &unlabelled).await?;
        if let Some(message) = refused.as_ref().filter(|m| m.contains("wasm-operator admission policy")) {
            break message.clone();
        }
        ensure!(
            Instant::now() < deadline,
            "the admission policy never took effect; last answer: {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    ensure!(first.contains("owner label"), "{first}");

    // Within the rules: allowed (so the refusals below are the rules speaking).
    let labelled = object(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "nas-config", "labels": {OWNER_LABEL: "nas"}}}))?;
    ensure!(refusal(&configmaps, &labelled).await?.is_none(), "a labelled ConfigMap was refused");
    let container = json!({"name": "server", "image": "dittofs:1"});
    let plain = statefulset("nas", json!({"containers": [container]}))?;
    ensure!(refusal(&statefulsets, &plain).await?.is_none(), "a baseline StatefulSet was refused");

    let refused = [
        (
            "a RoleBinding",
            &rolebindings,
            object(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "steal", "labels": {OWNER_LABEL: "nas"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": [{"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"}]}))?,
            "kind is not one of the module's related kinds",
        ),
        (
            "a privileged StatefulSet",
            &statefulsets,
            statefulset(
                "privileged",
                json!({"containers": [{"name": "server", "image": "dittofs:1", "securityContext": {"privileged": true}}]}),
            )?,
            "privileged",
        ),
        (
            "a hostPath pod template",
            &statefulsets,
            statefulset(
                "host-path",
                json!({"containers": [container], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
            )?,
            "hostPath",
        ),
        (
            "a Service with externalIPs",
            &services,
            object(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "nas-mitm", "labels": {OWNER_LABEL: "nas"}},
                "spec": {"ports": [{"port": 53}], "externalIPs": ["8.8.8.8"]}}))?,
            "externalIPs",
        ),
    ];
    for (what, api, object, words) in refused {
        let message = refusal(api, &object).await?.with_context(|| format!("{what} was admitted"))?;
        ensure!(message.contains("wasm-operator admission policy"), "{what}: {message}");
        ensure!(message.contains(words), "{what}: {message}");
    }
    Ok(())
}
