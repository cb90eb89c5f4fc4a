//! The async bridge: module calls from async code, off the executor's threads.
//!
//! Guarantees:
//! - Guest code never runs on an async worker thread: every call runs on tokio's
//!   blocking pool (`spawn_blocking`), so a slow module cannot stall watches, timers or
//!   the HTTP endpoints.
//! - At most `concurrency` calls run at once. The permit moves into the blocking task
//!   and is released when the guest call ends, not when the awaiting future is
//!   dropped: cancelling a caller cannot let more guest code run than allowed. A
//!   cancelled call still ends by its deadline.

use super::call::{CallError, CallStage, Reply};
use super::module::LoadedModule;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Runs module calls for async code, at most `concurrency` at a time. Clones share
/// the bound.
#[derive(Debug, Clone)]
pub struct ModuleCaller {
    permits: Arc<Semaphore>,
}

impl ModuleCaller {
    /// A caller allowing `concurrency` (at least 1) calls at once.
    pub fn new(concurrency: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(concurrency.clamp(1, Semaphore::MAX_PERMITS))) }
    }

    /// Runs `reconcile` of `module` on `snapshot_json` on the blocking pool, waiting
    /// for a permit first. The module is the one the call started with, even if the
    /// active module is swapped meanwhile. [`Reply::elapsed`] excludes the wait.
    pub async fn call(&self, module: Arc<LoadedModule>, snapshot_json: Vec<u8>) -> Result<Reply, CallError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| CallError::Host {
            stage: CallStage::Instantiate,
            message: "the call semaphore is closed".into(),
        })?;
        tokio::task::spawn_blocking(move || {
            let reply = module.call(&snapshot_json);
            drop(permit);
            reply
        })
        .await
        .unwrap_or_else(|err| {
            Err(CallError::Host {
                stage: CallStage::Reconcile,
                message: format!("the call task failed: {err}"),
            })
        })
    }
}
