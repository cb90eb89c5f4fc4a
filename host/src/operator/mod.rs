//! The kube-rs layer (placeholder; being written).

use crate::cli::{RunArgs, SnapshotArgs};

/// `wasm-operator run`.
pub async fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

/// `wasm-operator snapshot`.
pub async fn snapshot(_args: SnapshotArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
