//! Counts, from a watch, the objects of one kind in a namespace and how many of them
//! meet a condition: how a phase learns it reached its goal without listing hundreds
//! of objects over and over (which would load the API server being measured).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use futures::StreamExt as _;
use kube::ResourceExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

/// What the watch has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Objects that exist.
    pub present: usize,
    /// Those of them that meet the condition.
    pub matching: usize,
    /// Whether the first list is in.
    pub listed: bool,
}

/// A running count; its watch stops when dropped.
pub struct Tally {
    what: String,
    counts: watch::Receiver<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Condition = Box<dyn Fn(&DynamicObject) -> bool + Send + Sync>;

impl Tally {
    /// Watches `api`'s objects, counting those for which `condition` holds, and
    /// returns once the first list is in.
    pub async fn start(
        what: &str,
        api: Api<DynamicObject>,
        condition: impl Fn(&DynamicObject) -> bool + Send + Sync + 'static,
    ) -> Result<Self> {
        let condition: Condition = Box::new(condition);
        let (sender, counts) = watch::channel(Counts::default());
        let name = what.to_owned();
        let task = tokio::spawn(async move {
            // Names to whether they match; a relist builds a new map and swaps it in.
            let mut objects: HashMap<String, bool> = HashMap::new();
            let mut relisting: Option<HashMap<String, bool>> = None;
            let mut listed = false;
            let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Apply(object)) => {
                        objects.insert(object.name_any(), condition(&object));
                    }
                    Ok(Event::Delete(object)) => {
                        objects.remove(&object.name_any());
                    }
                    Ok(Event::Init) => relisting = Some(HashMap::new()),
                    Ok(Event::InitApply(object)) => {
                        relisting.get_or_insert_default().insert(object.name_any(), condition(&object));
                    }
                    Ok(Event::InitDone) => {
                        objects = relisting.take().unwrap_or_default();
                        listed = true;
                    }
                    Err(err) => eprintln!("the {name} watch failed (retrying): {err}"),
                }
                let matching = objects.values().filter(|m| **m).count();
                sender.send_replace(Counts { present: objects.len(), matching, listed });
            }
        });
        let mut tally = Self { what: what.to_owned(), counts, task };
        tally.wait("its first list", Duration::from_secs(60), |c| c.listed).await?;
        Ok(tally)
    }

    /// The counts now.
    pub fn counts(&self) -> Counts {
        *self.counts.borrow()
    }

    /// Waits until `goal` holds for the counts, at most `timeout`; returns when it
    /// first held.
    pub async fn wait(
        &mut self,
        goal_name: &str,
        timeout: Duration,
        goal: impl Fn(Counts) -> bool,
    ) -> Result<Instant> {
        let reached = tokio::time::timeout(timeout, self.counts.wait_for(|c| goal(*c)))
            .await
            .map(|result| result.map(|_| ()));
        match reached {
            Ok(result) => result.with_context(|| format!("the {} watch ended", self.what))?,
            Err(_) => {
                return Err(anyhow!(
                    "{}: {goal_name} not reached within {} s ({:?})",
                    self.what,
                    timeout.as_secs(),
                    self.counts()
                ));
            }
        }
        Ok(Instant::now())
    }
}
