//! Where modules come from and how they change: the sources (a file, a ConfigMap
//! key, a registry), whom the administrator trusts to sign them, loading the first module, and
//! the hot swap that checks every new version and switches to it atomically, or
//! keeps the active one.

pub(crate) mod load;
pub mod oci;
pub(crate) mod source;
pub(crate) mod swap;
pub mod trust;

pub use load::{LoadFileError, load_file, load_module};
pub use oci::{OciReference, OciSource, RegistryConfig, SignatureLocation};
pub use source::{ConfigMapSource, ModuleSource, SourceError, SourceState, compress_for_configmap};
pub use swap::Swapper;
pub use trust::TrustPolicy;
