//! Where modules come from: a file (`--module PATH`), a ConfigMap key
//! (`--module-configmap NS/NAME[:KEY]`) or a registry (`--module oci://…`, in
//! [`super::oci`]), each watched for new versions (docs/abi.md, *Hot swap acceptance
//! checks*).
//!
//! A source task publishes the source's latest state on a `tokio::sync::watch`
//! channel ([`SourceState`]): intermediate versions that arrive while the swapper is
//! busy validating are skipped (only the newest matters), and a version is never
//! validated twice in a row because the swapper compares digests.
//!
//! - **File**: polled every [`FILE_POLL_INTERVAL`]. The path is resolved on every poll
//!   (a mounted ConfigMap volume swaps its `..data` symlink atomically), and the file
//!   is re-read when its resolved path, size or mtime changes; the swapper then
//!   compares digests. Polling has no watch descriptors to lose when the directory
//!   behind a symlink is replaced.
//! - **ConfigMap**: a single-object watch (field selector `metadata.name=NAME`, which
//!   is also what a name-restricted RBAC rule allows) of the key in `binaryData`. A
//!   swap then does not wait for the kubelet's volume sync (up to a minute).
//!
//! Payloads may be gzip-compressed (detected by the gzip magic, see [`decode`]),
//! which is what `wasm-operator module push` uploads: a ConfigMap holds at most 1 MiB.
//!
//! Each payload carries the module's signature when there is one
//! ([`super::trust`]): the file `PATH.sig` beside a module file (a change of either
//! is a new version), the key `<KEY>.sig` (in `binaryData` or `data`) beside a
//! ConfigMap's module key.

use super::oci::{OciError, OciSource, Registry, follow_oci};
use super::trust::{SIGNATURE_SUFFIX, read_signature_file, signature_path};
use crate::runtime::digest;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use prometheus_client::metrics::counter::Counter;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

/// The key of the ConfigMap's `binaryData` that holds the module, unless given.
pub const DEFAULT_KEY: &str = "module.wasm";

/// How often a module file is looked at.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The largest module (uncompressed) a source accepts; bounds a gzip bomb too.
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// The largest compressed module `module push` uploads: a ConfigMap's data is capped
/// at 1 MiB by the API server, and the object's metadata (and other keys, managed
/// fields) need room too.
pub const MAX_UPLOAD_BYTES: usize = (1 << 20) - (64 << 10);

/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why a source argument or payload is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `--module-configmap` is not `NS/NAME[:KEY]`.
    #[error("invalid ConfigMap source {0:?}: expected NAMESPACE/NAME[:KEY]")]
    Argument(String),
    /// The gzip stream is corrupt.
    #[error("the module is gzip-compressed but does not decompress")]
    Gzip(#[source] std::io::Error),
    /// The module is larger than [`MAX_MODULE_BYTES`].
    #[error("the module is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The compressed module does not fit a ConfigMap.
    #[error(
        "the module is {size} bytes after gzip compression, more than the {limit} bytes a ConfigMap can hold with margin (the API server caps a ConfigMap at 1 MiB); make the module smaller (opt-level \"s\", strip, wasm-opt)"
    )]
    TooLargeForConfigMap {
        /// The compressed size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Compressing failed (an I/O error writing to memory: not expected).
    #[error("cannot compress the module")]
    Compress(#[source] std::io::Error),
    /// The upload failed.
    #[error("cannot apply ConfigMap {source_ref}")]
    Upload {
        /// The ConfigMap.
        source_ref: ConfigMapSource,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
}

/// A module in a ConfigMap's `binaryData` key: `NAMESPACE/NAME[:KEY]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapSource {
    /// The ConfigMap's namespace.
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
    /// The `binaryData` key.
    pub key: String,
}

impl std::fmt::Display for ConfigMapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.key)
    }
}

impl std::str::FromStr for ConfigMapSource {
    type Err = SourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || SourceError::Argument(text.to_owned());
        let (object, key) = match text.split_once(':') {
            Some((object, key)) => (object, key),
            None => (text, DEFAULT_KEY),
        };
        let (namespace, name) = object.split_once('/').ok_or_else(invalid)?;
        // DNS-1123 names and ConfigMap keys ([-._a-zA-Z0-9]+); the API server has the
        // last word, this only catches the typos that would watch nothing forever.
        let dns = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        let key_ok = !key.is_empty()
            && key.len() <= 253
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !dns(namespace) || !dns(name) || !key_ok {
            return Err(invalid());
        }
        Ok(Self { namespace: namespace.to_owned(), name: name.to_owned(), key: key.to_owned() })
    }
}

impl ConfigMapSource {
    /// The ConfigMap API of the source's namespace.
    pub fn api(&self, client: &Client) -> Api<ConfigMap> {
        Api::namespaced(client.clone(), &self.namespace)
    }

    /// The key of the module's signature: `<KEY>.sig`.
    pub fn signature_key(&self) -> String {
        format!("{}{SIGNATURE_SUFFIX}", self.key)
    }

    /// Server-side applies `bytes` (as given: compress first) to the key and
    /// `signature` to `<KEY>.sig` (in `data`: it is text), in one request, as
    /// `field_manager`, creating the ConfigMap if needed. Without a signature, one
    /// this field manager applied before is removed, so that it never sits beside a
    /// module it does not sign. Other keys are left alone. Returns the ConfigMap's new
    /// resourceVersion.
    pub async fn upload(
        &self,
        client: &Client,
        bytes: Vec<u8>,
        signature: Option<Vec<u8>>,
        field_manager: &str,
    ) -> Result<String, SourceError> {
        let data = signature.map(|signature| {
            let text = String::from_utf8_lossy(signature.trim_ascii()).into_owned();
            BTreeMap::from([(self.signature_key(), text)])
        });
        let object = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            binary_data: Some(BTreeMap::from([(self.key.clone(), ByteString(bytes))])),
            data,
            ..Default::default()
        };
        let params = PatchParams::apply(field_manager).force();
        let applied =
            self.api(client).patch(&self.name, &params, &Patch::Apply(&object)).await.map_err(|source| {
                SourceError::Upload { source_ref: self.clone(), source: Box::new(source) }
            })?;
        Ok(applied.metadata.resource_version.unwrap_or_default())
    }
}

/// Where the operator's modules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// A file, watched for changes.
    File(PathBuf),
    /// A ConfigMap key, watched through the API.
    ConfigMap(ConfigMapSource),
    /// A reference in an OCI registry, polled ([`super::oci`]).
    Oci(OciSource),
}

impl std::fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleSource::File(path) => write!(f, "file {}", path.display()),
            ModuleSource::ConfigMap(cm) => write!(f, "configmap {cm}"),
            ModuleSource::Oci(oci) => write!(f, "{}", oci.reference),
        }
    }
}

/// One version of the module as the source holds it (possibly compressed).
#[derive(Debug, Clone)]
pub struct Payload {
    /// The bytes as stored.
    pub raw: Vec<u8>,
    /// What it is, for logs and events (`configmap ns/name:key@rv`, `file /path`).
    pub origin: String,
    /// The ConfigMap, for events about this version (ConfigMap sources only; boxed,
    /// it is most of a payload's size).
    pub reference: Option<Box<ObjectReference>>,
    /// The module's signatures as stored (base64): none, the one beside it, or those
    /// a registry holds for it.
    pub signatures: Vec<Vec<u8>>,
}

impl Payload {
    /// What tells this version from another: the digests of the bytes as stored and
    /// of the signatures, so that a new signature for the same module is looked at
    /// again.
    pub fn identity(&self) -> String {
        let mut identity = digest(&self.raw);
        for signature in &self.signatures {
            identity.push('+');
            identity.push_str(&digest(signature));
        }
        identity
    }
}

/// The state of a source, as its task last saw it.
#[derive(Debug, Clone)]
pub enum SourceState {
    /// Not looked at yet.
    Unknown,
    /// There is no module there (why, for the log).
    Missing(String),
    /// A module version.
    Present(Payload),
}

/// Whether `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// The module in `raw`: decompressed when it is gzip (a wasm module starts with
/// `\0asm`, never with the gzip magic), as is otherwise; at most [`MAX_MODULE_BYTES`].
pub fn decode(raw: &[u8]) -> Result<Vec<u8>, SourceError> {
    if !is_gzip(raw) {
        if raw.len() > MAX_MODULE_BYTES {
            return Err(SourceError::TooLarge { limit: MAX_MODULE_BYTES });
        }
        return Ok(raw.to_vec());
    }
    let mut out = Vec::new();
    let limit = u64::try_from(MAX_MODULE_BYTES).unwrap_or(u64::MAX);
    flate2::read::MultiGzDecoder::new(raw)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(SourceError::Gzip)?;
    if out.len() > MAX_MODULE_BYTES {
        return Err(SourceError::TooLarge { limit: MAX_MODULE_BYTES });
    }
    Ok(out)
}

/// `module` gzip-compressed (best compression), refused when it would not fit a
/// ConfigMap ([`MAX_UPLOAD_BYTES`]).
pub fn compress_for_configmap(module: &[u8]) -> Result<Vec<u8>, SourceError> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(module).map_err(SourceError::Compress)?;
    let compressed = encoder.finish().map_err(SourceError::Compress)?;
    check_upload_size(compressed.len())?;
    Ok(compressed)
}

/// Refuses a compressed size that would not fit a ConfigMap.
pub fn check_upload_size(size: usize) -> Result<(), SourceError> {
    if size > MAX_UPLOAD_BYTES {
        return Err(SourceError::TooLargeForConfigMap { size, limit: MAX_UPLOAD_BYTES });
    }
    Ok(())
}

/// Starts the task that follows `source`; its state arrives on the returned channel,
/// and a registry's failures are counted in `errors`. Aborting the task stops it.
/// Fails only when a registry's client cannot be built (its credentials, say).
pub fn spawn(
    source: &ModuleSource,
    client: Option<Client>,
    errors: Counter,
) -> Result<(channel::Receiver<SourceState>, JoinHandle<()>), OciError> {
    let (tx, rx) = channel::channel(SourceState::Unknown);
    let task = match (source, client) {
        (ModuleSource::File(path), _) => tokio::spawn(follow_file(path.clone(), FILE_POLL_INTERVAL, tx)),
        (ModuleSource::ConfigMap(cm), Some(client)) => tokio::spawn(follow_configmap(client, cm.clone(), tx)),
        (ModuleSource::ConfigMap(_), None) => {
            tx.send_replace(SourceState::Missing("a ConfigMap source needs a cluster client".into()));
            tokio::spawn(async move { tx.closed().await })
        }
        (ModuleSource::Oci(oci), _) => {
            let registry = Registry::new(&oci.reference, &oci.registry)?;
            tokio::spawn(follow_oci(registry, oci.clone(), errors, tx))
        }
    };
    Ok((rx, task))
}

/// What tells one version of a file from the next without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    resolved: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

async fn stamp(path: &Path) -> std::io::Result<FileStamp> {
    let resolved = tokio::fs::canonicalize(path).await?;
    let meta = tokio::fs::metadata(&resolved).await?;
    Ok(FileStamp { resolved, len: meta.len(), modified: meta.modified().ok() })
}

/// The module file's stamp and its signature's (`None` when there is no signature
/// file).
async fn stamps(path: &Path) -> Result<(FileStamp, Option<FileStamp>), String> {
    let module = stamp(path).await.map_err(|err| err.to_string())?;
    let signature = stamp(&signature_path(path)).await.ok();
    Ok((module, signature))
}

/// Reads the signature file of the module at `path` (`PATH.sig`), if there is one.
/// A signature file that exists but cannot be read is an error: the module must not
/// be taken for unsigned then. Bounded ([`read_signature_file`]): a signature over
/// the limit is refused later, for its size.
pub async fn read_signature(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let signature = signature_path(path);
    tokio::task::spawn_blocking(move || read_signature_file(&signature))
        .await
        .map_err(std::io::Error::other)?
}

/// Polls `path` (and its signature, `PATH.sig`) every `interval` and publishes each
/// new version.
pub async fn follow_file(path: PathBuf, interval: Duration, tx: channel::Sender<SourceState>) {
    let mut last: Option<Result<(FileStamp, Option<FileStamp>), String>> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tx.closed() => return,
        }
        let current = stamps(&path).await;
        if last.as_ref() == Some(&current) {
            continue;
        }
        let state = match &current {
            Ok((stamp, _)) => match (tokio::fs::read(&stamp.resolved).await, read_signature(&path).await) {
                (Ok(raw), Ok(signature)) => SourceState::Present(Payload {
                    raw,
                    origin: format!("file {}", path.display()),
                    reference: None,
                    signatures: signature.into_iter().collect(),
                }),
                (Err(err), _) => SourceState::Missing(format!("cannot read {}: {err}", path.display())),
                (_, Err(err)) => {
                    SourceState::Missing(format!("cannot read {}: {err}", signature_path(&path).display()))
                }
            },
            Err(err) => SourceState::Missing(format!("cannot read {}: {err}", path.display())),
        };
        // A read that failed is retried on the next poll even if the stamp holds.
        last = matches!(state, SourceState::Present(_)).then_some(current);
        tx.send_replace(state);
    }
}

/// The source's state from one observed ConfigMap.
fn state_of(cm: &ConfigMap, source: &ConfigMapSource) -> SourceState {
    let origin = format!("configmap {source}@{}", cm.metadata.resource_version.as_deref().unwrap_or("?"));
    if let Some(ByteString(raw)) = cm.binary_data.as_ref().and_then(|d| d.get(&source.key)) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: cm.metadata.name.clone(),
            namespace: cm.metadata.namespace.clone(),
            uid: cm.metadata.uid.clone(),
            resource_version: cm.metadata.resource_version.clone(),
            field_path: None,
        };
        let signature_key = source.signature_key();
        let signature = cm
            .binary_data
            .as_ref()
            .and_then(|d| d.get(&signature_key))
            .map(|ByteString(bytes)| bytes.clone())
            .or_else(|| {
                cm.data.as_ref().and_then(|d| d.get(&signature_key)).map(|text| text.clone().into_bytes())
            });
        return SourceState::Present(Payload {
            raw: raw.clone(),
            origin,
            reference: Some(Box::new(reference)),
            signatures: signature.into_iter().collect(),
        });
    }
    if cm.data.as_ref().is_some_and(|d| d.contains_key(&source.key)) {
        return SourceState::Missing(format!(
            "ConfigMap {}/{} has key {:?} in data, not binaryData (a module is binary; use `wasm-operator module push`)",
            source.namespace, source.name, source.key
        ));
    }
    SourceState::Missing(format!(
        "ConfigMap {}/{} has no binaryData key {:?}",
        source.namespace, source.name, source.key
    ))
}

/// Watches the one ConfigMap and publishes every change of its state.
pub async fn follow_configmap(client: Client, source: ConfigMapSource, tx: channel::Sender<SourceState>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={}", source.name));
    let name = format!("{}/{}", source.namespace, source.name);
    let mut stream = Box::pin(watcher::watcher(source.api(&client), config).default_backoff().inspect_err(
        move |err| tracing::warn!(configmap = %name, error = %err, "module ConfigMap watch failed; retrying"),
    ));
    let not_found =
        || SourceState::Missing(format!("ConfigMap {}/{} not found", source.namespace, source.name));
    let mut listed: Option<SourceState> = None;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            () = tx.closed() => return,
        };
        let Some(event) = event else { return };
        let Ok(event) = event else { continue };
        match event {
            Event::Apply(cm) => {
                tx.send_replace(state_of(&cm, &source));
            }
            Event::Delete(_) => {
                tx.send_replace(not_found());
            }
            Event::Init => listed = None,
            Event::InitApply(cm) => listed = Some(state_of(&cm, &source)),
            Event::InitDone => {
                tx.send_replace(listed.take().unwrap_or_else(not_found));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmap_sources_parse_with_and_without_a_key() {
        let parsed: ConfigMapSource = "ops/module:v2.wasm".parse().expect("valid");
        assert_eq!(
            parsed,
            ConfigMapSource { namespace: "ops".into(), name: "module".into(), key: "v2.wasm".into() }
        );
        let parsed: ConfigMapSource = "ops/module".parse().expect("valid");
        assert_eq!(parsed.key, DEFAULT_KEY);
        assert_eq!(parsed.to_string(), "ops/module:module.wasm");
        for bad in ["module", "/module", "ops/", "ops/module:", "ops/a/b", "Ops/module", "ops/module:a/b", ""]
        {
            assert!(bad.parse::<ConfigMapSource>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn gzip_is_detected_by_its_magic_and_plain_modules_pass_through() {
        let module = b"\0asm\x01\0\0\0 and some more bytes".to_vec();
        assert!(!is_gzip(&module));
        assert_eq!(decode(&module).expect("plain"), module);
        let compressed = compress_for_configmap(&module).expect("small");
        assert!(is_gzip(&compressed));
        assert_eq!(decode(&compressed).expect("gzip"), module);
    }

    #[test]
    fn a_corrupt_gzip_stream_is_an_error() {
        let mut compressed = compress_for_configmap(&[7u8; 4096]).expect("small");
        let middle = compressed.len() / 2;
        compressed.truncate(middle);
        assert!(matches!(decode(&compressed), Err(SourceError::Gzip(_))));
    }

    #[test]
    fn a_gzip_bomb_is_refused() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_MODULE_BYTES >> 20) + 1 {
            encoder.write_all(&zeros).expect("in memory");
        }
        let bomb = encoder.finish().expect("in memory");
        assert!(matches!(decode(&bomb), Err(SourceError::TooLarge { .. })));
    }

    #[test]
    fn modules_too_large_for_a_configmap_are_refused() {
        assert!(check_upload_size(MAX_UPLOAD_BYTES).is_ok());
        let err = check_upload_size(MAX_UPLOAD_BYTES + 1).expect_err("too large");
        assert!(err.to_string().contains("ConfigMap"), "{err}");
        // Incompressible bytes stay large after gzip.
        let mut noise = Vec::with_capacity(MAX_UPLOAD_BYTES + 1024);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while noise.len() < MAX_UPLOAD_BYTES + 1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.extend_from_slice(&x.to_le_bytes());
        }
        assert!(matches!(compress_for_configmap(&noise), Err(SourceError::TooLargeForConfigMap { .. })));
    }

    #[test]
    fn configmap_state_reads_binary_data_only() {
        let source: ConfigMapSource = "ns/m".parse().expect("valid");
        let cm = |binary: Option<(&str, &[u8])>, data: Option<(&str, &str)>| ConfigMap {
            metadata: kube::api::ObjectMeta { name: Some("m".into()), ..Default::default() },
            binary_data: binary.map(|(k, v)| BTreeMap::from([(k.to_owned(), ByteString(v.to_vec()))])),
            data: data.map(|(k, v)| BTreeMap::from([(k.to_owned(), v.to_owned())])),
            ..Default::default()
        };
        assert!(
            matches!(state_of(&cm(Some((DEFAULT_KEY, b"x")), None), &source), SourceState::Present(p) if p.raw == b"x")
        );
        assert!(
            matches!(state_of(&cm(None, Some((DEFAULT_KEY, "x"))), &source), SourceState::Missing(m) if m.contains("not binaryData"))
        );
        assert!(matches!(state_of(&cm(Some(("other", b"x")), None), &source), SourceState::Missing(_)));
    }

    async fn next(rx: &mut channel::Receiver<SourceState>) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(30), rx.changed()).await.expect("a change").expect("open");
        match &*rx.borrow_and_update() {
            SourceState::Present(p) => p.raw.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_file_source_follows_an_atomic_symlink_swap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = dir.path().join("v1");
        let v2 = dir.path().join("v2");
        std::fs::create_dir(&v1).expect("dir");
        std::fs::create_dir(&v2).expect("dir");
        std::fs::write(v1.join("module.wasm"), b"one").expect("write");
        std::fs::write(v2.join("module.wasm"), b"two!").expect("write");
        // The kubelet's layout: module.wasm -> ..data/module.wasm, ..data -> v1.
        std::os::unix::fs::symlink("v1", dir.path().join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/module.wasm", dir.path().join("module.wasm")).expect("symlink");
        let (tx, mut rx) = channel::channel(SourceState::Unknown);
        let task = tokio::spawn(follow_file(dir.path().join("module.wasm"), Duration::from_millis(20), tx));
        assert_eq!(next(&mut rx).await, b"one");
        // Replace ..data atomically, as the kubelet does.
        std::os::unix::fs::symlink("v2", dir.path().join("..data_tmp")).expect("symlink");
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("rename");
        assert_eq!(next(&mut rx).await, b"two!");
        task.abort();
    }
}
