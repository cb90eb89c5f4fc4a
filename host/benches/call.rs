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
    Allocator, EngineOptions, LoadedModule, ModuleCache, SandboxEngine, SandboxLimits,
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
    let options = EngineOptions { allocator, cache: ModuleCache::Default, ..EngineOptions::default() };
    SandboxEngine::new(SandboxLimits::default(), &options).unwrap().load(bytes).unwrap()
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

/// p50 and p90 of `runs` individually timed calls, after a warm-up.
fn percentiles(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..runs / 10 {
        f();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], times[runs * 9 / 10])
}

fn summary(bytes: &[u8], module: &Arc<LoadedModule>, inputs: &[(String, Vec<u8>)]) {
    const RUNS: usize = 3000;
    let on_demand = load(bytes, Allocator::OnDemand);
    let trivial = trivial_module();
    println!("\nsummary: p50 / p90 of {RUNS} calls each");
    println!(
        "{:<24} {:>8} {:>20} {:>20} {:>20} {:>8} {:>20}",
        "input", "bytes", "native", "wasm (pooling)", "wasm (on demand)", "ratio", "trivial module"
    );
    let show = |(p50, p90): (Duration, Duration)| format!("{:.1} / {:.1} µs", micros(p50), micros(p90));
    for (name, input) in inputs {
        let native_time = percentiles(RUNS, || drop(black_box(native(black_box(input)))));
        let pooled = percentiles(RUNS, || drop(black_box(module.call(black_box(input)).unwrap())));
        let on_demand_time = percentiles(RUNS, || drop(black_box(on_demand.call(black_box(input)).unwrap())));
        let floor = percentiles(RUNS, || drop(black_box(trivial.call(black_box(input)).unwrap())));
        println!(
            "{:<24} {:>8} {:>20} {:>20} {:>20} {:>7.2}x {:>20}",
            name,
            input.len(),
            show(native_time),
            show(pooled),
            show(on_demand_time),
            pooled.0.as_secs_f64() / native_time.0.as_secs_f64(),
            show(floor),
        );
    }
    println!("ratio: wasm (pooling) p50 / native p50; trivial module: the sandbox's own cost per call");
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
    }
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion, &module, &inputs);
    criterion.final_summary();
    summary(&bytes, &module, &inputs);
}
