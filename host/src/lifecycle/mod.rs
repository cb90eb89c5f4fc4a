//! Where modules come from and how they change: the sources (a file, a ConfigMap
//! key), loading the first module, and the hot swap that validates every new version
//! and switches to it atomically, or keeps the active one.

pub(crate) mod load;
pub(crate) mod source;
pub(crate) mod swap;

pub use load::{LoadFileError, load_file, load_module};
pub use source::{ConfigMapSource, ModuleSource, SourceError, SourceState, compress_for_configmap};
pub use swap::Swapper;
