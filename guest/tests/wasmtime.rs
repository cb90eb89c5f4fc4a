//! The built module (`target/modules/dittofs-reconciler.wasm`, from `make wasm`) run
//! through wasmtime the way the host runs it: no imports, a fresh instance per call,
//! the ABI v1 exports. Its outputs must equal the native ones byte for byte.
#![cfg(not(target_arch = "wasm32"))]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use wasmtime::{Engine, Instance, Linker, Memory, Module, Store, TypedFunc};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The module under test: `DITTOFS_MODULE`, or what `make wasm` builds.
fn module_path() -> PathBuf {
    std::env::var_os("DITTOFS_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../target/modules/dittofs-reconciler.wasm"))
}

fn newest_source(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in fs::read_dir(dir).expect("source directory").flatten() {
        let path = entry.path();
        let modified = if path.is_dir() {
            newest_source(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH)
        };
        newest = newest.max(modified);
    }
    newest
}

/// The module's bytes; fails with what to do when it is missing or older than the
/// sources (a stale module would test old code).
fn module_bytes() -> Vec<u8> {
    let path = module_path();
    let bytes = fs::read(&path).unwrap_or_else(|err| {
        panic!("{}: {err}; run `make wasm` (or `make test-guest`) first", path.display())
    });
    if std::env::var_os("DITTOFS_MODULE").is_none() {
        let built = fs::metadata(&path).and_then(|m| m.modified()).expect("module mtime");
        let sources =
            newest_source(&manifest_dir().join("src")).max(newest_source(&manifest_dir().join("sdk/src")));
        assert!(built >= sources, "{} is older than the guest sources; run `make wasm`", path.display());
    }
    bytes
}

struct Guest {
    store: Store<()>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<(i32, i32), ()>,
    reconcile: TypedFunc<(i32, i32), i64>,
    manifest: TypedFunc<(), i64>,
    version: TypedFunc<(), i32>,
}

impl Guest {
    fn new(engine: &Engine, module: &Module) -> Guest {
        let mut store = Store::new(engine, ());
        let instance: Instance = Linker::new(engine).instantiate(&mut store, module).expect("instantiates");
        let memory = instance.get_memory(&mut store, "memory").expect("exports memory");
        Guest {
            alloc: instance.get_typed_func(&mut store, "reconcile_alloc").expect("reconcile_alloc"),
            free: instance.get_typed_func(&mut store, "reconcile_free").expect("reconcile_free"),
            reconcile: instance.get_typed_func(&mut store, "reconcile").expect("reconcile"),
            manifest: instance.get_typed_func(&mut store, "reconcile_manifest").expect("reconcile_manifest"),
            version: instance
                .get_typed_func(&mut store, "reconcile_abi_version")
                .expect("reconcile_abi_version"),
            store,
            memory,
        }
    }

    fn take_output(&mut self, packed: i64) -> String {
        let packed = packed as u64;
        let (ptr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        let mut output = vec![0; len];
        self.memory.read(&self.store, ptr, &mut output).expect("output inside memory");
        self.free.call(&mut self.store, (ptr as i32, len as i32)).expect("frees");
        String::from_utf8(output).expect("UTF-8 output")
    }

    fn reconcile(&mut self, input: &[u8]) -> String {
        let len = i32::try_from(input.len()).expect("fits");
        let ptr = self.alloc.call(&mut self.store, len).expect("allocates");
        assert_ne!(ptr, 0, "reconcile_alloc failed");
        self.memory.write(&mut self.store, ptr as u32 as usize, input).expect("input fits");
        let packed = self.reconcile.call(&mut self.store, (ptr, len)).expect("reconcile does not trap");
        self.take_output(packed)
    }

    fn manifest(&mut self) -> String {
        let packed = self.manifest.call(&mut self.store, ()).expect("manifest does not trap");
        self.take_output(packed)
    }
}

/// The engine and the compiled module, shared by the tests: compiling takes a while
/// with a debug build of Cranelift.
fn setup() -> (Engine, Module) {
    static COMPILED: OnceLock<(Engine, Module)> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let engine = Engine::default();
            let module = Module::new(&engine, module_bytes()).expect("module compiles");
            (engine, module)
        })
        .clone()
}

fn golden() -> Vec<(String, Vec<u8>, String)> {
    let dir = manifest_dir().join("tests/golden");
    let mut cases: Vec<_> = fs::read_dir(&dir)
        .expect("golden directory")
        .filter_map(|entry| {
            let file = entry.ok()?.file_name().into_string().ok()?;
            let name = file.strip_suffix(".snapshot.json")?.to_string();
            let snapshot = fs::read(dir.join(&file)).ok()?;
            let outcome = fs::read_to_string(dir.join(format!("{name}.outcome.json"))).ok()?;
            Some((name, snapshot, outcome))
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "golden cases missing");
    cases
}

#[test]
fn module_imports_nothing_exports_abi_v1_and_fits_a_configmap() {
    let (engine, module) = setup();
    let size = module_bytes().len();
    assert!(size < 1024 * 1024, "module is {size} bytes, over 1 MiB");
    let imports: Vec<_> = module.imports().map(|i| format!("{}::{}", i.module(), i.name())).collect();
    assert!(imports.is_empty(), "module imports {imports:?}");
    let mut exports: Vec<_> = module.exports().map(|e| e.name().to_string()).collect();
    exports.sort();
    for name in [
        "memory",
        "reconcile",
        "reconcile_abi_version",
        "reconcile_alloc",
        "reconcile_free",
        "reconcile_manifest",
    ] {
        assert!(exports.iter().any(|e| e == name), "{name} not exported: {exports:?}");
    }
    let mut guest = Guest::new(&engine, &module);
    assert_eq!(guest.version.call(&mut guest.store, ()).expect("calls"), 1);
}

#[test]
fn manifest_matches_native() {
    let (engine, module) = setup();
    let expected = reconcile_sdk::manifest_json(dittofs_reconciler::manifest);
    assert_eq!(Guest::new(&engine, &module).manifest(), expected);
}

#[test]
fn golden_outcomes_through_wasmtime() {
    let (engine, module) = setup();
    for (name, snapshot, expected) in golden() {
        // A fresh instance per call, as the host does.
        let output = Guest::new(&engine, &module).reconcile(&snapshot) + "\n";
        assert_eq!(output, expected, "{name}");
        let native = reconcile_sdk::run_json(&snapshot, dittofs_reconciler::reconcile) + "\n";
        assert_eq!(output, native, "{name}: wasm and native differ");
    }
}

#[test]
fn one_instance_survives_many_calls() {
    // The host uses a fresh instance per call, but nothing may break if it does not:
    // the bump allocator only grows memory.
    let (engine, module) = setup();
    let mut guest = Guest::new(&engine, &module);
    let cases = golden();
    for round in 0..5 {
        for (name, snapshot, expected) in &cases {
            assert_eq!(&(guest.reconcile(snapshot) + "\n"), expected, "{name}, round {round}");
        }
    }
}

#[test]
fn large_input_and_bad_buffers_give_outcomes_not_traps() {
    let (engine, module) = setup();
    // A 3 MB snapshot: many related objects.
    let mut snapshot: serde_json::Value = serde_json::from_slice(
        &fs::read(manifest_dir().join("tests/golden/converged.snapshot.json")).expect("read"),
    )
    .expect("parses");
    let filler: Vec<_> = (0..600)
        .map(|i| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("other-{i}")},
            "data": {"blob": "x".repeat(5000)}}))
        .collect();
    snapshot["related"].as_array_mut().expect("related").extend(filler);
    let input = serde_json::to_vec(&snapshot).expect("encodes");
    assert!(input.len() > 3_000_000);
    let output = Guest::new(&engine, &module).reconcile(&input);
    assert_eq!(output, reconcile_sdk::run_json(&input, dittofs_reconciler::reconcile));
    assert!(output.starts_with(r#"{"actions":[],"#), "converged: no action; {output}");

    // A buffer outside linear memory: an error outcome, no trap.
    let mut guest = Guest::new(&engine, &module);
    let packed = guest.reconcile.call(&mut guest.store, (-16, 64)).expect("no trap");
    let output = guest.take_output(packed);
    assert!(output.contains("outside linear memory"), "{output}");
}

#[test]
fn a_converged_call_fits_the_initial_memory() {
    // Growing linear memory in a pooled instance costs page-protection changes on
    // every call (see guest/build.rs); the converged snapshots, the common case,
    // must be answered from the memory the module starts with.
    let (engine, module) = setup();
    for name in ["converged", "converged-large"] {
        let mut guest = Guest::new(&engine, &module);
        let initial = guest.memory.data_size(&guest.store);
        assert!(initial >= 4 << 20, "initial memory is {initial} bytes");
        let snapshot =
            fs::read(manifest_dir().join(format!("tests/golden/{name}.snapshot.json"))).expect("snapshot");
        let outcome = guest.reconcile(&snapshot);
        assert!(outcome.starts_with(r#"{"actions":[]"#), "{name}: {outcome}");
        assert_eq!(guest.memory.data_size(&guest.store), initial, "{name}: the call grew memory");
    }
}

#[test]
fn deeply_nested_input_is_answered_as_natively() {
    // Values nested to serde_json's recursion limit, wherever a snapshot may carry
    // them, must be answered as natively, within the module's stack (linked first in
    // memory, so an overflow would trap; a 12 KiB stack was seen to suffice); nested
    // past the limit, they are the same error outcome.
    let (engine, module) = setup();
    let converged: serde_json::Value = serde_json::from_slice(
        &fs::read(manifest_dir().join("tests/golden/converged.snapshot.json")).expect("read"),
    )
    .expect("parses");
    // `depth` levels of arrays and objects, alternating.
    let nested = |depth: usize| {
        let mut value = serde_json::json!({"leaf": 1});
        for _ in 0..depth / 2 {
            value = serde_json::json!([{ "a": value }]);
        }
        value
    };
    let places: [&[&str]; 6] = [
        &["object", "status", "extra"],
        &["object", "spec", "extra"],
        &["object", "metadata", "annotations", "extra"],
        &["related", "1", "status", "extra"],
        &["related", "5", "spec", "extra"],
        &["related", "0", "data", "extra"],
    ];
    for depth in [120, 126, 400] {
        for place in places {
            let mut snapshot = converged.clone();
            let (last, parents) = place.split_last().expect("a path");
            let mut at = &mut snapshot;
            for key in parents {
                at = match key.parse::<usize>() {
                    Ok(index) => &mut at[index],
                    Err(_) => &mut at[*key],
                };
            }
            at[*last] = nested(depth);
            let input = serde_json::to_vec(&snapshot).expect("encodes");
            let mut guest = Guest::new(&engine, &module);
            let output = guest.reconcile(&input);
            assert_eq!(
                output,
                reconcile_sdk::run_json_raw(&input, dittofs_reconciler::reconcile_raw),
                "depth {depth} at {place:?}"
            );
        }
    }
}
