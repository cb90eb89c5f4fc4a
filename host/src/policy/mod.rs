//! What a module may do: the administrator's policy (kinds, Secrets, workload content,
//! caps; the manifest can only ask for less), the confinement every action and
//! requirement passes before the host acts on it, the write budget that bounds what it
//! may write over time, and the least-privilege RBAC derived from a manifest.

pub(crate) mod admin;
pub(crate) mod admission;
pub(crate) mod budget;
pub(crate) mod confine;
pub(crate) mod outcome;
pub(crate) mod pod_security;
pub(crate) mod rbac;

pub use admin::{AdminPolicy, GroupKind, PolicyViolation};
pub use admission::{AdmissionOptions, admission_objects};
pub use budget::{OverBudget, WriteBudget, WriteBudgetConfig};
pub use confine::Rejection;
pub use outcome::{OutcomeLimits, OutcomeTooLarge};
pub use pod_security::{PodSecurityLevel, Violation, WorkloadPolicy};
pub use rbac::{RbacOptions, rbac_objects, to_yaml};
