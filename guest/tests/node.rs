//! The golden cases in Node, through wasm-bindgen-test (feature `js`):
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p
//! dittofs-reconciler --target wasm32-unknown-unknown --features js` (`make test-guest`).
//! The exports the `js` build gives JavaScript (`manifest()`, `reconcile(snapshot)`)
//! are exercised from JavaScript itself by `js/golden.test.mjs`.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::wasm_bindgen_test;

#[path = "golden/cases.rs"]
mod golden_cases;

#[wasm_bindgen_test]
fn golden_outcomes_in_node() {
    assert!(golden_cases::CASES.len() >= 20);
    for (name, snapshot, expected) in golden_cases::CASES {
        // What the `js` exports run...
        let output =
            reconcile_sdk::run_json_raw(snapshot.as_bytes(), dittofs_reconciler::reconcile_raw) + "\n";
        assert_eq!(output, *expected, "{name}");
        // ...and the `Snapshot` entry point, compiled to wasm32 too.
        let output = reconcile_sdk::run_json(snapshot.as_bytes(), dittofs_reconciler::reconcile) + "\n";
        assert_eq!(output, *expected, "{name}");
    }
}

#[wasm_bindgen_test]
fn manifest_in_node() {
    assert_eq!(reconcile_sdk::manifest_json(dittofs_reconciler::manifest) + "\n", golden_cases::MANIFEST);
}
