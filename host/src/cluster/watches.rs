//! The watches: one task per served kind, feeding the caches and the work queue.
//!
//! - the primary kind, scoped by `--namespace` and `--label-selector`, into the
//!   primary store; every change queues that primary;
//! - each served related kind, scoped by namespace and by the existence of the owner
//!   label (objects without it are never associated), into the association index;
//!   a change queues the primaries the object was and is claimed by;
//! - each served `reads` kind, metadata only (values are never cached), mapped back to
//!   the primaries that required the object through the requirement index;
//! - a re-discovery loop for optional kinds that are absent, which starts their watch
//!   when their CRD appears and then reconciles every primary.
//!
//! Each watch is pending in [`Caches::sync`] until its initial list
//! ([`super::sync`]): reconciling waits for all of them, and one that has not listed
//! within the sync timeout is named by `/readyz` and logged at ERROR with its error.
//!
//! [`start`] is the one place watches are set up; a hot swap whose manifest changes
//! the kinds drops the [`Watches`] (aborting its tasks) and calls it again.
//! Requirements on an object of a related kind that lacks the owner label are not
//! watched (the related watch filters on the label): the controller polls a primary
//! that has one (`UNWATCHED_REQUIREMENT_POLL`).

use super::discovery::{KindLookup, KindRegistry, resolve};
use super::index::{KindKey, ObjectKey, ObjectStore, RelatedStore, RequirementIndex, RequirementTarget};
use super::sync::{SyncState, WatchId};
use super::trigger::is_own_status_echo;
use crate::queue::{Cause, WorkQueue};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::discovery::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use reconcile_sdk::{KindRef, Manifest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often absent optional kinds are looked for again.
pub const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(15);

/// Where and what the primary watch looks at.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Only primaries matching this label selector.
    pub label_selector: Option<String>,
}

/// The caches the watches fill, shared with the reconcilers.
#[derive(Debug)]
pub struct Caches {
    /// The primaries in scope.
    pub primaries: RwLock<ObjectStore>,
    /// The objects of each related kind, indexed by owner.
    pub related: RwLock<HashMap<KindKey, RelatedStore>>,
    /// Which primary required which object.
    pub requirements: RwLock<RequirementIndex>,
    /// The watches that have not delivered their initial list yet.
    pub sync: SyncState,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panicking writer leaves a store that is at worst one event behind; the next
    // relist repairs it, so poisoning is not fatal here.
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Caches {
    /// Empty caches for `manifest`, whose watches report their sync to `sync`.
    pub fn new(manifest: &Manifest, sync: SyncState) -> Self {
        Self {
            primaries: RwLock::new(ObjectStore::default()),
            related: RwLock::new(HashMap::new()),
            requirements: RwLock::new(RequirementIndex::default()),
            sync,
        }
        .with_owner_label(manifest)
    }

    fn with_owner_label(self, manifest: &Manifest) -> Self {
        {
            let mut related = write(&self.related);
            for kind in &manifest.related {
                related
                    .entry(KindKey::new(&kind.api_version, &kind.kind))
                    .or_insert_with(|| RelatedStore::new(&manifest.owner_label));
            }
        }
        self
    }

    /// The cached primary at `key`.
    pub fn primary(&self, key: &ObjectKey) -> Option<Arc<DynamicObject>> {
        read(&self.primaries).get(key)
    }

    /// Every cached primary's key.
    pub fn primary_keys(&self) -> Vec<ObjectKey> {
        read(&self.primaries).keys()
    }

    /// Every finalizer a cached primary carries, once each.
    pub fn primary_finalizers(&self) -> Vec<String> {
        read(&self.primaries).finalizers()
    }

    /// The cached objects of every related kind claiming `primary` by the owner label.
    pub fn claimed_by(&self, primary: &ObjectKey) -> Vec<(KindKey, Arc<DynamicObject>)> {
        let related = read(&self.related);
        let mut out = Vec::new();
        for (kind, store) in related.iter() {
            out.extend(store.claimed_by(primary).into_iter().map(|o| (kind.clone(), o)));
        }
        out
    }

    /// Records `primary`'s requirements.
    pub fn set_requirements(&self, primary: &ObjectKey, targets: Vec<RequirementTarget>) {
        write(&self.requirements).set(primary, targets);
    }

    /// Forgets a primary that is gone.
    pub fn forget(&self, primary: &ObjectKey) {
        write(&self.requirements).remove(primary);
    }

    /// The requirements `primary` had last time.
    pub fn requirements_of(&self, primary: &ObjectKey) -> Vec<RequirementTarget> {
        read(&self.requirements).targets_of(primary).to_vec()
    }

    /// Whether every started watch has delivered its initial list.
    pub fn synced(&self) -> bool {
        self.sync.synced()
    }

    /// Why the operator is not ready, or `None` when every watch has listed: the
    /// watches past the sync timeout by name, else how many are still listing.
    pub fn not_ready(&self) -> Option<String> {
        if self.sync.synced() {
            return None;
        }
        let overdue = self.sync.overdue();
        if overdue.is_empty() {
            return Some("caches not synced yet".to_owned());
        }
        let reasons: Vec<String> = overdue.iter().map(ToString::to_string).collect();
        Some(format!("{}; reconciling waits for every watch", reasons.join("; ")))
    }

    fn queue_existing(
        &self,
        queue: &WorkQueue<ObjectKey>,
        keys: impl IntoIterator<Item = ObjectKey>,
        kind: &KindKey,
    ) {
        let primaries = read(&self.primaries);
        for key in keys {
            if primaries.get(&key).is_some() {
                queue.enqueue(key, Cause::Related(Arc::from(kind.kind.as_str())));
            }
        }
    }

    fn queue_requirers(&self, queue: &WorkQueue<ObjectKey>, kind: &KindKey, key: ObjectKey) {
        let target = RequirementTarget { kind: kind.clone(), key };
        let requirers = read(&self.requirements).primaries_for(&target);
        for primary in requirers {
            queue.enqueue(primary, Cause::Required(Arc::from(kind.kind.as_str())));
        }
    }
}

/// The running watches; dropping it stops them.
#[derive(Debug)]
pub struct Watches {
    /// The caches they fill.
    pub caches: Arc<Caches>,
    /// The kinds as discovered (and re-discovered).
    pub kinds: Arc<KindRegistry>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
            task.abort();
        }
    }
}

/// Everything a watch task needs.
#[derive(Clone)]
struct WatchContext {
    client: Client,
    scope: Scope,
    owner_label: String,
    field_manager: String,
    caches: Arc<Caches>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

/// Starts every watch `manifest` calls for, with `kinds` as discovered.
pub fn start(
    client: Client,
    server: String,
    manifest: &Manifest,
    kinds: Arc<KindRegistry>,
    scope: Scope,
    queue: Arc<WorkQueue<ObjectKey>>,
    sync: SyncState,
) -> Watches {
    let caches = Arc::new(Caches::new(manifest, sync));
    let ctx = WatchContext {
        client,
        scope,
        owner_label: manifest.owner_label.clone(),
        field_manager: manifest.field_manager.clone(),
        caches: caches.clone(),
        queue,
    };
    let tasks = Arc::new(Mutex::new(Vec::new()));
    let spawn = |tasks: &Mutex<Vec<JoinHandle<()>>>, task: JoinHandle<()>| {
        tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(task);
    };
    let primary = kinds.primary().clone();
    let id = caches.sync.start(watch_name("primary", &primary));
    spawn(&tasks, tokio::spawn(watch_primaries(ctx.clone(), primary, id)));
    let mut started = std::collections::HashSet::new();
    for kind in &manifest.related {
        let key = KindKey::new(&kind.api_version, &kind.kind);
        if let KindLookup::Served(_, resource) = kinds.lookup(&key)
            && started.insert(("related", key.clone()))
        {
            let id = caches.sync.start(watch_name("related", &resource));
            spawn(&tasks, tokio::spawn(watch_related(ctx.clone(), key, resource, id)));
        }
    }
    for kind in &manifest.reads {
        let key = KindKey::new(&kind.api_version, &kind.kind);
        if let KindLookup::Served(_, resource) = kinds.lookup(&key)
            && started.insert(("reads", key.clone()))
        {
            let id = caches.sync.start(watch_name("reads", &resource));
            spawn(&tasks, tokio::spawn(watch_reads(ctx.clone(), key, resource, id)));
        }
    }
    let role_of = {
        let related: Vec<KindKey> =
            manifest.related.iter().map(|k| KindKey::new(&k.api_version, &k.kind)).collect();
        move |k: &KindKey| related.contains(k)
    };
    spawn(
        &tasks,
        tokio::spawn(rediscover(ctx, server, kinds.clone(), tasks.clone(), role_of, manifest.reads.clone())),
    );
    Watches { caches, kinds, tasks }
}

fn api_for<K>(ctx: &WatchContext, resource: &ApiResource) -> Api<K>
where
    K: kube::Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>,
{
    match &ctx.scope.namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, resource),
        None => Api::all_with(ctx.client.clone(), resource),
    }
}

/// Drops what the host never reads from a cached object: every `managedFields` entry
/// but a bare one (manager and operation) for the module's field manager, which is
/// what shows the object as made by the module ([`crate::cluster::index::is_associated`]).
fn strip(obj: &mut DynamicObject, field_manager: &str) {
    let ours = obj
        .metadata
        .managed_fields
        .take()
        .into_iter()
        .flatten()
        .find(|entry| entry.manager.as_deref() == Some(field_manager));
    obj.metadata.managed_fields = ours.map(|entry| {
        vec![ManagedFieldsEntry {
            manager: entry.manager,
            operation: entry.operation,
            ..ManagedFieldsEntry::default()
        }]
    });
}

/// A watch's name in logs and `/readyz`: `related apps/v1 StatefulSet`.
fn watch_name(role: &str, resource: &ApiResource) -> String {
    format!("{role} {} {}", resource.api_version, resource.kind)
}

async fn watch_primaries(ctx: WatchContext, resource: ApiResource, id: WatchId) {
    let mut config = watcher::Config::default();
    if let Some(selector) = &ctx.scope.label_selector {
        config = config.labels(selector);
    }
    let api: Api<DynamicObject> = api_for(&ctx, &resource);
    let mut stream = watcher(api, config, &ctx, &resource, id);
    let mut buffer = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Event::Apply(mut obj) => {
                let Some(key) = ObjectKey::of(&obj) else { continue };
                // The echo of the host's own status write is cached but not reconciled
                // (see `trigger`).
                let echo = read(&ctx.caches.primaries)
                    .get(&key)
                    .is_some_and(|previous| is_own_status_echo(&previous, &obj, &ctx.field_manager));
                strip(&mut obj, &ctx.field_manager);
                write(&ctx.caches.primaries).apply(obj);
                if !echo {
                    ctx.queue.enqueue(key, Cause::Primary);
                }
            }
            Event::Delete(obj) => {
                if let Some(key) = ObjectKey::of(&obj) {
                    write(&ctx.caches.primaries).delete(&key);
                    // The reconcile finds it gone and forgets its state.
                    ctx.queue.enqueue(key, Cause::Primary);
                }
            }
            Event::Init => buffer.clear(),
            Event::InitApply(mut obj) => {
                strip(&mut obj, &ctx.field_manager);
                buffer.push(obj);
            }
            Event::InitDone => {
                let touched = write(&ctx.caches.primaries).replace_all(std::mem::take(&mut buffer));
                for key in touched {
                    ctx.queue.enqueue(key, Cause::Primary);
                }
                ctx.caches.sync.done(id);
            }
        }
    }
}

async fn watch_related(ctx: WatchContext, kind: KindKey, resource: ApiResource, id: WatchId) {
    // Only labelled objects can ever be associated, so the API server filters.
    let config = watcher::Config::default().labels(&ctx.owner_label);
    let api: Api<DynamicObject> = api_for(&ctx, &resource);
    let mut stream = watcher(api, config, &ctx, &resource, id);
    let mut buffer = Vec::new();
    while let Some(event) = stream.next().await {
        let (owners, changed): (Vec<ObjectKey>, Vec<ObjectKey>) = {
            let mut related = write(&ctx.caches.related);
            let store = related.entry(kind.clone()).or_insert_with(|| RelatedStore::new(&ctx.owner_label));
            match event {
                Event::Apply(mut obj) => {
                    strip(&mut obj, &ctx.field_manager);
                    let key = ObjectKey::of(&obj);
                    (store.apply(obj), key.into_iter().collect())
                }
                Event::Delete(obj) => match ObjectKey::of(&obj) {
                    Some(key) => (store.delete(&key), vec![key]),
                    None => (Vec::new(), Vec::new()),
                },
                Event::Init => {
                    buffer.clear();
                    (Vec::new(), Vec::new())
                }
                Event::InitApply(mut obj) => {
                    strip(&mut obj, &ctx.field_manager);
                    buffer.push(obj);
                    (Vec::new(), Vec::new())
                }
                Event::InitDone => {
                    let owners = store.replace_all(std::mem::take(&mut buffer));
                    ctx.caches.sync.done(id);
                    (owners, Vec::new())
                }
            }
        };
        ctx.caches.queue_existing(&ctx.queue, owners, &kind);
        for key in changed {
            ctx.caches.queue_requirers(&ctx.queue, &kind, key);
        }
    }
}

async fn watch_reads(ctx: WatchContext, kind: KindKey, resource: ApiResource, id: WatchId) {
    let api: Api<PartialObjectMeta<DynamicObject>> = api_for(&ctx, &resource);
    let mut stream = watcher(api, watcher::Config::default(), &ctx, &resource, id);
    let mut listed = false;
    // Only resourceVersions, so that a relist can tell what changed while the watch
    // was down without caching any value.
    let mut versions: HashMap<ObjectKey, String> = HashMap::new();
    let mut listing: HashMap<ObjectKey, String> = HashMap::new();
    let key_of = |meta: &PartialObjectMeta<DynamicObject>| {
        let name = meta.metadata.name.clone()?;
        Some(ObjectKey::new(meta.metadata.namespace.clone().unwrap_or_default(), name))
    };
    while let Some(event) = stream.next().await {
        match event {
            Event::Apply(meta) => {
                if let Some(key) = key_of(&meta) {
                    versions.insert(key.clone(), meta.metadata.resource_version.clone().unwrap_or_default());
                    ctx.caches.queue_requirers(&ctx.queue, &kind, key);
                }
            }
            Event::Delete(meta) => {
                if let Some(key) = key_of(&meta) {
                    versions.remove(&key);
                    ctx.caches.queue_requirers(&ctx.queue, &kind, key);
                }
            }
            Event::Init => listing.clear(),
            Event::InitApply(meta) => {
                if let Some(key) = key_of(&meta) {
                    listing.insert(key, meta.metadata.resource_version.clone().unwrap_or_default());
                }
            }
            Event::InitDone => {
                let fresh = std::mem::take(&mut listing);
                let mut changed: Vec<ObjectKey> =
                    versions.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
                changed.extend(
                    fresh.iter().filter(|(k, v)| versions.get(*k) != Some(*v)).map(|(k, _)| k.clone()),
                );
                versions = fresh;
                if listed {
                    for key in changed {
                        ctx.caches.queue_requirers(&ctx.queue, &kind, key);
                    }
                }
                listed = true;
                ctx.caches.sync.done(id);
            }
        }
    }
}

/// A watch stream that retries forever with kube-runtime's default backoff, logging
/// errors; it ends only when its task is aborted. Errors before the initial list are
/// recorded against watch `id`; the first one past the sync timeout is logged at
/// ERROR, with what to check.
fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
    ctx: &WatchContext,
    resource: &ApiResource,
    id: WatchId,
) -> impl futures::Stream<Item = Event<K>> + Send + Unpin + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (kind, plural, caches) = (resource.kind.clone(), resource.plural.clone(), ctx.caches.clone());
    Box::pin(
        watcher::watcher(api, config)
            .default_backoff()
            .inspect_err(move |err| {
                tracing::warn!(kind = %kind, error = %err, "watch failed; retrying");
                if let Some(overdue) = caches.sync.failed(id, err.to_string()) {
                    tracing::error!(
                        kind = %kind,
                        "{overdue}. Reconciling waits for it: check that the operator may list and watch {plural} (`wasm-operator rbac` prints the rights the module needs) and that the kind's API answers (a CRD's conversion webhook, an aggregated API server)"
                    );
                }
            })
            .filter_map(|event| futures::future::ready(event.ok())),
    )
}

async fn rediscover(
    ctx: WatchContext,
    server: String,
    kinds: Arc<KindRegistry>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    is_related: impl Fn(&KindKey) -> bool + Send + 'static,
    reads: Vec<KindRef>,
) {
    let mut interval = tokio::time::interval(REDISCOVERY_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        for kind in kinds.absent() {
            let resource = match resolve(&ctx.client, &server, &kind).await {
                Ok(Some(resource)) => resource,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(kind = %kind.kind, error = %err, "re-discovery failed");
                    continue;
                }
            };
            tracing::info!(kind = %kind.kind, api_version = %kind.api_version, "optional kind is served now; watching it");
            let key = KindKey::new(&kind.api_version, &kind.kind);
            kinds.mark_served(&kind, resource.clone());
            let mut started = Vec::new();
            if is_related(&key) {
                let id = ctx.caches.sync.start(watch_name("related", &resource));
                started.push(tokio::spawn(watch_related(ctx.clone(), key.clone(), resource.clone(), id)));
            }
            if reads.iter().any(|r| r.is(&key.api_version, &key.kind)) {
                let id = ctx.caches.sync.start(watch_name("reads", &resource));
                started.push(tokio::spawn(watch_reads(ctx.clone(), key.clone(), resource, id)));
            }
            tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(started);
            // What a module may do depends on which kinds exist: look at everyone again.
            for primary in ctx.caches.primary_keys() {
                ctx.queue.enqueue(primary, Cause::Resync);
            }
        }
    }
}
