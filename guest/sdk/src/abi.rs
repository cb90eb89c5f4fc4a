//! The ABI v1 JSON documents exchanged between a host and a reconcile module.
//!
//! These types are the wire contract of docs/abi.md (*The manifest*, *The snapshot*,
//! *The outcome*): field names are camelCase and their shapes are fixed. The same
//! types serve both sides: a module deserializes a [`Snapshot`] and serializes an
//! [`Outcome`]; the host does the reverse and treats everything it reads from a
//! module as hostile, which is why decoding is strict (unknown fields and ill-formed
//! outcomes are errors, not silently ignored).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The ABI version this crate implements; `reconcile_abi_version` returns it.
pub const ABI_VERSION: u32 = 1;

/// What a module manages, declared once; the host watches and confines by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Always [`ABI_VERSION`].
    pub abi: u32,
    /// The module's name, for logs, metrics and `/module`.
    pub name: String,
    /// The module's version, for logs, metrics and `/module`.
    pub version: String,
    /// The kind the module reconciles: one reconcile per object of this kind.
    pub primary: KindRef,
    /// Kinds the module creates and owns through `apply`, `delete` and `orphan`.
    #[serde(default)]
    pub related: Vec<KindRef>,
    /// Kinds the module may read by name through `requires`, read-only.
    #[serde(default)]
    pub reads: Vec<KindRef>,
    /// Label whose value is the primary's name on every object the module owns.
    pub owner_label: String,
    /// Field manager of every server-side apply.
    pub field_manager: String,
    /// The only finalizers the module may add or remove on its primaries.
    #[serde(default)]
    pub finalizers: Vec<String>,
}

/// A Kubernetes kind as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KindRef {
    /// `group/version`, or `v1` for the core group.
    pub api_version: String,
    /// The kind, e.g. `ConfigMap`.
    pub kind: String,
    /// The resource's plural name, e.g. `configmaps`.
    pub plural: String,
    /// The kind's CRD may be absent: the host then watches nothing for it and fails
    /// any write to it with a clear error.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
    /// The host replaces every `data` value with `sha256:<hex>` of the value, so that
    /// secret values never enter the sandbox.
    #[serde(default, skip_serializing_if = "is_false")]
    pub digest_only: bool,
}

impl KindRef {
    /// Whether `api_version`/`kind` name this kind.
    pub fn is(&self, api_version: &str, kind: &str) -> bool {
        self.api_version == api_version && self.kind == kind
    }
}

/// Everything the module may know when it reconciles one primary object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    /// Always [`ABI_VERSION`].
    pub abi: u32,
    /// The host's clock as RFC 3339 UTC; the module reads no clock of its own.
    pub now: String,
    /// The primary object, as the API server returns it.
    pub object: Value,
    /// Every object of a related kind associated with the primary.
    #[serde(default)]
    pub related: Vec<Value>,
    /// Answers to the previous outcome's `requires`.
    #[serde(default)]
    pub required: Vec<RequiredObject>,
    /// Present while the last attempt for this primary failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<LastFailure>,
}

/// A [`Snapshot`] whose `object` and `related` entries the module decodes as its own
/// types `O` and `R`, straight from the input in one pass: a module that reads a few
/// fields of each object decodes just those (borrowing strings from the input)
/// instead of building a tree of every object first. Same wire format as [`Snapshot`].
///
/// `O` and `R` should accept any JSON value (deserialize leniently, ignoring fields
/// they do not read): an entry they reject makes the whole snapshot invalid.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[serde(bound(deserialize = "O: Deserialize<'de>, R: Deserialize<'de>"))]
pub struct SnapshotOf<'a, O, R> {
    /// Always [`ABI_VERSION`].
    pub abi: u32,
    /// The host's clock as RFC 3339 UTC.
    #[serde(borrow)]
    pub now: std::borrow::Cow<'a, str>,
    /// The primary object.
    pub object: O,
    /// Every object of a related kind associated with the primary.
    #[serde(default = "Vec::new")]
    pub related: Vec<R>,
    /// Answers to the previous outcome's `requires`.
    #[serde(default)]
    pub required: Vec<RequiredObject>,
    /// Present while the last attempt for this primary failed.
    #[serde(default)]
    pub last_failure: Option<LastFailure>,
}

/// A [`SnapshotOf`] whose objects are left unparsed, as JSON text borrowed from the
/// input, for the module to decode when and as it needs.
pub type RawSnapshot<'a> = SnapshotOf<'a, &'a serde_json::value::RawValue, &'a serde_json::value::RawValue>;

/// An object the module asked for by name, and what the host found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequiredObject {
    /// The requested kind's `apiVersion`.
    pub api_version: String,
    /// The requested kind.
    pub kind: String,
    /// The requested name, in the primary's namespace.
    pub name: String,
    /// The object, or `null` when it does not exist.
    pub object: Option<Value>,
}

impl RequiredObject {
    /// Whether this answers the request `req`.
    pub fn answers(&self, req: &Requirement) -> bool {
        self.api_version == req.api_version && self.kind == req.kind && self.name == req.name
    }
}

/// Why the previous attempt for this primary failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LastFailure {
    /// The failure, as the host reported it.
    pub message: String,
    /// Consecutive failed attempts so far.
    pub attempts: u32,
}

/// An object the module needs to see, in the primary's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requirement {
    /// The kind's `apiVersion`; the kind must be in the manifest's `reads` or `related`.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// The object's name.
    pub name: String,
}

/// What a module answers for one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawOutcome", into = "RawOutcome")]
pub enum Outcome {
    /// Actions to run in order, objects to read first, and when to look again.
    Actions {
        /// Run in order; the first failure stops the batch.
        actions: Vec<Action>,
        /// Objects the host must read and pass in the next snapshot before acting.
        requires: Vec<Requirement>,
        /// Reconcile again after this many seconds even if nothing changes.
        requeue_after_seconds: Option<u64>,
    },
    /// The module could not reconcile this object.
    Error(ModuleError),
}

impl Outcome {
    /// An outcome with these actions, no requirements and no requeue.
    pub fn actions(actions: Vec<Action>) -> Self {
        Outcome::Actions { actions, requires: Vec::new(), requeue_after_seconds: None }
    }

    /// An error outcome.
    pub fn error(message: impl Into<String>, retryable: bool) -> Self {
        Outcome::Error(ModuleError { message: message.into(), retryable })
    }
}

/// A failure the module reports instead of actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModuleError {
    /// What went wrong, naming the problem.
    pub message: String,
    /// Whether trying again later may succeed.
    pub retryable: bool,
}

/// The wire shape of [`Outcome`]: one object that holds either `error` or the rest.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actions: Option<Vec<Action>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requires: Option<Vec<Requirement>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requeue_after_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<ModuleError>,
}

impl TryFrom<RawOutcome> for Outcome {
    type Error = &'static str;

    fn try_from(raw: RawOutcome) -> Result<Self, &'static str> {
        match raw {
            RawOutcome { error: Some(error), actions: None, requires: None, requeue_after_seconds: None } => {
                Ok(Outcome::Error(error))
            }
            RawOutcome { error: Some(_), .. } => Err(
                "an outcome with `error` must not also carry `actions`, `requires` or `requeueAfterSeconds`",
            ),
            RawOutcome { actions: None, requires: None, .. } => {
                Err("an outcome must carry `actions` (possibly empty) or `error`")
            }
            RawOutcome { actions, requires, requeue_after_seconds, error: None } => Ok(Outcome::Actions {
                actions: actions.unwrap_or_default(),
                requires: requires.unwrap_or_default(),
                requeue_after_seconds,
            }),
        }
    }
}

impl From<Outcome> for RawOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Actions { actions, requires, requeue_after_seconds } => RawOutcome {
                actions: Some(actions),
                requires: (!requires.is_empty()).then_some(requires),
                requeue_after_seconds,
                error: None,
            },
            Outcome::Error(error) => {
                RawOutcome { actions: None, requires: None, requeue_after_seconds: None, error: Some(error) }
            }
        }
    }
}

/// One write the module asks the host to make, regarding the primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// Add a finalizer (one of the manifest's) to the primary.
    AddFinalizer {
        /// The finalizer.
        finalizer: String,
    },
    /// Remove a finalizer (one of the manifest's) from the primary.
    RemoveFinalizer {
        /// The finalizer.
        finalizer: String,
    },
    /// Server-side apply of a full desired object of a related kind.
    Apply {
        /// The desired object: apiVersion, kind, metadata.name and the fields owned.
        object: Value,
    },
    /// Delete an object associated with the primary.
    Delete {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's kind.
        kind: String,
        /// The object's name, in the primary's namespace.
        name: String,
        /// How dependents are deleted; the API server's default when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        propagation_policy: Option<PropagationPolicy>,
    },
    /// Remove every ownerReference to the primary from an associated object.
    Orphan {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's kind.
        kind: String,
        /// The object's name, in the primary's namespace.
        name: String,
    },
    /// Replace the primary's whole status through the status subresource.
    PatchStatus {
        /// The new status.
        status: Value,
    },
    /// Record an event regarding the primary.
    Event {
        /// `Normal` or `Warning`.
        event_type: EventType,
        /// A short UpperCamelCase reason.
        reason: String,
        /// A human-readable message.
        message: String,
    },
}

impl Action {
    /// The action's `op`, as on the wire (for logs and metrics).
    pub fn op(&self) -> &'static str {
        match self {
            Action::AddFinalizer { .. } => "addFinalizer",
            Action::RemoveFinalizer { .. } => "removeFinalizer",
            Action::Apply { .. } => "apply",
            Action::Delete { .. } => "delete",
            Action::Orphan { .. } => "orphan",
            Action::PatchStatus { .. } => "patchStatus",
            Action::Event { .. } => "event",
        }
    }
}

/// Deletion propagation, as the Kubernetes API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PropagationPolicy {
    /// Delete the object now; the garbage collector deletes dependents afterwards.
    Background,
    /// Delete dependents first; the object stays until they are gone.
    Foreground,
    /// Leave dependents, removing their ownerReferences.
    Orphan,
}

/// The type of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something an administrator may want to look at.
    Warning,
}

fn is_false(b: &bool) -> bool {
    !*b
}
