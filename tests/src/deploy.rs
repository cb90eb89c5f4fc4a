//! The in-cluster manifests of `deploy/` as the tests use them: rendered with
//! kustomize into a test's own namespace (so runs never collide), applied with the
//! real `kubectl`, and the operator's ServiceAccount turned into a kubeconfig (a
//! TokenRequest token: the API server authenticates it exactly as it would the pod's).
//!
//! `deploy/` names a fixed namespace and cluster-wide RBAC objects. A [`Deployment`]
//! renders it through an overlay that sets the test namespace and a unique name
//! suffix (kustomize rewrites every reference: bindings' subjects, roleRefs, the
//! Deployment's ServiceAccount and ConfigMap), and deletes its cluster-scoped objects
//! when dropped; the namespace goes with the test's [`TestNamespace`](crate::TestNamespace).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::Cluster;
use crate::build::build_command;
use crate::cluster::repo_root;
use crate::identity::{write_kubeconfig_as, write_private};
use crate::objects::parse_yaml;
use crate::operator::{artifact_dir, artifacts};

/// The directory of the in-cluster manifests.
pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// The `kubectl` to run: the local control plane's (`target/cluster/bin/kubectl`),
/// else the one on `PATH`.
pub fn kubectl_path() -> PathBuf {
    let local = repo_root().join("target/cluster/bin/kubectl");
    if local.is_file() { local } else { PathBuf::from("kubectl") }
}

/// `kubectl` against `cluster`, as its admin.
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: Option<PathBuf>,
}

impl Kubectl {
    /// kubectl for `cluster` (its kubeconfig, or the inherited `KUBECONFIG`).
    pub fn new(cluster: &Cluster) -> Self {
        Self { kubeconfig: cluster.kubeconfig().map(Path::to_path_buf) }
    }

    /// A command running kubectl with the cluster's kubeconfig.
    pub fn command(&self) -> Command {
        let mut command = Command::new(kubectl_path());
        if let Some(path) = &self.kubeconfig {
            command.env("KUBECONFIG", path);
        }
        command.stdin(Stdio::null());
        command
    }

    /// Runs kubectl with `args`; fails with its stderr unless it succeeds.
    pub fn run<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
        let output =
            self.command().args(&args).output().with_context(|| format!("cannot run kubectl {shown}"))?;
        if !output.status.success() {
            bail!(
                "kubectl {shown} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }

    /// The environment variable assignment that makes `make` targets use this
    /// kubectl: `KUBECTL=<path> --kubeconfig <file>`.
    pub fn make_variable(&self) -> String {
        let mut value = format!("KUBECTL={}", kubectl_path().display());
        if let Some(path) = &self.kubeconfig {
            value.push_str(&format!(" --kubeconfig {}", path.display()));
        }
        value
    }
}

/// The overlay's kustomization: everything into `namespace`, `-<suffix>` appended to
/// every name. The suffix is quoted: a hex suffix may read as a YAML number
/// (`-7852361453681`, `-12e45`), which kustomize rejects as a name suffix.
fn kustomization(namespace: &str, suffix: &str, components: &[&str]) -> String {
    let mut text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         namespace: {namespace}\nnameSuffix: \"-{suffix}\"\nresources:\n  - ../../../deploy\n"
    );
    if !components.is_empty() {
        text.push_str("components:\n");
        for component in components {
            text.push_str(&format!("  - ../../../deploy/components/{component}\n"));
        }
    }
    text
}

/// `deploy/` rendered into one test namespace.
#[derive(Debug)]
pub struct Deployment {
    namespace: String,
    suffix: String,
    overlay: PathBuf,
    config: Config,
}

impl Deployment {
    /// Writes an overlay of `deploy/` that puts everything into `namespace` (which
    /// the test has created) and appends a unique `-<suffix>` to every name.
    pub fn overlay(cluster: &Cluster, namespace: &str) -> Result<Self> {
        Self::overlay_with(cluster, namespace, &[])
    }

    /// [`Deployment::overlay`] with the kustomize components of
    /// `deploy/components/` named in `components` (e.g. `oci`).
    pub fn overlay_with(cluster: &Cluster, namespace: &str, components: &[&str]) -> Result<Self> {
        // The namespace names are unique already; their last part is unique enough.
        let suffix = namespace.rsplit('-').next().unwrap_or(namespace).to_owned();
        // Kustomize takes the base by relative path, from inside the repository.
        let overlay = repo_root().join("target/e2e-deploy").join(namespace);
        std::fs::create_dir_all(&overlay).with_context(|| format!("cannot create {}", overlay.display()))?;
        std::fs::write(overlay.join("kustomization.yaml"), kustomization(namespace, &suffix, components))
            .with_context(|| format!("cannot write the overlay in {}", overlay.display()))?;
        Ok(Self { namespace: namespace.to_owned(), suffix, overlay, config: cluster.config().clone() })
    }

    /// The namespace everything is in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `name` as the overlay renames it (`<name>-<suffix>`).
    pub fn name(&self, name: &str) -> String {
        format!("{name}-{}", self.suffix)
    }

    /// The operator's ServiceAccount.
    pub fn service_account(&self) -> String {
        self.name("wasm-operator")
    }

    /// The user name of the operator's ServiceAccount.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.service_account())
    }

    /// The overlay directory (for `kubectl -k`).
    pub fn overlay_dir(&self) -> &Path {
        &self.overlay
    }

    /// The rendered objects (`kubectl kustomize`).
    pub fn render(&self, kubectl: &Kubectl) -> Result<Vec<serde_json::Value>> {
        let output = kubectl.run([OsStr::new("kustomize"), self.overlay.as_os_str()])?;
        parse_yaml(&String::from_utf8_lossy(&output.stdout))
    }

    /// `kubectl apply --server-side -k <overlay>` plus `extra` arguments (e.g.
    /// `--dry-run=server`); returns kubectl's output.
    pub fn apply(&self, kubectl: &Kubectl, extra: &[&str]) -> Result<Output> {
        let mut args = vec![OsStr::new("apply"), OsStr::new("--server-side"), OsStr::new("-k")];
        args.push(self.overlay.as_os_str());
        args.extend(extra.iter().map(OsStr::new));
        kubectl.run(args)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::env::var_os(crate::namespace::KEEP_ENV).is_some() {
            return;
        }
        // As in TestNamespace: a thread with its own runtime and client.
        let name = self.service_account();
        let config = self.config.clone();
        let deleted = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let client = Client::try_from(config)?;
                let params = DeleteParams::default();
                gone(Api::<ClusterRoleBinding>::all(client.clone()).delete(&name, &params).await)?;
                gone(Api::<ClusterRole>::all(client).delete(&name, &params).await)?;
                Ok(())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot delete the cluster-wide RBAC of {}: {e:#}", self.namespace),
            Err(_) => eprintln!("deleting the cluster-wide RBAC of {} panicked", self.namespace),
        }
    }
}

/// `Ok` when deleted or already absent.
fn gone<T>(result: kube::Result<T>) -> kube::Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map(drop),
    }
}

/// A token for ServiceAccount `namespace/name` (TokenRequest, one hour).
pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..TokenRequestSpec::default() }),
        ..TokenRequest::default()
    };
    let answer: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("cannot request a token for ServiceAccount {namespace}/{name}"))?;
    answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("the TokenRequest for {namespace}/{name} returned no token"))
}

/// Writes to `dir` a kubeconfig (`<stem>.kubeconfig`) whose user is ServiceAccount
/// `namespace/name`, authenticated by a fresh token (in `<stem>.token`, mode 0600):
/// the same cluster and CA as the admin's, none of the admin's credentials.
pub async fn service_account_kubeconfig(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    dir: &Path,
    stem: &str,
) -> Result<PathBuf> {
    let token = service_account_token(&cluster.client()?, namespace, name).await?;
    let token_path = dir.join(format!("{stem}.token"));
    write_private(&token_path, token.as_bytes())?;
    let path = dir.join(format!("{stem}.kubeconfig"));
    write_kubeconfig_as(cluster, &path, |auth| {
        *auth =
            AuthInfo { token_file: Some(token_path.to_string_lossy().into_owned()), ..AuthInfo::default() };
    })?;
    Ok(path)
}

/// A client authenticated by the kubeconfig at `path`.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("cannot use {}", path.display()))?;
    Client::try_from(config).context("cannot build a client")
}

/// The arguments `make deploy-rbac` passes to `wasm-operator rbac`
/// (`DEPLOY_RBAC_ARGS` in `deploy/deploy.mk`).
pub fn deploy_rbac_args() -> Result<Vec<String>> {
    deploy_mk_args("DEPLOY_RBAC_ARGS")
}

/// The arguments `make deploy-admission-policy` passes (`DEPLOY_ADMISSION_ARGS` of
/// `deploy/deploy.mk`).
pub fn deploy_admission_args() -> Result<Vec<String>> {
    deploy_mk_args("DEPLOY_ADMISSION_ARGS")
}

/// The words of the variable `name` (`NAME := ...`) of `deploy/deploy.mk`.
pub fn deploy_mk_args(name: &str) -> Result<Vec<String>> {
    let path = deploy_dir().join("deploy.mk");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let prefix = format!("{name} :=");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .ok_or_else(|| anyhow!("{} defines no {name}", path.display()))?;
    Ok(line.split_whitespace().map(str::to_owned).collect())
}

/// Runs `wasm-operator rbac --module <the built module> <args>` and returns its YAML.
pub async fn generate_rbac(args: &[String]) -> Result<String> {
    generate("rbac", args).await
}

/// Runs `wasm-operator <subcommand> --module <the built module> <args>` and returns
/// what it prints.
pub async fn generate(subcommand: &str, args: &[String]) -> Result<String> {
    let artifacts = artifacts().await?;
    let output = build_command(&artifacts.host)
        .arg(subcommand)
        .arg("--module")
        .arg(&artifacts.module)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run wasm-operator {subcommand}"))?;
    if !output.status.success() {
        bail!(
            "wasm-operator {subcommand} {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("wasm-operator {subcommand} printed invalid UTF-8"))
}

/// Runs a target of the root Makefile with `variables` (`NAME=value`).
pub fn make(target: &str, variables: &[String]) -> Result<()> {
    let status = build_command("make")
        .args(["--no-print-directory", "--quiet", target])
        .args(variables)
        .status()
        .with_context(|| format!("cannot run make {target}"))?;
    if !status.success() {
        bail!("make {target} failed ({status}); its output is above");
    }
    Ok(())
}

/// `target/e2e/<namespace>/`, for kubeconfigs and logs.
pub fn test_dir(namespace: &str) -> Result<PathBuf> {
    artifact_dir(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_suffix_stays_a_string_whatever_its_digits() {
        for suffix in ["7852361453681", "12e45", "a1b2"] {
            let yaml: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(&kustomization("e2e-x", suffix, &[])).expect("YAML");
            assert_eq!(yaml["nameSuffix"].as_str(), Some(format!("-{suffix}").as_str()), "{suffix}");
        }
    }
}
