//! The Helm chart (`deploy/chart`) and the one-file install (`deploy/install.yaml`)
//! against the real control plane, with the real `helm` (built from its Go module):
//!
//! - `helm lint`, and the generated files (RBAC, admission policy, CRD) fresh;
//! - `install.yaml` is the chart rendered with its defaults;
//! - the RBAC and admission policy the chart renders for a release are exactly what
//!   `wasm-operator rbac` and `admission-policy` give for its names, cluster-wide and
//!   namespaced;
//! - values that cannot work are refused with the fix, at template time, and values
//!   of the wrong type, name or form by `values.schema.json`, with their path;
//! - `helm template` with default and other values passes a server-side dry run;
//! - a real `helm install`: the host binary, authenticated as the chart's
//!   ServiceAccount, converges and deletes a DittoServer; the aggregated user roles
//!   give `edit` and `view` their rights; `helm upgrade` with other values changes the
//!   Deployment; `helm uninstall` removes what the chart made and keeps the CRD and
//!   the uploaded module;
//! - every metric the dashboard and the alerts name is one the running host exports.
//!
//! No container runs on the kwok nodes: the Deployment's pods are reported Running,
//! the tests run the host binary themselves.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, bail, ensure};
use e2e::converge::{Percona, Servers};
use e2e::deploy::{Kubectl, deploy_dir, deploy_mk_args, generate, service_account_kubeconfig, test_dir};
use e2e::helm::{Helm, Release, chart_dir};
use e2e::host_process::{HostOptions, HostProcess};
use e2e::identity::{wait_until_allowed, write_impersonating_kubeconfig};
use e2e::{TestNamespace, apply_yaml, cluster, parse_yaml, wait_until};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

/// The chart's objects of `kinds`, without Helm's labels (which the generators do not
/// write), in a stable order.
fn objects_of(yaml: &str, kinds: &[&str]) -> Result<Vec<Value>> {
    let mut objects: Vec<Value> = parse_yaml(yaml)?
        .into_iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| kinds.contains(&k)))
        .collect();
    objects
        .sort_by_key(|o| format!("{}/{}/{}", o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]));
    Ok(objects)
}

/// Runs `helm template` with `values` and fails unless helm refuses with `message`.
fn refused(helm: &Helm, values: &[&str], message: &str) -> Result<()> {
    let chart = chart_dir();
    let mut args = vec!["template", "bad", chart.to_str().context("chart path")?];
    args.extend_from_slice(values);
    let output = helm.output(args)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "helm accepted {values:?}");
    ensure!(stderr.contains(message), "helm refused {values:?} without saying {message:?}:\n{stderr}");
    Ok(())
}

fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[tokio::test]
async fn the_chart_lints_and_its_generated_files_are_fresh() -> Result<()> {
    let helm = Helm::new(cluster().await?)?;
    let chart = chart_dir();
    let chart_path = chart.to_str().context("chart path")?;
    helm.run(["lint", "--strict", chart_path])?;
    helm.run([
        "lint",
        "--strict",
        chart_path,
        "--set",
        "module.source=oci,module.oci.reference=oci://r.example/m:1",
    ])?;
    let stale = |file: &str| format!("deploy/chart/files/{file} is stale: run `make chart-files`");
    let read = |file: &str| std::fs::read_to_string(chart.join("files").join(file));
    let rbac = deploy_mk_args("CHART_RBAC_ARGS")?;
    ensure!(read("rbac-cluster.yaml")? == generate("rbac", &rbac).await?, stale("rbac-cluster.yaml"));
    let mut namespaced = rbac.clone();
    namespaced.extend(words(&["--namespace", "wasmop-chart-watch"]));
    ensure!(
        read("rbac-namespaced.yaml")? == generate("rbac", &namespaced).await?,
        stale("rbac-namespaced.yaml")
    );
    let admission = deploy_mk_args("CHART_ADMISSION_ARGS")?;
    ensure!(
        read("admission-policy.yaml")? == generate("admission-policy", &admission).await?,
        stale("admission-policy.yaml")
    );
    let crd = std::fs::read_to_string(e2e::cluster::repo_root().join("crds/dittoservers.yaml"))?;
    ensure!(
        std::fs::read_to_string(chart.join("crds/dittoservers.yaml"))? == crd,
        "deploy/chart/crds/dittoservers.yaml differs from crds/: run `make chart-files`"
    );
    Ok(())
}

#[tokio::test]
async fn install_yaml_is_the_chart_rendered_with_its_defaults() -> Result<()> {
    let helm = Helm::new(cluster().await?)?;
    let args = deploy_mk_args("INSTALL_ARGS")?;
    let chart = chart_dir();
    let args: Vec<String> =
        args.into_iter().map(|a| if a == "$(CHART)" { chart.display().to_string() } else { a }).collect();
    let rendered = String::from_utf8(helm.run(&args)?.stdout)?;
    let committed = std::fs::read_to_string(deploy_dir().join("install.yaml"))?;
    ensure!(committed == rendered, "deploy/install.yaml is stale: run `make install-yaml`");
    let kinds: BTreeSet<String> =
        parse_yaml(&committed)?.iter().filter_map(|o| o["kind"].as_str().map(str::to_owned)).collect();
    for kind in [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        ensure!(kinds.contains(kind), "install.yaml holds no {kind}: {kinds:?}");
    }
    Ok(())
}

#[tokio::test]
async fn the_rendered_rbac_and_admission_policy_are_the_generators_for_the_release() -> Result<()> {
    let helm = Helm::new(cluster().await?)?;
    let rbac_kinds = ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
    let base = ["--service-account", "rel-wasm-operator", "--operator-namespace", "ops"];
    let names = ["--lease-name", "rel-wasm-operator", "--module-configmap", "rel-wasm-operator-module"];
    // User roles are the chart's own, not the module's.
    let operator_rbac = |yaml: &str| -> Result<Vec<Value>> {
        Ok(objects_of(yaml, &rbac_kinds)?
            .into_iter()
            .filter(|o| !o["metadata"]["name"].as_str().unwrap_or_default().contains("-dittoservers-"))
            .collect())
    };
    let rendered = helm.template("rel", "ops", &[])?;
    let mut args = words(&base);
    args.extend(words(&names));
    let generated = generate("rbac", &args).await?;
    ensure!(
        operator_rbac(&rendered)? == objects_of(&generated, &rbac_kinds)?,
        "the chart's RBAC differs from `wasm-operator rbac {args:?}`"
    );
    let rendered = helm.template("rel", "ops", &["--set", "watchNamespace=team-a"])?;
    args.extend(words(&["--namespace", "team-a"]));
    let generated = generate("rbac", &args).await?;
    let objects = operator_rbac(&rendered)?;
    ensure!(objects == objects_of(&generated, &rbac_kinds)?, "the namespaced RBAC differs");
    ensure!(
        !objects.iter().any(|o| o["kind"] == "ClusterRole"),
        "watchNamespace still renders a ClusterRole"
    );
    let deployment = objects_of(&rendered, &["Deployment"])?;
    let args =
        &deployment.first().context("no Deployment")?["spec"]["template"]["spec"]["containers"][0]["args"];
    ensure!(args.as_array().is_some_and(|a| a.contains(&json!("--namespace=team-a"))), "{args}");

    let policy_kinds = ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"];
    let mut args = words(&base);
    args.extend(words(&["--name", "rel-wasm-operator"]));
    let generated = generate("admission-policy", &args).await?;
    ensure!(
        objects_of(&helm.template("rel", "ops", &[])?, &policy_kinds)?
            == objects_of(&generated, &policy_kinds)?,
        "the chart's admission policy differs from `wasm-operator admission-policy {args:?}`"
    );
    Ok(())
}

#[tokio::test]
async fn values_that_cannot_work_are_refused_with_the_fix() -> Result<()> {
    let helm = Helm::new(cluster().await?)?;
    refused(&helm, &["--set", "module.source=oci"], "module.source=oci needs module.oci.reference")?;
    refused(
        &helm,
        &["--set", "module.source=oci,module.oci.reference=registry.example/m:1"],
        "as oci://REGISTRY/REPO:TAG",
    )?;
    refused(&helm, &["--set", "module.source=file"], "module.source=file needs module.file.path")?;
    refused(
        &helm,
        &["--set", "module.source=http"],
        "at '/module/source': value must be one of 'builtin', 'configmap', 'file', 'oci'",
    )?;
    // A policy the generated admission policy would contradict.
    refused(&helm, &["--set", "policy.podSecurity=restricted"], "set admissionPolicy.enabled=false")?;
    refused(&helm, &["--set", "policy.allowKinds={core/Pod}"], "set admissionPolicy.enabled=false")?;
    helm.template("ok", "ops", &["--set", "policy.podSecurity=restricted,admissionPolicy.enabled=false"])?;
    refused(&helm, &["--set", "metrics.port=8081"], "need ports of their own")?;
    // values.schema.json: types, typos, patterns and enums, with the path.
    refused(&helm, &["--set", "replicas=two"], "at '/replicas': got string, want integer")?;
    refused(&helm, &["--set", "replica=3"], "additional properties 'replica' not allowed")?;
    refused(&helm, &["--set", "module.digests={sha1:ab}"], "at '/module/digests/0'")?;
    refused(&helm, &["--set", "policy.podSecurity=open"], "at '/policy/podSecurity'")?;
    refused(&helm, &["--set", "watchNamespace=Team_A"], "at '/watchNamespace'")?;
    refused(&helm, &["--set", "module.publicKeys.k=not-a-key"], "at '/module/publicKeys/k'")?;
    // Names the chart writes into the generated RBAC and policy text must be names, so
    // that no value can add a rule.
    refused(&helm, &["--set-string", "leaderElection.leaseName=x\n- '*'"], "at '/leaderElection/leaseName'")?;
    refused(&helm, &["--set", "module.configMap.name=a b"], "at '/module/configMap/name'")?;
    refused(&helm, &["--set", "fullnameOverride=Op'"], "at '/fullnameOverride'")?;
    Ok(())
}

#[tokio::test]
async fn templates_with_default_and_other_values_pass_a_server_dry_run() -> Result<()> {
    let cluster = cluster().await?;
    let admin = cluster.client()?;
    let ns = TestNamespace::create(cluster, "chart-dry").await?;
    let helm = Helm::new(cluster)?;
    let kubectl = Kubectl::new(cluster);
    // The Prometheus Operator's kinds, as stand-ins.
    let fixtures = e2e::cluster::repo_root().join("tests/fixtures/monitoring-crds.yaml");
    apply_yaml(&admin, None, &std::fs::read_to_string(&fixtures)?).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for name in ["servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"] {
        wait_until(format!("CRD {name} to be established"), e2e::DEFAULT_TIMEOUT, || async {
            let crd = crds.get(name).await?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
        })
        .await?;
    }
    let key = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----";
    let key_value = format!("module.publicKeys.signing\\.pub={key}");
    let variants: Vec<(&str, Vec<String>)> = vec![
        ("defaults", vec![]),
        (
            "namespaced, ConfigMap source, keys, monitoring",
            words(&[
                "--set",
                &format!("watchNamespace={}", ns.name()),
                "--set",
                "module.source=configmap,replicas=1,leaderElection.enabled=false,logLevel=debug",
                "--set-string",
                &key_value,
                "--set",
                "module.digests={sha256:0000000000000000000000000000000000000000000000000000000000000000}",
                "--set",
                "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true",
                "--set",
                "metrics.dashboard.enabled=true,metrics.networkPolicy.enabled=true",
            ]),
        ),
        (
            "OCI source with credentials, metrics off, restricted pods",
            words(&[
                "--set",
                "module.source=oci,module.oci.reference=oci://registry.example/ops/dittofs:v1",
                "--set",
                "module.oci.pullSecret=registry-creds,module.oci.insecureRegistries={127.0.0.1:5000}",
                "--set",
                "metrics.port=0,metrics.networkPolicy.enabled=true",
                "--set",
                "policy.podSecurity=restricted,admissionPolicy.enabled=false,userRoles.enabled=false",
            ]),
        ),
    ];
    let dir = test_dir(ns.name())?;
    for (index, (what, values)) in variants.iter().enumerate() {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let release = format!("{}-{index}", ns.name());
        let rendered = helm.template(&release, ns.name(), &values).with_context(|| what.to_string())?;
        let file = dir.join(format!("chart-{index}.yaml"));
        std::fs::write(&file, &rendered)?;
        let dry = kubectl
            .run(["apply", "--server-side", "--dry-run=server", "-f", file.to_str().context("path")?])
            .with_context(|| format!("{what}: the server refused the rendered chart"))?;
        let stderr = String::from_utf8_lossy(&dry.stderr);
        ensure!(!stderr.contains("Warning"), "{what}: the dry run warned:\n{stderr}");
        let kinds: BTreeSet<String> =
            parse_yaml(&rendered)?.iter().filter_map(|o| o["kind"].as_str().map(str::to_owned)).collect();
        match index {
            1 => {
                for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Role", "ConfigMap"] {
                    ensure!(kinds.contains(kind), "{what}: no {kind} in {kinds:?}");
                }
                ensure!(!kinds.contains("ClusterRoleBinding"), "{what}: {kinds:?}");
            }
            2 => {
                ensure!(!kinds.contains("Service"), "{what}: a metrics Service with metrics off");
                ensure!(!kinds.contains("ValidatingAdmissionPolicy"), "{what}: {kinds:?}");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Waits until the aggregated ClusterRole `role` grants `verb` on dittoservers.
async fn wait_aggregated(client: &Client, role: &str, verb: &str) -> Result<()> {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    wait_until(
        format!("ClusterRole {role} to aggregate the DittoServer rules"),
        e2e::DEFAULT_TIMEOUT,
        || async {
            let rules = roles.get(role).await?.rules.unwrap_or_default();
            Ok(rules
                .iter()
                .any(|r| {
                    r.resources.iter().flatten().any(|res| res == "dittoservers")
                        && r.verbs.iter().any(|v| v == verb)
                })
                .then_some(()))
        },
    )
    .await
}

/// Binds the ClusterRole `role` to `user` in `namespace` and returns a client that
/// impersonates the user.
async fn user_with(cluster: &e2e::Cluster, namespace: &str, role: &str, user: &str) -> Result<Client> {
    let admin = cluster.client()?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{user}-{role}"), "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))?;
    Api::<RoleBinding>::namespaced(admin, namespace).create(&PostParams::default(), &binding).await?;
    let path = test_dir(namespace)?.join(format!("{user}.kubeconfig"));
    write_impersonating_kubeconfig(cluster, user, &path)?;
    let client = e2e::deploy::client_from_kubeconfig(&path).await?;
    // Every role here lists.
    let (servers, params) = (dittoservers_in(client.clone(), namespace), ListParams::default());
    wait_until_allowed(format!("{user}'s {role} binding to take effect"), || servers.list(&params)).await?;
    Ok(client)
}

/// DittoServers of `namespace`, as `client`.
fn dittoservers_in(client: Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &e2e::dittofs::dittoservers())
}

/// Whether `client` may create a DittoServer in `namespace` (a server dry run).
async fn may_create_a_server(client: Client, namespace: &str) -> Result<bool> {
    let server: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
        "metadata": {"name": "probe"}, "spec": {"storage": {"metadataSize": "1Gi"}},
    }))?;
    let dry = PostParams { dry_run: true, ..PostParams::default() };
    match dittoservers_in(client, namespace).create(&dry, &server).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(false),
        Err(err) => Err(err.into()),
    }
}

#[tokio::test]
async fn helm_install_converges_as_the_charts_account_then_upgrades_and_uninstalls() -> Result<()> {
    let cluster = cluster().await?;
    let admin = cluster.client()?;
    let ns = TestNamespace::create(cluster, "chart-install").await?;
    let namespace = ns.name();
    let helm = Helm::new(cluster)?;
    // Named after the namespace, so its cluster-scoped objects are unique too.
    let release = Release::install(&helm, namespace, namespace, &[])?;
    let fullname = format!("{}-wasm-operator", release.name());
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), namespace);
    let deployment = deployments.get(&fullname).await?;
    let status = deployment.status.clone().unwrap_or_default();
    ensure!(status.ready_replicas == Some(2), "the Deployment is not ready: {status:?}");
    let container = &deployment.spec.template.spec.clone().context("no pod spec")?.containers[0].clone();
    let args = container.args.clone().unwrap_or_default();
    ensure!(
        args.contains(&"--module=/usr/local/share/wasm-operator/dittofs-reconciler.wasm".to_owned()),
        "{args:?}"
    );

    // The host binary as the chart's ServiceAccount converges and deletes a server.
    let dir = test_dir(namespace)?;
    let kubeconfig = service_account_kubeconfig(cluster, namespace, &fullname, &dir, "operator").await?;
    let host = HostProcess::spawn(
        cluster,
        HostOptions::new(namespace, "chart").kubeconfig(&kubeconfig).args([
            "--leader-elect",
            "--leader-election-namespace",
            namespace,
            "--lease-name",
            &fullname,
        ]),
    )
    .await?;
    host.wait_ready().await?;
    let servers = Servers::new(admin.clone(), namespace);
    servers.create("demo", Percona::Off).await?;
    servers
        .wait_running("demo", Percona::Off)
        .await
        .with_context(|| format!("log: {}", host.log_path().display()))?;
    servers.delete_and_wait_gone("demo").await?;
    let denied: Vec<_> = host
        .log_lines()
        .into_iter()
        .filter(|l| l.to_string().to_ascii_lowercase().contains("forbidden"))
        .collect();
    ensure!(denied.is_empty(), "the chart's account was denied something: {denied:#?}");
    host.terminate()?;

    // The standard roles carry the DittoServer rights.
    wait_aggregated(&admin, "edit", "create").await?;
    wait_aggregated(&admin, "view", "list").await?;
    let editor = user_with(cluster, namespace, "edit", "alice").await?;
    let viewer = user_with(cluster, namespace, "view", "bob").await?;
    ensure!(may_create_a_server(editor, namespace).await?, "edit cannot create DittoServers");
    ensure!(!may_create_a_server(viewer.clone(), namespace).await?, "view can create DittoServers");
    dittoservers_in(viewer, namespace).list(&ListParams::default()).await.context("view cannot list")?;

    // An upgrade with other values changes the Deployment.
    release.upgrade(&["--set", "replicas=1,logLevel=debug,module.source=configmap"])?;
    let deployment = deployments.get(&fullname).await?;
    let spec = deployment.spec;
    ensure!(spec.replicas == Some(1), "replicas {:?}", spec.replicas);
    let args = spec.template.spec.context("no pod spec")?.containers[0].args.clone().unwrap_or_default();
    let source = format!("--module-configmap={namespace}/{fullname}-module:dittofs-reconciler.wasm");
    ensure!(args.contains(&source) && args.contains(&"--log-level=debug".to_owned()), "{args:?}");
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), namespace);
    ensure!(configmaps.get_opt(&format!("{fullname}-module")).await?.is_some(), "no module ConfigMap");

    // Uninstall: the chart's objects go, the CRD and the module's ConfigMap stay.
    release.uninstall()?;
    ensure!(deployments.get_opt(&fullname).await?.is_none(), "the Deployment is still there");
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    for role in [fullname.clone(), format!("{fullname}-dittoservers-viewer")] {
        ensure!(roles.get_opt(&role).await?.is_none(), "ClusterRole {role} is still there");
    }
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    ensure!(crds.get_opt("dittoservers.dittofs.dittofs.com").await?.is_some(), "uninstall removed the CRD");
    ensure!(
        configmaps.get_opt(&format!("{fullname}-module")).await?.is_some(),
        "uninstall removed the module's ConfigMap"
    );
    Ok(())
}

/// The metric names a PromQL text uses: every identifier with one of the prefixes
/// the operator exports under (label names and functions have none).
fn metric_names(promql: &str, into: &mut BTreeSet<String>) {
    let prefixes = ["wasm_operator_", "workqueue_", "rest_client_", "controller_runtime_", "process_"];
    for word in promql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if prefixes.iter().any(|p| word.starts_with(p)) {
            into.insert(word.to_owned());
        }
    }
}

/// Every `expr` of the dashboard's panels and of the alert rules.
fn monitored_metrics() -> Result<BTreeSet<String>> {
    let files = chart_dir().join("files");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(files.join("dashboard.json"))?)?;
    let mut names = BTreeSet::new();
    let mut panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().cloned().unwrap_or_default());
        for target in panel["targets"].as_array().into_iter().flatten() {
            metric_names(target["expr"].as_str().unwrap_or_default(), &mut names);
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        metric_names(&variable["query"].to_string(), &mut names);
    }
    let dashboard_count = names.len();
    let alerts: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(files.join("alerts.yaml"))?)?;
    let mut rules = 0;
    for group in alerts["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            rules += 1;
            metric_names(rule["expr"].as_str().unwrap_or_default(), &mut names);
        }
    }
    ensure!(
        dashboard_count >= 15 && rules >= 5,
        "{dashboard_count} dashboard metrics, {rules} rules: misparsed?"
    );
    Ok(names)
}

#[tokio::test]
async fn every_metric_of_the_dashboard_and_alerts_is_one_the_host_exports() -> Result<()> {
    let cluster = cluster().await?;
    let ns = TestNamespace::create(cluster, "chart-metrics").await?;
    let host = HostProcess::spawn(cluster, HostOptions::new(ns.name(), "metrics")).await?;
    host.wait_ready().await?;
    // One reconcile, so that the labelled families have their series.
    let servers = Servers::new(cluster.client()?, ns.name());
    servers.create("m", Percona::Off).await?;
    servers.wait_running("m", Percona::Off).await?;
    let (code, text) = host.get("/metrics").await?;
    ensure!(code == 200, "/metrics answered {code}");
    // A name is exported when a sample has it, or its family is declared (a family
    // with no series yet, e.g. rejections that never happened).
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next(),
            None if !line.starts_with('#') => line.split(['{', ' ']).next(),
            None => None,
        };
        exported.extend(name.map(str::to_owned));
    }
    let known = |name: &str| {
        exported.contains(name)
            || ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(|family| exported.contains(family)))
    };
    let missing: Vec<String> = monitored_metrics()?.into_iter().filter(|n| !known(n)).collect();
    if !missing.is_empty() {
        bail!(
            "the dashboard or alerts name metrics the host does not export: {missing:?}\n/metrics:\n{text}"
        );
    }
    servers.delete_and_wait_gone("m").await?;
    Ok(())
}
