//! Creating objects of any kind from YAML or JSON, as `kubectl apply
//! --server-side` would.

use anyhow::{Context as _, Result, anyhow, bail};
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{self, Scope};
use kube::{Client, ResourceExt as _};
use serde::Deserialize as _;
use serde_json::Value;

/// The field manager of everything the test helpers write.
pub const FIELD_MANAGER: &str = "e2e-tests";

/// Parses a YAML stream (documents separated by `---`) into JSON values,
/// skipping empty documents.
pub fn parse_yaml(text: &str) -> Result<Vec<Value>> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).with_context(|| format!("YAML document {}", index + 1))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// Server-side applies one object (with `apiVersion` and `kind`) and returns it
/// as the API server stored it.
///
/// Its kind is looked up through discovery, so CRD kinds work once their CRD is
/// Established. A namespaced object without `metadata.namespace` goes to
/// `namespace`. The apply is forced: the test's object is the desired state.
pub async fn apply(client: &Client, namespace: Option<&str>, object: &Value) -> Result<DynamicObject> {
    let object: DynamicObject =
        serde_json::from_value(object.clone()).context("not a Kubernetes object (metadata missing?)")?;
    let types = object
        .types
        .as_ref()
        .ok_or_else(|| anyhow!("object {} has no apiVersion/kind", object.name_any()))?;
    let gvk =
        GroupVersionKind::try_from(types).with_context(|| format!("bad apiVersion {}", types.api_version))?;
    let name = object.metadata.name.clone().ok_or_else(|| anyhow!("a {} without metadata.name", gvk.kind))?;
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("the API server does not serve {}/{}", types.api_version, gvk.kind))?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let Some(ns) = object.metadata.namespace.as_deref().or(namespace) else {
                bail!("{} {name} is namespaced but neither it nor the caller names a namespace", gvk.kind);
            };
            Api::namespaced_with(client.clone(), ns, &resource)
        }
    };
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object))
        .await
        .with_context(|| format!("cannot apply {} {name}", gvk.kind))
}

/// Applies every object of a YAML stream in order; see [`apply`].
pub async fn apply_yaml(client: &Client, namespace: Option<&str>, yaml: &str) -> Result<Vec<DynamicObject>> {
    let mut applied = Vec::new();
    for object in parse_yaml(yaml)? {
        applied.push(apply(client, namespace, &object).await?);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stream_and_skips_empty_documents() -> Result<()> {
        let docs = parse_yaml("---\na: 1\n---\n---\nb: [x]\n")?;
        assert_eq!(docs, vec![serde_json::json!({"a": 1}), serde_json::json!({"b": ["x"]})]);
        Ok(())
    }

    #[test]
    fn reports_which_document_is_broken() {
        let error = parse_yaml("a: 1\n---\nb: [\n").expect_err("unterminated list");
        assert!(format!("{error:#}").contains("YAML document 2"), "{error:#}");
    }
}
