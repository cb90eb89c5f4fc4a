//! A namespace per test, deleted when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{Client, Config};

use crate::Cluster;

/// Label on every test namespace, so that leftovers can be found:
/// `kubectl delete namespace -l e2e.dittofs.dittofs.com/test`.
pub const TEST_LABEL: &str = "e2e.dittofs.dittofs.com/test";

/// Set (to anything) to keep test namespaces for inspection after the tests.
pub const KEEP_ENV: &str = "E2E_KEEP_NAMESPACES";

/// A namespace that exists for one test. Dropping it deletes the namespace (the
/// namespace controller then deletes its contents), also when the test panics.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    config: Config,
}

impl TestNamespace {
    /// Creates a namespace with a unique name that starts with `e2e-<prefix>`.
    pub async fn create(cluster: &Cluster, prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_owned(), prefix_label(prefix))].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(cluster.client()?)
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("cannot create test namespace {name}"))?;
        Ok(Self { name, config: cluster.config().clone() })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("keeping test namespace {} ({KEEP_ENV} is set)", self.name);
            return;
        }
        // Drop cannot await, and the test's runtime may be single-threaded and
        // about to end, so the delete runs on a thread of its own with its own
        // runtime and client (a client is bound to the runtime it was built in).
        let name = self.name.clone();
        let config = self.config.clone();
        let deleted = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let api = Api::<Namespace>::all(Client::try_from(config)?);
                // Not awaited until gone: the namespace controller finishes it in
                // the background and no later test reuses the name.
                api.delete(&name, &DeleteParams::background()).await?;
                Ok(())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot delete test namespace {}: {e:#}", self.name),
            Err(_) => eprintln!("deleting test namespace {} panicked", self.name),
        }
    }
}

/// `e2e-<prefix>-<unique suffix>`, a valid namespace name (DNS label, at most 63
/// characters). Unique across the tests of a process (counter) and across runs
/// (time and pid), since a previous run's namespace may still be terminating.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let suffix = format!("{:x}{:x}{count:x}", std::process::id(), nanos);
    let mut prefix = prefix_label(prefix);
    prefix.truncate(63 - "e2e-".len() - 1 - suffix.len());
    let prefix = prefix.trim_end_matches('-');
    format!("e2e-{prefix}-{suffix}")
}

/// Lowercase alphanumerics and dashes only, as DNS labels and label values allow.
fn prefix_label(prefix: &str) -> String {
    let cleaned: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    if cleaned.is_empty() { "test".to_owned() } else { cleaned.chars().take(40).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_valid_dns_labels() {
        let a = unique_name("Foreground_Deletion test!");
        let b = unique_name("Foreground_Deletion test!");
        assert_ne!(a, b);
        for name in [a, b, unique_name(&"x".repeat(100)), unique_name("--")] {
            assert!(name.len() <= 63, "{name}");
            assert!(name.starts_with("e2e-"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{name}");
            assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
        }
    }
}
