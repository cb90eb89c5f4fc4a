//! The real DittoFS module (`target/modules/dittofs-reconciler.wasm`, built by
//! `make wasm`) in the sandbox: it passes the host's validation, and its wasm
//! answers are byte for byte those of the same function called natively.
#![allow(clippy::unwrap_used)]

use reconcile_sdk::Outcome;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use wasm_operator::runtime::{LoadedModule, ModuleCache, SandboxConfig, SandboxEngine};

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// The module, loaded (compiled and validated) once for all the tests of this file.
fn load() -> Arc<LoadedModule> {
    static MODULE: OnceLock<Arc<LoadedModule>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let path = repo_path("target/modules/dittofs-reconciler.wasm");
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|err| panic!("{}: {err} (build it with `make wasm`)", path.display()));
            // Compiling takes seconds: cache it under target/, not in the user's cache.
            let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("module-cache");
            let options = SandboxConfig {
                cache: ModuleCache::Dir(cache),
                max_instances: 8,
                ..SandboxConfig::default()
            };
            let engine = SandboxEngine::new(&options).unwrap();
            engine.load(&bytes).unwrap_or_else(|err| panic!("the DittoFS module is rejected: {err}"))
        })
        .clone()
}

/// A DittoServer that has never been reconciled.
fn fresh_snapshot() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "abi": 1,
        "now": "2026-11-26T12:00:00Z",
        "object": {
            "apiVersion": "dittofs.dittofs.com/v1alpha1",
            "kind": "DittoServer",
            "metadata": {"name": "demo", "namespace": "default", "uid": "6f1c8e0e-7d1b-4c55-9b8a-0d8f2a1f9c11",
                         "generation": 1},
            "spec": {"replicas": 1, "storage": {"metadataSize": "1Gi", "cacheSize": "5Gi"}},
        },
    }))
    .unwrap()
}

/// The golden snapshots of `guest/tests/golden/`, and a fresh DittoServer.
fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(repo_path("guest/tests/golden"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with(".snapshot.json"))
        .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
        .collect();
    inputs.push(("a fresh DittoServer".into(), fresh_snapshot()));
    inputs
}

#[test]
fn the_dittofs_module_passes_validation_and_manages_dittoservers() {
    let module = load();
    let manifest = module.manifest();
    assert_eq!(manifest.name, "dittofs-reconciler");
    assert_eq!(
        (manifest.primary.kind.as_str(), manifest.primary.plural.as_str()),
        ("DittoServer", "dittoservers")
    );
    assert_eq!(manifest.version, env!("CARGO_PKG_VERSION"), "module and host versions are the workspace's");
}

#[test]
fn wasm_answers_are_the_native_answers() {
    let module = load();
    for (name, input) in inputs() {
        let reply = module.call(&input).unwrap_or_else(|err| panic!("{name}: {err}"));
        let native = reconcile_sdk::run_json(&input, dittofs_reconciler::reconcile);
        assert_eq!(reply.json, native, "{name}");
    }
}

#[test]
fn a_fresh_dittoserver_first_gets_its_finalizer() {
    let reply = load().call(&fresh_snapshot()).unwrap();
    let Outcome::Actions { actions, .. } = reply.outcome else { panic!("{}", reply.json) };
    assert_eq!(actions.first().map(|action| action.op()), Some("addFinalizer"), "{}", reply.json);
}

#[test]
fn bad_snapshots_are_error_outcomes_not_traps() {
    let module = load();
    for input in [&b"not json"[..], b"{}", br#"{"abi":2}"#] {
        let reply =
            module.call(input).unwrap_or_else(|err| panic!("{}: {err}", String::from_utf8_lossy(input)));
        assert!(matches!(reply.outcome, Outcome::Error(_)), "{}", reply.json);
    }
}
