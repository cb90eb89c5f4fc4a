//! The wasmtime layer against real modules: the hostile fixtures of
//! `tests/fixtures/*.wat`, small inline modules for the checks no fixture covers, and
//! the DittoFS module (`target/modules/dittofs-reconciler.wasm`, from `make wasm`).
//!
//! Every hostile module must fail cleanly with the typed error that names what it
//! did. No test asserts a duration: the only time bound is the one that keeps the
//! endless-loop test from hanging if the deadline were broken.
#![allow(clippy::unwrap_used)]

use reconcile_sdk::{Action, Outcome};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasm_operator::runtime::{
    Allocator, CallError, CallStage, LoadError, LoadedModule, ManifestError, ModuleCache, ModuleCaller,
    SandboxConfig, SandboxEngine, SandboxLimits,
};

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// A fixture of `tests/fixtures/`, assembled to binary wasm.
fn fixture(name: &str) -> Vec<u8> {
    let path = repo_path(&format!("tests/fixtures/{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn inline(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap_or_else(|err| panic!("inline module: {err}"))
}

fn options() -> SandboxConfig {
    SandboxConfig { cache: ModuleCache::Disabled, max_instances: 8, ..SandboxConfig::default() }
}

fn engine_with(limits: SandboxLimits) -> SandboxEngine {
    SandboxEngine::new(&SandboxConfig { limits, ..options() }).unwrap()
}

fn engine() -> SandboxEngine {
    engine_with(SandboxLimits::default())
}

fn load(name: &str) -> Arc<LoadedModule> {
    engine().load(&fixture(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

fn rejection(name: &str) -> LoadError {
    engine().load(&fixture(name)).expect_err(name)
}

/// A snapshot of a primary named `hostile`, as the operator would send it.
fn snapshot() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "abi": 1,
        "now": "2026-11-26T12:00:00Z",
        "object": {
            "apiVersion": "dittofs.dittofs.com/v1alpha1",
            "kind": "DittoServer",
            "metadata": {"name": "hostile", "namespace": "default", "uid": "6f1c8e0e-7d1b-4c55-9b8a-0d8f2a1f9c11",
                         "generation": 1, "resourceVersion": "42"},
            "spec": {},
        },
        "related": [],
    }))
    .unwrap()
}

fn call_error(module: &LoadedModule) -> CallError {
    module.call(&snapshot()).expect_err("the call fails")
}

// --- A well-behaved module -------------------------------------------------------

#[test]
fn a_minimal_module_loads_and_reconciles() {
    let bytes = fixture("minimal");
    let module = engine().load(&bytes).unwrap();
    assert_eq!(module.manifest().name, "minimal");
    assert_eq!(module.manifest().primary.kind, "DittoServer");
    assert!(module.digest().starts_with("sha256:") && module.digest().len() == 7 + 64, "{}", module.digest());
    assert_eq!(module.size(), bytes.len());

    let reply = module.call(&snapshot()).unwrap();
    assert_eq!(reply.json, r#"{"actions":[],"requeueAfterSeconds":60}"#);
    assert_eq!(
        reply.outcome,
        Outcome::Actions { actions: vec![], requires: vec![], requeue_after_seconds: Some(60) }
    );
}

#[test]
fn the_digest_is_the_sha256_of_the_bytes() {
    let a = load("minimal");
    let b = load("minimal");
    let c = load("forbidden-delete-unowned");
    assert_eq!(a.digest(), b.digest());
    assert_ne!(a.digest(), c.digest());
}

#[test]
fn both_allocators_run_the_same_calls() {
    for allocator in [Allocator::Pooling, Allocator::OnDemand] {
        let engine = SandboxEngine::new(&SandboxConfig { allocator, ..options() }).unwrap();
        let module = engine.load(&fixture("minimal")).unwrap();
        module.call(&snapshot()).unwrap();
        let bomb = engine.load(&fixture("memory-bomb")).unwrap();
        assert!(matches!(call_error(&bomb), CallError::MemoryLimit { .. }), "{allocator:?}");
    }
}

#[test]
fn every_call_gets_a_fresh_instance() {
    // Answers with an outcome only while its global is 0, and sets it: a reused
    // instance would answer garbage on the second call.
    let module = engine()
        .load(&inline(&minimal_module(
            r#"(global $used (mut i32) (i32.const 0))
               (func (export "reconcile") (param i32 i32) (result i64)
                 (if (global.get $used) (then (return (i64.const 0x0000200000000004))))
                 (global.set $used (i32.const 1))
                 (i64.const 0x000010000000000e))"#,
        )))
        .unwrap();
    for _ in 0..3 {
        assert_eq!(module.call(&snapshot()).unwrap().json, r#"{"actions":[]}"#);
    }
}

// --- Hostile at call time (they pass the smoke test) -----------------------------

#[test]
fn an_endless_loop_stops_at_the_deadline() {
    let limits = SandboxLimits { deadline: Duration::from_millis(50), ..SandboxLimits::default() };
    let module = engine_with(limits).load(&fixture("endless-loop")).unwrap();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(call_error(&module)));
    // Generous: only there so that a broken deadline fails instead of hanging.
    let err = wait.recv_timeout(Duration::from_secs(60)).expect("the endless loop returns");
    assert!(
        matches!(err, CallError::DeadlineExceeded { stage: CallStage::Reconcile, deadline }
            if deadline == Duration::from_millis(50)),
        "{err}"
    );
    assert_eq!(err.to_string(), "module exceeded its 50 ms deadline in reconcile");
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let err = call_error(&load("memory-bomb"));
    assert!(
        matches!(err, CallError::MemoryLimit { stage: CallStage::Reconcile, limit, requested }
            if limit == 64 << 20 && requested > limit),
        "{err}"
    );
    assert!(err.to_string().starts_with("module exceeded its memory limit of 64 MiB in reconcile"), "{err}");
}

#[test]
fn a_deep_recursion_traps_instead_of_overflowing_the_host_stack() {
    // Recurses without end on real snapshots (longer than the smoke test's).
    let module = engine()
        .load(&inline(&minimal_module(
            r#"(func $down (param i32) (result i32) (i32.add (call $down (local.get 0)) (i32.const 1)))
               (func (export "reconcile") (param i32 i32) (result i64)
                 (if (i32.lt_u (local.get 1) (i32.const 400)) (then (return (i64.const 0x000010000000000e))))
                 (drop (call $down (i32.const 0)))
                 (i64.const 0x000010000000000e))"#,
        )))
        .unwrap();
    let err = module.call(&[b' '; 1000]).expect_err("stack exhausted");
    assert!(
        matches!(&err, CallError::Trap { stage: CallStage::Reconcile, message } if message.contains("call stack exhausted")),
        "{err}"
    );
}

#[test]
fn an_out_of_bounds_result_is_a_bad_pointer() {
    let err = call_error(&load("bad-pointer"));
    assert!(
        matches!(
            err,
            CallError::BadPointer { stage: CallStage::Reconcile, ptr: 0xffff_ff00, len: 0x1000, .. }
        ),
        "{err}"
    );
}

#[test]
fn a_huge_result_hits_the_memory_limit_or_the_output_limit() {
    // With the default 64 MiB, the module cannot even make its 100 MiB result.
    let err = call_error(&load("huge-output"));
    assert!(matches!(err, CallError::MemoryLimit { .. }), "{err}");

    // With room for it, the host refuses to copy it.
    let limits = SandboxLimits { memory_bytes: 256 << 20, ..SandboxLimits::default() };
    let module = engine_with(limits).load(&fixture("huge-output")).unwrap();
    let err = call_error(&module);
    assert!(
        matches!(err, CallError::OutputTooLarge { stage: CallStage::Reconcile, len: 104_857_600, limit }
            if limit == 4 << 20),
        "{err}"
    );
}

#[test]
fn garbage_output_is_not_json() {
    let err = call_error(&load("garbage-output"));
    assert!(matches!(err, CallError::InvalidJson { stage: CallStage::Reconcile, .. }), "{err}");
    assert!(
        wasm_operator::error_chain(&err)
            .starts_with("module output from reconcile is not JSON: expected ident at line 1 column 2"),
        "{err}"
    );
}

#[test]
fn json_that_is_not_an_outcome_is_refused_with_serdes_reason() {
    let err = call_error(&load("not-an-outcome"));
    assert!(matches!(err, CallError::InvalidOutcome(_)), "{err}");
    assert!(wasm_operator::error_chain(&err).contains("unknown variant `deleteEverything`"), "{err}");
}

#[test]
fn output_that_is_not_utf8_is_refused() {
    let module = engine()
        .load(&inline(&minimal_module(
            r#"(func (export "reconcile") (param i32 i32) (result i64)
                 (if (i32.lt_u (local.get 1) (i32.const 400)) (then (return (i64.const 0x000010000000000e))))
                 (i64.const 0x0000300000000002))
               (data (i32.const 0x3000) "\ff\fe")"#,
        )))
        .unwrap();
    // Longer than the smoke snapshot, so that the module answers with its garbage.
    let err = module.call(&[b' '; 1000]).expect_err("not UTF-8");
    assert!(matches!(err, CallError::InvalidUtf8 { stage: CallStage::Reconcile, .. }), "{err}");
}

#[test]
fn a_failed_or_wild_allocation_is_refused() {
    let zero = engine().load(&inline(&module_with_alloc("(i32.const 0)"))).expect_err("alloc 0");
    assert!(matches!(zero, LoadError::SmokeTest(CallError::AllocationFailed { .. })), "{zero}");

    let wild = engine().load(&inline(&module_with_alloc("(i32.const 0xfffffff0)"))).expect_err("wild alloc");
    assert!(
        matches!(
            wild,
            LoadError::SmokeTest(CallError::BadPointer { stage: CallStage::Alloc, ptr: 0xffff_fff0, .. })
        ),
        "{wild}"
    );
}

#[test]
fn oversized_input_is_refused_before_the_module_sees_it() {
    let limits = SandboxLimits { memory_bytes: 1 << 20, output_bytes: 1 << 20, ..SandboxLimits::default() };
    let module = engine_with(limits).load(&fixture("minimal")).unwrap();
    let err = module.call(&vec![b' '; 2 << 20]).expect_err("too large");
    assert!(matches!(err, CallError::InputTooLarge { len } if len == 2 << 20), "{err}");
}

// --- Rejected at load ------------------------------------------------------------

#[test]
fn a_module_with_imports_is_rejected_naming_them() {
    let err = rejection("with-import");
    let LoadError::Imports { imports } = &err else { panic!("{err}") };
    assert_eq!(imports, &["env::log (function)", "wasi_snapshot_preview1::fd_write (function)"]);
    assert!(
        err.to_string().contains("env::log (function), wasi_snapshot_preview1::fd_write (function)"),
        "{err}"
    );
}

#[test]
fn a_module_of_another_abi_is_rejected() {
    let err = rejection("wrong-abi");
    assert!(matches!(err, LoadError::WrongAbi { found: 2 }), "{err}");
}

#[test]
fn a_module_that_traps_in_the_smoke_test_is_rejected() {
    let err = rejection("trap-in-smoke");
    let LoadError::SmokeTest(CallError::Trap { stage: CallStage::Reconcile, message }) = &err else {
        panic!("{err}")
    };
    assert!(message.contains("unreachable"), "{message}");
}

#[test]
fn a_module_with_an_invalid_manifest_is_rejected_naming_the_field() {
    let err = rejection("invalid-manifest");
    assert!(
        matches!(&err, LoadError::ManifestInvalid(ManifestError::Empty { field }) if field == "related[0].plural"),
        "{err}"
    );
}

#[test]
fn a_module_that_loops_in_the_smoke_test_is_rejected_at_the_deadline() {
    let limits = SandboxLimits { deadline: Duration::from_millis(20), ..SandboxLimits::default() };
    let err = engine_with(limits)
        .load(&inline(&minimal_module(
            r#"(func (export "reconcile") (param i32 i32) (result i64) (loop $l (br $l)) (unreachable))"#,
        )))
        .expect_err("rejected");
    assert!(matches!(err, LoadError::SmokeTest(CallError::DeadlineExceeded { .. })), "{err}");
}

#[test]
fn a_start_function_that_loops_is_stopped_too() {
    let limits = SandboxLimits { deadline: Duration::from_millis(20), ..SandboxLimits::default() };
    let err = engine_with(limits)
        .load(&inline(&minimal_module(&format!(
            "(func $spin (loop $l (br $l))) (start $spin) {GOOD_RECONCILE}"
        ))))
        .expect_err("rejected");
    assert!(
        matches!(err, LoadError::Describe(CallError::DeadlineExceeded { stage: CallStage::Instantiate, .. })),
        "{err}"
    );
}

#[test]
fn missing_and_mistyped_exports_are_named() {
    let err = engine().load(&inline(&minimal_module(""))).expect_err("no reconcile");
    assert!(matches!(err, LoadError::MissingExport { name: "reconcile", .. }), "{err}");

    let err = engine()
        .load(&inline(&minimal_module(
            r#"(func (export "reconcile") (param i32) (result i64) (i64.const 0))"#,
        )))
        .expect_err("wrong type");
    assert_eq!(err.to_string(), "module export `reconcile` is (i32) -> i64, expected (i32, i32) -> i64");

    let err = engine()
        .load(&inline(r#"(module (memory (export "mem") 1) (func (export "reconcile_abi_version") (result i32) (i32.const 1)))"#))
        .expect_err("no memory");
    assert!(matches!(err, LoadError::MissingExport { name: "memory", .. }), "{err}");
}

#[test]
fn bytes_that_are_not_wasm_do_not_compile() {
    let err = engine().load(b"\0asm but not really").expect_err("not wasm");
    assert!(matches!(err, LoadError::Compile(_)), "{err}");
}

#[test]
fn a_manifest_that_is_not_json_is_rejected() {
    let wat = module_source("{not json", BUMP_ALLOC, GOOD_RECONCILE);
    let err = engine().load(&inline(&wat)).expect_err("manifest not JSON");
    assert!(matches!(err, LoadError::ManifestDecode(_)), "{err}");
}

#[test]
fn a_table_beyond_the_limit_is_refused() {
    let wat = minimal_module(&format!("(table 100000 funcref) {GOOD_RECONCILE}"));
    engine().load(&inline(&wat)).expect_err("table too large");
}

// --- Forbidden actions: valid modules for the operator's confinement tests -------

#[test]
fn forbidden_action_fixtures_load_and_return_their_action() {
    let cases = [
        ("forbidden-apply-other-namespace", "apply"),
        ("forbidden-delete-unowned", "delete"),
        ("forbidden-remove-foreign-finalizer", "removeFinalizer"),
        ("forbidden-apply-unlisted-kind", "apply"),
    ];
    for (name, op) in cases {
        let reply = load(name).call(&snapshot()).unwrap_or_else(|err| panic!("{name}: {err}"));
        let Outcome::Actions { actions, .. } = reply.outcome else { panic!("{name}: {:?}", reply.outcome) };
        assert_eq!(actions.iter().map(Action::op).collect::<Vec<_>>(), [op], "{name}");
    }
}

// --- Lifecycle: async calls, swap, cache ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_run_bounded_on_the_blocking_pool() {
    let engine = engine();
    let module = engine.load_async(fixture("minimal")).await.unwrap();
    let looping = SandboxEngine::new(&SandboxConfig {
        limits: SandboxLimits { deadline: Duration::from_millis(20), ..SandboxLimits::default() },
        ..options()
    })
    .unwrap()
    .load_async(fixture("endless-loop"))
    .await
    .unwrap();
    let caller = ModuleCaller::new(2);
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let module = if i % 4 == 0 { looping.clone() } else { module.clone() };
            let caller = caller.clone();
            tokio::spawn(async move { caller.call(module, snapshot()).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let result = call.await.unwrap();
        if i % 4 == 0 {
            assert!(matches!(result, Err(CallError::DeadlineExceeded { .. })), "{result:?}");
        } else {
            assert_eq!(result.unwrap().json, r#"{"actions":[],"requeueAfterSeconds":60}"#);
        }
    }
}

#[tokio::test]
async fn swapping_the_active_module_leaves_calls_in_flight_on_the_old_one() {
    use wasm_operator::{ActiveModule, WasmModule};
    let old = load("minimal");
    let new = load("forbidden-delete-unowned");
    let caller = ModuleCaller::new(1);
    let active = ActiveModule::new(Arc::new(WasmModule::new(old.clone(), caller.clone())));
    let in_flight = active.current();
    let stored = active.store_from(Arc::new(WasmModule::new(new.clone(), caller)), None, None);
    assert_eq!(in_flight.module.digest(), old.digest());
    assert_eq!(active.current().module.digest(), new.digest());
    assert_eq!(stored.module.digest(), new.digest());
    let (outcome, _) = in_flight.module.reconcile(snapshot()).await.unwrap();
    let expected: Outcome = serde_json::from_str(r#"{"actions":[],"requeueAfterSeconds":60}"#).unwrap();
    assert_eq!(outcome, expected);
}

#[test]
fn compiled_modules_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let options = SandboxConfig { cache: ModuleCache::Dir(dir.path().to_owned()), ..options() };
    let first = SandboxEngine::new(&options).unwrap();
    first.load(&fixture("minimal")).unwrap();
    assert_eq!(first.cache_stats(), (0, 1));
    assert_eq!(first.cache_dir(), Some(dir.path()));
    // A new engine (a restarted host) finds it.
    let second = SandboxEngine::new(&options).unwrap();
    second.load(&fixture("minimal")).unwrap();
    assert_eq!(second.cache_stats(), (1, 0));
}

#[test]
fn only_accepted_modules_are_cached_in_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let options = SandboxConfig { cache: ModuleCache::Dir(dir.clone()), ..options() };
    let engine = SandboxEngine::new(&options).unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let entries = || std::fs::read_dir(&dir).unwrap().count();
    // Compiled, then refused by a later check: nothing is written.
    for refused in ["trap-in-smoke", "invalid-manifest", "wrong-abi"] {
        engine.load(&fixture(refused)).expect_err(refused);
    }
    assert_eq!(entries(), 0, "a refused module left compiled code in the cache");
    engine.load(&fixture("minimal")).unwrap();
    assert_eq!(entries(), 1);
}

#[test]
fn a_broken_cache_never_stops_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"in the way").unwrap();
    let options = SandboxConfig { cache: ModuleCache::Dir(not_a_dir.join("cache")), ..options() };
    let engine = SandboxEngine::new(&options).unwrap();
    engine.load(&fixture("minimal")).unwrap().call(&snapshot()).unwrap();
}

// --- Helpers -----------------------------------------------------------------------

/// The manifest of the inline modules.
const INLINE_MANIFEST: &str = r#"{"abi":1,"name":"inline","version":"0","primary":{"apiVersion":"example.com/v1","kind":"Thing","plural":"things"},"ownerLabel":"example.com/owner","fieldManager":"inline"}"#;

/// The bump allocator of the inline modules.
const BUMP_ALLOC: &str = "(local.set $ptr (global.get $heap)) \
    (global.set $heap (i32.add (local.get $ptr) (local.get $len))) (local.get $ptr)";

/// A module with the ABI v1 exports but `reconcile`, which `extra` may define. Its
/// data: the manifest at 0x400, `{"actions":[]}` at 0x1000 (return
/// 0x000010000000000e for it), `null` at 0x2000 (0x0000200000000004).
fn minimal_module(extra: &str) -> String {
    module_source(INLINE_MANIFEST, BUMP_ALLOC, extra)
}

fn module_source(manifest: &str, alloc_body: &str, extra: &str) -> String {
    let escaped = manifest.replace('"', "\\\"");
    format!(
        r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 0x8000))
  (func (export "reconcile_abi_version") (result i32) (i32.const 1))
  (func (export "reconcile_alloc") (param $len i32) (result i32) (local $ptr i32) {alloc_body})
  (func (export "reconcile_free") (param i32 i32))
  (func (export "reconcile_manifest") (result i64) (i64.const {manifest_packed}))
  (data (i32.const 0x400) "{escaped}")
  (data (i32.const 0x1000) "{{\"actions\":[]}}")
  (data (i32.const 0x2000) "null")
  {extra})"#,
        manifest_packed = (0x400u64 << 32) | manifest.len() as u64,
    )
}

const GOOD_RECONCILE: &str =
    r#"(func (export "reconcile") (param i32 i32) (result i64) (i64.const 0x000010000000000e))"#;

/// A module with a well-behaved `reconcile` and this `reconcile_alloc` body.
fn module_with_alloc(body: &str) -> String {
    module_source(INLINE_MANIFEST, body, GOOD_RECONCILE)
}
