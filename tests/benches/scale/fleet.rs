//! The N DittoServers of one run in their own namespace, and the benchmark's own
//! writes to them (creating, touching, changing the spec, deleting), which both the
//! operator and the bare client face alike.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

use e2e::dittofs::dittoservers;

/// How many of its own writes the benchmark has in flight: enough to keep ahead of
/// any operator, few enough not to be the load being measured.
pub const WRITERS: usize = 16;

/// The annotation a touch sets: a change no reconcile should answer with a write.
const TOUCH_ANNOTATION: &str = "bench.dittofs.com/touched";

/// A fleet of DittoServers.
pub struct Fleet {
    client: Client,
    namespace: String,
    /// The servers by name, as last written by the benchmark.
    servers: HashMap<String, DynamicObject>,
}

impl Fleet {
    /// Creates namespace `namespace` and `n` minimal DittoServers in it.
    pub async fn create(client: &Client, namespace: &str, n: usize) -> Result<Self> {
        let started = Instant::now();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))?;
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("cannot create namespace {namespace}"))?;
        let mut fleet =
            Self { client: client.clone(), namespace: namespace.to_owned(), servers: HashMap::new() };
        let api = fleet.servers();
        let created: Vec<DynamicObject> = stream::iter(0..n)
            .map(|i| {
                let api = api.clone();
                async move {
                    let server: DynamicObject = serde_json::from_value(json!({
                        "apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                        "metadata": {"name": format!("server-{i:05}")},
                        "spec": {"storage": {"metadataSize": "1Gi"}},
                    }))?;
                    api.create(&PostParams::default(), &server).await.context("cannot create a DittoServer")
                }
            })
            .buffer_unordered(WRITERS)
            .try_collect()
            .await?;
        fleet.servers = created.into_iter().map(|s| (s.name_any(), s)).collect();
        eprintln!("  created {n} DittoServers in {namespace} in {:.1} s", started.elapsed().as_secs_f64());
        Ok(fleet)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The servers, as the benchmark last wrote them.
    pub fn objects(&self) -> impl Iterator<Item = &DynamicObject> {
        self.servers.values()
    }

    /// The DittoServer API of the namespace.
    pub fn servers(&self) -> Api<DynamicObject> {
        self.api(&dittoservers())
    }

    /// The API of `resource` in the namespace.
    pub fn api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, resource)
    }

    /// The kinds the module creates for a server without Percona, which the
    /// garbage collector deletes after it.
    pub fn owned_kinds() -> [(&'static str, ApiResource); 3] {
        [
            ("ConfigMaps", ApiResource::erase::<ConfigMap>(&())),
            ("Services", ApiResource::erase::<Service>(&())),
            ("StatefulSets", ApiResource::erase::<StatefulSet>(&())),
        ]
    }

    /// Merge-patches every server with `patch`, `WRITERS` at a time; keeps and
    /// returns the patched objects.
    async fn patch_each(&mut self, patch: &Value) -> Result<Vec<DynamicObject>> {
        let api = self.servers();
        let patched: Vec<DynamicObject> = stream::iter(self.servers.keys().cloned())
            .map(|name| {
                let api = api.clone();
                async move {
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .with_context(|| format!("cannot patch DittoServer {name}"))
                }
            })
            .buffer_unordered(WRITERS)
            .try_collect()
            .await?;
        for server in &patched {
            self.servers.insert(server.name_any(), server.clone());
        }
        Ok(patched)
    }

    /// Sets an annotation on every server: a metadata change that reaches the
    /// operator's watch but changes nothing it owns.
    pub async fn touch(&mut self) -> Result<()> {
        let stamp = format!("{:?}", std::time::SystemTime::now());
        self.patch_each(&json!({"metadata": {"annotations": {TOUCH_ANNOTATION: stamp}}})).await.map(|_| ())
    }

    /// Changes every server's cache size: the configuration file, and so the pod
    /// template's config hash, change. Returns the patched servers.
    pub async fn change_spec(&mut self) -> Result<Vec<DynamicObject>> {
        self.patch_each(&json!({"spec": {"cache": {"size": "2GB"}}})).await
    }

    /// Deletes every server in one request (as `kubectl delete dittoservers --all`
    /// does for a namespace); returns them as marked for deletion.
    pub async fn delete_all(&mut self) -> Result<Vec<DynamicObject>> {
        let deleted = self
            .servers()
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await
            .context("cannot delete the DittoServers")?;
        let Some(list) = deleted.left() else {
            bail!("deleting the DittoServers returned a status, not the objects")
        };
        for server in &list.items {
            self.servers.insert(server.name_any(), server.clone());
        }
        Ok(list.items)
    }
}
