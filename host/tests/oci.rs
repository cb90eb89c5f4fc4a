//! Modules from an OCI registry end to end (docs/supply.md): a real CNCF Distribution
//! registry on loopback (`e2e::registry`), modules pushed by the real CLI
//! (`wasm-operator module push --oci`), keys and signatures made by `openssl`, and the
//! operator in-process following `oci://…:v1` (`ModuleSource::Oci`, the path of
//! `run --module oci://…`) against the real control plane.
//!
//! - v1, signed, converges a DittoServer; v2 (the `v2-annotation` build) pushed to the
//!   same tag swaps in at the next poll, and the server converges with v2's behaviour;
//! - an unsigned build and one signed by another key, pushed to the tag, are refused
//!   while v2 serves; signatures are found as a referrer (referrers tag schema) and at
//!   cosign's `.sig` tag alike;
//! - the registry stops: the host keeps serving and counts the failures; it starts
//!   again: the next push is picked up;
//! - pinning a digest (`oci://…@sha256:…`) is a rollback: the host runs that build and
//!   a push to the tag does not move it;
//! - a registry that requires basic auth is reached with the credentials of a Docker
//!   `config.json` (`--registry-config`), by `module push` and the host alike, and
//!   refuses both without them;
//! - the time from a push to the module being active, over ten pushes, is printed;
//! - artifacts that are not modules (a container image, two layers, a tar layer, no
//!   layer) are refused naming what is wrong, and
//!   an oversized signature is skipped without hiding a valid one; a layer longer
//!   than its descriptor says is cut off; at most `MAX_SIGNATURES` signatures are
//!   pulled, however many referrers a module has.
//!
//! Nothing asserts a duration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use e2e::converge::{Percona, Servers};
use e2e::registry::TestRegistry;
use kube::Client;
use operator_support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use wasm_operator::runtime::{ModuleCache, SandboxConfig, SandboxLimits, digest};
use wasm_operator::{
    Backoff, MAX_SIGNATURES, ModuleSource, OciSource, OperatorConfig, RegistryConfig, RunningOperator, Scope,
    TrustPolicy, TrustedKey, start_from_source,
};

const POLL: Duration = Duration::from_secs(1);

/// Files of one test: keys, modules, signatures.
struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    fn new() -> Result<Self> {
        Ok(Self { dir: tempfile::tempdir()? })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(args: &[&str]) -> Result<()> {
        let output = Command::new("openssl").args(args).output().context("cannot run openssl")?;
        ensure!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        Ok(())
    }

    /// A key pair made by openssl: (private, public).
    fn pair(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        let (private, public) = (self.path(&format!("{name}.pem")), self.path(&format!("{name}.pub")));
        Self::openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &s(&private),
        ])?;
        Self::openssl(&["pkey", "-in", &s(&private), "-pubout", "-out", &s(&public)])?;
        Ok((private, public))
    }

    /// `bytes` as the module file `name`, signed by `key` with openssl (beside it,
    /// as `name.sig`) unless `key` is `None`.
    fn module(&self, name: &str, bytes: &[u8], key: Option<&Path>) -> Result<PathBuf> {
        let path = self.path(name);
        std::fs::write(&path, bytes)?;
        let sig = PathBuf::from(format!("{}.sig", path.display()));
        let _ = std::fs::remove_file(&sig);
        if let Some(key) = key {
            let der = self.path("signature.der");
            Self::openssl(&["dgst", "-sha256", "-sign", &s(key), "-out", &s(&der), &s(&path)])?;
            std::fs::write(&sig, base64::engine::general_purpose::STANDARD.encode(std::fs::read(&der)?))?;
        }
        Ok(path)
    }
}

fn s(path: &Path) -> String {
    path.display().to_string()
}

/// `wasm-operator module push --oci` (the CLI as a user runs it), as it ran.
fn try_push(registry: &TestRegistry, tag: &str, module: &Path, extra: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_wasm-operator"))
        .args(["module", "push", "--insecure-registry", &registry.host()])
        // Its own validation compiles the module: from the cache after the first time.
        .arg("--module-cache-dir")
        .arg(shared_cache())
        .arg("--oci")
        .arg(format!("{}/dittofs/module:{tag}", registry.host()))
        .args(extra)
        .arg(module)
        .env_remove("RUST_LOG")
        .output()?)
}

/// [`try_push`], which must succeed.
fn push(registry: &TestRegistry, tag: &str, module: &Path, extra: &[&str]) -> Result<Output> {
    let output = try_push(registry, tag, module, extra)?;
    ensure!(
        output.status.success(),
        "module push --oci failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

/// The manifest digest `module push` printed.
fn pushed_manifest(output: &Output) -> Result<String> {
    let text = String::from_utf8_lossy(&output.stdout);
    let start = text.find("(manifest ").context("push printed no manifest digest")? + "(manifest ".len();
    Ok(text[start..].split([',', ' ']).next().unwrap_or_default().to_owned())
}

/// The compiled-module cache these tests share with the hot-swap tests: the DittoFS
/// builds compile once (a debug host takes tens of seconds per build). Every host here
/// starts with its registry up, so the last good module kept there is never what one
/// starts from; the host that must not start is run without a cache.
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-module-cache")
}

/// How a test's host follows the registry.
struct Follow {
    reference: String,
    registry: String,
    trust: TrustPolicy,
    /// The compiled-module cache (and last good module); none at all when `None`.
    cache: Option<PathBuf>,
    credentials: Option<PathBuf>,
}

impl Follow {
    /// Follows `reference` in `registry` (plain HTTP), trusting `trust`, with the
    /// shared cache and no credentials.
    fn new(reference: &str, registry: &TestRegistry, trust: TrustPolicy) -> Self {
        Self {
            reference: reference.to_owned(),
            registry: registry.host(),
            trust,
            cache: Some(shared_cache()),
            credentials: None,
        }
    }
}

/// An operator in `namespace` following the registry as `follow` says, once its
/// caches have synced.
async fn start(client: Client, namespace: String, follow: Follow) -> Result<RunningOperator> {
    let source = ModuleSource::Oci(OciSource {
        reference: follow.reference.parse()?,
        poll_interval: POLL,
        registry: RegistryConfig { insecure: vec![follow.registry], credentials: follow.credentials },
    });
    let config = OperatorConfig {
        scope: Scope { namespace: Some(namespace), label_selector: None },
        probe_addr: Some("127.0.0.1:0".parse()?),
        metrics_addr: Some("127.0.0.1:0".parse()?),
        backoff: Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(2) },
        instance: Some("oci-test".into()),
        trust: follow.trust,
        ..OperatorConfig::default()
    };
    let sandbox = SandboxConfig {
        limits: SandboxLimits { deadline: Duration::from_millis(2000), ..SandboxLimits::default() },
        cache: follow.cache.map_or(ModuleCache::Disabled, ModuleCache::Dir),
        ..SandboxConfig::default()
    };
    let op = start_from_source(client, "the test cluster", &source, &sandbox, config).await?;
    eventually("the caches to sync", || async { Ok(op.ready().then_some(())) }).await?;
    Ok(op)
}

async fn wait_refused(op: &RunningOperator, reason: &str, before: u64) -> Result<()> {
    eventually(&format!("a candidate to be refused ({reason})"), || async {
        Ok((op.metrics.module_rejections(reason) > before).then_some(()))
    })
    .await
}

#[tokio::test]
async fn a_signed_module_from_a_registry_tag_converges_swaps_and_survives_the_registry() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "oci").await?;
    let ns = ns.name().to_owned();
    let mut registry = TestRegistry::start("oci-follow").await?;
    let work = Workdir::new()?;
    let (key, public) = work.pair("trusted")?;
    let (other_key, _) = work.pair("other")?;
    let trust = TrustPolicy::new(vec![TrustedKey::read(&public)?], vec![]);
    let (v1, v2) = dittofs_modules().await?;

    // v1, signed, with the signature in both places.
    let v1_file = work.module("v1.wasm", &v1, Some(&key))?;
    push(&registry, "v1", &v1_file, &[])?;
    let reference = format!("oci://{}/dittofs/module:v1", registry.host());
    let op = start(client.clone(), ns.clone(), Follow::new(&reference, &registry, trust.clone())).await?;
    wait_active(&op, &digest(&v1)).await?;
    let servers = Servers::new(client.clone(), &ns);
    servers.create("from-oci", Percona::Off).await?;
    wait_converged(&client, &ns, "from-oci", false).await?;
    let origin = op.active.current().origin.clone().unwrap_or_default();
    assert!(origin.starts_with(&format!("{reference}@sha256:")), "{origin}");

    // v2 to the same tag, its signature only at cosign's tag: swapped at the next poll.
    let v2_file = work.module("v2.wasm", &v2, Some(&key))?;
    push(&registry, "v1", &v2_file, &["--oci-signature", "tag"])?;
    let pushed = Instant::now();
    wait_active(&op, &digest(&v2)).await?;
    println!(
        "push of v2 to active: {} ms (poll interval {} s)",
        pushed.elapsed().as_millis(),
        POLL.as_secs()
    );
    wait_converged(&client, &ns, "from-oci", true).await?;

    // Unsigned, and signed by another key (as a referrer only): refused, v2 serves.
    let before = op.metrics.module_rejections("signature");
    let unsigned = work.module("unsigned.wasm", &v1, None)?;
    push(&registry, "v1", &unsigned, &[])?;
    wait_refused(&op, "signature", before).await?;
    assert_eq!(op.active.current().module.digest(), digest(&v2));
    let before = op.metrics.module_rejections("signature");
    let foreign = work.module("foreign.wasm", &v1, Some(&other_key))?;
    push(&registry, "v1", &foreign, &["--oci-signature", "referrer"])?;
    wait_refused(&op, "signature", before).await?;
    assert_eq!(op.active.current().module.digest(), digest(&v2));
    let rejection = op.active.last_rejection().context("a rejection")?;
    assert!(rejection.message.contains("not valid for it under any trusted key"), "{}", rejection.message);

    // v1 signed as a referrer only: found through the referrers tag schema.
    push(&registry, "v1", &v1_file, &["--oci-signature", "referrer"])?;
    wait_active(&op, &digest(&v1)).await?;

    // The registry goes away: the host keeps serving and counts the failures.
    registry.stop().await?;
    let errors = op.metrics.module_source_errors.get();
    eventually("the registry's failures to be counted", || async {
        Ok((op.metrics.module_source_errors.get() >= errors + 2).then_some(()))
    })
    .await?;
    assert_eq!(op.active.current().module.digest(), digest(&v1), "the active module must keep serving");
    servers.create("while-down", Percona::Off).await?;
    wait_converged(&client, &ns, "while-down", false).await?;
    // Back: the next push is picked up (within the backoff, at most a minute).
    registry.resume().await?;
    push(&registry, "v1", &v2_file, &[])?;
    wait_active(&op, &digest(&v2)).await?;

    // Push to active, ten times (alternating builds, both in the compiled cache).
    let mut times = Vec::new();
    for i in 0..10 {
        let (file, want) = if i % 2 == 0 { (&v1_file, digest(&v1)) } else { (&v2_file, digest(&v2)) };
        let output = push(&registry, "v1", file, &[])?;
        let pushed = Instant::now();
        ensure!(pushed_manifest(&output)?.starts_with("sha256:"), "push printed no digest");
        wait_active(&op, &want).await?;
        times.push(pushed.elapsed());
    }
    times.sort();
    println!(
        "push to active over {} pushes (poll interval {} s): p50 {} ms, max {} ms",
        times.len(),
        POLL.as_secs(),
        times[times.len() / 2].as_millis(),
        times.last().map_or(0, Duration::as_millis)
    );
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn pinning_a_manifest_digest_is_a_rollback_that_a_push_to_the_tag_cannot_move() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "oci-pin").await?;
    let ns = ns.name().to_owned();
    let registry = TestRegistry::start("oci-pin").await?;
    let work = Workdir::new()?;
    let (v1, v2) = dittofs_modules().await?;
    let v1_file = work.module("v1.wasm", &v1, None)?;
    let v2_file = work.module("v2.wasm", &v2, None)?;
    let v1_manifest = pushed_manifest(&push(&registry, "stable", &v1_file, &[])?)?;
    push(&registry, "stable", &v2_file, &[])?;

    // Pinned to v1's manifest while the tag holds v2.
    let pinned = format!("oci://{}/dittofs/module@{v1_manifest}", registry.host());
    let op =
        start(client.clone(), ns.clone(), Follow::new(&pinned, &registry, TrustPolicy::default())).await?;
    wait_active(&op, &digest(&v1)).await?;
    push(&registry, "stable", &v2_file, &[])?;
    tokio::time::sleep(POLL * 3).await;
    assert_eq!(op.active.current().module.digest(), digest(&v1), "a pinned digest must not follow the tag");
    let origin = op.active.history().first().and_then(|h| h.origin.clone()).unwrap_or_default();
    assert!(origin.ends_with(&format!("@{v1_manifest}")), "{origin}");
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_registry_with_basic_auth_is_reached_with_docker_config_credentials() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "oci-auth").await?;
    let ns = ns.name().to_owned();
    let registry = TestRegistry::start_with_user("oci-auth", "alice", "s3cret").await?;
    let work = Workdir::new()?;
    let (v1, _) = dittofs_modules().await?;
    let v1_file = work.module("v1.wasm", &v1, None)?;

    // Without credentials the registry refuses the push, and says so.
    let refused = try_push(&registry, "v1", &v1_file, &[])?;
    ensure!(!refused.status.success(), "an anonymous push must fail");
    ensure!(refused.status.code() == Some(2), "{}", String::from_utf8_lossy(&refused.stderr));

    // A Docker config.json, as `kubectl create secret docker-registry` writes it.
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let config = work.path("config.json");
    std::fs::write(&config, serde_json::json!({"auths": {registry.host(): {"auth": auth}}}).to_string())?;
    push(&registry, "v1", &v1_file, &["--registry-config", &s(&config)])?;

    let reference = format!("oci://{}/dittofs/module:v1", registry.host());
    let follow =
        Follow { credentials: Some(config), ..Follow::new(&reference, &registry, TrustPolicy::default()) };
    let op = start(client.clone(), ns.clone(), follow).await?;
    wait_active(&op, &digest(&v1)).await?;
    op.shutdown().await;

    // The host without them gets nothing, and does not start. Without a cache: a last
    // good module would start it.
    let follow = Follow { cache: None, ..Follow::new(&reference, &registry, TrustPolicy::default()) };
    let anonymous = tokio::spawn(start(client.clone(), ns.clone(), follow));
    tokio::time::sleep(POLL * 3).await;
    ensure!(!anonymous.is_finished(), "a host refused by the registry must wait, not start");
    anonymous.abort();
    Ok(())
}

/// A raw client of the test registry, for artifacts `module push` would never make.
struct Raw {
    client: oci_client::Client,
    host: String,
}

impl Raw {
    async fn new(registry: &TestRegistry) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::Http,
            ..Default::default()
        };
        let client = oci_client::Client::new(config);
        client.store_auth_if_needed(&registry.host(), &oci_client::secrets::RegistryAuth::Anonymous).await;
        Self { client, host: registry.host() }
    }

    fn at(&self, tag: &str) -> oci_client::Reference {
        oci_client::Reference::with_tag(self.host.clone(), "hostile/module".into(), tag.into())
    }

    /// Pushes `bytes` as a blob; returns its descriptor as JSON.
    async fn blob(&self, bytes: &[u8], media_type: &str) -> Result<serde_json::Value> {
        self.client.push_blob(&self.at("x"), bytes.to_vec(), &digest(bytes)).await?;
        Ok(serde_json::json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()}))
    }

    /// Pushes `manifest` at `tag`; returns its digest.
    async fn manifest(&self, tag: &str, manifest: &serde_json::Value) -> Result<String> {
        self.push(tag, manifest, "application/vnd.oci.image.manifest.v1+json").await
    }

    async fn push(
        &self,
        tag: &str,
        manifest: &serde_json::Value,
        media_type: &'static str,
    ) -> Result<String> {
        let body = serde_json::to_vec(manifest)?;
        let content_type = http::HeaderValue::from_static(media_type);
        self.client.push_manifest_raw(&self.at(tag), body.clone(), content_type).await?;
        Ok(digest(&body))
    }
}

#[tokio::test]
async fn artifacts_that_are_not_modules_are_refused_and_bad_signatures_do_not_hide_good_ones() -> Result<()> {
    let registry = TestRegistry::start("oci-hostile").await?;
    let raw = Raw::new(&registry).await;
    let reference = |tag: &str| -> Result<wasm_operator::OciReference> {
        Ok(format!("oci://{}/hostile/module:{tag}", registry.host()).parse()?)
    };
    let ours = wasm_operator::Registry::new(
        &reference("x")?,
        &RegistryConfig { insecure: vec![registry.host()], credentials: None },
    )?;
    let module = b"\0asm\x01\0\0\0 not checked here".to_vec();
    let wasm = raw.blob(&module, "application/wasm").await?;
    let wasm_config = raw.blob(b"{\"architecture\":\"wasm\"}", "application/vnd.wasm.config.v0+json").await?;
    let image_config = raw.blob(b"{}", "application/vnd.oci.image.config.v1+json").await?;
    let tar = raw.blob(b"not a tar", "application/vnd.oci.image.layer.v1.tar").await?;
    let manifest = |config: &serde_json::Value, layers: Vec<&serde_json::Value>| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        })
    };
    let cases = [
        ("container-image", manifest(&image_config, vec![&tar]), "its config is"),
        ("two-layers", manifest(&wasm_config, vec![&wasm, &wasm]), "has 2 layers"),
        ("tar-layer", manifest(&wasm_config, vec![&tar]), "its layer is"),
        ("no-layers", manifest(&wasm_config, vec![]), "has 0 layers"),
    ];
    for (tag, body, words) in cases {
        let manifest_digest = raw.manifest(tag, &body).await?;
        let err = ours.pull(&reference(tag)?, &manifest_digest).await.expect_err(tag);
        let message = wasm_operator::error_chain(&err);
        ensure!(message.contains(words), "{tag}: {message}");
    }
    // A layer longer than its descriptor says is cut off while it streams in: the
    // declared size, checked against the limit first, is what bounds the read.
    let mut short = wasm.clone();
    short["size"] = serde_json::json!(8);
    let understated = raw.manifest("understated", &manifest(&wasm_config, vec![&short])).await?;
    let err = ours.pull(&reference("understated")?, &understated).await.expect_err("understated layer");
    let message = wasm_operator::error_chain(&err);
    ensure!(message.contains("larger than its declared 8 bytes"), "understated layer: {message}");
    let good = raw.manifest("good", &manifest(&wasm_config, vec![&wasm])).await?;

    // An oversized signature at the .sig tag is skipped, not an error; a real one as a
    // referrer (the referrers tag schema's index) is found beside it.
    let signature_manifest = |layer: &serde_json::Value| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.wasm-operator.signature.v1",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(b"{}"), "size": 2},
            "layers": [layer],
        })
    };
    raw.blob(b"{}", "application/vnd.oci.empty.v1+json").await?;
    let huge = raw.blob(&[b'A'; 4096], "application/vnd.wasm-operator.signature.v1+base64").await?;
    let cosign_tag = format!("{}.sig", good.replace(':', "-"));
    raw.manifest(&cosign_tag, &signature_manifest(&huge)).await?;
    let pulled = ours.pull(&reference("good")?, &good).await?;
    ensure!(pulled.module == module, "the module layer was not read whole");
    ensure!(
        pulled.signatures.is_empty(),
        "an oversized signature must be skipped: {:?}",
        pulled.signatures.len()
    );
    let real =
        raw.blob(b"MEUCIQDrealsignaturebytes", "application/vnd.wasm-operator.signature.v1+base64").await?;
    let real_manifest = signature_manifest(&real);
    let real_digest = raw.manifest("real-signature", &real_manifest).await?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": real_digest,
            "size": serde_json::to_vec(&real_manifest)?.len(),
            "artifactType": "application/vnd.wasm-operator.signature.v1",
        }],
    });
    raw.push(&good.replace(':', "-"), &index, "application/vnd.oci.image.index.v1+json").await?;
    let pulled = ours.pull(&reference("good")?, &good).await?;
    ensure!(pulled.signatures == [b"MEUCIQDrealsignaturebytes".to_vec()], "{:?}", pulled.signatures);

    // Anyone who can push can add referrers: a module with many signatures has at
    // most MAX_SIGNATURES of them pulled.
    let other_module = b"\0asm\x01\0\0\0 another one".to_vec();
    let other_wasm = raw.blob(&other_module, "application/wasm").await?;
    let crowded = raw.manifest("crowded", &manifest(&wasm_config, vec![&other_wasm])).await?;
    let mut entries = Vec::new();
    for n in 0..MAX_SIGNATURES + 8 {
        let layer = raw
            .blob(
                format!("MEUCIQsignature{n}").as_bytes(),
                "application/vnd.wasm-operator.signature.v1+base64",
            )
            .await?;
        let body = signature_manifest(&layer);
        let at = raw.manifest(&format!("signature-{n}"), &body).await?;
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": at,
            "size": serde_json::to_vec(&body)?.len(),
            "artifactType": "application/vnd.wasm-operator.signature.v1",
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    raw.push(&crowded.replace(':', "-"), &index, "application/vnd.oci.image.index.v1+json").await?;
    let pulled = ours.pull(&reference("crowded")?, &crowded).await?;
    ensure!(
        pulled.signatures.len() == MAX_SIGNATURES,
        "{} signatures pulled of {} referrers; at most {MAX_SIGNATURES} are looked at",
        pulled.signatures.len(),
        MAX_SIGNATURES + 8
    );
    Ok(())
}
