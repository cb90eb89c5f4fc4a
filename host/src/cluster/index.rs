//! In-memory stores fed by the watches, and the two indexes that make snapshots and
//! triggers cheap.
//!
//! - [`ObjectStore`]: the objects of one kind by namespace and name.
//! - [`RelatedStore`]: the objects of one related kind, indexed by
//!   (namespace, owner label value), so building a snapshot reads only the primary's
//!   own objects and never scans the whole cache.
//! - [`RequirementIndex`]: which primaries asked for which object by name, so a change
//!   to that object reconciles exactly those primaries.
//!
//! Everything here is pure and synchronous; the watch tasks own the locking.

use kube::api::DynamicObject;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// A namespaced object's identity within one kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The namespace (empty for cluster-scoped objects, which the operator does not manage).
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// The key of an object as the API returned it; `None` without a name.
    pub fn of(obj: &DynamicObject) -> Option<Self> {
        let name = obj.metadata.name.clone()?;
        Some(Self { namespace: obj.metadata.namespace.clone().unwrap_or_default(), name })
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The primary a batch of actions is about.
#[derive(Debug, Clone)]
pub struct PrimaryTarget {
    /// The primary as last read (from the cache, or fresh after a conflict).
    pub object: Arc<DynamicObject>,
    /// Its namespace and name.
    pub key: ObjectKey,
    /// Its uid.
    pub uid: String,
}

impl PrimaryTarget {
    /// The primary's target from its object; `None` if it lacks a name or uid.
    pub fn new(object: Arc<DynamicObject>) -> Option<Self> {
        let key = ObjectKey::of(&object)?;
        let uid = object.metadata.uid.clone()?;
        Some(Self { object, key, uid })
    }
}

/// A kind's identity: `apiVersion` and `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KindKey {
    /// `group/version`, or `v1` for the core group.
    pub api_version: String,
    /// The kind.
    pub kind: String,
}

impl KindKey {
    /// The key of `api_version`/`kind`.
    pub fn new(api_version: impl Into<String>, kind: impl Into<String>) -> Self {
        Self { api_version: api_version.into(), kind: kind.into() }
    }
}

impl std::fmt::Display for KindKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.api_version, self.kind)
    }
}

/// The objects of one kind, by namespace and name.
///
/// Ordered by namespace first, so that whether a namespace holds an object (asked on
/// every primary's deletion) is one lookup, not a scan of every object.
#[derive(Debug, Default)]
pub struct ObjectStore {
    objects: BTreeMap<ObjectKey, Arc<DynamicObject>>,
}

impl ObjectStore {
    /// Inserts or replaces an object; returns the one it replaced.
    pub fn apply(&mut self, obj: DynamicObject) -> Option<Arc<DynamicObject>> {
        let key = ObjectKey::of(&obj)?;
        self.objects.insert(key, Arc::new(obj))
    }

    /// Removes an object; returns it if it was there.
    pub fn delete(&mut self, key: &ObjectKey) -> Option<Arc<DynamicObject>> {
        self.objects.remove(key)
    }

    /// Replaces the objects of `namespace` (every object when `None`) after a watch's
    /// (re)list; returns the keys of every object that was there before or is there now.
    pub fn replace(&mut self, namespace: Option<&str>, objs: Vec<Arc<DynamicObject>>) -> Vec<ObjectKey> {
        let in_scope = |key: &ObjectKey| namespace.is_none_or(|ns| key.namespace == ns);
        let mut touched: Vec<ObjectKey> = self.objects.keys().filter(|k| in_scope(k)).cloned().collect();
        self.objects.retain(|key, _| !in_scope(key));
        for obj in objs {
            if let Some(key) = ObjectKey::of(&obj) {
                touched.push(key.clone());
                self.objects.insert(key, obj);
            }
        }
        touched.sort();
        touched.dedup();
        touched
    }

    /// The cached copy of `obj` if it has the same resourceVersion, i.e. the same
    /// content. A relist keeps that copy instead of the new one, so that it holds one
    /// copy of what did not change rather than two until it is done.
    pub fn same_version(&self, obj: &DynamicObject) -> Option<Arc<DynamicObject>> {
        let cached = self.objects.get(&ObjectKey::of(obj)?)?;
        let version = obj.metadata.resource_version.as_deref()?;
        (cached.metadata.resource_version.as_deref() == Some(version)).then(|| cached.clone())
    }

    /// The namespaces that hold an object.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.objects.keys().map(|key| key.namespace.clone()).collect()
    }

    /// Whether some object is in `namespace`.
    pub fn holds_namespace(&self, namespace: &str) -> bool {
        let first = ObjectKey::new(namespace.to_owned(), String::new());
        self.objects.range(first..).next().is_some_and(|(key, _)| key.namespace == namespace)
    }

    /// The object at `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<DynamicObject>> {
        self.objects.get(key).cloned()
    }

    /// Every key, e.g. to reconcile every primary after gaining leadership.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.objects.keys().cloned().collect()
    }

    /// Every finalizer some stored object carries, once each.
    pub fn finalizers(&self) -> Vec<String> {
        let all = self.objects.values().flat_map(|obj| obj.metadata.finalizers.iter().flatten());
        all.cloned().collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// The objects of one related kind, indexed by the value of the owner label.
///
/// The index key is (namespace, owner label value), i.e. the key of the primary the
/// object claims to belong to. Whether it really is associated (no foreign controller)
/// is decided per snapshot by [`is_associated`], since it depends on the primary's uid.
#[derive(Debug)]
pub struct RelatedStore {
    owner_label: String,
    objects: ObjectStore,
    by_owner: HashMap<ObjectKey, BTreeSet<String>>,
}

impl RelatedStore {
    /// An empty store indexing by `owner_label`.
    pub fn new(owner_label: impl Into<String>) -> Self {
        Self { owner_label: owner_label.into(), objects: ObjectStore::default(), by_owner: HashMap::new() }
    }

    fn owner_of(&self, obj: &DynamicObject) -> Option<ObjectKey> {
        let value = obj.metadata.labels.as_ref()?.get(&self.owner_label)?;
        Some(ObjectKey::new(obj.metadata.namespace.clone().unwrap_or_default(), value.clone()))
    }

    fn unindex(&mut self, obj: &DynamicObject) -> Option<ObjectKey> {
        let owner = self.owner_of(obj)?;
        let name = obj.metadata.name.as_deref()?;
        if let Some(names) = self.by_owner.get_mut(&owner) {
            names.remove(name);
            if names.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
        Some(owner)
    }

    fn index(&mut self, obj: &DynamicObject) -> Option<ObjectKey> {
        let owner = self.owner_of(obj)?;
        let name = obj.metadata.name.clone()?;
        self.by_owner.entry(owner.clone()).or_default().insert(name);
        Some(owner)
    }

    /// Inserts or replaces an object; returns the primaries it was and is claimed by
    /// (both must be reconciled when an object changes hands).
    pub fn apply(&mut self, obj: DynamicObject) -> Vec<ObjectKey> {
        let mut owners = Vec::new();
        if let Some(key) = ObjectKey::of(&obj)
            && let Some(old) = self.objects.get(&key)
        {
            owners.extend(self.unindex(&old));
        }
        owners.extend(self.index(&obj));
        self.objects.apply(obj);
        owners.dedup();
        owners
    }

    /// Removes an object; returns the primary it was claimed by.
    pub fn delete(&mut self, key: &ObjectKey) -> Vec<ObjectKey> {
        match self.objects.delete(key) {
            Some(old) => self.unindex(&old).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Replaces the objects of `namespace` (every object when `None`); returns every
    /// primary claimed before or after.
    pub fn replace(&mut self, namespace: Option<&str>, objs: Vec<Arc<DynamicObject>>) -> Vec<ObjectKey> {
        let in_scope = |key: &ObjectKey| namespace.is_none_or(|ns| key.namespace == ns);
        let mut owners: Vec<ObjectKey> = self.by_owner.keys().filter(|k| in_scope(k)).cloned().collect();
        self.by_owner.retain(|owner, _| !in_scope(owner));
        for obj in &objs {
            owners.extend(self.index(obj));
        }
        self.objects.replace(namespace, objs);
        owners.sort();
        owners.dedup();
        owners
    }

    /// See [`ObjectStore::same_version`].
    pub fn same_version(&self, obj: &DynamicObject) -> Option<Arc<DynamicObject>> {
        self.objects.same_version(obj)
    }

    /// The objects claiming the primary `primary` through the owner label, by name.
    pub fn claimed_by(&self, primary: &ObjectKey) -> Vec<Arc<DynamicObject>> {
        let Some(names) = self.by_owner.get(primary) else { return Vec::new() };
        names
            .iter()
            .filter_map(|name| self.objects.get(&ObjectKey::new(primary.namespace.clone(), name.clone())))
            .collect()
    }

    /// The object at `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<DynamicObject>> {
        self.objects.get(key)
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// Whose objects a module's are: the manifest's owner label and field manager, and
/// the primary (namespace, name and uid).
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// The manifest's owner label.
    pub label: &'a str,
    /// The manifest's field manager.
    pub field_manager: &'a str,
    /// The primary's namespace and name.
    pub primary: &'a ObjectKey,
    /// The primary's uid.
    pub uid: &'a str,
}

/// Whether `obj` is associated with (is one of) the primary's objects (docs/abi.md,
/// *Host semantics*): same namespace, `owner_label: <primary name>`, no controller
/// ownerReference to anything but the primary, and made by the module: a controller
/// ownerReference to the primary, or the manifest's field manager in its
/// `managedFields`. A labelled object someone else made (kubectl, Helm) is never
/// the module's. The kind is the caller's to check.
pub fn is_associated(obj: &DynamicObject, owner: &Owner<'_>) -> bool {
    let same_namespace = obj.metadata.namespace.as_deref().unwrap_or_default() == owner.primary.namespace;
    let labelled = obj.metadata.labels.as_ref().and_then(|l| l.get(owner.label)) == Some(&owner.primary.name);
    let controllers =
        || obj.metadata.owner_references.iter().flatten().filter(|r| r.controller == Some(true));
    let foreign_controller = controllers().any(|r| r.uid != owner.uid);
    let controlled = controllers().any(|r| r.uid == owner.uid);
    same_namespace
        && labelled
        && !foreign_controller
        && (controlled || is_managed_by(obj, owner.field_manager))
}

/// Whether `field_manager` has an entry in `obj`'s `managedFields`.
pub fn is_managed_by(obj: &DynamicObject, field_manager: &str) -> bool {
    obj.metadata.managed_fields.iter().flatten().any(|entry| entry.manager.as_deref() == Some(field_manager))
}

/// An object a primary asked for by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequirementTarget {
    /// The object's kind.
    pub kind: KindKey,
    /// The object's namespace and name.
    pub key: ObjectKey,
}

/// Which primaries asked for which objects, both ways.
#[derive(Debug, Default)]
pub struct RequirementIndex {
    by_target: HashMap<RequirementTarget, HashSet<ObjectKey>>,
    by_primary: HashMap<ObjectKey, Vec<RequirementTarget>>,
}

impl RequirementIndex {
    /// Records that `primary` needs exactly `targets` now, replacing what it needed
    /// before.
    pub fn set(&mut self, primary: &ObjectKey, targets: Vec<RequirementTarget>) {
        self.remove(primary);
        if targets.is_empty() {
            return;
        }
        for target in &targets {
            self.by_target.entry(target.clone()).or_default().insert(primary.clone());
        }
        self.by_primary.insert(primary.clone(), targets);
    }

    /// Forgets `primary` (it was deleted).
    pub fn remove(&mut self, primary: &ObjectKey) {
        for target in self.by_primary.remove(primary).unwrap_or_default() {
            if let Some(primaries) = self.by_target.get_mut(&target) {
                primaries.remove(primary);
                if primaries.is_empty() {
                    self.by_target.remove(&target);
                }
            }
        }
    }

    /// The primaries that asked for `target`.
    pub fn primaries_for(&self, target: &RequirementTarget) -> Vec<ObjectKey> {
        self.by_target.get(target).map(|p| p.iter().cloned().collect()).unwrap_or_default()
    }

    /// What `primary` asked for last.
    pub fn targets_of(&self, primary: &ObjectKey) -> &[RequirementTarget] {
        self.by_primary.get(primary).map(Vec::as_slice).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use serde_json::json;

    const LABEL: &str = "example.com/owner";

    fn obj(ns: &str, name: &str, owner: Option<&str>, controller_uid: Option<&str>) -> DynamicObject {
        let mut value = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"namespace": ns, "name": name, "labels": {}}
        });
        if let Some(owner) = owner {
            value["metadata"]["labels"][LABEL] = json!(owner);
        }
        if let Some(uid) = controller_uid {
            value["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "example.com/v1", "kind": "Thing", "name": "x", "uid": uid, "controller": true
            }]);
        }
        serde_json::from_value(value).expect("a valid object")
    }

    fn names(objs: &[Arc<DynamicObject>]) -> Vec<String> {
        objs.iter().filter_map(|o| o.metadata.name.clone()).collect()
    }

    #[test]
    fn a_namespace_holds_objects_only_of_its_own_name() {
        let mut store = ObjectStore::default();
        store.apply(obj("ab", "x", None, None));
        // Neighbours in the order: "a" < "ab" < "b".
        assert!(!store.holds_namespace("a"));
        assert!(store.holds_namespace("ab"));
        assert!(!store.holds_namespace("b"));
        store.apply(obj("b", "y", None, None));
        assert!(store.holds_namespace("b"));
        store.delete(&ObjectKey::new("ab", "x"));
        assert!(!store.holds_namespace("ab"));
        assert_eq!(store.namespaces(), BTreeSet::from(["b".to_owned()]));
    }

    #[test]
    fn related_store_indexes_by_namespace_and_owner_label() {
        let mut store = RelatedStore::new(LABEL);
        store.apply(obj("a", "one", Some("p"), None));
        store.apply(obj("a", "two", Some("p"), None));
        store.apply(obj("a", "other", Some("q"), None));
        store.apply(obj("b", "three", Some("p"), None));
        store.apply(obj("a", "unlabelled", None, None));
        assert_eq!(names(&store.claimed_by(&ObjectKey::new("a", "p"))), ["one", "two"]);
        assert_eq!(names(&store.claimed_by(&ObjectKey::new("b", "p"))), ["three"]);
        assert!(store.claimed_by(&ObjectKey::new("c", "p")).is_empty());
        assert_eq!(store.len(), 5);
    }

    #[test]
    fn relabelling_moves_an_object_and_touches_both_owners() {
        let mut store = RelatedStore::new(LABEL);
        assert_eq!(store.apply(obj("a", "one", Some("p"), None)), [ObjectKey::new("a", "p")]);
        let touched = store.apply(obj("a", "one", Some("q"), None));
        assert_eq!(touched, [ObjectKey::new("a", "p"), ObjectKey::new("a", "q")]);
        assert!(store.claimed_by(&ObjectKey::new("a", "p")).is_empty());
        assert_eq!(names(&store.claimed_by(&ObjectKey::new("a", "q"))), ["one"]);
        assert_eq!(store.delete(&ObjectKey::new("a", "one")), [ObjectKey::new("a", "q")]);
        assert!(store.claimed_by(&ObjectKey::new("a", "q")).is_empty());
        assert!(store.delete(&ObjectKey::new("a", "one")).is_empty());
    }

    #[test]
    fn replace_drops_vanished_objects_and_reports_every_owner() {
        let mut store = RelatedStore::new(LABEL);
        store.apply(obj("a", "gone", Some("p"), None));
        let touched = store.replace(None, vec![Arc::new(obj("a", "new", Some("q"), None))]);
        assert_eq!(touched, [ObjectKey::new("a", "p"), ObjectKey::new("a", "q")]);
        assert!(store.claimed_by(&ObjectKey::new("a", "p")).is_empty());
        assert!(store.get(&ObjectKey::new("a", "gone")).is_none());
        assert_eq!(names(&store.claimed_by(&ObjectKey::new("a", "q"))), ["new"]);
    }

    #[test]
    fn replacing_a_namespace_leaves_the_others_alone() {
        let mut store = RelatedStore::new(LABEL);
        store.apply(obj("a", "one", Some("p"), None));
        store.apply(obj("b", "two", Some("p"), None));
        let touched = store.replace(Some("a"), Vec::new());
        assert_eq!(touched, [ObjectKey::new("a", "p")]);
        assert!(store.get(&ObjectKey::new("a", "one")).is_none());
        assert_eq!(names(&store.claimed_by(&ObjectKey::new("b", "p"))), ["two"]);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_relist_reuses_the_cached_copy_of_an_unchanged_object_only() {
        let versioned = |version: &str| {
            let mut o = obj("a", "one", Some("p"), None);
            o.metadata.resource_version = Some(version.into());
            o
        };
        let mut store = RelatedStore::new(LABEL);
        store.apply(versioned("7"));
        let cached = store.get(&ObjectKey::new("a", "one")).expect("cached");
        let same = store.same_version(&versioned("7")).expect("same version");
        assert!(Arc::ptr_eq(&same, &cached));
        assert!(store.same_version(&versioned("8")).is_none());
        assert!(store.same_version(&obj("a", "one", Some("p"), None)).is_none(), "no version: not the same");
    }

    fn managed(mut obj: DynamicObject, manager: &str) -> DynamicObject {
        obj.metadata.managed_fields =
            Some(vec![ManagedFieldsEntry { manager: Some(manager.into()), ..ManagedFieldsEntry::default() }]);
        obj
    }

    #[test]
    fn association_requires_namespace_label_no_foreign_controller_and_the_module_as_maker() {
        let primary = ObjectKey::new("a", "p");
        let owner = Owner { label: LABEL, field_manager: "module", primary: &primary, uid: "uid-p" };
        let associated = |obj: DynamicObject| is_associated(&obj, &owner);
        // Made by the module: its field manager, or a controller reference to the primary.
        assert!(associated(managed(obj("a", "x", Some("p"), None), "module")));
        assert!(associated(obj("a", "x", Some("p"), Some("uid-p"))));
        // Labelled, but made by someone else (kubectl, Helm): never the module's.
        assert!(!associated(obj("a", "x", Some("p"), None)));
        assert!(!associated(managed(obj("a", "x", Some("p"), None), "kubectl-create")));
        assert!(!associated(managed(obj("a", "x", Some("p"), Some("uid-other")), "module")));
        assert!(!associated(managed(obj("b", "x", Some("p"), None), "module")));
        assert!(!associated(managed(obj("a", "x", Some("q"), None), "module")));
        assert!(!associated(managed(obj("a", "x", None, None), "module")));
        // A non-controller reference to someone else does not break the association,
        // and does not make the object the primary's either.
        let mut shared = obj("a", "x", Some("p"), Some("uid-other"));
        if let Some(refs) = shared.metadata.owner_references.as_mut() {
            refs[0].controller = Some(false);
        }
        assert!(!associated(shared.clone()));
        assert!(associated(managed(shared, "module")));
    }

    #[test]
    fn requirement_index_maps_both_ways_and_forgets() {
        let mut index = RequirementIndex::default();
        let secret = |name: &str| RequirementTarget {
            kind: KindKey::new("v1", "Secret"),
            key: ObjectKey::new("a", name),
        };
        let p = ObjectKey::new("a", "p");
        let q = ObjectKey::new("a", "q");
        index.set(&p, vec![secret("jwt"), secret("s3")]);
        index.set(&q, vec![secret("jwt")]);
        let mut jwt = index.primaries_for(&secret("jwt"));
        jwt.sort();
        assert_eq!(jwt, [p.clone(), q.clone()]);
        index.set(&p, vec![secret("s3")]);
        assert_eq!(index.primaries_for(&secret("jwt")), vec![q.clone()]);
        assert_eq!(index.targets_of(&p), [secret("s3")]);
        index.remove(&p);
        assert!(index.primaries_for(&secret("s3")).is_empty());
        index.set(&q, Vec::new());
        assert!(index.primaries_for(&secret("jwt")).is_empty());
    }
}
