//! The watches: one task per served kind, feeding the caches and the work queue.
//!
//! - the primary kind, scoped by `--namespace` and `--label-selector`, into the
//!   primary store; every change queues that primary;
//! - each served related kind, filtered by the existence of the owner label (objects
//!   without it are never associated), into the association index; a change queues
//!   the primaries the object was and is claimed by. With `--namespace` one watch per
//!   kind covers it. Watching every namespace, each namespace that holds a primary
//!   gets its own watch per kind, started when its first primary appears and stopped
//!   (its objects dropped) when its last one goes ([`RelatedWatches`]): labelled
//!   objects in namespaces without primaries, which anyone allowed to create a
//!   ConfigMap there can make, are never cached;
//! - each served `reads` kind, metadata only (values are never cached), mapped back to
//!   the primaries that required the object through the requirement index;
//! - a re-discovery loop for optional kinds that are absent, which starts their watch
//!   when their CRD appears and then reconciles every primary.
//!
//! Each watch is pending in [`Caches::sync`] until its initial list
//! ([`super::sync`]): a primary is reconciled once the watches of the whole scope and
//! of its namespace have listed, and one that has not listed within the sync timeout
//! is named by `/readyz` and logged at ERROR with its error.
//!
//! A relist (after a watch expired) keeps the cached copy of every object whose
//! resourceVersion did not change, so it holds one copy of the cache plus the objects
//! that changed, rather than two copies until it is done; related kinds are listed in
//! pages of 50, so that only one page is in flight at a time.
//!
//! [`start`] is the one place watches are set up; a hot swap whose manifest changes
//! the kinds drops the [`Watches`] (aborting its tasks) and calls it again.
//! Requirements on an object of a related kind that lacks the owner label are not
//! watched (the related watch filters on the label): the controller polls a primary
//! that has one (`UNWATCHED_REQUIREMENT_POLL`).

use super::discovery::{KindLookup, KindRegistry, resolve};
use super::index::{KindKey, ObjectKey, ObjectStore, RelatedStore, RequirementIndex, RequirementTarget};
use super::sync::{SyncState, WatchId, Watched};
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
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Objects per page when a related watch lists: kube-runtime's default is 500.
const RELATED_PAGE_SIZE: u32 = 50;

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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Whether `primary` may be reconciled: every watch it depends on has listed
    /// (see [`SyncState::synced_for`]).
    pub fn synced_for(&self, primary: &ObjectKey) -> bool {
        let deleting = self.primary(primary).is_some_and(|p| p.metadata.deletion_timestamp.is_some());
        self.sync.synced_for(&primary.namespace, deleting)
    }

    /// How many objects are cached, by watch role and kind (`primary`, `related`),
    /// for `wasm_operator_cached_objects`.
    pub fn counts(&self) -> Vec<(&'static str, String, usize)> {
        let mut counts = Vec::new();
        let primaries = read(&self.primaries).len();
        counts.push(("primary", String::new(), primaries));
        for (kind, store) in read(&self.related).iter() {
            counts.push(("related", kind.kind.clone(), store.len()));
        }
        counts
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
        Some(format!("{}; the primaries that depend on them wait", reasons.join("; ")))
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
    related: Arc<Mutex<RelatedWatches>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        lock(&self.related).stop_all();
    }
}

/// A served related kind.
#[derive(Debug, Clone)]
struct RelatedKind {
    key: KindKey,
    resource: ApiResource,
    optional: bool,
}

/// One running related watch.
#[derive(Debug)]
struct RelatedWatch {
    task: JoinHandle<()>,
    id: WatchId,
    // Set before the watch's objects are dropped, and checked under the store's lock by
    // the task, so that an event it is still handling cannot put one back.
    stopped: Arc<AtomicBool>,
}

/// The related watches by namespace: one entry, `None`, for the whole scope with
/// `--namespace`; else one per namespace that holds a primary.
#[derive(Debug)]
struct RelatedWatches {
    per_namespace: bool,
    kinds: Vec<RelatedKind>,
    running: HashMap<Option<String>, Vec<RelatedWatch>>,
}

impl RelatedWatches {
    /// Starts the watches of `scope` unless they run.
    fn ensure(&mut self, ctx: &WatchContext, scope: Option<String>) {
        if self.running.contains_key(&scope) {
            return;
        }
        let watches = self.kinds.iter().map(|kind| RelatedWatch::start(ctx, kind, scope.clone())).collect();
        self.running.insert(scope, watches);
    }

    /// A kind that became served: watched wherever related kinds are.
    fn add_kind(&mut self, ctx: &WatchContext, kind: RelatedKind) {
        for (scope, watches) in &mut self.running {
            watches.push(RelatedWatch::start(ctx, &kind, scope.clone()));
        }
        self.kinds.push(kind);
    }

    /// Watches exactly the namespaces in `namespaces` (after the primaries' list):
    /// starts the missing ones, stops the others.
    fn follow(&mut self, ctx: &WatchContext, namespaces: &BTreeSet<String>) {
        if !self.per_namespace {
            return;
        }
        let gone: Vec<String> =
            self.running.keys().flatten().filter(|ns| !namespaces.contains(*ns)).cloned().collect();
        for namespace in gone {
            self.stop_namespace(ctx, &namespace);
        }
        for namespace in namespaces {
            self.ensure(ctx, Some(namespace.clone()));
        }
    }

    /// Stops the watches of `namespace`, which holds no primary any more, and drops
    /// their objects.
    fn stop_namespace(&mut self, ctx: &WatchContext, namespace: &str) {
        let Some(watches) = self.running.remove(&Some(namespace.to_owned())) else { return };
        for watch in &watches {
            watch.stop(&ctx.caches.sync);
        }
        let mut related = write(&ctx.caches.related);
        for store in related.values_mut() {
            store.replace(Some(namespace), Vec::new());
        }
    }

    fn stop_all(&mut self) {
        for watch in self.running.drain().flat_map(|(_, watches)| watches) {
            watch.task.abort();
        }
    }
}

impl RelatedWatch {
    fn start(ctx: &WatchContext, kind: &RelatedKind, namespace: Option<String>) -> Self {
        let watched = Watched {
            name: watch_name("related", &kind.resource),
            namespace: namespace.clone(),
            optional: kind.optional,
        };
        let id = ctx.caches.sync.start(watched);
        let stopped = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(watch_related(ctx.clone(), kind.clone(), namespace, id, stopped.clone()));
        Self { task, id, stopped }
    }

    fn stop(&self, sync: &SyncState) {
        self.stopped.store(true, Ordering::Release);
        self.task.abort();
        sync.done(self.id);
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
    related: Arc<Mutex<RelatedWatches>>,
}

impl WatchContext {
    /// Starts the related watches that a primary in `namespace` needs, if not running
    /// (with `--namespace`, they run from the start).
    fn watch_namespace(&self, namespace: &str) {
        let mut related = lock(&self.related);
        if related.per_namespace {
            related.ensure(self, Some(namespace.to_owned()));
        }
    }
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
    let mut related_kinds = Vec::new();
    for kind in &manifest.related {
        let key = KindKey::new(&kind.api_version, &kind.kind);
        if let KindLookup::Served(_, resource) = kinds.lookup(&key)
            && !related_kinds.iter().any(|k: &RelatedKind| k.key == key)
        {
            related_kinds.push(RelatedKind { key, resource, optional: kind.optional });
        }
    }
    let per_namespace = scope.namespace.is_none();
    let related =
        Arc::new(Mutex::new(RelatedWatches { per_namespace, kinds: related_kinds, running: HashMap::new() }));
    let ctx = WatchContext {
        client,
        scope,
        owner_label: manifest.owner_label.clone(),
        field_manager: manifest.field_manager.clone(),
        caches: caches.clone(),
        queue,
        related: related.clone(),
    };
    let tasks = Arc::new(Mutex::new(Vec::new()));
    let spawn = |tasks: &Mutex<Vec<JoinHandle<()>>>, task: JoinHandle<()>| lock(tasks).push(task);
    let primary = kinds.primary().clone();
    let id = caches.sync.start(everywhere(watch_name("primary", &primary)));
    spawn(&tasks, tokio::spawn(watch_primaries(ctx.clone(), primary, id)));
    if !per_namespace {
        // One set for the whole scope, from the start.
        lock(&related).ensure(&ctx, None);
    }
    let mut started = std::collections::HashSet::new();
    for kind in &manifest.reads {
        let key = KindKey::new(&kind.api_version, &kind.kind);
        if let KindLookup::Served(_, resource) = kinds.lookup(&key)
            && started.insert(key.clone())
        {
            let watched =
                Watched { name: watch_name("reads", &resource), namespace: None, optional: kind.optional };
            let id = caches.sync.start(watched);
            spawn(&tasks, tokio::spawn(watch_reads(ctx.clone(), key, resource, id)));
        }
    }
    let related_manifest = manifest.related.clone();
    spawn(
        &tasks,
        tokio::spawn(rediscover(
            ctx,
            server,
            kinds.clone(),
            tasks.clone(),
            related_manifest,
            manifest.reads.clone(),
        )),
    );
    Watches { caches, kinds, tasks, related }
}

/// A watch every primary waits for.
fn everywhere(name: String) -> Watched {
    Watched { name, namespace: None, optional: false }
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
                ctx.watch_namespace(&key.namespace);
                if !echo {
                    ctx.queue.enqueue(key, Cause::Primary);
                }
            }
            Event::Delete(obj) => {
                if let Some(key) = ObjectKey::of(&obj) {
                    let emptied = {
                        let mut primaries = write(&ctx.caches.primaries);
                        primaries.delete(&key);
                        !primaries.holds_namespace(&key.namespace)
                    };
                    if emptied {
                        lock(&ctx.related).stop_namespace(&ctx, &key.namespace);
                    }
                    // The reconcile finds it gone and forgets its state.
                    ctx.queue.enqueue(key, Cause::Primary);
                }
            }
            Event::Init => buffer.clear(),
            Event::InitApply(mut obj) => {
                let cached = read(&ctx.caches.primaries).same_version(&obj);
                buffer.push(cached.unwrap_or_else(|| {
                    strip(&mut obj, &ctx.field_manager);
                    Arc::new(obj)
                }));
            }
            Event::InitDone => {
                let (touched, namespaces) = {
                    let mut primaries = write(&ctx.caches.primaries);
                    let touched = primaries.replace(None, std::mem::take(&mut buffer));
                    (touched, primaries.namespaces())
                };
                // Before this watch counts as listed, so that no primary is reconciled
                // before the watches of its namespace are pending.
                lock(&ctx.related).follow(&ctx, &namespaces);
                for key in touched {
                    ctx.queue.enqueue(key, Cause::Primary);
                }
                ctx.caches.sync.done(id);
            }
        }
    }
}

async fn watch_related(
    ctx: WatchContext,
    kind: RelatedKind,
    namespace: Option<String>,
    id: WatchId,
    stopped: Arc<AtomicBool>,
) {
    // Only labelled objects can ever be associated, so the API server filters. Small
    // pages: a relist holds one page in flight next to the cache (objects of a
    // related kind can be large: ConfigMaps of up to 1 MiB).
    let config = watcher::Config::default().labels(&ctx.owner_label).page_size(RELATED_PAGE_SIZE);
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &kind.resource),
        None => api_for(&ctx, &kind.resource),
    };
    let mut stream = watcher(api, config, &ctx, &kind.resource, id);
    let mut buffer = Vec::new();
    while let Some(event) = stream.next().await {
        let (owners, changed): (Vec<ObjectKey>, Vec<ObjectKey>) = {
            let mut related = write(&ctx.caches.related);
            if stopped.load(Ordering::Acquire) {
                return;
            }
            let store =
                related.entry(kind.key.clone()).or_insert_with(|| RelatedStore::new(&ctx.owner_label));
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
                    buffer.push(store.same_version(&obj).unwrap_or_else(|| {
                        strip(&mut obj, &ctx.field_manager);
                        Arc::new(obj)
                    }));
                    (Vec::new(), Vec::new())
                }
                Event::InitDone => {
                    let owners = store.replace(namespace.as_deref(), std::mem::take(&mut buffer));
                    ctx.caches.sync.done(id);
                    (owners, Vec::new())
                }
            }
        };
        ctx.caches.queue_existing(&ctx.queue, owners, &kind.key);
        for key in changed {
            ctx.caches.queue_requirers(&ctx.queue, &kind.key, key);
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
    related: Vec<KindRef>,
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
            if let Some(declared) = related.iter().find(|r| r.is(&key.api_version, &key.kind)) {
                let served =
                    RelatedKind { key: key.clone(), resource: resource.clone(), optional: declared.optional };
                lock(&ctx.related).add_kind(&ctx, served);
            }
            if reads.iter().any(|r| r.is(&key.api_version, &key.kind)) {
                let id = ctx.caches.sync.start(Watched {
                    name: watch_name("reads", &resource),
                    namespace: None,
                    optional: true,
                });
                lock(&tasks).push(tokio::spawn(watch_reads(ctx.clone(), key.clone(), resource, id)));
            }
            // What a module may do depends on which kinds exist: look at everyone again.
            for primary in ctx.caches.primary_keys() {
                ctx.queue.enqueue(primary, Cause::Resync);
            }
        }
    }
}
