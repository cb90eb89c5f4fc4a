//! `deploy/` against the real control plane: the manifests pass a server-side dry run
//! and apply; the module ConfigMap is filled the documented way and survives a
//! re-apply; the committed RBAC is what `wasm-operator rbac` generates; and that RBAC
//! is enough (the host, authenticated as the deploy ServiceAccount by a real token,
//! converges and deletes DittoServers, Percona paths included) and tight (writes
//! outside it are denied).
//!
//! Every test renders `deploy/` into its own namespace with a unique name suffix
//! (kustomize overlay), so runs never collide. No container runs on the local
//! cluster's kwok nodes: the Deployment's pods are reported Running, but nothing
//! executes the image; the tests run the host binary themselves, as the
//! ServiceAccount.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, bail, ensure};
use e2e::converge::{Percona, Servers};
use e2e::deploy::{
    Deployment, Kubectl, client_from_kubeconfig, deploy_admission_args, deploy_dir, deploy_rbac_args,
    generate, generate_rbac, make, service_account_kubeconfig, test_dir,
};
use e2e::host_process::{HostOptions, HostProcess};
use e2e::operator::artifacts;
use e2e::{TestNamespace, apply_yaml, cluster, parse_yaml};
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

/// The committed `deploy/rbac.yaml`.
fn committed_rbac() -> Result<String> {
    let path = deploy_dir().join("rbac.yaml");
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads one YAML file of `deploy/` (its single object).
fn deploy_object(file: &str) -> Result<Value> {
    let path = deploy_dir().join(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut objects = parse_yaml(&text)?;
    ensure!(objects.len() == 1, "{file} holds {} objects, not one", objects.len());
    Ok(objects.remove(0))
}

#[tokio::test]
async fn the_committed_rbac_is_what_the_module_needs() -> Result<()> {
    let generated = generate_rbac(&deploy_rbac_args()?).await?;
    ensure!(
        committed_rbac()? == generated,
        "deploy/rbac.yaml is stale: run `make deploy-rbac`. Generated:\n{generated}"
    );
    Ok(())
}

#[tokio::test]
async fn the_committed_admission_policy_is_what_the_module_and_the_default_policy_give() -> Result<()> {
    let generated = generate("admission-policy", &deploy_admission_args()?).await?;
    let path = deploy_dir().join("admission/policy.yaml");
    let committed =
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        committed == generated,
        "deploy/admission/policy.yaml is stale: run `make deploy-admission-policy`. Generated:\n{generated}"
    );
    Ok(())
}

#[test]
fn the_manifests_agree_with_each_other() -> Result<()> {
    let kustomization = deploy_object("kustomization.yaml")?;
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(deploy_dir())?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        // install.yaml is the chart's rendering (tests/tests/chart.rs), not a part.
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml" && n != "install.yaml")
        .collect();
    ensure!(listed == on_disk, "kustomization.yaml lists {listed:?}, deploy/ holds {on_disk:?}");

    let namespace = deploy_object("namespace.yaml")?;
    let ns = namespace["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let account = deploy_object("serviceaccount.yaml")?;
    let module = deploy_object("module-configmap.yaml")?;
    ensure!(
        module.get("data").is_none() && module.get("binaryData").is_none(),
        "the module shell holds data"
    );
    let deployment = deploy_object("deployment.yaml")?;
    let pod = &deployment["spec"]["template"]["spec"];
    ensure!(deployment["spec"]["replicas"] == 2, "replicas: {}", deployment["spec"]["replicas"]);
    ensure!(pod["serviceAccountName"] == account["metadata"]["name"]);
    for object in [&account, &module, &deployment, &deploy_object("service.yaml")?] {
        ensure!(
            object["metadata"]["namespace"] == ns.as_str(),
            "{} is not in {ns}",
            object["metadata"]["name"]
        );
    }
    let args: Vec<&str> =
        pod["containers"][0]["args"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    ensure!(args.contains(&"--leader-elect"), "{args:?}");
    // The Lease is the host's default name, which the RBAC names too.
    ensure!(!args.iter().any(|a| a.starts_with("--lease-name")), "{args:?}");
    // The module built into the image, so that a fresh install reconciles at once.
    ensure!(args.contains(&"--module=/usr/local/share/wasm-operator/dittofs-reconciler.wasm"), "{args:?}");
    ensure!(
        args.contains(&"--metrics-bind-address=:8080") && args.contains(&"--health-probe-bind-address=:8081"),
        "{args:?}"
    );

    // The generation arguments name the same objects.
    let rbac_args = deploy_rbac_args()?;
    let arg = |flag: &str| {
        rbac_args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| rbac_args.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    ensure!(arg("--service-account") == account["metadata"]["name"].as_str().unwrap_or_default());
    ensure!(arg("--operator-namespace") == ns);
    ensure!(arg("--module-configmap") == module["metadata"]["name"].as_str().unwrap_or_default());
    ensure!(arg("--lease-name") == "wasm-operator");
    ensure!(!rbac_args.iter().any(|a| a == "--namespace"), "deploy/ is the cluster-wide variant");
    Ok(())
}

#[tokio::test]
async fn the_manifests_pass_a_server_dry_run_then_apply() -> Result<()> {
    let cluster = cluster().await?;
    let client = cluster.client()?;
    let ns = TestNamespace::create(cluster, "deploy-apply").await?;
    let kubectl = Kubectl::new(cluster);
    let deployment = Deployment::overlay(cluster, ns.name())?;
    let rendered = deployment.render(&kubectl)?;
    let kinds: BTreeSet<String> =
        rendered.iter().filter_map(|o| o["kind"].as_str().map(str::to_owned)).collect();
    let expected: BTreeSet<String> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    ensure!(kinds == expected, "rendered kinds {kinds:?}");

    // A dry run validates everything and stores nothing.
    let dry = deployment.apply(&kubectl, &["--dry-run=server"])?;
    let stderr = String::from_utf8_lossy(&dry.stderr);
    ensure!(!stderr.contains("Warning"), "the dry run warned:\n{stderr}");
    let role_name = deployment.service_account();
    let roles: Api<ClusterRole> = Api::all(client.clone());
    ensure!(roles.get_opt(&role_name).await?.is_none(), "the dry run created ClusterRole {role_name}");
    let deployments: Api<AppsDeployment> = Api::namespaced(client.clone(), ns.name());
    ensure!(deployments.get_opt(&deployment.name("wasm-operator")).await?.is_none());

    // The real apply; the namespace enforces the restricted Pod Security Standard, so
    // a pod template that broke it would draw a warning here.
    let applied = deployment.apply(&kubectl, &[])?;
    let stderr = String::from_utf8_lossy(&applied.stderr);
    ensure!(!stderr.contains("Warning"), "the apply warned:\n{stderr}");
    let stored = deployments.get(&deployment.name("wasm-operator")).await?;
    let spec = stored.spec;
    ensure!(spec.replicas == Some(2));
    let pod = spec.template.spec.context("no pod spec")?;
    ensure!(pod.service_account_name.as_deref() == Some(deployment.service_account().as_str()));
    let security = pod.security_context.context("no pod security context")?;
    ensure!(security.run_as_non_root == Some(true));
    ensure!(security.seccomp_profile.map(|p| p.type_) == Some("RuntimeDefault".to_owned()));
    let container = &pod.containers[0];
    let csc = container.security_context.clone().context("no container security context")?;
    ensure!(csc.read_only_root_filesystem == Some(true) && csc.allow_privilege_escalation == Some(false));
    ensure!(csc.capabilities.and_then(|c| c.drop) == Some(vec!["ALL".to_owned()]));
    ensure!(container.resources.as_ref().is_some_and(|r| r.requests.is_some() && r.limits.is_some()));
    ensure!(container.liveness_probe.is_some() && container.readiness_probe.is_some());
    ensure!(roles.get_opt(&role_name).await?.is_some(), "ClusterRole {role_name} was not applied");

    // The module, uploaded as documented (`make deploy-module`), is stored whole...
    let module_name = deployment.name("dittofs-module");
    make(
        "deploy-module",
        &[
            kubectl.make_variable(),
            format!("DEPLOY_NAMESPACE={}", ns.name()),
            format!("DEPLOY_MODULE_CONFIGMAP={module_name}"),
        ],
    )?;
    let expected_bytes = std::fs::read(&artifacts().await?.module)?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let module_bytes = |cm: ConfigMap| {
        cm.binary_data.and_then(|d| d.get("dittofs-reconciler.wasm").map(|b| b.0.clone())).unwrap_or_default()
    };
    ensure!(
        module_bytes(configmaps.get(&module_name).await?) == expected_bytes,
        "the module was not uploaded"
    );
    // ...and survives a re-apply of deploy/ (whose ConfigMap is the empty shell).
    deployment.apply(&kubectl, &[])?;
    ensure!(
        module_bytes(configmaps.get(&module_name).await?) == expected_bytes,
        "re-applying deploy/ removed the module"
    );
    Ok(())
}

#[tokio::test]
async fn the_oci_component_follows_a_registry_with_a_public_key_and_passes_a_server_dry_run() -> Result<()> {
    let cluster = cluster().await?;
    let ns = TestNamespace::create(cluster, "deploy-oci").await?;
    let kubectl = Kubectl::new(cluster);
    let deployment = Deployment::overlay_with(cluster, ns.name(), &["oci"])?;
    let rendered = deployment.render(&kubectl)?;
    let operator = rendered.iter().find(|o| o["kind"] == "Deployment").context("no Deployment rendered")?;
    let container = &operator["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> =
        container["args"].as_array().context("args")?.iter().filter_map(Value::as_str).collect();
    ensure!(args.iter().any(|a| a.starts_with("--module=oci://")), "args {args:?}");
    ensure!(!args.iter().any(|a| a.starts_with("--module=/")), "the file source is still there: {args:?}");
    let key_flag =
        args.iter().find_map(|a| a.strip_prefix("--module-public-key=")).context("no --module-public-key")?;
    let mounts = container["volumeMounts"].as_array().context("volumeMounts")?;
    let keys_mount = mounts
        .iter()
        .find(|m| key_flag.starts_with(m["mountPath"].as_str().unwrap_or("?")))
        .context("the public key's directory is not mounted")?;
    let volumes = operator["spec"]["template"]["spec"]["volumes"].as_array().context("volumes")?;
    let keys_volume = volumes.iter().find(|v| v["name"] == keys_mount["name"]).context("no keys volume")?;
    // Not one of deploy/'s objects, so the overlay's suffix does not rename it: the
    // administrator creates it under this name.
    let keys = "wasm-operator-module-keys";
    ensure!(keys_volume["configMap"]["name"] == keys, "the key does not come from {keys}: {keys_volume}");
    // The key's ConfigMap, as the component says to create it, and a server dry run.
    kubectl.run([
        "-n",
        ns.name(),
        "create",
        "configmap",
        keys,
        "--from-literal=module-signing.pub=placeholder",
    ])?;
    let dry = deployment.apply(&kubectl, &["--dry-run=server"])?;
    let stderr = String::from_utf8_lossy(&dry.stderr);
    ensure!(!stderr.contains("Warning"), "the dry run warned:\n{stderr}");
    Ok(())
}

/// Whether `client`'s identity may `verb` `resource` (`resource/subresource` for a subresource) of
/// `group` in `namespace`, by SelfSubjectAccessReview.
async fn allowed(client: &Client, group: &str, resource: &str, verb: &str, namespace: &str) -> Result<bool> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(k8s_openapi::api::authorization::v1::ResourceAttributes {
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                verb: Some(verb.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            }),
            non_resource_attributes: None,
        },
        status: None,
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .context("cannot create a SelfSubjectAccessReview")?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Whether `result` is the API server's 403.
fn forbidden<T>(result: kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

/// Runs one host as the ServiceAccount of `kubeconfig` with leader election, and
/// has it converge and delete three DittoServers (no database, a Percona cluster
/// kept, a Percona cluster deleted with the server).
async fn converge_and_delete_as(ns: &str, kubeconfig: &std::path::Path, admin: Client) -> Result<()> {
    let cluster = cluster().await?;
    let host = HostProcess::spawn(
        cluster,
        HostOptions::new(ns, "sa").kubeconfig(kubeconfig).args([
            "--leader-elect",
            "--leader-election-namespace",
            ns,
        ]),
    )
    .await?;
    host.wait_ready().await?;
    // deploy/ makes its namespace enforce Pod Security `restricted`.
    let servers = Servers::new(admin.clone(), ns).restricted();
    let cases = [("plain", Percona::Off), ("pg-keep", Percona::Keep), ("pg-drop", Percona::DeleteWithServer)];
    for (name, percona) in cases {
        servers.create(name, percona).await?;
    }
    for (name, percona) in cases {
        servers
            .wait_running(name, percona)
            .await
            .with_context(|| format!("log: {}", host.log_path().display()))?;
    }
    let kept = servers.perconas().get("pg-keep-postgres").await?;
    let kept_uid = servers.api().get("pg-keep").await?.uid().unwrap_or_default();
    for (name, _) in cases {
        servers
            .delete_and_wait_gone(name)
            .await
            .with_context(|| format!("log: {}", host.log_path().display()))?;
    }
    // Percona: the kept cluster is still there, tied to nothing; the other is gone
    // because the host deleted it (not the 60 s cleanup timeout, not the GC).
    let kept_now =
        servers.perconas().get(&kept.name_any()).await.context("the kept PerconaPGCluster is gone")?;
    ensure!(
        !kept_now.owner_references().iter().any(|r| r.uid == kept_uid),
        "the kept PerconaPGCluster still refers to its server: {:?}",
        kept_now.owner_references()
    );
    e2e::wait_until("PerconaPGCluster pg-drop-postgres to be gone", e2e::DEFAULT_TIMEOUT, || async {
        Ok(servers.perconas().get_opt("pg-drop-postgres").await?.is_none().then_some(()))
    })
    .await?;
    for (name, _) in cases {
        let reasons = servers.event_reasons(name).await?;
        ensure!(
            !reasons.iter().any(|r| r == "CleanupTimeout" || r == "ActionRejected"),
            "{name}: {reasons:?}"
        );
    }
    ensure!(servers.event_reasons("pg-drop").await?.iter().any(|r| r == "PerconaDeleted"));
    ensure!(servers.event_reasons("pg-keep").await?.iter().any(|r| r == "PerconaOrphaned"));

    let metrics = host.metrics().await?;
    let count = |op: &str, result: &str| {
        metrics.sum("wasm_operator_actions_total", &[("op", op), ("result", result)])
    };
    ensure!(count("delete", "success") >= 1.0, "the host deleted nothing");
    ensure!(count("orphan", "success") >= 1.0, "the host orphaned nothing");
    let log = host.log_lines();
    let denied: Vec<_> =
        log.iter().filter(|l| l.to_string().to_ascii_lowercase().contains("forbidden")).collect();
    ensure!(denied.is_empty(), "the host was denied something: {denied:#?}");
    // Every failed reconcile is a failure; the one exception is a known host race
    // unrelated to RBAC: a `removeFinalizer` decided from a cached primary that the
    // API server has meanwhile deleted answers 404 and is retried once.
    let failed: Vec<_> = log
        .iter()
        .filter(|l| {
            l.get("message").and_then(Value::as_str).is_some_and(|m| m.starts_with("reconcile failed"))
        })
        .collect();
    let unexpected: Vec<_> = failed
        .iter()
        .filter(|l| {
            let message = l.get("message").and_then(Value::as_str).unwrap_or_default();
            !(message.starts_with("reconcile failed: removeFinalizer") && message.contains("NotFound"))
        })
        .collect();
    ensure!(unexpected.is_empty(), "reconciles failed: {unexpected:#?}");
    if !failed.is_empty() {
        println!("{} removeFinalizer 404s on already deleted primaries (known host race)", failed.len());
    }
    // The Lease was taken with the ServiceAccount's own rights.
    let lease = Api::<Lease>::namespaced(admin, ns).get("wasm-operator").await?;
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    ensure!(holder.starts_with("sa_"), "Lease holder {holder:?}");
    host.terminate()?;
    Ok(())
}

/// Applies the deploy/ overlay into `namespace`, and writes a kubeconfig of its
/// ServiceAccount (a fresh token, none of the admin's credentials).
async fn deploy_and_log_in(
    cluster: &e2e::Cluster,
    namespace: &str,
) -> Result<(Kubectl, Deployment, std::path::PathBuf)> {
    let kubectl = Kubectl::new(cluster);
    let deployment = Deployment::overlay(cluster, namespace)?;
    deployment.apply(&kubectl, &[])?;
    let kubeconfig = service_account_kubeconfig(
        cluster,
        namespace,
        &deployment.service_account(),
        &test_dir(namespace)?,
        "operator",
    )
    .await?;
    Ok((kubectl, deployment, kubeconfig))
}

#[tokio::test]
async fn the_deployed_rbac_is_enough_to_converge_and_delete() -> Result<()> {
    let cluster = cluster().await?;
    let admin = cluster.client()?;
    let ns = TestNamespace::create(cluster, "deploy-rbac").await?;
    // Kept until the end: dropping the Deployment deletes what it applied.
    let (_kubectl, _deployment, kubeconfig) = deploy_and_log_in(cluster, ns.name()).await?;
    converge_and_delete_as(ns.name(), &kubeconfig, admin).await
}

#[tokio::test]
async fn the_namespaced_rbac_is_enough_to_converge_and_delete() -> Result<()> {
    let cluster = cluster().await?;
    let admin = cluster.client()?;
    let ns = TestNamespace::create(cluster, "deploy-ns-rbac").await?;
    let account = "wasm-operator";
    e2e::identity::create_service_account(&admin, ns.name(), account).await?;
    let args: Vec<String> = ["--namespace", ns.name(), "--operator-namespace", ns.name()]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let yaml = generate_rbac(&args).await?;
    let objects = apply_yaml(&admin, None, &yaml).await?;
    let kinds: Vec<String> =
        objects.iter().filter_map(|o| o.types.as_ref().map(|t| t.kind.clone())).collect();
    ensure!(kinds == ["Role", "RoleBinding", "Role", "RoleBinding"], "{kinds:?}");
    let kubeconfig =
        service_account_kubeconfig(cluster, ns.name(), account, &test_dir(ns.name())?, "operator").await?;

    // Nothing outside the namespace.
    let operator = client_from_kubeconfig(&kubeconfig).await?;
    let elsewhere: Api<ConfigMap> = Api::namespaced(operator, "default");
    let probe = ConfigMap {
        metadata: ObjectMeta { name: Some("e2e-rbac-probe".to_owned()), ..ObjectMeta::default() },
        ..ConfigMap::default()
    };
    ensure!(
        forbidden(elsewhere.create(&PostParams { dry_run: true, ..PostParams::default() }, &probe).await),
        "the namespaced RBAC lets the operator create ConfigMaps in another namespace"
    );

    converge_and_delete_as(ns.name(), &kubeconfig, admin).await
}

#[tokio::test]
async fn writes_outside_the_deployed_rbac_are_denied() -> Result<()> {
    let cluster = cluster().await?;
    let admin = cluster.client()?;
    let ns = TestNamespace::create(cluster, "deploy-tight").await?;
    let (kubectl, deployment, kubeconfig) = deploy_and_log_in(cluster, ns.name()).await?;
    let operator = client_from_kubeconfig(&kubeconfig).await?;
    let namespace = ns.name();

    // Every right of the generated rules is granted (so the denials below are RBAC
    // speaking, not a broken identity)...
    let rendered = deployment.render(&kubectl)?;
    let role = rendered.iter().find(|o| o["kind"] == "ClusterRole").context("no ClusterRole")?;
    let mut granted = 0;
    for rule in role["rules"].as_array().into_iter().flatten() {
        let group = rule["apiGroups"][0].as_str().unwrap_or_default();
        let resource = rule["resources"][0].as_str().unwrap_or_default();
        for verb in rule["verbs"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            ensure!(
                allowed(&operator, group, resource, verb, namespace).await?,
                "{verb} {group}/{resource} is not granted"
            );
            granted += 1;
        }
    }
    ensure!(granted > 10, "only {granted} rights checked");
    // The Lease rights are limited by name; a review without a name asks about any
    // Lease, so only `create` (which names none) is granted that way.
    ensure!(allowed(&operator, "coordination.k8s.io", "leases", "create", namespace).await?, "create leases");
    ensure!(
        !allowed(&operator, "coordination.k8s.io", "leases", "update", namespace).await?,
        "update any Lease"
    );

    // ...and what the manifest does not need is denied, by review...
    for (group, resource, verb) in [
        ("", "secrets", "create"),
        ("", "secrets", "update"),
        ("", "secrets", "delete"),
        ("", "namespaces", "delete"),
        ("", "pods", "create"),
        ("apps", "deployments", "patch"),
        ("dittofs.dittofs.com", "dittoservers", "delete"),
        ("dittofs.dittofs.com", "dittoservers", "create"),
        ("dittofs.dittofs.com", "dittoservers", "update"),
        ("", "configmaps", "update"),
        ("", "events", "create"),
        ("coordination.k8s.io", "leases", "delete"),
        ("coordination.k8s.io", "leases", "list"),
        ("rbac.authorization.k8s.io", "clusterroles", "create"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
    ] {
        ensure!(
            !allowed(&operator, group, resource, verb, namespace).await?,
            "{verb} {group}/{resource} is granted"
        );
    }

    // ...and by real requests.
    let write = PostParams::default();
    let secret = Secret {
        metadata: ObjectMeta { name: Some("stolen".to_owned()), ..ObjectMeta::default() },
        ..Secret::default()
    };
    ensure!(
        forbidden(Api::<Secret>::namespaced(operator.clone(), namespace).create(&write, &secret).await),
        "the operator created a Secret"
    );
    ensure!(
        forbidden(Api::<Namespace>::all(operator.clone()).delete(namespace, &DeleteParams::default()).await),
        "the operator could delete a Namespace"
    );
    let scale = json!({"spec": {"replicas": 5}});
    ensure!(
        forbidden(
            Api::<AppsDeployment>::namespaced(operator.clone(), namespace)
                .patch(&deployment.name("wasm-operator"), &PatchParams::default(), &Patch::Merge(&scale))
                .await
        ),
        "the operator could patch its own Deployment"
    );
    let leases: Api<Lease> = Api::namespaced(operator.clone(), namespace);
    let other = Lease {
        metadata: ObjectMeta { name: Some("someone-else".to_owned()), ..ObjectMeta::default() },
        ..Lease::default()
    };
    // `create` cannot be limited by name; updating another Lease can.
    Api::<Lease>::namespaced(admin.clone(), namespace).create(&write, &other).await?;
    let mut theirs = Api::<Lease>::namespaced(admin.clone(), namespace).get("someone-else").await?;
    theirs.spec.get_or_insert_with(Default::default).holder_identity = Some("me".to_owned());
    ensure!(
        forbidden(leases.replace("someone-else", &write, &theirs).await),
        "the operator could update another Lease"
    );
    Ok(())
}

#[tokio::test]
async fn rbac_subcommand_rejects_an_unreadable_module() -> Result<()> {
    let artifacts = artifacts().await?;
    let output = std::process::Command::new(&artifacts.host)
        .args(["rbac", "--module", "/nonexistent/module.wasm"])
        .output()?;
    if output.status.code() != Some(2) {
        bail!("exit {:?}: {}", output.status.code(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}
