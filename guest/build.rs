//! Link settings of the plain wasm32 module.
//!
//! The module starts with enough linear memory for its stack, its data and the heap
//! of a typical call, so that a call never grows memory: in wasmtime's pooling
//! allocator, growing makes the kernel change page protections on every call, and
//! memory that was there from the start is simply reset. The SDK's bump allocator
//! hands out the initial memory above `__heap_base` first (`reconcile_sdk::alloc`).

/// Linear memory at instantiation: the 1 MiB stack, the module's data, and about
/// 2.9 MiB of heap (a converged snapshot of a typical DittoServer uses ~100 KiB,
/// one of 67 KB about 1 MiB). Calls that need more grow memory, up to the host's
/// memory limit.
const INITIAL_MEMORY_BYTES: u32 = 4 << 20;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let wasm32 = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "wasm32");
    // The `js` build keeps the default allocator and wasm-bindgen's defaults.
    let js = std::env::var_os("CARGO_FEATURE_JS").is_some();
    if wasm32 && !js {
        println!("cargo:rustc-link-arg-cdylib=--initial-memory={INITIAL_MEMORY_BYTES}");
    }
}
