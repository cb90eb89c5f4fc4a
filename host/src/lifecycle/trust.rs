//! Which modules the administrator trusts: a signature by one of the given public keys
//! (`run --module-public-key`), a digest on the allowlist (`run --module-digest`), or
//! both (docs/abi.md, *Hot swap acceptance checks*; docs/supply.md).
//!
//! The check runs on the decoded module (the uncompressed wasm bytes, whose SHA-256 is
//! the digest `/module` shows), after decoding and before anything parses or compiles
//! it, so an untrusted module costs the host a hash and one signature check, nothing
//! more. It applies to every module the host would run: the first one at start, each
//! hot-swap candidate, and the last good module the host falls back to.
//!
//! Signatures are those of `cosign sign-blob --key` (and `cosign verify-blob`): an
//! ECDSA P-256 signature over the module's SHA-256, DER-encoded, then base64. The
//! public key is a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as `cosign.pub` or
//! `openssl pkey -pubout` writes it. `openssl dgst -sha256 -sign key.pem module.wasm |
//! base64 -w0` makes the same signature. A key is named by its fingerprint: the
//! SHA-256 of its DER SubjectPublicKeyInfo (`openssl pkey -pubin -in key.pub -outform
//! DER | sha256sum`).
//!
//! With keys *and* digests, a module must pass both. With neither, every module is
//! trusted (the open policy, today's default).

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// Where a module file's signature is looked for: beside it, with this suffix
/// (`module.wasm.sig`); a ConfigMap source's is the key with this suffix.
pub const SIGNATURE_SUFFIX: &str = ".sig";

/// The largest signature read: a DER P-256 signature is at most 72 bytes, 96 in
/// base64; the rest is room for whitespace. A larger one is refused unread.
pub const MAX_SIGNATURE_BYTES: usize = 1024;

/// The path of the signature of the module file at `path`: `PATH.sig`.
pub fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(SIGNATURE_SUFFIX);
    PathBuf::from(name)
}

/// Reads the signature file at `path`, at most one byte over [`MAX_SIGNATURE_BYTES`]
/// (so that an oversized one is refused for its size, and a path to an endless
/// device does not hang the reader); `None` when there is no such file.
pub fn read_signature_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_SIGNATURE_BYTES).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Why a key file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an ECDSA P-256 public key in PEM.
    #[error(
        "{name} is not an ECDSA P-256 public key in PEM (a \"PUBLIC KEY\" block, as cosign.pub or `openssl pkey -pubout` write it)"
    )]
    PublicKey {
        /// The file, or what the key is.
        name: String,
        /// The decoder's error.
        #[source]
        source: p256::pkcs8::spki::Error,
    },
    /// The file is not an unencrypted ECDSA P-256 private key in PEM.
    #[error(
        "{name} is not an unencrypted ECDSA P-256 private key in PEM (\"PRIVATE KEY\" or \"EC PRIVATE KEY\", as `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes it; sign with `cosign sign-blob` for a cosign key)"
    )]
    PrivateKey {
        /// The file, or what the key is.
        name: String,
    },
}

/// Why a signature cannot even be checked.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Larger than any P-256 signature.
    #[error(
        "the signature is {size} bytes, more than the {MAX_SIGNATURE_BYTES} any ECDSA P-256 signature takes"
    )]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Not base64.
    #[error("the signature is not base64 (a cosign or `openssl dgst -sign | base64` signature is)")]
    Base64(#[source] base64::DecodeError),
    /// Not a DER ECDSA signature.
    #[error("the signature is not a DER-encoded ECDSA P-256 signature")]
    Der(#[source] p256::ecdsa::Error),
}

/// A public key whose signatures are trusted.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: VerifyingKey,
    fingerprint: String,
    name: String,
}

impl TrustedKey {
    /// The key in `pem` (a SubjectPublicKeyInfo), called `name` in messages.
    pub fn from_pem(pem: &str, name: impl Into<String>) -> Result<Self, KeyError> {
        let name = name.into();
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|source| KeyError::PublicKey { name: name.clone(), source })?;
        Ok(Self { fingerprint: fingerprint(&key), key, name })
    }

    /// The key in the PEM file at `path`.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
        Self::from_pem(&pem, path.display().to_string())
    }

    /// `sha256:<hex>` of the key's DER SubjectPublicKeyInfo.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Where the key came from (its file).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `signature` is this key's over `module`.
    fn verifies(&self, module: &[u8], signature: &Signature) -> bool {
        self.key.verify(module, signature).is_ok()
    }
}

/// The fingerprint of a public key.
fn fingerprint(key: &VerifyingKey) -> String {
    match key.to_public_key_der() {
        Ok(der) => format!("sha256:{}", hex::encode(Sha256::digest(der.as_bytes()))),
        // Encoding a valid point cannot fail; a fingerprint nobody can match is safe.
        Err(_) => "sha256:unknown".to_owned(),
    }
}

/// A module digest on the allowlist: `sha256:` and 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedDigest(String);

impl std::str::FromStr for PinnedDigest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text.strip_prefix("sha256:").ok_or_else(|| {
            format!("{text:?} is not a module digest: expected sha256:<64 hex digits>, as /module shows it")
        })?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!(
                "{text:?} is not a module digest: expected sha256: and 64 lowercase hex digits"
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

impl std::fmt::Display for PinnedDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a module is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    /// Its digest is not on the allowlist.
    #[error("the module {digest} is not one of the {pinned} digest(s) pinned with --module-digest")]
    NotPinned {
        /// The module's digest.
        digest: String,
        /// How many are pinned.
        pinned: usize,
    },
    /// Keys are given and the module has no signature.
    #[error(
        "the module {digest} has no signature, and --module-public-key requires one by {keys} (sign it with `wasm-operator module sign` or `cosign sign-blob`)"
    )]
    Unsigned {
        /// The module's digest.
        digest: String,
        /// The trusted keys' fingerprints.
        keys: String,
    },
    /// The signature cannot be checked.
    #[error("the signature of module {digest} is unusable")]
    Malformed {
        /// The module's digest.
        digest: String,
        /// Why.
        #[source]
        source: SignatureError,
    },
    /// No trusted key made the signature (another key's, or another module's).
    #[error("the signature of module {digest} is not valid for it under any trusted key ({keys})")]
    WrongSignature {
        /// The module's digest.
        digest: String,
        /// The trusted keys' fingerprints.
        keys: String,
    },
}

impl Untrusted {
    /// The refusal's `reason` label: `digest` or `signature`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotPinned { .. } => "digest",
            Self::Unsigned { .. } | Self::Malformed { .. } | Self::WrongSignature { .. } => "signature",
        }
    }
}

/// What the administrator trusts. The default trusts every module.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    keys: Vec<TrustedKey>,
    digests: Vec<PinnedDigest>,
}

impl TrustPolicy {
    /// Trusts modules signed by one of `keys` (if any) whose digest is one of
    /// `digests` (if any).
    pub fn new(keys: Vec<TrustedKey>, digests: Vec<PinnedDigest>) -> Self {
        Self { keys, digests }
    }

    /// Whether a signature is required.
    pub fn requires_signature(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The pinned digests.
    pub fn digests(&self) -> &[PinnedDigest] {
        &self.digests
    }

    /// Checks `module` (decoded; `digest` is its `sha256:<hex>`) and its signatures
    /// (base64, as stored; none, one, or several from a registry: one valid signature
    /// by a trusted key is enough). Returns the fingerprint of the key that signed it,
    /// when keys are given.
    pub fn check(
        &self,
        module: &[u8],
        digest: &str,
        signatures: &[Vec<u8>],
    ) -> Result<Option<String>, Untrusted> {
        if !self.digests.is_empty() && !self.digests.iter().any(|pinned| pinned.0 == digest) {
            return Err(Untrusted::NotPinned { digest: digest.to_owned(), pinned: self.digests.len() });
        }
        if self.keys.is_empty() {
            return Ok(None);
        }
        let keys = || self.keys.iter().map(TrustedKey::fingerprint).collect::<Vec<_>>().join(", ");
        if signatures.is_empty() {
            return Err(Untrusted::Unsigned { digest: digest.to_owned(), keys: keys() });
        }
        let mut malformed = None;
        for stored in signatures {
            match decode_signature(stored) {
                Ok(signature) => {
                    if let Some(key) = self.keys.iter().find(|key| key.verifies(module, &signature)) {
                        return Ok(Some(key.fingerprint.clone()));
                    }
                }
                Err(err) => malformed = malformed.or(Some(err)),
            }
        }
        // One unusable signature among valid ones of other keys is not the news: say it
        // only when no signature could be checked at all.
        match malformed {
            Some(source) if signatures.len() == 1 => {
                Err(Untrusted::Malformed { digest: digest.to_owned(), source })
            }
            _ => Err(Untrusted::WrongSignature { digest: digest.to_owned(), keys: keys() }),
        }
    }
}

/// The signature in `stored`: base64 (surrounding whitespace allowed) of a DER ECDSA
/// signature.
pub fn decode_signature(stored: &[u8]) -> Result<Signature, SignatureError> {
    if stored.len() > MAX_SIGNATURE_BYTES {
        return Err(SignatureError::TooLarge { size: stored.len() });
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(stored.trim_ascii())
        .map_err(SignatureError::Base64)?;
    Signature::from_der(&der).map_err(SignatureError::Der)
}

/// A private key that signs modules.
#[derive(Debug, Clone)]
pub struct ModuleSigner {
    key: SigningKey,
}

impl ModuleSigner {
    /// The key in `pem`: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`),
    /// unencrypted, called `name` in messages.
    pub fn from_pem(pem: &str, name: impl Into<String>) -> Result<Self, KeyError> {
        let pem = pem.trim();
        let key = SigningKey::from_pkcs8_pem(pem)
            .ok()
            .or_else(|| p256::SecretKey::from_sec1_pem(pem).ok().map(SigningKey::from))
            .ok_or_else(|| KeyError::PrivateKey { name: name.into() })?;
        Ok(Self { key })
    }

    /// The key in the PEM file at `path`.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
        Self::from_pem(&pem, path.display().to_string())
    }

    /// The fingerprint of the key's public half.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.key.verifying_key())
    }

    /// The signature of `module` (decoded), base64 of DER, as cosign writes it.
    /// Deterministic (RFC 6979): no random numbers are needed.
    pub fn sign(&self, module: &[u8]) -> String {
        let signature: Signature = self.key.sign(module);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A fixed key pair, so that these tests need no RNG (the openssl-made vectors are
    // in host/tests/trust.rs).
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4GN+fDol5WG9z3bm
eHKJ5sv7gxKrPahRp0eyQFiofKOhRANCAAT65u+hIfmmnKdw8kbn6lo9z4AzFJFi
AFrHkA0141kCIXEnckz8pTt7hdili0bXhXGyCYIkr74dy8djyPQ4hygZ
-----END PRIVATE KEY-----";

    fn signer() -> ModuleSigner {
        ModuleSigner::from_pem(PRIVATE, "test key").expect("valid key")
    }

    fn public(signer: &ModuleSigner) -> TrustedKey {
        let pem = signer.key.verifying_key().to_public_key_pem(Default::default()).expect("encodes");
        TrustedKey::from_pem(&pem, "test key").expect("valid")
    }

    const DIGEST: &str = "sha256:00000000000000000000000000000000000000000000000000000000000000aa";

    #[test]
    fn the_open_policy_trusts_everything() {
        assert_eq!(TrustPolicy::default().check(b"m", DIGEST, &[]).expect("open"), None);
        assert_eq!(TrustPolicy::default().check(b"m", DIGEST, &[b"garbage".to_vec()]).expect("open"), None);
    }

    #[test]
    fn a_pinned_digest_is_required_when_digests_are_given() {
        let pinned: PinnedDigest = DIGEST.parse().expect("valid");
        let policy = TrustPolicy::new(vec![], vec![pinned]);
        assert!(policy.check(b"m", DIGEST, &[]).is_ok());
        let other = DIGEST.replace("aa", "ab");
        let err = policy.check(b"m", &other, &[]).expect_err("not pinned");
        assert_eq!(err.reason(), "digest");
        assert!(err.to_string().contains(&other), "{err}");
    }

    #[test]
    fn digests_must_be_sha256_and_lowercase_hex() {
        assert!(DIGEST.parse::<PinnedDigest>().is_ok());
        for bad in [
            "",
            "sha256:",
            &DIGEST[7..],
            &DIGEST.to_uppercase(),
            &DIGEST.replace("sha256", "sha512"),
            &format!("{DIGEST}0"),
            &DIGEST.replace('a', "g"),
        ] {
            assert!(bad.parse::<PinnedDigest>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn a_signature_verifies_under_its_key_only_for_its_module() {
        let signer = signer();
        let policy = TrustPolicy::new(vec![public(&signer)], vec![]);
        let signature = signer.sign(b"module one").into_bytes();
        let got = policy.check(b"module one", DIGEST, std::slice::from_ref(&signature)).expect("valid");
        assert_eq!(got.as_deref(), Some(signer.fingerprint().as_str()));
        let err =
            policy.check(b"module two", DIGEST, std::slice::from_ref(&signature)).expect_err("other module");
        assert!(matches!(err, Untrusted::WrongSignature { .. }), "{err}");
        // Among garbage and another module's signature, the valid one counts.
        let several = [b"garbage".to_vec(), signer.sign(b"module two").into_bytes(), signature.clone()];
        assert!(policy.check(b"module one", DIGEST, &several).is_ok());
        let err = policy.check(b"module one", DIGEST, &several[..2]).expect_err("none valid");
        assert!(matches!(err, Untrusted::WrongSignature { .. }), "{err}");
        let err = policy.check(b"module one", DIGEST, &[]).expect_err("unsigned");
        assert!(matches!(err, Untrusted::Unsigned { .. }), "{err}");
        assert_eq!(err.reason(), "signature");
    }

    #[test]
    fn keys_and_digests_together_need_both() {
        let signer = signer();
        let signature = [signer.sign(b"m").into_bytes()];
        let other = DIGEST.replace("aa", "ab");
        let policy = TrustPolicy::new(vec![public(&signer)], vec![other.parse().expect("valid")]);
        let err = policy.check(b"m", DIGEST, &signature).expect_err("signed, not pinned");
        assert_eq!(err.reason(), "digest");
        assert!(policy.check(b"m", &other, &signature).is_ok());
    }

    #[test]
    fn a_signature_file_is_read_bounded_so_an_endless_one_cannot_hang_the_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A large file first: without the bound it is read whole and this fails,
        // before the endless one below could hang the test.
        let large = dir.path().join("large.sig");
        std::fs::write(&large, vec![b'A'; 1 << 20]).expect("write");
        let read = read_signature_file(&large).expect("readable").expect("present");
        assert_eq!(read.len(), MAX_SIGNATURE_BYTES + 1, "a large signature file must be read bounded");
        let endless = dir.path().join("module.wasm.sig");
        std::os::unix::fs::symlink("/dev/zero", &endless).expect("symlink");
        let read = read_signature_file(&endless).expect("readable").expect("present");
        assert_eq!(read.len(), MAX_SIGNATURE_BYTES + 1, "one byte over the limit, then refused for its size");
        let policy = TrustPolicy::new(vec![public(&signer())], vec![]);
        let err = policy.check(b"m", DIGEST, &[read]).expect_err("oversized");
        assert!(crate::error_chain(&err).contains("more than"));
        assert_eq!(read_signature_file(&dir.path().join("absent.sig")).expect("no error"), None);
    }

    #[test]
    fn unusable_signatures_are_errors_not_panics() {
        let policy = TrustPolicy::new(vec![public(&signer())], vec![]);
        let huge = vec![b'A'; MAX_SIGNATURE_BYTES + 1];
        for (stored, want) in [
            (&b"not base64 !"[..], "base64"),
            (&b"AAAA"[..], "DER"),
            (&huge[..], "more than"),
            (&b""[..], "DER"),
        ] {
            let err = policy.check(b"m", DIGEST, &[stored.to_vec()]).expect_err("unusable");
            let chain = crate::error_chain(&err);
            assert!(chain.contains(want), "{chain}");
        }
    }

    #[test]
    fn keys_that_are_not_p256_public_keys_are_refused() {
        assert!(matches!(TrustedKey::from_pem(PRIVATE, "k"), Err(KeyError::PublicKey { .. })));
        assert!(matches!(TrustedKey::from_pem("hello", "k"), Err(KeyError::PublicKey { .. })));
        assert!(matches!(ModuleSigner::from_pem("hello", "k"), Err(KeyError::PrivateKey { .. })));
        let err = TrustedKey::read(Path::new("/nonexistent/key.pub")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/key.pub"), "{err}");
    }

    #[test]
    fn the_signature_sits_beside_the_module() {
        assert_eq!(signature_path(Path::new("/m/module.wasm")), Path::new("/m/module.wasm.sig"));
    }
}
