//! The DittoServer CRD as YAML, for `make crds` (native builds only: the module never
//! renders YAML of its own).

use kube::CustomResourceExt as _;

use crate::api::DittoServer;

/// The first line of the generated file.
pub const HEADER: &str = "# Generated from guest/src/api.rs by `make crds`. Do not edit.\n";

/// Renders `crds/dittoservers.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    Ok(format!("{HEADER}{}", serde_yaml_ng::to_string(&DittoServer::crd())?))
}
