//! Peak memory of the worst outcome the sandbox lets a module return, at the
//! operator's default concurrency of 4.
//!
//! The densest JSON the 4 MiB output limit allows is an array of two million zeros.
//! Decoded as it stands, it becomes a `serde_json` tree (and serde's buffer for the
//! internally tagged action) of more than 100 MiB, while the 64 MiB instance it came
//! from is still alive; four at once would pass the Deployment's 512 Mi limit. The
//! host counts the output's values before decoding it and refuses this one.
//!
//! Its own test binary: the figure is this process's high-water mark of resident
//! memory (`VmHWM`), which other tests running beside it would raise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use wasm_operator::runtime::{CallError, ModuleCache, ModuleCaller, SandboxConfig, SandboxEngine};

/// What four calls at once may add to the process's peak resident memory. Each call
/// holds its instance's memory (4 MiB written), a copy of the output (4 MiB) and its
/// text: about 10 MiB, 40 MiB for four, with room for the allocator. Without the
/// count of values, each also decodes 2 million values (more than 100 MiB).
const BOUND_MIB: u64 = 128;

fn fixture(name: &str) -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap()
}

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_densest_outcomes_at_once_are_refused_within_the_memory_bound() {
    let config =
        SandboxConfig { cache: ModuleCache::Disabled, ..SandboxConfig::default() }.for_concurrency(4);
    let engine = SandboxEngine::new(&config).unwrap();
    let module = engine.load_async(fixture("dense-status")).await.unwrap();
    let caller = ModuleCaller::new(4);

    let before = status_kib("VmRSS:");
    for _round in 0..3 {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let (caller, module) = (caller.clone(), module.clone());
                tokio::spawn(async move { caller.call(module, b"{}".to_vec()).await })
            })
            .collect();
        for call in calls {
            let result = call.await.unwrap();
            let Err(err @ CallError::TooManyValues { .. }) = &result else { panic!("{result:?}") };
            let message = err.to_string();
            assert_eq!(message, "module outcome has more than 100000 JSON values");
        }
    }
    let grew_mib = status_kib("VmHWM:").saturating_sub(before) / 1024;
    eprintln!("peak resident memory grew by {grew_mib} MiB for four 4 MiB outcomes at once");
    assert!(grew_mib < BOUND_MIB, "peak resident memory grew by {grew_mib} MiB, bound {BOUND_MIB} MiB");
}
