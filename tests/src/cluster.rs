//! The shared cluster handle: one control plane per test process.
//!
//! The first test that asks for the cluster starts it (or finds it running) and
//! installs the CRDs; every later test in the same process reuses that work.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, anyhow, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::OnceCell;

use crate::crds;

/// Environment variable naming an existing cluster to test against instead of
/// the local control plane.
const KUBECONFIG_ENV: &str = "KUBECONFIG";

/// A reachable cluster with the project's CRDs installed.
#[derive(Clone, Debug)]
pub struct Cluster {
    config: Config,
    kubeconfig: Option<PathBuf>,
    crds: Vec<String>,
}

/// Failures are kept too, so that the tests after the first one fail at once
/// with the same message instead of each retrying a slow start.
static CLUSTER: OnceCell<std::result::Result<Cluster, String>> = OnceCell::const_new();

/// Returns the shared cluster, starting it on first use.
///
/// With `KUBECONFIG` set, that cluster is used as it is. Otherwise
/// `tests/cluster/up.sh` runs (it reuses a running local control plane, and builds
/// the binaries on first use, which takes minutes) and its kubeconfig,
/// `target/cluster/kubeconfig`, is used. Either way every CRD in `crds/` and
/// `tests/fixtures/` is applied and awaited until Established.
pub async fn cluster() -> Result<&'static Cluster> {
    CLUSTER
        .get_or_init(|| async { Cluster::connect().await.map_err(|e| format!("{e:#}")) })
        .await
        .as_ref()
        .map_err(|message| anyhow!("the test cluster is not available: {message}"))
}

impl Cluster {
    async fn connect() -> Result<Self> {
        let (config, kubeconfig) = match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(_) => {
                let config = Config::from_kubeconfig(&KubeConfigOptions::default())
                    .await
                    .context("cannot load the cluster named by KUBECONFIG")?;
                (config, None)
            }
            None => {
                let path = start_local_control_plane().await?;
                let kubeconfig = Kubeconfig::read_from(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .with_context(|| format!("cannot use {}", path.display()))?;
                (config, Some(path))
            }
        };
        let client = Client::try_from(config.clone()).context("cannot build a Kubernetes client")?;
        let crds = crds::install_all(&client, &crds::default_dirs(&repo_root())).await?;
        Ok(Self { config, kubeconfig, crds })
    }

    /// A new client for this cluster, as the cluster's admin.
    ///
    /// Call it from the test's own runtime: a client's connection pool lives on
    /// the runtime it was built in, and each `#[tokio::test]` has its own.
    pub fn client(&self) -> Result<Client> {
        Client::try_from(self.config.clone()).context("cannot build a Kubernetes client")
    }

    /// The admin configuration, e.g. to derive an impersonating client from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The kubeconfig file of the local control plane; `None` when the cluster
    /// came from `KUBECONFIG`.
    pub fn kubeconfig(&self) -> Option<&Path> {
        self.kubeconfig.as_deref()
    }

    /// Names of the CRDs that were installed.
    pub fn crds(&self) -> &[String] {
        &self.crds
    }
}

/// The workspace root: this crate lives in `tests/`.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Runs `tests/cluster/up.sh` and returns the kubeconfig it wrote.
async fn start_local_control_plane() -> Result<PathBuf> {
    let root = repo_root();
    let script = root.join("tests/cluster/up.sh");
    let status = tokio::task::spawn_blocking({
        let script = script.clone();
        move || {
            // Its progress goes to stderr, where a slow first build is visible
            // even though the test harness captures the tests' own output.
            Command::new(&script).stdin(Stdio::null()).stdout(std::io::stderr()).status()
        }
    })
    .await
    .context("the task running up.sh panicked")?
    .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); its output is above, component logs are in {}",
            script.display(),
            root.join("target/cluster/logs").display()
        );
    }
    Ok(root.join("target/cluster/kubeconfig"))
}
