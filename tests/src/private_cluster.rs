//! A control plane of one test's own, for tests that break it: kill and restart the
//! API server, stop etcd, compact etcd's history, change the API server's flags.
//!
//! Every other test shares one control plane ([`crate::cluster`]), so a fault there
//! would fail them all. A [`PrivateCluster`] is a second instance of the same
//! scripts (`tests/cluster/up.sh` with `DITTOFS_CLUSTER_DIR=target/cluster-faults-<name>`):
//! its own etcd, kube-apiserver and kube-controller-manager on free loopback ports
//! and, unless it is started with no nodes, its own scheduler and kwok nodes, with
//! the CRDs installed. It is stopped (`down.sh`) when dropped, also when the test
//! fails; its component logs stay in `target/cluster-faults-<name>/logs/`.
//!
//! Private control planes of one test process start one at a time: each holds a
//! process-wide lock from [`PrivateCluster::start`] until it is dropped. Faults are
//! timed in seconds, and two control planes and their hosts competing for a 2-core
//! machine would blur them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::ByteString;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Mutex, MutexGuard};

use crate::cluster::repo_root;
use crate::host_process::{HostOptions, HostProcess};
use crate::operator::Metrics;
use crate::wait::wait_until;
use crate::{crds, identity};

/// Held by the running private control plane of this test process.
static EXCLUSIVE: Mutex<()> = Mutex::const_new(());

/// How long killing a component may take to show (the process gone).
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// A process of the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// etcd.
    Etcd,
    /// kube-apiserver.
    ApiServer,
    /// kube-controller-manager (garbage collector, namespace controller).
    ControllerManager,
}

impl Component {
    /// The binary's name, as the scripts name the component.
    pub fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::ApiServer => "kube-apiserver",
            Self::ControllerManager => "kube-controller-manager",
        }
    }

    /// Its pid's variable in `state.env`.
    fn pid_var(self) -> &'static str {
        match self {
            Self::Etcd => "ETCD_PID",
            Self::ApiServer => "KUBE_APISERVER_PID",
            Self::ControllerManager => "KUBE_CONTROLLER_MANAGER_PID",
        }
    }
}

/// Whether `pid` has exited: gone, or a zombie (whose files, sockets included, are
/// closed).
fn exited(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    // `pid (comm) state ...`; comm may hold spaces and parentheses, the state follows
    // the last `)`.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z" | "X") | None)
}

/// A running private control plane; stopped when dropped.
pub struct PrivateCluster {
    name: String,
    dir: PathBuf,
    config: Config,
    // Released after `Drop::drop` has stopped the control plane.
    _exclusive: MutexGuard<'static, ()>,
}

impl std::fmt::Debug for PrivateCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateCluster").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl PrivateCluster {
    /// Starts a fresh cluster in `target/cluster-faults-<name>/` with `nodes` kwok
    /// nodes (0: the bare control plane, where nothing runs pods) and
    /// `apiserver_flags` added to kube-apiserver's, and installs the CRDs.
    ///
    /// Whatever a previous run left in that directory (a test process killed before
    /// its drop ran) is stopped first: a leftover control plane would otherwise be
    /// reused by `up.sh`, with the old run's objects and flags.
    pub async fn start(name: &str, nodes: u32, apiserver_flags: &[String]) -> Result<Self> {
        let exclusive = EXCLUSIVE.lock().await;
        let dir = Self::dir_for(name);
        run_script(&dir, "down.sh", &[], &[]).await?;
        let flags = apiserver_flags.join(" ");
        ensure!(
            apiserver_flags.iter().all(|f| !f.contains(char::is_whitespace)),
            "up.sh splits the extra flags on whitespace: {flags:?}"
        );
        let started = std::time::Instant::now();
        // From here on the control plane may be running: the value owns it, so that
        // an error below still stops it.
        let mut cluster =
            Self { name: name.to_owned(), dir, config: placeholder_config()?, _exclusive: exclusive };
        let nodes = nodes.to_string();
        let env = [("DITTOFS_APISERVER_EXTRA_FLAGS", flags.as_str()), ("CLUSTER_NODES", nodes.as_str())];
        run_script(&cluster.dir, "up.sh", &[], &env).await?;
        let path = cluster.kubeconfig();
        let kubeconfig =
            Kubeconfig::read_from(&path).with_context(|| format!("cannot read {}", path.display()))?;
        cluster.config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("cannot use {}", path.display()))?;
        crds::install_all(&cluster.client()?, &crds::default_dirs(&repo_root())).await?;
        eprintln!(
            "private control plane {name} ready in {:.1} s ({})",
            started.elapsed().as_secs_f64(),
            cluster.dir.display()
        );
        Ok(cluster)
    }

    /// `target/cluster-faults-<name>`.
    pub fn dir_for(name: &str) -> PathBuf {
        repo_root().join("target").join(format!("cluster-faults-{name}"))
    }

    /// The control plane's directory (`DITTOFS_CLUSTER_DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Where the components' logs are.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// A new admin client (`system:masters`), on the caller's runtime.
    pub fn client(&self) -> Result<Client> {
        Client::try_from(self.config.clone()).context("cannot build a Kubernetes client")
    }

    /// `state.env`: pids, ports, the state directory.
    pub fn state(&self) -> Result<BTreeMap<String, String>> {
        let path = self.dir.join("state.env");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        // Written with `printf %q`; none of its values (numbers, paths, a URL) needs
        // quoting, so a value is the text after the first `=`.
        Ok(text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect())
    }

    fn state_value(&self, key: &str) -> Result<String> {
        self.state()?.remove(key).ok_or_else(|| anyhow!("{key} is not in {}/state.env", self.dir.display()))
    }

    /// The pid of `component`, checked to be that component's binary: a recorded pid
    /// alone proves nothing once the process is gone.
    fn running_pid(&self, component: Component) -> Result<Option<u32>> {
        let pid: u32 = self
            .state_value(component.pid_var())?
            .parse()
            .with_context(|| format!("bad {} in state.env", component.pid_var()))?;
        let binary = PathBuf::from(self.state_value("BIN_DIR")?).join(component.name());
        let binary = binary.canonicalize().with_context(|| format!("cannot resolve {}", binary.display()))?;
        // A zombie (killed, not reaped yet) has no readable exe link: gone too.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        Ok((exe.as_deref() == Some(binary.as_path())).then_some(pid))
    }

    /// The pid of `component`, which must be running.
    pub fn pid(&self, component: Component) -> Result<u32> {
        self.running_pid(component)?.ok_or_else(|| anyhow!("{} is not running", component.name()))
    }

    /// Sends SIGKILL to `component` (a crash: nothing is flushed or handed over) and
    /// waits until the process is gone.
    pub async fn kill(&self, component: Component) -> Result<()> {
        let pid = self.pid(component)?;
        let status = tokio::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .await
            .context("cannot run kill")?;
        ensure!(status.success(), "kill -KILL {pid} ({}) failed: {status}", component.name());
        // Until it has exited, not only until its exe link is gone: an exiting process
        // drops its memory (and that link) before it closes its files, so its ports
        // may still be bound for a moment, and a restart on them would fail.
        wait_until(format!("{} (pid {pid}) to die", component.name()), KILL_TIMEOUT, || async {
            Ok(exited(pid).then_some(()))
        })
        .await
    }

    /// Starts `component` again exactly as `up.sh` started it (same ports,
    /// certificates, data directory and flags; `restart.sh`) and waits until it is
    /// healthy (the API server: `/readyz` ok, which needs etcd).
    pub async fn restart(&self, component: Component) -> Result<()> {
        run_script(&self.dir, "restart.sh", &[component.name()], &[]).await
    }

    /// One request to etcd's HTTP/JSON gateway (`/v3/kv/range`, ...): there is no
    /// etcdctl, and the gateway is served on the client URL anyway.
    pub async fn etcd(&self, path: &str, body: &Value) -> Result<Value> {
        let port = self.state_value("ETCD_CLIENT_PORT")?;
        let body = serde_json::to_vec(body)?;
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>()?)).await?;
            let head = format!(
                "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            anyhow::Ok(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .with_context(|| format!("etcd POST {path}: no answer"))?
            .with_context(|| format!("etcd POST {path}"))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head.split_whitespace().nth(1).unwrap_or_default();
        ensure!(code == "200", "etcd POST {path} answered {code}: {body}");
        serde_json::from_str(body).with_context(|| format!("etcd POST {path}: not JSON: {body}"))
    }

    /// etcd's current revision.
    pub async fn etcd_revision(&self) -> Result<u64> {
        // A range over a key that never exists still carries the header.
        let answer = self.etcd("/v3/kv/range", &json!({"key": b64(b"/e2e-revision-probe")})).await?;
        revision_of(&answer)
    }

    /// The value stored at `key`, if any.
    pub async fn etcd_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let answer = self.etcd("/v3/kv/range", &json!({"key": b64(key.as_bytes())})).await?;
        let Some(value) = answer.pointer("/kvs/0/value") else { return Ok(None) };
        let bytes: ByteString = serde_json::from_value(value.clone()).context("etcd value is not base64")?;
        Ok(Some(bytes.0))
    }

    /// Writes `value` at `key` behind the API server's back; returns the new revision.
    pub async fn etcd_put(&self, key: &str, value: &[u8]) -> Result<u64> {
        let answer =
            self.etcd("/v3/kv/put", &json!({"key": b64(key.as_bytes()), "value": b64(value)})).await?;
        revision_of(&answer)
    }

    /// Compacts etcd's history up to `revision`: every older resourceVersion is gone,
    /// and a watch or list from one fails with 410 Gone.
    pub async fn compact_etcd(&self, revision: u64) -> Result<()> {
        self.etcd("/v3/kv/compaction", &json!({"revision": revision.to_string(), "physical": true})).await?;
        Ok(())
    }

    /// The API server's `/metrics`, read as the admin.
    pub async fn apiserver_metrics(&self, client: &Client) -> Result<Metrics> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        let text = client.request_text(request).await.context("cannot read the API server's /metrics")?;
        Ok(Metrics::parse(&text))
    }

    /// Writes to `path` (mode 0600) a copy of the admin kubeconfig that impersonates
    /// `user` (see [`identity::write_impersonating_kubeconfig`]).
    pub fn write_impersonating_kubeconfig(&self, user: &str, path: &Path) -> Result<()> {
        let kubeconfig = self.kubeconfig();
        let mut config = Kubeconfig::read_from(&kubeconfig)
            .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
        ensure!(config.auth_infos.len() == 1, "{} should hold the admin only", kubeconfig.display());
        for auth in &mut config.auth_infos {
            let info = auth.auth_info.get_or_insert_with(Default::default);
            info.impersonate = Some(user.to_owned());
            info.impersonate_groups = None;
        }
        let yaml = serde_yaml_ng::to_string(&config).context("cannot serialize the kubeconfig")?;
        identity::write_private(path, yaml.as_bytes())
    }

    /// Starts a host replica against this control plane: `options` with this
    /// control plane's admin kubeconfig unless they name another.
    pub async fn spawn_host(&self, options: HostOptions) -> Result<HostProcess> {
        HostProcess::spawn_with_default_kubeconfig(options, Some(&self.kubeconfig())).await
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Synchronous: drop cannot await, and the test's runtime may be ending.
        let status = std::process::Command::new(repo_root().join("tests/cluster/down.sh"))
            .env("DITTOFS_CLUSTER_DIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(std::io::stderr())
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("down.sh of private control plane {} failed: {status}", self.name),
            Err(e) => eprintln!("cannot run down.sh of private control plane {}: {e}", self.name),
        }
    }
}

/// Runs `tests/cluster/<script>` for the control plane in `dir`; its output goes to
/// stderr, where the test harness captures it.
async fn run_script(dir: &Path, script: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let path = repo_root().join("tests/cluster").join(script);
    let mut command = tokio::process::Command::new(&path);
    command.args(args).env("DITTOFS_CLUSTER_DIR", dir).stdin(Stdio::null()).stdout(std::io::stderr());
    for (key, value) in env {
        command.env(key, value);
    }
    let status = command.status().await.with_context(|| format!("cannot run {}", path.display()))?;
    if !status.success() {
        bail!(
            "{} {} failed ({status}); its output is above, component logs are in {}",
            path.display(),
            args.join(" "),
            dir.join("logs").display()
        );
    }
    Ok(())
}

/// A configuration that is never used to connect: what a [`PrivateCluster`] holds
/// between `up.sh` starting and its kubeconfig being read.
fn placeholder_config() -> Result<Config> {
    Ok(Config::new("https://127.0.0.1:1".parse().context("a fixed URL")?))
}

fn b64(bytes: &[u8]) -> Value {
    // ByteString serializes as base64, which is what the gateway wants for bytes.
    serde_json::to_value(ByteString(bytes.to_vec())).unwrap_or(Value::Null)
}

/// `header.revision` of an etcd gateway answer (an int64, so a JSON string).
fn revision_of(answer: &Value) -> Result<u64> {
    let revision =
        answer.pointer("/header/revision").ok_or_else(|| anyhow!("no header.revision in {answer}"))?;
    match revision {
        Value::String(s) => s.parse().with_context(|| format!("bad revision {s:?}")),
        other => other.as_u64().ok_or_else(|| anyhow!("bad revision {other}")),
    }
}
