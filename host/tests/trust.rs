//! Module signatures against the real tools: keys and signatures made by `openssl`
//! here, checked by the host's trust policy and by `wasm-operator module verify`, and
//! the host's `module sign` checked by `openssl dgst -verify` (docs/supply.md).
//!
//! Vectors: a good signature, one by another key, one with a flipped byte, a
//! truncated one, base64 garbage, a signature of another module, and none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use wasm_operator::runtime::digest;
use wasm_operator::{PinnedDigest, TrustPolicy, TrustedKey, Untrusted};

/// A temporary directory with openssl-made key pairs and a module in it.
struct Keys {
    dir: tempfile::TempDir,
}

fn openssl(args: &[&str]) -> Output {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (make test installs it when missing)");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

impl Keys {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path_str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `NAME.pem` (private, PKCS#8) and `NAME.pub` (SubjectPublicKeyInfo).
    fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
        let (private, public) =
            (self.path_str(&format!("{name}.pem")), self.path_str(&format!("{name}.pub")));
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &private]);
        openssl(&["pkey", "-in", &private, "-pubout", "-out", &public]);
        (private.into(), public.into())
    }

    /// A module file (any bytes: the trust check runs before the module is parsed).
    fn module(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// openssl's signature of `module` with `key`: DER, then base64 as cosign writes.
    fn openssl_sign(&self, key: &Path, module: &Path) -> Vec<u8> {
        let der = self.path("signature.der").display().to_string();
        openssl(&[
            "dgst",
            "-sha256",
            "-sign",
            &key.display().to_string(),
            "-out",
            &der,
            &module.display().to_string(),
        ]);
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&der).unwrap()).into_bytes()
    }
}

fn policy(public: &[&Path]) -> TrustPolicy {
    TrustPolicy::new(public.iter().map(|p| TrustedKey::read(p).unwrap()).collect(), vec![])
}

/// `sha256:` of a key's DER SubjectPublicKeyInfo, computed by openssl.
fn openssl_fingerprint(keys: &Keys, public: &Path) -> String {
    let der = keys.path_str("public.der");
    openssl(&["pkey", "-pubin", "-in", &public.display().to_string(), "-outform", "DER", "-out", &der]);
    digest(&std::fs::read(&der).unwrap())
}

#[test]
fn openssl_signatures_verify_and_every_damaged_one_is_refused() {
    let keys = Keys::new();
    let (private, public) = keys.pair("trusted");
    let (other_private, _) = keys.pair("other");
    let module_bytes = b"\0asm\x01\0\0\0 a module to sign".to_vec();
    let module = keys.module("module.wasm", &module_bytes);
    let trust = policy(&[&public]);
    let check = |signature: &[u8]| trust.check(&module_bytes, &digest(&module_bytes), &[signature.to_vec()]);

    // Good, many times over: openssl's ECDSA is randomised, and about half of its
    // signatures have a high S, which must verify too (cosign does not normalise).
    for _ in 0..8 {
        let good = keys.openssl_sign(&private, &module);
        let signer = check(&good).expect("a good signature verifies");
        assert_eq!(signer.as_deref(), Some(openssl_fingerprint(&keys, &public).as_str()));
    }

    let good = keys.openssl_sign(&private, &module);
    let wrong_key = keys.openssl_sign(&other_private, &module);
    assert!(matches!(check(&wrong_key), Err(Untrusted::WrongSignature { .. })));

    let der = base64::engine::general_purpose::STANDARD.decode(&good).unwrap();
    let encode = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der).into_bytes();
    // A flipped byte in the last scalar still parses as DER, and must not verify.
    let mut flipped = der.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    assert!(matches!(check(&encode(&flipped)), Err(Untrusted::WrongSignature { .. })));
    let mut truncated = der.clone();
    truncated.truncate(der.len() - 4);
    let err = check(&encode(&truncated)).expect_err("truncated");
    assert!(matches!(err, Untrusted::Malformed { .. }), "{err}");
    let err = check(b"%%% not base64 %%%").expect_err("garbage");
    assert!(wasm_operator::error_chain(&err).contains("not base64"), "{err}");

    // The module with one byte changed: the signature is another module's now.
    let mut tampered = module_bytes.clone();
    tampered[9] ^= 0x20;
    let err =
        trust.check(&tampered, &digest(&tampered), std::slice::from_ref(&good)).expect_err("another module");
    assert!(matches!(err, Untrusted::WrongSignature { .. }), "{err}");
    let err = trust.check(&module_bytes, &digest(&module_bytes), &[]).expect_err("unsigned");
    assert!(matches!(err, Untrusted::Unsigned { .. }), "{err}");
    assert_eq!(err.reason(), "signature");
}

#[test]
fn any_one_of_several_keys_will_do() {
    let keys = Keys::new();
    let (first_private, first) = keys.pair("first");
    let (second_private, second) = keys.pair("second");
    let module = keys.module("module.wasm", b"\0asm\x01\0\0\0 several keys");
    let bytes = std::fs::read(&module).unwrap();
    let trust = policy(&[&first, &second]);
    for (private, public) in [(&first_private, &first), (&second_private, &second)] {
        let signer = trust.check(&bytes, &digest(&bytes), &[keys.openssl_sign(private, &module)]).unwrap();
        assert_eq!(signer, Some(openssl_fingerprint(&keys, public)));
    }
}

#[test]
fn pinned_digests_are_an_allowlist() {
    let pinned: Vec<PinnedDigest> =
        [digest(b"one"), digest(b"two")].iter().map(|d| d.parse().unwrap()).collect();
    let trust = TrustPolicy::new(vec![], pinned);
    assert!(trust.check(b"one", &digest(b"one"), &[]).is_ok());
    assert!(trust.check(b"two", &digest(b"two"), &[]).is_ok());
    let err = trust.check(b"three", &digest(b"three"), &[]).expect_err("not pinned");
    assert_eq!(err.reason(), "digest");
    assert!(err.to_string().contains(&digest(b"three")), "{err}");
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasm-operator")).args(args).env_remove("RUST_LOG").output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn module_sign_makes_what_openssl_verifies_and_module_verify_checks_openssl_signatures() {
    let keys = Keys::new();
    let (private, public) = keys.pair("trusted");
    let (_, other) = keys.pair("other");
    let module = keys.module("module.wasm", b"\0asm\x01\0\0\0 signed by the CLI");
    let (module_str, private_str, public_str, other_str) = (
        module.display().to_string(),
        private.display().to_string(),
        public.display().to_string(),
        other.display().to_string(),
    );

    // `module sign` writes MODULE.sig; openssl verifies it.
    let signed = cli(&["module", "sign", "--key", &private_str, &module_str]);
    assert!(signed.status.success(), "{}", text(&signed));
    assert!(text(&signed).contains(&openssl_fingerprint(&keys, &public)), "{}", text(&signed));
    let sig = std::fs::read(keys.path("module.wasm.sig")).unwrap();
    let der = base64::engine::general_purpose::STANDARD.decode(sig.trim_ascii()).unwrap();
    std::fs::write(keys.path("cli.der"), der).unwrap();
    let verified = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            &public_str,
            "-signature",
            &keys.path_str("cli.der"),
            &module_str,
        ])
        .output()
        .unwrap();
    assert!(verified.status.success(), "openssl refuses the CLI's signature: {}", text(&verified));

    // `module verify` with the right key: 0; another key: 1, saying why.
    let ok = cli(&["module", "verify", "--module-public-key", &public_str, &module_str]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let refused = cli(&["module", "verify", "--module-public-key", &other_str, &module_str]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("not valid for it under any trusted key"), "{}", text(&refused));

    // An openssl signature in a file of its own name.
    let openssl_sig = keys.openssl_sign(&private, &module);
    std::fs::write(keys.path("openssl.sig"), &openssl_sig).unwrap();
    let ok = cli(&[
        "module",
        "verify",
        "--module-public-key",
        &public_str,
        &module_str,
        &keys.path_str("openssl.sig"),
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));

    // Pinned digests, with and without a match.
    let module_digest = digest(&std::fs::read(&module).unwrap());
    let pinned = cli(&["module", "verify", "--module-digest", &module_digest, &module_str]);
    assert_eq!(pinned.status.code(), Some(0), "{}", text(&pinned));
    let other_digest = digest(b"another module");
    let unpinned = cli(&["module", "verify", "--module-digest", &other_digest, &module_str]);
    assert_eq!(unpinned.status.code(), Some(1), "{}", text(&unpinned));

    // No signature at all, a key that is not a key, nothing to verify against.
    std::fs::remove_file(keys.path("module.wasm.sig")).unwrap();
    let unsigned = cli(&["module", "verify", "--module-public-key", &public_str, &module_str]);
    assert_eq!(unsigned.status.code(), Some(1), "{}", text(&unsigned));
    assert!(text(&unsigned).contains("has no signature"), "{}", text(&unsigned));
    let not_a_key = cli(&["module", "verify", "--module-public-key", &module_str, &module_str]);
    assert_eq!(not_a_key.status.code(), Some(2), "{}", text(&not_a_key));
    assert!(text(&not_a_key).contains("not an ECDSA P-256 public key"), "{}", text(&not_a_key));
    let nothing = cli(&["module", "verify", &module_str]);
    assert_eq!(nothing.status.code(), Some(2), "{}", text(&nothing));
    // A private key given as the signing key must be one: a public key is refused.
    let wrong = cli(&["module", "sign", "--key", &public_str, &module_str]);
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(text(&wrong).contains("private key"), "{}", text(&wrong));
}

#[test]
fn sec1_private_keys_from_openssl_ecparam_sign_too() {
    let keys = Keys::new();
    let private = keys.path_str("sec1.pem");
    let public = keys.path_str("sec1.pub");
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &private]);
    openssl(&["ec", "-in", &private, "-pubout", "-out", &public]);
    assert!(std::fs::read_to_string(&private).unwrap().contains("BEGIN EC PRIVATE KEY"));
    let module = keys.module("module.wasm", b"\0asm\x01\0\0\0 sec1");
    let module_str = module.display().to_string();
    let signed = cli(&["module", "sign", "--key", &private, &module_str]);
    assert!(signed.status.success(), "{}", text(&signed));
    let ok = cli(&["module", "verify", "--module-public-key", &public, &module_str]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
}
