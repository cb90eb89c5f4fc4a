//! The kube-rs layer (placeholder; being written).
