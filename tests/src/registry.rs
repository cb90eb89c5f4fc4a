//! An OCI registry of one test's own: the CNCF Distribution registry
//! (`tests/registry/build.sh` builds and caches it from its Go module), on a free
//! loopback port, with its storage in a temporary directory.
//!
//! It can be stopped and started again on the same port and storage, to test a
//! registry that goes away. It is killed when dropped; its log stays in
//! `target/registry-<name>/registry.log`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use crate::cluster::repo_root;
use crate::wait::wait_until;

/// How long the registry may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) test registry.
pub struct TestRegistry {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    // (user, password) when it requires basic auth.
    user: Option<(String, String)>,
    child: Option<Child>,
}

impl std::fmt::Debug for TestRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistry").field("port", &self.port).finish_non_exhaustive()
    }
}

/// The registry binary, built (once, cached) if needed.
async fn binary() -> Result<PathBuf> {
    let script = repo_root().join("tests/registry/build.sh");
    let status = Command::new(&script)
        .stdin(Stdio::null())
        .status()
        .await
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status}); its output says why", script.display());
    }
    let output = Command::new(&script).arg("--print-path").output().await?;
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

/// A free loopback port below the kernel's ephemeral range (which starts at 32768
/// by default), as tests/cluster/up.sh picks its own: port 0 would hand out one from
/// that range, which any outgoing connection may take before the registry binds it,
/// or while it is stopped between [`TestRegistry::stop`] and [`TestRegistry::resume`].
fn free_port() -> Result<u16> {
    use std::hash::{BuildHasher as _, RandomState};
    let random = RandomState::new();
    for attempt in 0u32..200 {
        let port = 20000 + u16::try_from(random.hash_one(attempt) % 12000).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port between 20000 and 32000 after 200 tries")
}

impl TestRegistry {
    /// Starts a registry for the test `name` (storage in `target/registry-<name>/`,
    /// emptied first) and waits until it answers.
    pub async fn start(name: &str) -> Result<Self> {
        Self::start_with(name, None).await
    }

    /// [`TestRegistry::start`], requiring basic auth as `user` with `password` for
    /// every request (an htpasswd file with its bcrypt hash).
    pub async fn start_with_user(name: &str, user: &str, password: &str) -> Result<Self> {
        Self::start_with(name, Some((user.to_owned(), password.to_owned()))).await
    }

    async fn start_with(name: &str, user: Option<(String, String)>) -> Result<Self> {
        let binary = binary().await?;
        let dir = repo_root().join("target").join(format!("registry-{name}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir.join("storage"))?;
        let mut registry = Self { binary, dir, port: free_port()?, user, child: None };
        registry.write_config()?;
        registry.resume().await?;
        Ok(registry)
    }

    fn write_config(&self) -> Result<()> {
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: dittofs-test-registry\n",
            storage = self.dir.join("storage").display(),
            port = self.port,
        );
        if let Some((user, password)) = &self.user {
            let hash = bcrypt::hash(password, 4).context("cannot hash the test password")?;
            let htpasswd = self.dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: dittofs-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(self.dir.join("config.yml"), config)?;
        Ok(())
    }

    /// `127.0.0.1:<port>`: the registry's host, for references and
    /// `--insecure-registry`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The directory of its storage, config and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts it again after [`TestRegistry::stop`] (same port, same storage).
    pub async fn resume(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("registry.log"))?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            // Its own telemetry exporter would try to reach the network.
            .env("OTEL_TRACES_EXPORTER", "none")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        let host = self.host();
        // With auth, an answer of 401 is an answer.
        let ok: &[&[u8]] = if self.user.is_some() { &[b" 200", b" 401"] } else { &[b" 200"] };
        wait_until(&format!("the registry on {host} to answer"), START_TIMEOUT, || async {
            Ok(ping(&host, ok).await.then_some(()))
        })
        .await
        .with_context(|| format!("see {}", self.dir.join("registry.log").display()))
    }

    /// Stops it (SIGKILL: a registry that goes away).
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

/// Whether `GET /v2/` on `host` answers with one of the status codes `ok` (each as
/// ` <code>`).
async fn ping(host: &str, ok: &[&[u8]]) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(host).await else { return false };
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: {host}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response)).await;
    let status = response.get(8..12).unwrap_or_default();
    matches!(read, Ok(Ok(_))) && response.starts_with(b"HTTP/1.") && ok.contains(&status)
}
