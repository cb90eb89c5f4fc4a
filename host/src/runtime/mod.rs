//! The wasmtime layer (placeholder; being written).
