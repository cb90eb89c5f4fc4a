//! The real `helm` (built from its Go module by `tests/helm/build.sh` and cached)
//! against the test cluster, for the chart in `deploy/chart`.
//!
//! Each test installs its own release, named after its namespace, so runs never
//! collide; a [`Release`] uninstalls itself when dropped (cluster-scoped objects
//! included), unless `E2E_KEEP_NAMESPACES` is set.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::Cluster;
use crate::cluster::repo_root;

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join("deploy/chart")
}

/// `helm` for one cluster.
#[derive(Debug, Clone)]
pub struct Helm {
    binary: PathBuf,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    /// Builds helm if it is not cached yet (minutes, once), for `cluster`.
    pub fn new(cluster: &Cluster) -> Result<Self> {
        let script = repo_root().join("tests/helm/build.sh");
        let built =
            Command::new(&script).stdin(Stdio::null()).status().context("cannot run tests/helm/build.sh")?;
        if !built.success() {
            bail!("tests/helm/build.sh failed ({built}); see its output above");
        }
        let output = Command::new(&script).arg("--print-path").output()?;
        let binary = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        Ok(Self { binary, kubeconfig: cluster.kubeconfig().map(Path::to_path_buf) })
    }

    /// Runs helm with `args`; fails with its output unless it succeeds.
    pub fn run<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = self.output(args)?;
        if !output.status.success() {
            bail!("{}", Self::describe(&output));
        }
        Ok(output)
    }

    /// Runs helm with `args` and returns what it did, success or not.
    pub fn output<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
        let mut command = Command::new(&self.binary);
        command.args(&args).stdin(Stdio::null());
        if let Some(path) = &self.kubeconfig {
            command.env("KUBECONFIG", path);
        }
        command.output().with_context(|| format!("cannot run helm {shown}"))
    }

    /// `helm template RELEASE deploy/chart --namespace NS` with `values` (`--set`
    /// arguments and the like): the rendered YAML.
    pub fn template(&self, release: &str, namespace: &str, values: &[&str]) -> Result<String> {
        let chart = chart_dir();
        let mut args =
            vec!["template", release, chart.to_str().context("chart path")?, "--namespace", namespace];
        args.extend_from_slice(values);
        Ok(String::from_utf8(self.run(args)?.stdout)?)
    }

    fn describe(output: &Output) -> String {
        format!(
            "helm failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

/// An installed release, uninstalled on drop.
#[derive(Debug)]
pub struct Release {
    helm: Helm,
    name: String,
    namespace: String,
}

impl Release {
    /// `helm install NAME deploy/chart --namespace NS --wait` with `values`.
    pub fn install(helm: &Helm, name: &str, namespace: &str, values: &[&str]) -> Result<Self> {
        let chart = chart_dir();
        let mut args = vec![
            "install",
            name,
            chart.to_str().context("chart path")?,
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "3m",
        ];
        args.extend_from_slice(values);
        helm.run(args)?;
        Ok(Self { helm: helm.clone(), name: name.to_owned(), namespace: namespace.to_owned() })
    }

    /// `helm upgrade` with `values` (replacing the install's), waiting for the rollout.
    pub fn upgrade(&self, values: &[&str]) -> Result<Output> {
        let chart = chart_dir();
        let mut args = vec![
            "upgrade",
            &self.name,
            chart.to_str().context("chart path")?,
            "--namespace",
            &self.namespace,
            "--wait",
            "--timeout",
            "3m",
        ];
        args.extend_from_slice(values);
        self.helm.run(args)
    }

    /// `helm uninstall --wait`, now.
    pub fn uninstall(mut self) -> Result<Output> {
        let output = self.helm.run(["uninstall", &self.name, "--namespace", &self.namespace, "--wait"]);
        // Nothing left for the drop to do.
        self.name.clear();
        output
    }

    /// The release's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.name.is_empty() || std::env::var_os(crate::namespace::KEEP_ENV).is_some() {
            return;
        }
        if let Err(err) = self.helm.run(["uninstall", &self.name, "--namespace", &self.namespace]) {
            eprintln!("cannot uninstall release {}: {err:#}", self.name);
        }
    }
}
