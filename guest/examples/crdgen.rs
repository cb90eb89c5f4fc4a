//! Prints the DittoServer CRD (`make crds` writes it to `crds/dittoservers.yaml`).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    print!("{}", dittofs_reconciler::crdgen::crd_yaml()?);
    Ok(())
}

// The example only makes sense natively; this keeps `cargo test --target wasm32-...`
// (which builds examples) compiling.
#[cfg(target_arch = "wasm32")]
fn main() {}
