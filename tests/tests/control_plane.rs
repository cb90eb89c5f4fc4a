//! The local cluster does what the operator's end-to-end tests rely on: it is
//! ready, the garbage collector carries out background, foreground and orphan
//! deletion, RBAC denies what it does not allow, and a StatefulSet with volume claim
//! templates really runs: its claims are bound, its pod is scheduled on a kwok node
//! and reported Running and Ready, a template change replaces the pod, and scaling
//! to zero removes it.

use anyhow::{Context as _, Result, ensure};
use e2e::identity::wait_until_allowed;
use e2e::{DEFAULT_TIMEOUT, TestNamespace, cluster, wait_until};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource as _, ResourceExt as _};

/// A finalizer of the test's own, so that a dependent stays visible while the
/// garbage collector deletes it.
const HOLD_FINALIZER: &str = "e2e.dittofs.dittofs.com/hold";

fn config_map(name: &str, owner: Option<OwnerReference>, finalizers: &[&str]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            owner_references: owner.map(|o| vec![o]),
            finalizers: (!finalizers.is_empty())
                .then(|| finalizers.iter().map(|f| (*f).to_owned()).collect()),
            ..ObjectMeta::default()
        },
        data: Some([("key".to_owned(), name.to_owned())].into()),
        ..ConfigMap::default()
    }
}

/// A reference to `owner` as a controller would set it. `block_owner_deletion`
/// makes a foreground deletion of the owner wait for this dependent.
fn owned_by(owner: &ConfigMap, block_owner_deletion: bool) -> Result<OwnerReference> {
    let mut reference = owner.controller_owner_ref(&()).context("the owner has no name or uid")?;
    reference.block_owner_deletion = Some(block_owner_deletion);
    Ok(reference)
}

/// Creates `owner` and a `dependent` config map that it owns; returns the owner.
async fn owner_and_dependent(
    config_maps: &Api<ConfigMap>,
    block_owner_deletion: bool,
    dependent_finalizers: &[&str],
) -> Result<ConfigMap> {
    let owner = config_maps.create(&PostParams::default(), &config_map("owner", None, &[])).await?;
    let reference = owned_by(&owner, block_owner_deletion)?;
    config_maps
        .create(&PostParams::default(), &config_map("dependent", Some(reference), dependent_finalizers))
        .await?;
    Ok(owner)
}

async fn wait_gone(config_maps: &Api<ConfigMap>, name: &str, why: &str) -> Result<()> {
    wait_until(format!("config map {name} to be deleted ({why})"), DEFAULT_TIMEOUT, || async move {
        Ok(config_maps.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

#[tokio::test]
async fn api_server_answers_readyz() -> Result<()> {
    let client = cluster().await?.client()?;
    let body = client.request_text(http::Request::get("/readyz").body(Vec::new())?).await?;
    assert_eq!(body, "ok");
    Ok(())
}

#[tokio::test]
async fn background_deletion_collects_the_dependent() -> Result<()> {
    let cluster = cluster().await?;
    let ns = TestNamespace::create(cluster, "gc-background").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client()?, ns.name());
    owner_and_dependent(&config_maps, false, &[]).await?;

    config_maps.delete("owner", &DeleteParams::background()).await?;

    wait_gone(&config_maps, "dependent", "garbage collector, after its owner was deleted in the background")
        .await?;
    ensure!(config_maps.get_opt("owner").await?.is_none(), "the owner came back");
    Ok(())
}

#[tokio::test]
async fn foreground_deletion_waits_for_the_dependent() -> Result<()> {
    let cluster = cluster().await?;
    let ns = TestNamespace::create(cluster, "gc-foreground").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client()?, ns.name());
    owner_and_dependent(&config_maps, true, &[HOLD_FINALIZER]).await?;

    config_maps.delete("owner", &DeleteParams::foreground()).await?;

    // The garbage collector deletes the dependent; our finalizer keeps it around.
    let cm = &config_maps;
    wait_until("the garbage collector to delete the dependent of a foreground deletion", DEFAULT_TIMEOUT, || async move {
        Ok(cm.get_opt("dependent").await?.filter(|d| d.metadata.deletion_timestamp.is_some()))
    })
    .await?;
    // While the (blocking) dependent exists, the owner must wait for it.
    let owner =
        config_maps.get_opt("owner").await?.context("the owner is gone while its dependent exists")?;
    ensure!(
        owner.metadata.deletion_timestamp.is_some(),
        "the owner is not being deleted: {:?}",
        owner.metadata
    );
    ensure!(
        owner.finalizers().iter().any(|f| f == "foregroundDeletion"),
        "the owner lacks the foregroundDeletion finalizer: {:?}",
        owner.finalizers()
    );

    // Let the dependent go: then the owner goes too.
    config_maps
        .patch(
            "dependent",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    wait_gone(&config_maps, "dependent", "its finalizer was removed").await?;
    wait_gone(&config_maps, "owner", "its last blocking dependent is gone").await?;
    Ok(())
}

#[tokio::test]
async fn orphan_deletion_keeps_the_dependent() -> Result<()> {
    let cluster = cluster().await?;
    let ns = TestNamespace::create(cluster, "gc-orphan").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client()?, ns.name());
    let owner = owner_and_dependent(&config_maps, false, &[]).await?;

    config_maps.delete("owner", &DeleteParams::orphan()).await?;

    // The owner goes only after the garbage collector has orphaned its dependents.
    wait_gone(&config_maps, "owner", "orphan deletion, once its dependents are orphaned").await?;
    let dependent = config_maps.get_opt("dependent").await?.context("the orphaned dependent was deleted")?;
    ensure!(dependent.metadata.deletion_timestamp.is_none(), "the orphaned dependent is being deleted");
    let owner_uid = owner.uid().context("the owner has no uid")?;
    ensure!(
        dependent.owner_references().iter().all(|r| r.uid != owner_uid),
        "the dependent still references its deleted owner: {:?}",
        dependent.owner_references()
    );
    Ok(())
}

#[tokio::test]
async fn rbac_denies_a_service_account_without_permissions() -> Result<()> {
    let cluster = cluster().await?;
    let ns = TestNamespace::create(cluster, "rbac").await?;
    let admin = cluster.client()?;
    let account = "no-permissions";
    e2e::identity::create_service_account(&admin, ns.name(), account).await?;

    // The admin (system:masters) may impersonate; the request is then decided
    // by the service account's own permissions.
    let user = format!("system:serviceaccount:{}:{account}", ns.name());
    let mut config = cluster.config().clone();
    config.auth_info.impersonate = Some(user.clone());
    let as_account: Api<ConfigMap> = Api::namespaced(Client::try_from(config)?, ns.name());

    match as_account.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "expected Forbidden, got {status:?}");
            assert!(status.message.contains(&user), "denied for someone else: {}", status.message);
        }
        other => panic!("a service account without permissions listed config maps: {other:?}"),
    }

    // Granting the permission makes the same request succeed, so the 403 above
    // was RBAC's decision and not a broken impersonation.
    let role = Role {
        metadata: ObjectMeta { name: Some("read-config-maps".to_owned()), ..ObjectMeta::default() },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            verbs: vec!["list".to_owned()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns.name()).create(&PostParams::default(), &role).await?;
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("read-config-maps".to_owned()), ..ObjectMeta::default() },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: "read-config-maps".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: account.to_owned(),
            namespace: Some(ns.name().to_owned()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, ns.name()).create(&PostParams::default(), &binding).await?;
    let params = ListParams::default();
    wait_until_allowed("the service account to be allowed to list config maps once bound to a role", || {
        as_account.list(&params)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_fixture_crd_is_installed_and_serves_status() -> Result<()> {
    let cluster = cluster().await?;
    ensure!(
        cluster.crds().iter().any(|n| n == "perconapgclusters.pgv2.percona.com"),
        "installed CRDs: {:?}",
        cluster.crds()
    );
    let ns = TestNamespace::create(cluster, "fixture-crd").await?;
    let client = cluster.client()?;
    let applied = e2e::apply_yaml(
        &client,
        Some(ns.name()),
        "apiVersion: pgv2.percona.com/v2\nkind: PerconaPGCluster\nmetadata:\n  name: db\nspec:\n  postgresVersion: 16\n  instances: [{name: instance1, replicas: 1}]\n",
    )
    .await?;
    let [cluster_object] = applied.as_slice() else { anyhow::bail!("applied {} objects", applied.len()) };
    ensure!(cluster_object.data["spec"]["postgresVersion"] == 16, "spec not kept: {:?}", cluster_object.data);

    // Tests play the Percona operator: they set status.state through the status
    // subresource.
    let (resource, _) = kube::discovery::pinned_kind(
        &client,
        &kube::api::GroupVersionKind::gvk("pgv2.percona.com", "v2", "PerconaPGCluster"),
    )
    .await?;
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client, ns.name(), &resource);
    api.patch_status(
        "db",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"state": "ready"}})),
    )
    .await?;
    let stored = api.get("db").await?;
    assert_eq!(stored.data["status"]["state"], "ready");
    Ok(())
}

/// A StatefulSet as the DittoFS module writes one, in the parts the cluster acts
/// on: a volume claim template without a storage class, a readiness probe, an image
/// that does not exist (kwok never pulls it).
const STATEFULSET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 1
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, annotations: {revision: "1"}}
    spec:
      containers:
      - name: server
        image: registry.invalid/never-pulled:1
        readinessProbe: {tcpSocket: {port: 2049}}
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

#[tokio::test]
async fn a_statefulset_runs_on_the_kwok_nodes_rolls_and_scales_to_zero() -> Result<()> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};

    let cluster = cluster().await?;
    let client = cluster.client()?;
    let ns = TestNamespace::create(cluster, "kwok").await?;
    e2e::apply_yaml(&client, Some(ns.name()), STATEFULSET).await?;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());

    let sts = e2e::workload::wait_rollout(&statefulsets, "web").await?;
    let first = pods.get("web-0").await?;
    let node = first.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    ensure!(node.starts_with("kwok-node-"), "web-0 is on node {node:?}, not a kwok node");
    let status = first.status.as_ref().context("web-0 has no status")?;
    ensure!(status.phase.as_deref() == Some("Running"), "web-0 phase: {:?}", status.phase);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns.name());
    let claim = claims.get("data-web-0").await?;
    let bound = claim.status.as_ref().and_then(|s| s.phase.clone());
    ensure!(bound.as_deref() == Some("Bound"), "PVC data-web-0: {bound:?}");
    ensure!(
        claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()) == Some("standard"),
        "the default StorageClass was not applied"
    );

    // A template change: the controller replaces the pod with one of the new revision.
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"revision": "2"}}}}});
    statefulsets.patch("web", &PatchParams::default(), &Patch::Merge(patch)).await?;
    let pods_ref = &pods;
    let old_uid = first.uid();
    wait_until("web-0 to be replaced by a pod of the new template", DEFAULT_TIMEOUT, || {
        let old_uid = old_uid.clone();
        async move {
            let pod = pods_ref.get_opt("web-0").await?;
            Ok(pod.filter(|p| {
                p.uid() != old_uid && p.annotations().get("revision").map(String::as_str) == Some("2")
            }))
        }
    })
    .await?;
    let rolled = e2e::workload::wait_rollout(&statefulsets, "web").await?;
    ensure!(
        rolled.status.as_ref().and_then(|s| s.update_revision.clone())
            != sts.status.as_ref().and_then(|s| s.update_revision.clone()),
        "the revision did not change"
    );

    let patch = serde_json::json!({"spec": {"replicas": 0}});
    statefulsets.patch("web", &PatchParams::default(), &Patch::Merge(patch)).await?;
    e2e::workload::wait_rollout(&statefulsets, "web").await?;
    wait_until("web-0 to be gone at zero replicas", DEFAULT_TIMEOUT, || async move {
        Ok(pods_ref.get_opt("web-0").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

/// The node lifecycle controller takes a node whose heartbeat is older than its
/// grace period (50 s) for NotReady and marks every pod on it NotReady. kwok's
/// default stages leave the heartbeat to the node's Lease, so kwok must renew it.
#[tokio::test]
async fn kwok_renews_each_nodes_lease() -> Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Node;

    let client = cluster().await?.client()?;
    let nodes = Api::<Node>::all(client.clone()).list(&Default::default()).await?;
    ensure!(!nodes.items.is_empty(), "the local cluster has no node");
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    for node in &nodes.items {
        let name = node.name_any();
        let renewed = |lease: &Lease| lease.spec.as_ref().and_then(|s| s.renew_time.clone());
        let first = leases.get(&name).await.with_context(|| format!("node {name} has no Lease"))?;
        let first = renewed(&first);
        let leases = &leases;
        let name = &name;
        wait_until(format!("the Lease of node {name} to be renewed"), DEFAULT_TIMEOUT, || {
            let first = first.clone();
            async move { Ok(leases.get(name).await.map(|l| renewed(&l))?.filter(|t| Some(t) != first.as_ref())) }
        })
        .await?;
    }
    Ok(())
}
