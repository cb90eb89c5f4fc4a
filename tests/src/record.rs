//! Recording every change of some kinds in a namespace, in the order the API server
//! made them, to prove orderings ("the finalizer before any owned object") and
//! states too short-lived for polling ("phase Deleting").
//!
//! Each kind is listed, then watched from the list's resourceVersion, so no change
//! made after [`Recording::start`] returns is missed; a watch the server closes is
//! resumed from the last resourceVersion seen. The recording stops when dropped.
//!
//! The watches deliver changes a little after a `get` can see them, so a test that
//! has just polled the cluster into a state must [`Recording::wait_for`] the changes
//! it is about to assert on, not read [`Recording::changes`] at once.

use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::discovery::ApiResource;
use tokio::task::JoinHandle;

use crate::{DEFAULT_TIMEOUT, wait_until};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Gone.
    Deleted,
}

/// One recorded change.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The object's kind.
    pub kind: String,
    /// What happened.
    pub change: Change,
    /// The object as of this change.
    pub object: DynamicObject,
    /// Its resourceVersion as a number (0 if it is not one).
    ///
    /// On a single etcd, as the test control plane runs, resourceVersion is etcd's
    /// global revision, so it orders changes across kinds. Clients of arbitrary
    /// clusters must treat it as opaque; these tests know their cluster.
    pub revision: u64,
}

/// A running recording of changes.
#[derive(Debug)]
pub struct Recording {
    changes: Arc<Mutex<Vec<Recorded>>>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Recording {
    /// Starts recording changes of `kinds` in `namespace`; returns once every watch
    /// is established.
    pub async fn start(client: &Client, namespace: &str, kinds: &[ApiResource]) -> Result<Self> {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for kind in kinds {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, kind);
            let list = api
                .list(&ListParams::default())
                .await
                .with_context(|| format!("cannot list {} to start recording", kind.kind))?;
            let mut version = list.metadata.resource_version.clone().unwrap_or_default();
            // Established here, so that the caller's next write is seen.
            let first = api
                .watch(&WatchParams::default().timeout(290), &version)
                .await
                .with_context(|| format!("cannot watch {}", kind.kind))?
                .boxed();
            let (changes, errors, kind_name) = (changes.clone(), errors.clone(), kind.kind.clone());
            tasks.push(tokio::spawn(async move {
                let mut stream = Some(first);
                loop {
                    let mut events = match stream.take() {
                        Some(events) => events,
                        None => match api.watch(&WatchParams::default().timeout(290), &version).await {
                            Ok(events) => events.boxed(),
                            Err(e) => {
                                lock(&errors).push(format!("{kind_name}: cannot resume the watch: {e}"));
                                return;
                            }
                        },
                    };
                    loop {
                        let event = match events.try_next().await {
                            Ok(Some(event)) => event,
                            Ok(None) => break,
                            Err(e) => {
                                lock(&errors).push(format!("{kind_name}: {e}"));
                                break;
                            }
                        };
                        let (change, object) = match event {
                            WatchEvent::Added(o) => (Change::Added, o),
                            WatchEvent::Modified(o) => (Change::Modified, o),
                            WatchEvent::Deleted(o) => (Change::Deleted, o),
                            WatchEvent::Bookmark(b) => {
                                version = b.metadata.resource_version;
                                continue;
                            }
                            WatchEvent::Error(e) => {
                                lock(&errors).push(format!("{kind_name}: {e:?}"));
                                return;
                            }
                        };
                        let object_version = object.metadata.resource_version.clone().unwrap_or_default();
                        let revision = object_version.parse().unwrap_or(0);
                        version = object_version;
                        lock(&changes).push(Recorded { kind: kind_name.clone(), change, object, revision });
                    }
                }
            }));
        }
        Ok(Self { changes, errors, tasks })
    }

    /// Every change recorded so far, in the order received (per kind, the API
    /// server's order; across kinds, sort by [`Recorded::revision`]).
    pub fn changes(&self) -> Vec<Recorded> {
        lock(&self.changes).clone()
    }

    /// Waits until the changes recorded so far satisfy `ready`, and returns them.
    ///
    /// A recording that never satisfies `ready` fails after [`DEFAULT_TIMEOUT`],
    /// naming `what` and the changes that did arrive.
    pub async fn wait_for(&self, what: &str, ready: impl Fn(&[Recorded]) -> bool) -> Result<Vec<Recorded>> {
        let waited = wait_until(format!("the recording to see {what}"), DEFAULT_TIMEOUT, || async {
            let changes = self.changes();
            Ok(ready(&changes).then_some(changes))
        })
        .await;
        waited.with_context(|| {
            let seen: Vec<String> = self
                .changes()
                .iter()
                .map(|c| {
                    format!("{:?} {} {}", c.change, c.kind, c.object.metadata.name.as_deref().unwrap_or(""))
                })
                .collect();
            format!("recorded: {seen:?}; watch errors: {:?}", self.errors())
        })
    }

    /// Watch failures, if any (a recording with failures may have missed changes).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.errors).clone()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
