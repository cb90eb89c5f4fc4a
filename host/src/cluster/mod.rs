//! The cluster as the operator sees it: the connection, the kinds a manifest names as
//! the API server serves them, and the watches that keep caches and indexes of them
//! and turn their changes into work for the controller.

pub(crate) mod connect;
pub(crate) mod discovery;
pub(crate) mod index;
pub(crate) mod sync;
pub(crate) mod trigger;
pub(crate) mod watches;

pub use connect::{ConnectConfig, ConnectError, connect};
pub use discovery::{DiscoveryError, KindLookup, KindRegistry};
pub use index::{KindKey, ObjectKey, PrimaryTarget};
pub use watches::Scope;
