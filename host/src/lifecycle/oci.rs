//! Modules from an OCI registry: `run --module oci://REGISTRY/REPO:TAG` (or
//! `@sha256:<manifest digest>`), pushed by `module push --oci` (docs/supply.md).
//!
//! **Layout.** A module is a CNCF "Wasm OCI artifact": an OCI image manifest whose
//! config has the media type [`WASM_CONFIG_MEDIA_TYPE`] and whose one layer, of media
//! type [`WASM_LAYER_MEDIA_TYPE`], is the module's bytes (uncompressed). Its
//! signature is a manifest of its own, defined here: artifact type
//! [`SIGNATURE_ARTIFACT_TYPE`], the empty config, one layer of media type
//! [`SIGNATURE_LAYER_MEDIA_TYPE`] holding the base64 signature (as `cosign sign-blob`
//! writes it), and the module's manifest as its `subject`. It is found either way:
//!
//! - as a **referrer** of the module's manifest (the OCI 1.1 referrers API, or the
//!   referrers tag schema `sha256-<hex>` where a registry has no such API, as the CNCF
//!   Distribution registry has none), filtered by artifact type;
//! - at **cosign's tag** for it, `sha256-<hex of the module manifest's digest>.sig`.
//!
//! **Following a tag.** The task polls the reference every interval: a tag is resolved
//! to its manifest digest (one HEAD request); a new digest is pulled (manifest, the
//! module layer, the signatures) and published as the source's new state, which the
//! swapper checks like any other candidate. A reference by digest is pulled once. A
//! registry that fails (down, 5xx, refused credentials, a malformed artifact) leaves
//! the active module serving: the failure is published as the source's state (logged
//! by the swapper), counted in `wasm_operator_module_source_errors_total`, and the
//! registry is tried again with a doubling delay, from one second up to the poll
//! interval (at least [`MAX_RETRY`]).
//!
//! **What the registry is trusted with.** Nothing about the content: manifests and
//! blobs are checked against their digests, sizes are bounded before and while they
//! are read (the module by [`super::source::MAX_MODULE_BYTES`], a signature by
//! [`super::trust::MAX_SIGNATURE_BYTES`], at most [`MAX_SIGNATURES`] signatures), and
//! what it serves passes the trust policy and every load check. It is trusted to be
//! there: a registry that is down or slow delays a swap, never the operator's
//! reconciles.

use super::source::{MAX_MODULE_BYTES, Payload, SourceState};
use super::trust::MAX_SIGNATURE_BYTES;
use crate::runtime::digest;
use base64::Engine as _;
use futures::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{
    ImageIndexEntry, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageIndex,
    OciImageManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use prometheus_client::metrics::counter::Counter;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch as channel;

/// The media type of a wasm module layer (the CNCF Wasm OCI artifact layout).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The media type of a wasm artifact's config.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The artifact type of a module signature manifest.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.wasm-operator.signature.v1";
/// The media type of the signature layer: the base64 signature, as cosign writes it.
pub const SIGNATURE_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm-operator.signature.v1+base64";
/// The OCI empty descriptor's media type, for the signature manifest's config.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config's bytes.
const EMPTY_CONFIG: &[u8] = b"{}";
/// The most signatures looked at for one module.
pub const MAX_SIGNATURES: usize = 16;
/// The largest manifest accepted (a module's is a few hundred bytes).
pub const MAX_MANIFEST_BYTES: usize = 64 << 10;
/// The longest wait between tries of a failing registry.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Why a registry reference, its credentials or an exchange with it failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference is not `oci://REGISTRY/REPO[:TAG|@sha256:…]`.
    #[error(
        "invalid OCI reference {text:?}: {why} (expected oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:<hex>, with the registry named, e.g. oci://registry.example.com/ops/dittofs:v1)"
    )]
    Reference {
        /// The reference as given.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// The Docker config file could not be read or parsed.
    #[error("cannot use the registry credentials in {}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the registry client")]
    Client(#[source] oci_client::errors::OciDistributionError),
    /// A request to the registry failed.
    #[error("registry request failed: {what} {reference}")]
    Registry {
        /// What was asked.
        what: &'static str,
        /// Of what.
        reference: String,
        /// The client's error.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// The registry answered with something that is not a module artifact, or that does
    /// not match its digest or size.
    #[error("{reference} is not a usable module artifact: {why}")]
    Artifact {
        /// What was pulled.
        reference: String,
        /// What is wrong.
        why: String,
    },
}

/// A module in a registry: `oci://REGISTRY/REPO:TAG` or `…@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciReference {
    reference: Reference,
    text: String,
}

impl std::str::FromStr for OciReference {
    type Err = OciError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| OciError::Reference { text: text.to_owned(), why: why.to_owned() };
        let rest = text.strip_prefix("oci://").ok_or_else(|| invalid("it does not start with oci://"))?;
        // Named explicitly: a bare `name:tag` would silently mean Docker Hub.
        let host = rest.split_once('/').map(|(host, _)| host).ok_or_else(|| invalid("no repository"))?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(invalid("the first part is not a registry host"));
        }
        let reference: Reference = rest.parse().map_err(|err| invalid(&format!("{err}")))?;
        if reference.tag().is_some() && reference.digest().is_some() {
            return Err(invalid("give a tag or a digest, not both"));
        }
        Ok(Self { reference, text: text.to_owned() })
    }
}

impl std::fmt::Display for OciReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl OciReference {
    /// The registry host (and port).
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The tag, when the reference names one.
    pub fn tag(&self) -> Option<&str> {
        self.reference.tag()
    }

    /// The manifest digest, when the reference pins one.
    pub fn pinned(&self) -> Option<&str> {
        self.reference.digest()
    }

    fn at_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            digest.to_owned(),
        )
    }

    fn at_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            tag.to_owned(),
        )
    }

    /// `oci://REGISTRY/REPO[:TAG]@<digest>`: this version, for logs and `/module`.
    fn version(&self, digest: &str) -> String {
        let base = self.text.split('@').next().unwrap_or(&self.text);
        format!("{base}@{digest}")
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP; every other one is HTTPS.
    pub insecure: Vec<String>,
    /// A Docker `config.json` with credentials (`auths`), e.g. a mounted
    /// `kubernetes.io/dockerconfigjson` Secret; anonymous without one.
    pub credentials: Option<PathBuf>,
}

/// A module source in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciSource {
    /// The reference followed.
    pub reference: OciReference,
    /// How often a tag is resolved again.
    pub poll_interval: Duration,
    /// How to reach the registry.
    pub registry: RegistryConfig,
}

/// Where `module push --oci` puts a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureLocation {
    /// As a referrer of the module's manifest (untagged, with `subject`).
    Referrer,
    /// At cosign's tag `sha256-<hex>.sig` (no `subject`).
    Tag,
    /// Both: one manifest, with `subject`, at the tag.
    Both,
}

/// The `auths` of a Docker config file.
#[derive(Debug, serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Debug, serde::Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    registrytoken: Option<String>,
}

/// The credentials for `registry` in the Docker config `json` (`auth` as base64
/// `user:password`, `username`/`password`, or `registrytoken` for a bearer token);
/// anonymous when it names no such registry. Keys may carry a scheme and a path
/// (`https://registry.example.com/v1/`), as `docker login` writes them.
pub fn credentials_for(json: &[u8], registry: &str) -> Result<RegistryAuth, String> {
    let config: DockerConfig =
        serde_json::from_slice(json).map_err(|err| format!("not a Docker config: {err}"))?;
    let host_of = |key: &str| {
        let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
        key.split('/').next().unwrap_or(key).to_owned()
    };
    let Some(entry) = config.auths.iter().find(|(key, _)| host_of(key) == registry).map(|(_, auth)| auth)
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(token) = &entry.registrytoken {
        return Ok(RegistryAuth::Bearer(token.clone()));
    }
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    if let Some(auth) = &entry.auth {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| format!("the auth of {registry} is not base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| format!("the auth of {registry} is not UTF-8"))?;
        let (user, password) =
            text.split_once(':').ok_or_else(|| format!("the auth of {registry} is not user:password"))?;
        return Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()));
    }
    Err(format!("the entry of {registry} has no auth, username/password or registrytoken"))
}

/// One registry's client, with the credentials for it.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// A module version pulled from a registry.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The module manifest's digest.
    pub manifest_digest: String,
    /// The module's bytes.
    pub module: Vec<u8>,
    /// Its signatures, as stored.
    pub signatures: Vec<Vec<u8>>,
}

impl Registry {
    /// A client for `reference`'s registry, with the credentials `config` gives.
    pub fn new(reference: &OciReference, config: &RegistryConfig) -> Result<Self, OciError> {
        // reqwest is built without a crypto provider of its own: the process uses
        // ring, as kube does. Installing it twice is harmless (the second is refused).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let auth = match &config.credentials {
            None => RegistryAuth::Anonymous,
            Some(path) => {
                let credentials = |source: Box<dyn std::error::Error + Send + Sync>| OciError::Credentials {
                    path: path.clone(),
                    source,
                };
                let json = std::fs::read(path).map_err(|err| credentials(Box::new(err)))?;
                credentials_for(&json, reference.registry()).map_err(|why| credentials(why.into()))?
            }
        };
        let protocol = if config.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(config.insecure.clone())
        };
        let client_config = ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(30)),
            ..ClientConfig::default()
        };
        let client = Client::try_from(client_config).map_err(OciError::Client)?;
        Ok(Self { client, auth })
    }

    fn failed(
        what: &'static str,
        reference: &Reference,
    ) -> impl FnOnce(oci_client::errors::OciDistributionError) -> OciError {
        let reference = reference.whole();
        move |source| OciError::Registry { what, reference, source }
    }

    /// The manifest digest `reference` names now: its own, or its tag's.
    pub async fn resolve(&self, reference: &OciReference) -> Result<String, OciError> {
        if let Some(pinned) = reference.pinned() {
            return Ok(pinned.to_owned());
        }
        self.client
            .fetch_manifest_digest(&reference.reference, &self.auth)
            .await
            .map_err(Self::failed("resolve", &reference.reference))
    }

    /// The manifest at `digest`, checked against it and bounded.
    async fn manifest(&self, at: &Reference, digest_wanted: &str) -> Result<OciImageManifest, OciError> {
        let (body, _) = self
            .client
            .pull_manifest_raw(at, &self.auth, &[OCI_IMAGE_MEDIA_TYPE])
            .await
            .map_err(Self::failed("pull manifest", at))?;
        parse_manifest(&body, digest_wanted).map_err(|why| OciError::Artifact { reference: at.whole(), why })
    }

    /// The blob `descriptor` describes, at most `limit` bytes, checked against its
    /// digest.
    async fn blob(
        &self,
        at: &Reference,
        descriptor: &OciDescriptor,
        limit: usize,
    ) -> Result<Vec<u8>, OciError> {
        let artifact = |why: String| OciError::Artifact { reference: at.whole(), why };
        let declared = declared_size(descriptor, limit).map_err(artifact)?;
        let mut stream =
            self.client.pull_blob_stream(at, descriptor).await.map_err(Self::failed("pull blob", at))?.stream;
        let mut bytes = Vec::with_capacity(declared);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| artifact(format!("reading a layer failed: {err}")))?;
            if bytes.len() + chunk.len() > declared {
                return Err(artifact(format!("a layer is larger than its declared {declared} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        let got = digest(&bytes);
        if got != descriptor.digest {
            return Err(artifact(format!("a layer's digest is {got}, not {}", descriptor.digest)));
        }
        Ok(bytes)
    }

    /// Pulls the module at `manifest_digest` and its signatures.
    pub async fn pull(&self, reference: &OciReference, manifest_digest: &str) -> Result<Pulled, OciError> {
        let at = reference.at_digest(manifest_digest);
        let manifest = self.manifest(&at, manifest_digest).await?;
        let artifact = |why: String| OciError::Artifact { reference: at.whole(), why };
        if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
            return Err(artifact(format!(
                "its config is {:?}, not {WASM_CONFIG_MEDIA_TYPE:?} (push it with `wasm-operator module push --oci`)",
                manifest.config.media_type
            )));
        }
        let [layer] = manifest.layers.as_slice() else {
            return Err(artifact(format!("it has {} layers, not one", manifest.layers.len())));
        };
        if layer.media_type != WASM_LAYER_MEDIA_TYPE {
            return Err(artifact(format!(
                "its layer is {:?}, not {WASM_LAYER_MEDIA_TYPE:?}",
                layer.media_type
            )));
        }
        let module = self.blob(&at, layer, MAX_MODULE_BYTES).await?;
        let signatures = self.signatures(reference, manifest_digest).await?;
        Ok(Pulled { manifest_digest: manifest_digest.to_owned(), module, signatures })
    }

    /// The signatures of the module manifest `subject`: its referrers of the signature
    /// artifact type, and the manifest at cosign's tag. A registry without either
    /// simply has none; other failures are errors, so that a registry that fails
    /// half-way never makes a signed module look unsigned for long.
    async fn signatures(&self, reference: &OciReference, subject: &str) -> Result<Vec<Vec<u8>>, OciError> {
        let mut manifests: Vec<(Reference, String)> = Vec::new();
        let by_digest = reference.at_digest(subject);
        let index = self
            .client
            .pull_referrers(&by_digest, Some(SIGNATURE_ARTIFACT_TYPE))
            .await
            .map_err(Self::failed("list referrers", &by_digest))?;
        for entry in
            index.manifests.iter().filter(|e| e.artifact_type.as_deref() == Some(SIGNATURE_ARTIFACT_TYPE))
        {
            manifests.push((reference.at_digest(&entry.digest), entry.digest.clone()));
        }
        let tag = cosign_tag(subject);
        let tagged = reference.at_tag(&tag);
        match self.client.fetch_manifest_digest(&tagged, &self.auth).await {
            Ok(found) => {
                if !manifests.iter().any(|(_, d)| *d == found) {
                    manifests.push((reference.at_digest(&found), found));
                }
            }
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(Self::failed("resolve", &tagged)(err)),
        }
        let mut signatures = Vec::new();
        for (at, manifest_digest) in manifests.into_iter().take(MAX_SIGNATURES) {
            match self.signature(&at, &manifest_digest).await {
                Ok(found) => {
                    for signature in found {
                        if !signatures.contains(&signature) {
                            signatures.push(signature);
                        }
                    }
                }
                // Anyone who can push to the repository can add a referrer: one that is
                // not a usable signature must not hide the valid ones.
                Err(OciError::Artifact { reference, why }) => {
                    tracing::warn!(signature = %reference, "ignoring an unusable signature artifact: {why}");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(signatures)
    }

    /// The signature layers of the signature manifest at `manifest_digest`.
    async fn signature(&self, at: &Reference, manifest_digest: &str) -> Result<Vec<Vec<u8>>, OciError> {
        let manifest = self.manifest(at, manifest_digest).await?;
        let mut found = Vec::new();
        for layer in manifest.layers.iter().filter(|l| l.media_type == SIGNATURE_LAYER_MEDIA_TYPE) {
            found.push(self.blob(at, layer, MAX_SIGNATURE_BYTES).await?);
        }
        Ok(found)
    }

    /// Pushes `module` to `reference` (a tag) in the Wasm OCI artifact layout, and its
    /// signature where `location` says; returns the module manifest's digest.
    pub async fn push(
        &self,
        reference: &OciReference,
        module: &[u8],
        signature: Option<&[u8]>,
        location: SignatureLocation,
    ) -> Result<String, OciError> {
        let at = &reference.reference;
        let Some(tag) = reference.tag() else {
            return Err(OciError::Reference {
                text: reference.to_string(),
                why: "push to a tag, not a digest".into(),
            });
        };
        // The lower-level calls below use the stored credentials without storing them.
        self.client.store_auth_if_needed(at.resolve_registry(), &self.auth).await;
        let layer = self.push_blob(at, module, WASM_LAYER_MEDIA_TYPE).await?;
        let created = jiff::Timestamp::now().to_string();
        let config = serde_json::json!({
            "created": created,
            "architecture": "wasm",
            "os": "wasip1",
            "layerDigests": [layer.digest],
        });
        let config = self.push_blob(at, config.to_string().as_bytes(), WASM_CONFIG_MEDIA_TYPE).await?;
        let manifest = OciImageManifest {
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            config,
            layers: vec![layer],
            annotations: Some(BTreeMap::from([("org.opencontainers.image.created".to_owned(), created)])),
            ..OciImageManifest::default()
        };
        let (module_manifest, size) = self.push_manifest(&reference.at_tag(tag), &manifest).await?;
        let Some(signature) = signature else { return Ok(module_manifest) };

        let config = self.push_blob(at, EMPTY_CONFIG, EMPTY_MEDIA_TYPE).await?;
        let layer = self.push_blob(at, signature.trim_ascii(), SIGNATURE_LAYER_MEDIA_TYPE).await?;
        let subject = OciDescriptor {
            media_type: OCI_IMAGE_MEDIA_TYPE.to_owned(),
            digest: module_manifest.clone(),
            size,
            ..OciDescriptor::default()
        };
        let signature_manifest = OciImageManifest {
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            artifact_type: Some(SIGNATURE_ARTIFACT_TYPE.to_owned()),
            config,
            layers: vec![layer],
            subject: (location != SignatureLocation::Tag).then_some(subject),
            ..OciImageManifest::default()
        };
        let body = serde_json::to_vec(&signature_manifest)
            .map_err(|err| OciError::Artifact { reference: at.whole(), why: err.to_string() })?;
        let target = match location {
            SignatureLocation::Referrer => reference.at_digest(&digest(&body)),
            SignatureLocation::Tag | SignatureLocation::Both => {
                reference.at_tag(&cosign_tag(&module_manifest))
            }
        };
        let (signature_digest, signature_size) = self.push_manifest(&target, &signature_manifest).await?;
        if location != SignatureLocation::Tag {
            let entry = ImageIndexEntry {
                media_type: OCI_IMAGE_MEDIA_TYPE.to_owned(),
                digest: signature_digest,
                size: signature_size,
                platform: None,
                annotations: None,
                artifact_type: Some(SIGNATURE_ARTIFACT_TYPE.to_owned()),
            };
            self.add_referrer(reference, &module_manifest, entry).await?;
        }
        Ok(module_manifest)
    }

    /// Adds `entry` to the referrers tag schema's index of `subject` (the tag
    /// `sha256-<hex>`): what a client does for a registry without the referrers API,
    /// and harmless on one with it.
    async fn add_referrer(
        &self,
        reference: &OciReference,
        subject: &str,
        entry: ImageIndexEntry,
    ) -> Result<(), OciError> {
        let at = reference.at_tag(&subject.replace(':', "-"));
        let mut index =
            match self.client.pull_manifest_raw(&at, &self.auth, &[OCI_IMAGE_INDEX_MEDIA_TYPE]).await {
                Ok((body, _)) => {
                    serde_json::from_slice::<OciImageIndex>(&body).map_err(|err| OciError::Artifact {
                        reference: at.whole(),
                        why: format!("the referrers index does not parse: {err}"),
                    })?
                }
                Err(err) if is_not_found(&err) => OciImageIndex {
                    schema_version: 2,
                    media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned()),
                    manifests: vec![],
                    artifact_type: None,
                    annotations: None,
                },
                Err(err) => return Err(Self::failed("pull referrers index", &at)(err)),
            };
        if index.manifests.iter().any(|m| m.digest == entry.digest) {
            return Ok(());
        }
        index.manifests.push(entry);
        let body = serde_json::to_vec(&index)
            .map_err(|err| OciError::Artifact { reference: at.whole(), why: err.to_string() })?;
        let content_type = http::HeaderValue::from_static(OCI_IMAGE_INDEX_MEDIA_TYPE);
        self.client
            .push_manifest_raw(&at, body, content_type)
            .await
            .map_err(Self::failed("push referrers index", &at))?;
        Ok(())
    }

    async fn push_blob(
        &self,
        at: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<OciDescriptor, OciError> {
        let blob_digest = digest(bytes);
        self.client
            .push_blob(at, bytes.to_vec(), &blob_digest)
            .await
            .map_err(Self::failed("push blob", at))?;
        Ok(OciDescriptor {
            media_type: media_type.to_owned(),
            digest: blob_digest,
            size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        })
    }

    /// Pushes `manifest` as serialised here, so that its digest is known; returns it
    /// and the manifest's size.
    async fn push_manifest(
        &self,
        at: &Reference,
        manifest: &OciImageManifest,
    ) -> Result<(String, i64), OciError> {
        let body = serde_json::to_vec(manifest)
            .map_err(|err| OciError::Artifact { reference: at.whole(), why: err.to_string() })?;
        let manifest_digest = digest(&body);
        let size = i64::try_from(body.len()).unwrap_or(i64::MAX);
        let content_type = http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
        self.client
            .push_manifest_raw(at, body, content_type)
            .await
            .map_err(Self::failed("push manifest", at))?;
        Ok((manifest_digest, size))
    }
}

/// The manifest in `body`, which must be at most [`MAX_MANIFEST_BYTES`] and have the
/// digest `wanted`: the registry's word for it is not taken.
fn parse_manifest(body: &[u8], wanted: &str) -> Result<OciImageManifest, String> {
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(format!("its manifest is {} bytes, over {MAX_MANIFEST_BYTES}", body.len()));
    }
    let got = digest(body);
    if got != wanted {
        return Err(format!("its manifest's digest is {got}, not {wanted}"));
    }
    serde_json::from_slice(body).map_err(|err| format!("its manifest does not parse: {err}"))
}

/// The size `descriptor` declares, refused when negative or over `limit` (before
/// anything is downloaded).
fn declared_size(descriptor: &OciDescriptor, limit: usize) -> Result<usize, String> {
    let declared = usize::try_from(descriptor.size)
        .map_err(|_| format!("a {} layer declares a negative size", descriptor.media_type))?;
    if declared > limit {
        return Err(format!(
            "a {} layer of {declared} bytes, over the limit of {limit}",
            descriptor.media_type
        ));
    }
    Ok(declared)
}

/// cosign's tag for the signature of the manifest `digest`: `sha256-<hex>.sig`.
pub fn cosign_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

fn is_not_found(err: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match err {
        E::ImageManifestNotFoundError(_) => true,
        E::ServerError { code, .. } => *code == 404,
        E::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

/// The wait before try `failures` + 1 of a failing registry: one second, doubling, at
/// most the larger of `interval` and [`MAX_RETRY`].
fn retry_delay(failures: u32, interval: Duration) -> Duration {
    let cap = interval.max(MAX_RETRY);
    Duration::from_secs(1).saturating_mul(2u32.saturating_pow(failures.saturating_sub(1))).min(cap)
}

/// Follows `source`: resolves it every poll interval and publishes each new version;
/// failures are published, counted in `errors`, and retried with backoff.
pub async fn follow_oci(
    registry: Registry,
    source: OciSource,
    errors: Counter,
    tx: channel::Sender<SourceState>,
) {
    let reference = &source.reference;
    let mut last: Option<Payload> = None;
    let mut failures: u32 = 0;
    loop {
        let outcome = async {
            let manifest_digest = registry.resolve(reference).await?;
            if let Some(payload) = &last
                && payload.origin == reference.version(&manifest_digest)
            {
                return Ok(None);
            }
            let pulled = registry.pull(reference, &manifest_digest).await?;
            Ok::<_, OciError>(Some(pulled))
        }
        .await;
        match outcome {
            Ok(Some(pulled)) => {
                failures = 0;
                let payload = Payload {
                    raw: pulled.module,
                    origin: reference.version(&pulled.manifest_digest),
                    reference: None,
                    signatures: pulled.signatures,
                };
                last = Some(payload.clone());
                tx.send_replace(SourceState::Present(payload));
            }
            Ok(None) => {
                // The same version: republished only after a failure was shown.
                if failures > 0
                    && let Some(payload) = &last
                {
                    tx.send_replace(SourceState::Present(payload.clone()));
                }
                failures = 0;
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                errors.inc();
                let delay = retry_delay(failures, source.poll_interval);
                let why = format!("{} (trying again in {}s)", crate::error_chain(&err), delay.as_secs());
                tracing::warn!(source = %reference, failures, "module registry failed: {why}");
                tx.send_replace(SourceState::Missing(format!(
                    "registry {}: {}",
                    reference.registry(),
                    crate::error_chain(&err)
                )));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = tx.closed() => return,
                }
                continue;
            }
        }
        if reference.pinned().is_some() && last.is_some() {
            // A digest does not change: nothing to poll.
            tx.closed().await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(source.poll_interval) => {}
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_the_registry_and_a_tag_or_a_digest() {
        let tagged: OciReference = "oci://localhost:5000/ops/dittofs:v1".parse().expect("valid");
        assert_eq!(tagged.registry(), "localhost:5000");
        assert_eq!(tagged.tag(), Some("v1"));
        assert_eq!(tagged.pinned(), None);
        let hex = "a".repeat(64);
        let pinned: OciReference =
            format!("oci://registry.example.com/ops/dittofs@sha256:{hex}").parse().expect("valid");
        assert_eq!(pinned.pinned(), Some(format!("sha256:{hex}").as_str()));
        assert_eq!(
            pinned.version(&format!("sha256:{hex}")),
            format!("oci://registry.example.com/ops/dittofs@sha256:{hex}")
        );
        assert_eq!(tagged.version("sha256:ab"), "oci://localhost:5000/ops/dittofs:v1@sha256:ab");
        for bad in [
            "localhost:5000/ops/dittofs:v1",
            "oci://dittofs:v1",
            "oci://ops/dittofs:v1",
            "oci://localhost:5000/",
            "oci://localhost:5000/ops/dittofs@sha256:abc",
            "oci://localhost:5000/Ops/dittofs:v1",
        ] {
            let err = bad.parse::<OciReference>().expect_err(bad);
            assert!(err.to_string().contains("expected oci://"), "{err}");
        }
    }

    #[test]
    fn docker_config_credentials_are_found_by_registry_host() {
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with-colon");
        let json = serde_json::json!({"auths": {
            "https://registry.example.com/v1/": {"auth": basic},
            "localhost:5000": {"username": "bob", "password": "pw"},
            "token.example.com": {"registrytoken": "tok"},
            "broken.example.com": {"auth": "%%%"},
            "empty.example.com": {},
        }})
        .to_string();
        let auth = |host: &str| credentials_for(json.as_bytes(), host);
        assert!(
            matches!(auth("registry.example.com"), Ok(RegistryAuth::Basic(u, p)) if u == "alice" && p == "s3cret:with-colon")
        );
        assert!(matches!(auth("localhost:5000"), Ok(RegistryAuth::Basic(u, p)) if u == "bob" && p == "pw"));
        assert!(matches!(auth("token.example.com"), Ok(RegistryAuth::Bearer(t)) if t == "tok"));
        assert!(matches!(auth("elsewhere.example.com"), Ok(RegistryAuth::Anonymous)));
        assert!(auth("broken.example.com").expect_err("bad base64").contains("not base64"));
        assert!(auth("empty.example.com").is_err());
        assert!(credentials_for(b"not json", "x").expect_err("garbage").contains("not a Docker config"));
    }

    #[test]
    fn a_failing_registry_is_retried_with_a_doubling_bounded_delay() {
        let interval = Duration::from_secs(30);
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n, interval).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(retry_delay(u32::MAX, Duration::from_secs(600)), Duration::from_secs(600));
    }

    #[test]
    fn a_manifest_must_have_the_digest_asked_for_and_a_bounded_size() {
        let body =
            br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:00","size":0},"layers":[]}"#;
        assert!(parse_manifest(body, &digest(body)).is_ok());
        let err = parse_manifest(body, &digest(b"another")).expect_err("other digest");
        assert!(err.contains("digest is"), "{err}");
        let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(parse_manifest(&huge, &digest(&huge)).expect_err("huge").contains("over"));
        let garbage = b"not json";
        assert!(parse_manifest(garbage, &digest(garbage)).expect_err("garbage").contains("does not parse"));
    }

    #[test]
    fn declared_sizes_are_bounded_before_anything_is_downloaded() {
        let layer = |size: i64| OciDescriptor {
            media_type: WASM_LAYER_MEDIA_TYPE.into(),
            size,
            ..OciDescriptor::default()
        };
        assert_eq!(declared_size(&layer(10), 10), Ok(10));
        assert!(declared_size(&layer(11), 10).expect_err("over").contains("over the limit of 10"));
        assert!(declared_size(&layer(-1), 10).expect_err("negative").contains("negative"));
        let huge = i64::try_from(MAX_MODULE_BYTES).expect("fits") + 1;
        assert!(declared_size(&layer(huge), MAX_MODULE_BYTES).is_err());
    }

    #[test]
    fn the_cosign_tag_is_the_digest_with_a_dash_and_sig() {
        assert_eq!(cosign_tag("sha256:abcd"), "sha256-abcd.sig");
    }
}
