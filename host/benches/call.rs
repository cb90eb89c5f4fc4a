//! Benchmark of the wasm call against the native reconcile function (being written).

fn main() {}
