//! What a module may do: the confinement every action and requirement passes before
//! the host acts on it, the caps on what one outcome may hold, and the least-privilege
//! RBAC derived from a manifest.

pub(crate) mod confine;
pub(crate) mod outcome;
pub(crate) mod rbac;

pub use confine::Rejection;
pub use outcome::{OutcomeLimits, OutcomeTooLarge};
pub use rbac::{RbacOptions, rbac_objects, to_yaml};
