//! The cost of the sandbox: one wasm call of the DittoFS module (instantiate, copy
//! in, reconcile, copy out, free, decode the Outcome) against the same reconcile
//! function called natively (decode the snapshot, reconcile, encode, decode the
//! Outcome), on the golden converged snapshots of `guest/tests/golden/`.
//!
//! `make bench` (or `cargo bench -p wasm-operator --bench call`) runs criterion on
//! each input, then prints a summary of p50/p90 over individually timed calls and
//! the wasm/native ratio, for the pooling allocator (the default) and on-demand
//! allocation, and for a trivial module (the floor: what the sandbox costs when the
//! module does nothing).
//!
//! The summary also times the same call on the host's engine configuration without
//! the epoch deadline ("no deadline"), for reference only: the host never runs a module
//! without one. The difference is what the deadline's checks (at every function entry
//! and loop back-edge) cost this parse-heavy module.
//!
//! The module is `target/modules/dittofs-reconciler.wasm` (`make wasm`), or the file
//! named by `WASM_OPERATOR_BENCH_MODULE`.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion};
use reconcile_sdk::Outcome;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasm_operator::runtime::{
    Allocator, LoadedModule, ModuleCache, SandboxConfig, SandboxEngine, engine_without_deadline,
};

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

fn module_bytes() -> (PathBuf, Vec<u8>) {
    let path = std::env::var_os("WASM_OPERATOR_BENCH_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("target/modules/dittofs-reconciler.wasm"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (build it with `make wasm`)", path.display()));
    (path, bytes)
}

fn load(bytes: &[u8], allocator: Allocator) -> Arc<LoadedModule> {
    // The cache keeps repeated bench runs from recompiling the module.
    let options = SandboxConfig { allocator, cache: ModuleCache::Default, ..SandboxConfig::default() };
    SandboxEngine::new(&options).unwrap().load(bytes).unwrap()
}

fn trivial_module() -> Arc<LoadedModule> {
    let wat = repo_path("tests/fixtures/minimal.wat");
    load(&wat::parse_file(wat).unwrap(), Allocator::Pooling)
}

/// What the native path does for the same input and output: the same entry point the
/// module exports (`reconcile_raw`), so that the ratio compares like with like.
fn native(input: &[u8]) -> Outcome {
    let json = reconcile_sdk::run_json_raw(input, dittofs_reconciler::reconcile_raw);
    serde_json::from_str(&json).unwrap()
}

/// The call the host makes, on the host's pooling engine configuration without epoch
/// interruption (see the module docs).
struct NoDeadline {
    store_engine: wasmtime::Engine,
    pre: wasmtime::InstancePre<()>,
}

impl NoDeadline {
    fn new(bytes: &[u8]) -> Self {
        let engine = engine_without_deadline(&SandboxConfig::default()).unwrap();
        let module = wasmtime::Module::new(&engine, bytes).unwrap();
        let pre = wasmtime::Linker::new(&engine).instantiate_pre(&module).unwrap();
        NoDeadline { store_engine: engine, pre }
    }

    fn call(&self, input: &[u8]) -> Outcome {
        let mut store = wasmtime::Store::new(&self.store_engine, ());
        let instance = self.pre.instantiate(&mut store).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "reconcile_alloc").unwrap();
        let reconcile = instance.get_typed_func::<(i32, i32), i64>(&mut store, "reconcile").unwrap();
        let free = instance.get_typed_func::<(i32, i32), ()>(&mut store, "reconcile_free").unwrap();
        let len = i32::try_from(input.len()).unwrap();
        let ptr = alloc.call(&mut store, len).unwrap();
        memory.write(&mut store, ptr as u32 as usize, input).unwrap();
        let packed = reconcile.call(&mut store, (ptr, len)).unwrap() as u64;
        let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        let mut output = vec![0; out_len];
        memory.read(&store, out_ptr, &mut output).unwrap();
        free.call(&mut store, (out_ptr as i32, out_len as i32)).unwrap();
        serde_json::from_slice(&output).unwrap()
    }
}

/// The golden converged snapshots: a typical DittoServer (~11 KB) and a large one.
fn inputs() -> Vec<(String, Vec<u8>)> {
    ["converged", "converged-large"]
        .into_iter()
        .map(|name| {
            let path = repo_path(&format!("guest/tests/golden/{name}.snapshot.json"));
            let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            (name.to_owned(), bytes)
        })
        .collect()
}

fn criterion_benches(c: &mut Criterion, module: &Arc<LoadedModule>, inputs: &[(String, Vec<u8>)]) {
    let mut group = c.benchmark_group("call");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50);
    for (name, input) in inputs {
        group.bench_with_input(BenchmarkId::new("wasm", name), input, |b, input| {
            b.iter(|| module.call(black_box(input)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("native", name), input, |b, input| {
            b.iter(|| native(black_box(input)))
        });
    }
    group.finish();
}

/// p50 and p90 of `runs` individually timed calls of each of `calls`, after a
/// warm-up. The calls run in blocks of [`BLOCK`] of the same one (so that each runs
/// warm, as in a loop of its own), and the blocks take turns, so that the machine's
/// slow and fast spells fall on all of them alike and their ratios hold even when
/// absolute times drift.
fn in_turns<const N: usize>(runs: usize, mut calls: [&mut dyn FnMut(); N]) -> [(Duration, Duration); N] {
    const BLOCK: usize = 50;
    for call in calls.iter_mut() {
        (0..runs / 10).for_each(|_| call());
    }
    let mut times = [(); N].map(|()| Vec::with_capacity(runs));
    for _ in 0..runs.div_ceil(BLOCK) {
        for (call, times) in calls.iter_mut().zip(times.iter_mut()) {
            for _ in 0..BLOCK {
                let start = Instant::now();
                call();
                times.push(start.elapsed());
            }
        }
    }
    times.map(|mut times| {
        times.sort();
        (times[times.len() / 2], times[times.len() * 9 / 10])
    })
}

fn summary(bytes: &[u8], module: &Arc<LoadedModule>, inputs: &[(String, Vec<u8>)]) {
    const RUNS: usize = 3000;
    let on_demand = load(bytes, Allocator::OnDemand);
    let trivial = trivial_module();
    let no_deadline = NoDeadline::new(bytes);
    println!("\nsummary: p50 / p90 of {RUNS} calls each, in turns of 50");
    println!(
        "{:<18} {:>6} {:>18} {:>18} {:>18} {:>6} {:>18} {:>18} {:>6}",
        "input",
        "bytes",
        "native",
        "wasm (pooling)",
        "wasm (on demand)",
        "ratio",
        "trivial module",
        "wasm, no deadline",
        "ratio"
    );
    let show = |(p50, p90): (Duration, Duration)| format!("{:.1} / {:.1} µs", micros(p50), micros(p90));
    for (name, input) in inputs {
        let [native_time, pooled, on_demand_time, floor, no_deadline_time] = in_turns(
            RUNS,
            [
                &mut || drop(black_box(native(black_box(input)))),
                &mut || drop(black_box(module.call(black_box(input)).unwrap())),
                &mut || drop(black_box(on_demand.call(black_box(input)).unwrap())),
                &mut || drop(black_box(trivial.call(black_box(input)).unwrap())),
                &mut || drop(black_box(no_deadline.call(black_box(input)))),
            ],
        );
        let ratio = |wasm: (Duration, Duration)| wasm.0.as_secs_f64() / native_time.0.as_secs_f64();
        println!(
            "{:<18} {:>6} {:>18} {:>18} {:>18} {:>5.2}x {:>18} {:>18} {:>5.2}x",
            name,
            input.len(),
            show(native_time),
            show(pooled),
            show(on_demand_time),
            ratio(pooled),
            show(floor),
            show(no_deadline_time),
            ratio(no_deadline_time),
        );
    }
    println!(
        "ratio: wasm p50 / native p50; trivial module: the sandbox's own cost per call; \
         no deadline: the same call without epoch interruption (reference only, never how the host runs)"
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let (path, bytes) = module_bytes();
    eprintln!("module: {} ({} bytes)", path.display(), bytes.len());
    let module = load(&bytes, Allocator::Pooling);
    let inputs = inputs();
    for (name, input) in &inputs {
        // The two paths must agree, or the comparison means nothing.
        let wasm = module.call(input).unwrap().outcome;
        assert_eq!(wasm, native(input), "{name}: wasm and native outcomes differ");
        assert_eq!(NoDeadline::new(&bytes).call(input), wasm, "{name}: the reference call differs");
    }
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion, &module, &inputs);
    criterion.final_summary();
    summary(&bytes, &module, &inputs);
}
