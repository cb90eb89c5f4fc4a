//! The DittoFS reconcile module (placeholder; being written).
