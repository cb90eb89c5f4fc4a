//! The DittoServer CRD as YAML, for `make crds` (native builds only: the module never
//! renders YAML of its own).

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, ValidationRule,
};
use kube::CustomResourceExt as _;

use crate::api::DittoServer;
use crate::validate::MAX_NAME_LEN;

/// The first line of the generated file.
pub const HEADER: &str = "# Generated from guest/src/api.rs by `make crds`. Do not edit.\n";

/// Renders `crds/dittoservers.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    Ok(format!("{HEADER}{}", serde_yaml_ng::to_string(&crd())?))
}

/// The CRD: what the API types derive, plus the rules on `metadata.name`.
///
/// The derive leaves `metadata` out of the schema (the API server validates it), so
/// the module's checks of the name ([`crate::validate`]) are added here, as the
/// schema of `metadata.name`, the one part of `metadata` a CRD may restrict.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = DittoServer::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            schema.properties.get_or_insert_with(BTreeMap::new).insert("metadata".into(), metadata_schema());
        }
    }
    crd
}

/// `metadata` with CEL rules on `name`. Names never change, so the rules run when an
/// object is created only (`optionalOldSelf`: `oldSelf` has no value then): an object
/// stored before them keeps taking status and finalizer writes.
fn metadata_schema() -> JSONSchemaProps {
    let create_only = |check: String, message: String| ValidationRule {
        rule: format!("oldSelf.hasValue() || {check}"),
        message: Some(message),
        optional_old_self: Some(true),
        ..ValidationRule::default()
    };
    let name = JSONSchemaProps {
        type_: Some("string".into()),
        x_kubernetes_validations: Some(vec![
            create_only(
                format!("self.size() <= {MAX_NAME_LEN}"),
                format!(
                    "metadata.name must be at most {MAX_NAME_LEN} characters long: the server's pods carry \
                     a label `<name>-<10 characters>` of at most 63"
                ),
            ),
            create_only(
                "self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')".into(),
                "metadata.name must be a DNS label (lower-case letters, digits and '-', starting with a \
                 letter and ending with a letter or digit): the server's Services are named after it"
                    .into(),
            ),
        ]),
        ..JSONSchemaProps::default()
    };
    JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(BTreeMap::from([("name".into(), name)])),
        ..JSONSchemaProps::default()
    }
}
