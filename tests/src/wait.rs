//! Waiting for the cluster to reach a state.
//!
//! Controllers act asynchronously, so tests poll for the state they expect. The
//! timeouts only bound a wait; no test asserts how long anything took.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::time::{Instant, sleep};

/// A generous bound for one wait: the machine may be busy compiling, and the
/// garbage collector rediscovers resources only every 30 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `probe` until it returns `Ok(Some(value))` and returns that value.
///
/// `Ok(None)` means "not yet". An `Err` from the probe ends the wait at once
/// (an API error is a failure, not a state to wait out). After `timeout` the wait
/// fails with a message naming `what` was awaited.
pub async fn wait_until<T, F, Fut>(what: impl Display, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    // Short first intervals keep fast cases fast; the cap keeps load low on long waits.
    let mut interval = Duration::from_millis(50);
    loop {
        if let Some(value) = probe().await.with_context(|| format!("while waiting for {what}"))? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        interval = (interval * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_ready_value() -> Result<()> {
        let mut calls = 0;
        let value = wait_until("the third call", DEFAULT_TIMEOUT, || {
            calls += 1;
            let seen = calls;
            async move { Ok((seen == 3).then_some(seen)) }
        })
        .await?;
        assert_eq!(value, 3);
        Ok(())
    }

    #[tokio::test]
    async fn times_out_naming_what_was_awaited() {
        let error = wait_until("godot", Duration::from_millis(10), || async { Ok(None::<()>) })
            .await
            .expect_err("nothing ever arrives");
        assert!(error.to_string().contains("waiting for godot"), "{error}");
    }

    #[tokio::test]
    async fn a_probe_error_ends_the_wait() {
        let error = wait_until("anything", DEFAULT_TIMEOUT, || async {
            Err::<Option<()>, _>(anyhow::anyhow!("forbidden"))
        })
        .await
        .expect_err("the probe failed");
        assert!(format!("{error:#}").contains("forbidden"), "{error:#}");
    }
}
