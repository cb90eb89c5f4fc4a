//! What a module may do: the confinement every action and requirement passes before
//! the host acts on it, and the least-privilege RBAC derived from a manifest.

pub(crate) mod confine;
pub(crate) mod rbac;

pub use confine::Rejection;
pub use rbac::{RbacOptions, rbac_objects, to_yaml};
