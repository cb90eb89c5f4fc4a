//! How long one reconcile takes, natively and as the host calls the built module
//! (fresh instance from an `InstancePre`, copy in, reconcile, copy out), on the
//! converged golden snapshots. `cargo bench -p dittofs-reconciler` (after `make wasm`;
//! `DITTOFS_MODULE=path.wasm` benchmarks another build).
#![cfg_attr(target_arch = "wasm32", allow(missing_docs))]

#[cfg(not(target_arch = "wasm32"))]
mod bench {
    use std::path::PathBuf;

    use criterion::Criterion;
    use wasmtime::{
        Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig,
        Store,
    };

    fn golden(name: &str) -> Vec<u8> {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.snapshot.json"));
        std::fs::read(path).expect("golden snapshot")
    }

    fn call(pre: &InstancePre<()>, engine: &Engine, input: &[u8]) -> usize {
        let mut store = Store::new(engine, ());
        let instance = pre.instantiate(&mut store).expect("instantiates");
        let memory = instance.get_memory(&mut store, "memory").expect("memory");
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "reconcile_alloc").expect("alloc");
        let reconcile =
            instance.get_typed_func::<(i32, i32), i64>(&mut store, "reconcile").expect("reconcile");
        let ptr = alloc.call(&mut store, input.len() as i32).expect("allocates");
        memory.write(&mut store, ptr as usize, input).expect("copy in");
        let packed = reconcile.call(&mut store, (ptr, input.len() as i32)).expect("reconciles") as u64;
        let mut output = vec![0; (packed & 0xffff_ffff) as usize];
        memory.read(&store, (packed >> 32) as usize, &mut output).expect("copy out");
        output.len()
    }

    pub fn benches() {
        let mut criterion = Criterion::default().configure_from_args();
        for name in ["converged", "converged-large"] {
            let input = golden(name);
            criterion.bench_function(&format!("native/{name}"), |b| {
                b.iter(|| reconcile_sdk::run_json_raw(&input, dittofs_reconciler::reconcile_raw))
            });
        }
        let path = std::env::var_os("DITTOFS_MODULE").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/modules/dittofs-reconciler.wasm")
        });
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("{} missing: run `make wasm` for the wasm benchmarks", path.display());
            return;
        };
        // As the host configures it: pooled instances, copy-on-write initial memory,
        // and (where the kernel has PAGEMAP_SCAN) dirtied pages reset in place.
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(4).total_memories(4).total_tables(4).total_component_instances(0);
        pool.max_memory_size(64 << 20);
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes).linear_memory_keep_resident(2 << 20);
        }
        let mut config = Config::new();
        config.memory_init_cow(true).allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).expect("engine");
        let module = Module::new(&engine, bytes).expect("compiles");
        let pre = Linker::new(&engine).instantiate_pre(&module).expect("links");
        for name in ["converged", "converged-large"] {
            let input = golden(name);
            criterion.bench_function(&format!("wasm/{name}"), |b| b.iter(|| call(&pre, &engine, &input)));
        }
        criterion.final_summary();
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    bench::benches();
}

#[cfg(target_arch = "wasm32")]
fn main() {}
