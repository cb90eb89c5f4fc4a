//! The active module, swappable at run time (DESIGN.md §4, hot swap).
//!
//! Guarantees: readers never block and never see a half-swapped state; a swap is one
//! atomic pointer store. A call holds the `Arc` it took for its whole duration, so
//! calls in flight finish on the old version while new calls use the new one, and the
//! old version is freed when its last call ends.

use super::module::LoadedModule;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Holds the module new calls use.
#[derive(Debug)]
pub struct ActiveModule {
    current: ArcSwap<LoadedModule>,
}

impl ActiveModule {
    /// Starts with `module`.
    pub fn new(module: Arc<LoadedModule>) -> Self {
        Self { current: ArcSwap::new(module) }
    }

    /// The module a new call should use.
    pub fn current(&self) -> Arc<LoadedModule> {
        self.current.load_full()
    }

    /// Makes `module` the active one; returns the one it replaces. Only pass modules
    /// that [`SandboxEngine::load`](super::SandboxEngine::load) accepted.
    pub fn replace(&self, module: Arc<LoadedModule>) -> Arc<LoadedModule> {
        self.current.swap(module)
    }
}
