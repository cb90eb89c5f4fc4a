//! Trusted module supply end to end (docs/supply.md) against the real control plane:
//! the operator runs in-process with `--module-public-key` and `--module-digest`
//! (`OperatorConfig::trust`), with keys and signatures made by `openssl`.
//!
//! - a ConfigMap source with a public key: the first module must be signed; a signed
//!   upload swaps; an unsigned one, one signed by another key and one carrying another
//!   module's signature are refused (metric, Warning event, `/module`) while the
//!   active module serves; `/module` names the signer and lists the history;
//! - a file source with a public key: an unsigned module at start stops the host
//!   before it connects, saying why; `PATH.sig` beside it starts it; a new module and
//!   its signature swap together;
//! - the last good module must pass the keys of the host that restarts from it;
//! - `--module-digest` refuses every digest but the pinned ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use kube::Client;
use operator_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use wasm_operator::runtime::{ModuleCache, SandboxConfig, SandboxLimits, digest};
use wasm_operator::{
    Backoff, ConfigMapSource, LoadFileError, ModuleSource, OperatorConfig, PinnedDigest, RunningOperator,
    Scope, StartError, TrustPolicy, TrustedKey, compress_for_configmap, start_from_source,
};

const CONFIGMAP: &str = "module";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `minimal.wat` with its manifest's version set to `version`: modules with one
/// identity and different digests, each passing every load check.
fn minimal(version: &str) -> Result<Vec<u8>> {
    let source = std::fs::read_to_string(repo_root().join("tests/fixtures/minimal.wat"))?;
    let patched =
        source.replace("\\\"version\\\":\\\"0.1.0\\\"", &format!("\\\"version\\\":\\\"{version}\\\""));
    anyhow::ensure!(patched != source || version == "0.1.0", "minimal.wat's manifest has version 0.1.0");
    Ok(wat::parse_str(patched)?)
}

/// Key pairs and signatures made by openssl, in a temporary directory.
struct Openssl {
    dir: tempfile::TempDir,
}

impl Openssl {
    fn new() -> Result<Self> {
        Ok(Self { dir: tempfile::tempdir()? })
    }

    fn run(args: &[&str]) -> Result<()> {
        let output = Command::new("openssl").args(args).output().context("cannot run openssl")?;
        anyhow::ensure!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// A new key pair; returns (private key file, public key file).
    fn pair(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        let private = self.dir.path().join(format!("{name}.pem"));
        let public = self.dir.path().join(format!("{name}.pub"));
        let (p, q) = (private.display().to_string(), public.display().to_string());
        Self::run(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &p])?;
        Self::run(&["pkey", "-in", &p, "-pubout", "-out", &q])?;
        Ok((private, public))
    }

    /// The base64 signature of `module` by `key`, as cosign writes it.
    fn sign(&self, key: &Path, module: &[u8]) -> Result<Vec<u8>> {
        let input = self.dir.path().join("to-sign.wasm");
        let der = self.dir.path().join("signature.der");
        std::fs::write(&input, module)?;
        Self::run(&[
            "dgst",
            "-sha256",
            "-sign",
            &key.display().to_string(),
            "-out",
            &der.display().to_string(),
            &input.display().to_string(),
        ])?;
        Ok(base64::engine::general_purpose::STANDARD.encode(std::fs::read(&der)?).into_bytes())
    }
}

fn trust_keys(public: &[&Path]) -> Result<TrustPolicy> {
    let keys = public.iter().map(|p| TrustedKey::read(p)).collect::<Result<Vec<_>, _>>()?;
    Ok(TrustPolicy::new(keys, vec![]))
}

fn sandbox(cache: ModuleCache) -> SandboxConfig {
    SandboxConfig {
        limits: SandboxLimits { deadline: Duration::from_millis(2000), ..SandboxLimits::default() },
        cache,
        ..SandboxConfig::default()
    }
}

fn config(namespace: &str, trust: TrustPolicy) -> OperatorConfig {
    OperatorConfig {
        scope: Scope { namespace: Some(namespace.to_owned()), label_selector: None },
        probe_addr: Some("127.0.0.1:0".parse().expect("an address")),
        metrics_addr: Some("127.0.0.1:0".parse().expect("an address")),
        backoff: Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(2) },
        instance: Some("supply-test".into()),
        trust,
        ..OperatorConfig::default()
    }
}

fn configmap(namespace: &str) -> ConfigMapSource {
    ConfigMapSource { namespace: namespace.into(), name: CONFIGMAP.into(), key: "module.wasm".into() }
}

/// Uploads `module` (gzip-compressed) and `signature` as `module push` does.
async fn push(client: &Client, namespace: &str, module: &[u8], signature: Option<Vec<u8>>) -> Result<()> {
    configmap(namespace).upload(client, compress_for_configmap(module)?, signature, "e2e-push").await?;
    Ok(())
}

async fn start(
    client: &Client,
    namespace: &str,
    source: &ModuleSource,
    cache: ModuleCache,
    trust: TrustPolicy,
) -> Result<RunningOperator, StartError> {
    start_from_source(client.clone(), "the test cluster", source, &sandbox(cache), config(namespace, trust))
        .await
}

/// Pushes a candidate and waits for its refusal for `reason`, with `words` in the
/// Warning event; the module `active` must still serve.
#[allow(clippy::too_many_arguments)]
async fn expect_refused(
    op: &RunningOperator,
    client: &Client,
    namespace: &str,
    candidate: (&[u8], Option<Vec<u8>>),
    reason: &str,
    words: &str,
    active: &str,
) -> Result<()> {
    let before = op.metrics.module_rejections(reason);
    push(client, namespace, candidate.0, candidate.1).await?;
    // This candidate's own refusal: the last one's message names why (an earlier
    // refusal's event may carry the same words).
    let endpoint = eventually(&format!("a candidate to be refused ({words})"), || async {
        let endpoint = module_endpoint(op).await?;
        let message = endpoint["lastRejection"]["message"].as_str().unwrap_or_default().to_owned();
        Ok((op.metrics.module_rejections(reason) > before && message.contains(words)).then_some(endpoint))
    })
    .await?;
    assert_eq!(op.active.current().module.digest(), active, "the active module must stay ({words})");
    eventually(&format!("a ModuleRejected event saying {words:?}"), || async {
        let notes = events(client, namespace, CONFIGMAP, "ModuleRejected").await?;
        Ok(notes.iter().any(|(kind, note)| kind == "Warning" && note.contains(words)).then_some(()))
    })
    .await?;
    assert_eq!(endpoint["lastRejection"]["reason"], reason, "{endpoint}");
    assert_eq!(endpoint["lastRejection"]["digest"], digest(candidate.0), "{endpoint}");
    Ok(())
}

#[tokio::test]
async fn with_a_public_key_only_signed_configmap_uploads_swap_in() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "supply-keys").await?;
    let ns = ns.name().to_owned();
    let keys = Openssl::new()?;
    let (private, public) = keys.pair("trusted")?;
    let (other_private, _) = keys.pair("other")?;
    let trust = trust_keys(&[&public])?;
    let fingerprint = trust.keys()[0].fingerprint().to_owned();
    let (v1, v2, v3) = (minimal("0.1.0")?, minimal("0.2.0")?, minimal("0.3.0")?);
    let cache = tempfile::tempdir()?;
    let source = ModuleSource::ConfigMap(configmap(&ns));

    // At start the ConfigMap holds v1 unsigned: the host waits, refusing it.
    push(&client, &ns, &v1, None).await?;
    let starting = {
        let (client, ns, source, trust) = (client.clone(), ns.clone(), source.clone(), trust.clone());
        let cache = ModuleCache::Dir(cache.path().join("cache"));
        tokio::spawn(async move { start(&client, &ns, &source, cache, trust).await })
    };
    eventually("the unsigned first module to be refused", || async {
        let notes = events(&client, &ns, CONFIGMAP, "ModuleRejected").await?;
        Ok(notes.iter().any(|(_, note)| note.contains("has no signature")).then_some(()))
    })
    .await?;
    assert!(!starting.is_finished(), "the host must not start on an unsigned module");
    push(&client, &ns, &v1, Some(keys.sign(&private, &v1)?)).await?;
    let op = tokio::time::timeout(DEFAULT_TIMEOUT, starting).await???;
    wait_active(&op, &digest(&v1)).await?;
    assert_eq!(module_endpoint(&op).await?["signer"], fingerprint.as_str());

    let v1_digest = digest(&v1);
    expect_refused(&op, &client, &ns, (&v2, None), "signature", "has no signature", &v1_digest).await?;
    let by_other = keys.sign(&other_private, &v2)?;
    expect_refused(&op, &client, &ns, (&v2, Some(by_other)), "signature", "not valid for it", &v1_digest)
        .await?;
    let of_v1 = keys.sign(&private, &v1)?;
    expect_refused(&op, &client, &ns, (&v2, Some(of_v1)), "signature", "not valid for it", &v1_digest)
        .await?;
    expect_refused(
        &op,
        &client,
        &ns,
        (&v2, Some(b"bm90IGEgc2lnbmF0dXJl".to_vec())),
        "signature",
        "unusable",
        &v1_digest,
    )
    .await?;

    // Signed by the trusted key (the host's own signer this time): swapped in.
    let signer = wasm_operator::ModuleSigner::read(&private)?;
    push(&client, &ns, &v2, Some(signer.sign(&v2).into_bytes())).await?;
    wait_active(&op, &digest(&v2)).await?;
    push(&client, &ns, &v3, Some(keys.sign(&private, &v3)?)).await?;
    wait_active(&op, &digest(&v3)).await?;
    let endpoint = module_endpoint(&op).await?;
    assert_eq!(endpoint["signer"], fingerprint.as_str(), "{endpoint}");
    let history: Vec<&str> = endpoint["history"]
        .as_array()
        .context("history")?
        .iter()
        .filter_map(|h| h["digest"].as_str())
        .collect();
    assert_eq!(history, [digest(&v3), digest(&v2), digest(&v1)], "{endpoint}");
    let metrics = op.metrics.encode();
    assert!(metrics.contains(&format!("signer=\"{fingerprint}\"")), "{metrics}");
    let activated = events(&client, &ns, CONFIGMAP, "ModuleActivated").await?;
    assert!(activated.iter().any(|(_, note)| note.contains(&fingerprint)), "{activated:?}");
    op.shutdown().await;

    // The last good module (v3, signed) is what a restart falls back to, with the
    // same key; a host with another key refuses it, and waits.
    push(&client, &ns, b"\0asm\x01\0\0\0 not a module", None).await?;
    let op =
        start(&client, &ns, &source, ModuleCache::Dir(cache.path().join("cache")), trust.clone()).await?;
    assert_eq!(op.active.current().module.digest(), digest(&v3), "the host did not start from v3");
    op.shutdown().await;
    let (_, stranger) = keys.pair("stranger")?;
    let waiting = {
        let (client, ns, source) = (client.clone(), ns.clone(), source.clone());
        let cache = ModuleCache::Dir(cache.path().join("cache"));
        let trust = trust_keys(&[&stranger])?;
        tokio::spawn(async move { start(&client, &ns, &source, cache, trust).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!waiting.is_finished(), "a last good module another key signed must not start the host");
    waiting.abort();
    Ok(())
}

#[tokio::test]
async fn with_a_public_key_a_file_source_needs_its_signature_beside_it() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "supply-file").await?;
    let ns = ns.name().to_owned();
    let keys = Openssl::new()?;
    let (private, public) = keys.pair("trusted")?;
    let trust = trust_keys(&[&public])?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("module.wasm");
    let sig = dir.path().join("module.wasm.sig");
    let (v1, v2) = (minimal("0.1.0")?, minimal("0.2.0")?);
    std::fs::write(&path, &v1)?;
    let source = ModuleSource::File(path.clone());

    let err = start(&client, &ns, &source, ModuleCache::Disabled, trust.clone()).await.expect_err("unsigned");
    assert!(
        matches!(&err, StartError::Module(LoadFileError::Untrusted { .. })),
        "{}",
        wasm_operator::error_chain(&err)
    );
    assert!(
        wasm_operator::error_chain(&err).contains("has no signature"),
        "{}",
        wasm_operator::error_chain(&err)
    );

    std::fs::write(&sig, keys.sign(&private, &v1)?)?;
    let op = start(&client, &ns, &source, ModuleCache::Disabled, trust).await?;
    wait_active(&op, &digest(&v1)).await?;

    // A new module with the old signature is refused; its own signature swaps it in,
    // without the module file changing again.
    let before = op.metrics.module_rejections("signature");
    std::fs::write(&path, &v2)?;
    eventually("v2 with v1's signature to be refused", || async {
        Ok((op.metrics.module_rejections("signature") > before).then_some(()))
    })
    .await?;
    assert_eq!(op.active.current().module.digest(), digest(&v1));
    std::fs::write(&sig, keys.sign(&private, &v2)?)?;
    wait_active(&op, &digest(&v2)).await?;
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn pinned_digests_refuse_every_other_module() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "supply-pin").await?;
    let ns = ns.name().to_owned();
    let (v1, v2, v3) = (minimal("0.1.0")?, minimal("0.2.0")?, minimal("0.3.0")?);
    let pinned: Vec<PinnedDigest> = [digest(&v1), digest(&v3)]
        .iter()
        .map(|d| d.parse())
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let trust = TrustPolicy::new(vec![], pinned);
    push(&client, &ns, &v1, None).await?;
    let source = ModuleSource::ConfigMap(configmap(&ns));
    let op = start(&client, &ns, &source, ModuleCache::Disabled, trust).await?;
    wait_active(&op, &digest(&v1)).await?;
    expect_refused(
        &op,
        &client,
        &ns,
        (&v2, None),
        "digest",
        "not one of the 2 digest(s) pinned",
        &digest(&v1),
    )
    .await?;
    // Back to a pinned one: the rollback an administrator makes by pinning.
    push(&client, &ns, &v3, None).await?;
    wait_active(&op, &digest(&v3)).await?;
    op.shutdown().await;
    Ok(())
}
