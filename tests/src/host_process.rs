//! Replicas of the real host: `wasm-operator run` as child processes with any flags
//! (leader election, another identity's kubeconfig), which a test can kill with
//! SIGKILL (a crash: the Lease is not released) or stop with SIGTERM.
//!
//! [`crate::operator::Operator`], the one-host-per-test runner, is one of these; tests
//! that need several replicas, extra flags and crashes use them directly. The binary and the
//! module are the ones [`crate::operator::artifacts`] builds once per test process.
//! Each replica serves HTTP on an ephemeral loopback port, read back from its JSON
//! log; logs stay under `target/e2e/<namespace>/` for diagnosis. A replica is killed
//! when dropped, also when the test panics.

use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::cluster::Cluster;
use crate::operator::{Metrics, artifact_dir, artifacts};
use crate::wait::{DEFAULT_TIMEOUT, wait_until};

/// How to run one replica.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The namespace the replica watches (`--namespace`); its logs go under
    /// `target/e2e/<namespace>/`.
    pub namespace: String,
    /// Watch every namespace instead (no `--namespace`); `namespace` still names the
    /// log directory. Give a `--label-selector` then, or the replica reconciles the
    /// primaries of every other test.
    pub all_namespaces: bool,
    /// A name for the replica in its log file's name and in messages.
    pub name: String,
    /// The kubeconfig to use (default: the cluster's own, as admin).
    pub kubeconfig: Option<PathBuf>,
    /// Extra arguments of `run`, e.g. `--leader-elect`.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl HostOptions {
    /// A replica named `name` watching `namespace`, as the admin.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            all_namespaces: false,
            kubeconfig: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds arguments to `run`.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Watches every namespace, only primaries matching `label_selector`.
    #[must_use]
    pub fn all_namespaces(mut self, label_selector: &str) -> Self {
        self.all_namespaces = true;
        self.args.extend(["--label-selector".into(), label_selector.into()]);
        self
    }

    /// Runs with this kubeconfig.
    #[must_use]
    pub fn kubeconfig(mut self, path: &Path) -> Self {
        self.kubeconfig = Some(path.to_owned());
        self
    }

    /// Sets an environment variable.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A running `wasm-operator run`; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct HostProcess {
    name: String,
    child: Mutex<Option<Child>>,
    pid: u32,
    metrics_addr: SocketAddr,
    probe_addr: SocketAddr,
    log: PathBuf,
}

impl HostProcess {
    /// Starts a replica and waits until it serves HTTP (not until it is ready: see
    /// [`HostProcess::wait_ready`]).
    pub async fn spawn(cluster: &Cluster, options: HostOptions) -> Result<Self> {
        Self::spawn_with_default_kubeconfig(options, cluster.kubeconfig()).await
    }

    /// Starts a replica like [`HostProcess::spawn`], with `default_kubeconfig` where
    /// `options` name none (`None`: the host's own default, `KUBECONFIG` as inherited).
    pub async fn spawn_with_default_kubeconfig(
        options: HostOptions,
        default_kubeconfig: Option<&Path>,
    ) -> Result<Self> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let artifacts = artifacts().await?;
        let log = artifact_dir(&options.namespace)?.join(format!(
            "host-{}-{}.log",
            options.name,
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(&artifacts.host);
        command
            .args(["--log-format", "json", "run"])
            .args(["--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0"])
            .args(if options.all_namespaces {
                vec![]
            } else {
                vec!["--namespace", options.namespace.as_str()]
            })
            .arg("--module")
            .arg(&artifacts.module)
            .args(&options.args)
            .env("RUST_LOG", "info")
            // The identity in the Lease and in events: recognisable in the logs.
            .env("POD_NAME", &options.name)
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("cannot share the log file")?)
            .stderr(file);
        for (key, value) in &options.env {
            command.env(key, value);
        }
        if let Some(path) = options.kubeconfig.as_deref().or(default_kubeconfig) {
            command.env("KUBECONFIG", path);
        }
        let child = command.spawn().with_context(|| format!("cannot start {}", artifacts.host.display()))?;
        let pid = child.id();
        let mut host = Self {
            name: options.name,
            child: Mutex::new(Some(child)),
            pid,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            probe_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        host.metrics_addr = host.wait_for_addr("serving /metrics").await?;
        host.probe_addr = host.wait_for_addr("serving /healthz").await?;
        Ok(host)
    }

    /// The replica's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The address of `/metrics`.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The address of `/healthz`, `/readyz` and `/module`.
    pub fn probe_addr(&self) -> SocketAddr {
        self.probe_addr
    }

    /// Its log file (JSON lines).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The address the log line starting with `message` names.
    async fn wait_for_addr(&self, message: &str) -> Result<SocketAddr> {
        let what = format!("replica {} to log {message:?} (log: {})", self.name, self.log.display());
        wait_until(what, DEFAULT_TIMEOUT, || async {
            self.check_alive()?;
            for line in self.log_lines() {
                let serving =
                    line.get("message").and_then(Value::as_str).is_some_and(|m| m.starts_with(message));
                if serving && let Some(addr) = line.get("addr").and_then(Value::as_str) {
                    return Ok(Some(
                        addr.parse::<SocketAddr>().with_context(|| format!("bad addr {addr:?}"))?,
                    ));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Waits until `/readyz` answers 200 (every watch has listed).
    pub async fn wait_ready(&self) -> Result<()> {
        let what = format!("replica {} to be ready (log: {})", self.name, self.log.display());
        wait_until(what, DEFAULT_TIMEOUT, || async {
            self.check_alive()?;
            Ok(self.get("/readyz").await.is_ok_and(|(code, _)| code == 200).then_some(()))
        })
        .await
    }

    /// Fails, with the end of the log, when the process has exited.
    pub fn check_alive(&self) -> Result<()> {
        let mut child = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(child) = child.as_mut() else { bail!("replica {} was stopped", self.name) };
        if let Some(status) = child.try_wait()? {
            bail!(
                "replica {} exited ({status}); the end of its log ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// The log so far, one JSON value per line (other lines as strings).
    pub fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_owned())))
            .collect()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Log lines at `level` (`ERROR`, `WARN`, ...).
    pub fn log_lines_at(&self, level: &str) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|l| l.get("level").and_then(Value::as_str) == Some(level))
            .collect()
    }

    /// A plain HTTP/1.0 GET of `/metrics` on the metrics port, of any other path on
    /// the probe port: status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let addr = if path == "/metrics" { self.metrics_addr } else { self.probe_addr };
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: e2e\r\n\r\n").as_bytes()).await?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await?;
            anyhow::Ok(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .with_context(|| format!("GET {path}: no answer"))?
            .with_context(|| format!("GET {path}"))?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((code, body.to_owned()))
    }

    /// `/metrics`, parsed.
    pub async fn metrics(&self) -> Result<Metrics> {
        let (code, body) = self.get("/metrics").await?;
        if code != 200 {
            bail!("replica {}: /metrics answered {code}: {body}", self.name);
        }
        Ok(Metrics::parse(&body))
    }

    /// Whether `wasm_operator_leader` is 1.
    pub async fn is_leader(&self) -> Result<bool> {
        Ok(self.metrics().await?.sum("wasm_operator_leader", &[]) >= 1.0)
    }

    /// SIGKILL: the process dies at once, without releasing the Lease.
    pub fn kill(&self) -> Result<ExitStatus> {
        let taken = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let Some(mut child) = taken else { bail!("replica {} was already stopped", self.name) };
        child.kill().with_context(|| format!("cannot kill replica {}", self.name))?;
        child.wait().with_context(|| format!("cannot reap replica {}", self.name))
    }

    /// SIGTERM (as the kubelet does) and wait for the exit; SIGKILL after 30 s.
    pub fn terminate(&self) -> Result<ExitStatus> {
        let taken = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let Some(mut child) = taken else { bail!("replica {} was already stopped", self.name) };
        let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        if term.is_ok_and(|s| s.success()) {
            for _ in 0..300 {
                if let Some(status) = child.try_wait()? {
                    return Ok(status);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = child.kill();
        let status = child.wait()?;
        bail!("replica {} did not exit on SIGTERM within 30 s ({status}); killed", self.name)
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let taken = self.child.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(mut child) = taken {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
