//! `reconcile-sdk`: the ABI v1 contract between `wasm-operator` and its reconcile
//! modules (docs/abi.md).
//!
//! - [`abi`]: the JSON documents, [`Manifest`], [`Snapshot`], [`Outcome`] and
//!   [`Action`], used by modules and, natively, by the host.
//! - [`run_json`]: the one JSON-in, JSON-out path every build of a module shares, so
//!   native, plain-wasm and JavaScript builds answer byte for byte the same.
//! - [`export_module!`]: the exports a module needs, in one line.
//!
//! A module is a pure function from a snapshot to an outcome:
//!
//! ```
//! use reconcile_sdk::{Manifest, Outcome, Snapshot};
//!
//! fn manifest() -> Manifest {
//!     # unimplemented!()
//!     // ...
//! }
//!
//! fn reconcile(snapshot: Snapshot) -> Outcome {
//!     Outcome::actions(Vec::new())
//! }
//!
//! reconcile_sdk::export_module!(manifest = manifest, reconcile = reconcile);
//! ```
//!
//! Built for `wasm32-unknown-unknown`, the macro exports `memory`,
//! `reconcile_abi_version`, `reconcile_alloc`, `reconcile_free`, `reconcile_manifest`
//! and `reconcile`. With this crate's feature `js` it exports the wasm-bindgen
//! functions `manifest() -> String` and `reconcile(snapshot: &str) -> String` instead,
//! for JavaScript hosts. On other targets it exports nothing, so the same crate is
//! tested natively.
//!
//! With feature `bump-alloc`, the plain wasm32 build uses a bump allocator as its
//! global allocator (fast, never reuses memory: right for the host's fresh instance
//! per call; ignored for the `js` build and natively). It allocates from
//! `__heap_base` up: a module that declares enough initial memory for a typical call
//! (linker argument `--initial-memory`, as `guest/build.rs` does for the DittoFS
//! module) never grows its memory, which is the cheapest call wasmtime's pooling
//! allocator can make.
//!
//! The SDK's `unsafe` code is in two places, both in plain wasm32 builds only: the
//! export glue (`glue`: the buffers handed across the ABI) and the bump allocator's
//! `GlobalAlloc` implementation (`alloc`). The allocator's stays beside its state
//! rather than moving into the glue: its safety argument (no two live blocks overlap)
//! rests on how `alloc`, `dealloc` and `realloc` move the same two pointers, and the
//! in-place `realloc` of the most recent block, which keeps a growing output buffer
//! from being copied on every growth, needs that state. Split across two modules, the
//! argument would be made in one place about code in another.

pub mod abi;
#[cfg(all(target_arch = "wasm32", feature = "bump-alloc", not(feature = "js")))]
mod alloc;
#[cfg(all(target_arch = "wasm32", not(feature = "js")))]
#[doc(hidden)]
pub mod glue;
mod run;

pub use abi::{
    ABI_VERSION, Action, EventType, KindRef, LastFailure, Manifest, ModuleError, Outcome, PropagationPolicy,
    RawSnapshot, RequiredObject, Requirement, Snapshot, SnapshotOf,
};
pub use run::{
    SnapshotError, decode_raw_snapshot, decode_snapshot, decode_snapshot_of, manifest_json, run_json,
    run_json_raw,
};

/// With feature `bump-alloc`, the plain wasm32 build of a module allocates with a bump
/// allocator: each call runs in a fresh instance, so freeing is wasted work.
#[cfg(all(target_arch = "wasm32", feature = "bump-alloc", not(feature = "js")))]
#[global_allocator]
static GLOBAL_ALLOCATOR: alloc::BumpAllocator = alloc::BumpAllocator::new();

#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "js")]
    pub use wasm_bindgen;
}

/// Exports a module's `manifest` and `reconcile` functions under ABI v1.
///
/// `manifest` is a `fn() -> Manifest`, `reconcile` a `fn(Snapshot) -> Outcome`. Use
/// it once, at the root of a `cdylib` crate.
///
/// A module that decodes the snapshot's objects itself passes `reconcile_raw`, a
/// `fn(RawSnapshot) -> Outcome` or, to decode them as its own types in one pass, a
/// `fn(SnapshotOf<O, R>) -> Outcome`, instead of `reconcile`: same exports, same ABI.
#[macro_export]
macro_rules! export_module {
    (manifest = $manifest:path, reconcile = $reconcile:path $(,)?) => {
        $crate::__plain_exports!($manifest, $reconcile, run_json);
        $crate::__js_exports!($manifest, $reconcile, run_json);
    };
    (manifest = $manifest:path, reconcile_raw = $reconcile:path $(,)?) => {
        $crate::__plain_exports!($manifest, $reconcile, run_json_raw);
        $crate::__js_exports!($manifest, $reconcile, run_json_raw);
    };
}

#[cfg(all(target_arch = "wasm32", not(feature = "js")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __plain_exports {
    ($manifest:path, $reconcile:path, $run:ident) => {
        const _: () = {
            // `export_name` is what makes these the module's exports; the Rust names
            // differ so that they never shadow the module's own functions. The code
            // behind them is the bounds-checked glue of `reconcile_sdk::glue`.
            #[unsafe(export_name = "reconcile_abi_version")]
            pub extern "C" fn __reconcile_sdk_reconcile_abi_version() -> i32 {
                $crate::ABI_VERSION as i32
            }
            #[unsafe(export_name = "reconcile_alloc")]
            pub extern "C" fn __reconcile_sdk_reconcile_alloc(len: i32) -> i32 {
                $crate::glue::alloc_buffer(len)
            }
            #[unsafe(export_name = "reconcile_free")]
            pub extern "C" fn __reconcile_sdk_reconcile_free(ptr: i32, len: i32) {
                $crate::glue::free_buffer(ptr, len)
            }
            #[unsafe(export_name = "reconcile_manifest")]
            pub extern "C" fn __reconcile_sdk_reconcile_manifest() -> i64 {
                $crate::glue::manifest($manifest)
            }
            #[unsafe(export_name = "reconcile")]
            pub extern "C" fn __reconcile_sdk_reconcile(ptr: i32, len: i32) -> i64 {
                $crate::glue::reconcile(ptr, len, |input| $crate::$run(input, $reconcile))
            }
        };
    };
}

#[cfg(not(all(target_arch = "wasm32", not(feature = "js"))))]
#[doc(hidden)]
#[macro_export]
macro_rules! __plain_exports {
    ($manifest:path, $reconcile:path, $run:ident) => {};
}

#[cfg(all(target_arch = "wasm32", feature = "js"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __js_exports {
    ($manifest:path, $reconcile:path, $run:ident) => {
        const _: () = {
            use $crate::__private::wasm_bindgen;

            /// The module's manifest as JSON.
            #[wasm_bindgen::prelude::wasm_bindgen(js_name = manifest)]
            pub fn reconcile_sdk_manifest() -> ::std::string::String {
                $crate::manifest_json($manifest)
            }

            /// Reconciles one snapshot (JSON) and returns the outcome (JSON).
            #[wasm_bindgen::prelude::wasm_bindgen(js_name = reconcile)]
            pub fn reconcile_sdk_reconcile(snapshot: &str) -> ::std::string::String {
                $crate::$run(snapshot.as_bytes(), $reconcile)
            }
        };
    };
}

#[cfg(not(all(target_arch = "wasm32", feature = "js")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __js_exports {
    ($manifest:path, $reconcile:path, $run:ident) => {};
}
