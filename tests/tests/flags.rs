//! The real binary's kubectl-style and controller-runtime-style flags against the
//! local control plane: `--kubeconfig` and `--context` choose the cluster over
//! `KUBECONFIG`, an unknown context is refused with its name, `--log-level` overrides
//! `RUST_LOG`, and the old `--http-addr` says what replaced it.

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::build::build_command;
use e2e::deploy::test_dir;
use e2e::host_process::{HostOptions, HostProcess};
use e2e::operator::artifacts;
use e2e::{TestNamespace, cluster};
use kube::config::{Context, Kubeconfig};

/// A copy of the cluster's kubeconfig with a second, unreachable context `broken`
/// made current, and the working one named `real`.
fn two_context_kubeconfig(cluster: &e2e::Cluster, path: &std::path::Path) -> Result<()> {
    let mut config = match cluster.kubeconfig() {
        Some(file) => Kubeconfig::read_from(file)?,
        None => Kubeconfig::read().context("cannot read the kubeconfig of KUBECONFIG")?,
    };
    let current = config.current_context.clone().context("no current context")?;
    let named = config.contexts.iter_mut().find(|c| c.name == current).context("no such context")?;
    named.name = "real".to_owned();
    let context = named.context.clone().context("an empty context")?;
    let mut nowhere = config.clusters.first().context("no cluster")?.clone();
    nowhere.name = "nowhere".to_owned();
    if let Some(cluster) = nowhere.cluster.as_mut() {
        cluster.server = Some("https://127.0.0.1:1".to_owned());
    }
    config.clusters.push(nowhere);
    let mut broken = config.contexts.iter().find(|c| c.name == "real").context("no context")?.clone();
    broken.name = "broken".to_owned();
    broken.context = Some(Context { cluster: "nowhere".to_owned(), ..context });
    config.contexts.push(broken);
    config.current_context = Some("broken".to_owned());
    e2e::identity::write_private(path, serde_yaml_ng::to_string(&config)?.as_bytes())
}

/// Runs `wasm-operator <args>` to its end (at most a minute).
async fn run_host(args: &[&str]) -> Result<Output> {
    let host = artifacts().await?.host.clone();
    let mut command = build_command(&host);
    command.args(args).env("KUBECONFIG", "/nonexistent/kubeconfig").stdin(Stdio::null());
    let child = tokio::process::Command::from(command).output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .context("the host did not exit")?
        .map_err(Into::into)
}

#[tokio::test]
async fn kubeconfig_and_context_flags_choose_the_cluster_over_kubeconfig_env() -> Result<()> {
    let cluster = cluster().await?;
    let ns = TestNamespace::create(cluster, "flags-context").await?;
    let path = test_dir(ns.name())?.join("two-contexts.kubeconfig");
    two_context_kubeconfig(cluster, &path)?;
    let flag = path.to_str().context("path")?;
    // KUBECONFIG names no file: only the flags can lead the host to the cluster.
    let host = HostProcess::spawn(
        cluster,
        HostOptions::new(ns.name(), "context")
            .kubeconfig(std::path::Path::new("/nonexistent/kubeconfig"))
            .args(["--kubeconfig", flag, "--context", "real"]),
    )
    .await?;
    host.wait_ready().await?;
    host.terminate()?;

    // Its current context, unreachable, is not what was asked for: no silent fallback.
    let module = artifacts().await?.module.clone();
    let module = module.to_str().context("path")?;
    let unknown = run_host(&["run", "--module", module, "--kubeconfig", flag, "--context", "nosuch"]).await?;
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    ensure!(!unknown.status.success(), "an unknown context was accepted");
    ensure!(
        stderr.contains("nosuch") && stderr.contains(flag),
        "the error names neither context nor file:\n{stderr}"
    );
    let missing = run_host(&["run", "--module", module, "--kubeconfig", "/nonexistent/other"]).await?;
    let stderr = String::from_utf8_lossy(&missing.stderr);
    ensure!(!missing.status.success(), "a missing kubeconfig was accepted");
    ensure!(stderr.contains("/nonexistent/other"), "the error does not name the file:\n{stderr}");
    Ok(())
}

#[tokio::test]
async fn log_level_overrides_rust_log_and_http_addr_names_its_replacements() -> Result<()> {
    let cluster = cluster().await?;
    let ns = TestNamespace::create(cluster, "flags-log").await?;
    // The harness sets RUST_LOG=info; the flag wins.
    let host =
        HostProcess::spawn(cluster, HostOptions::new(ns.name(), "debug").args(["--log-level", "debug"]))
            .await?;
    host.wait_ready().await?;
    ensure!(!host.log_lines_at("DEBUG").is_empty(), "--log-level debug logged nothing at DEBUG");
    host.terminate()?;

    let old = run_host(&["run", "--module", "m.wasm", "--http-addr", "0.0.0.0:8080"]).await?;
    let stderr = String::from_utf8_lossy(&old.stderr);
    ensure!(!old.status.success(), "--http-addr was accepted");
    ensure!(
        stderr.contains("--metrics-bind-address") && stderr.contains("--health-probe-bind-address"),
        "--http-addr does not say what replaced it:\n{stderr}"
    );
    Ok(())
}
