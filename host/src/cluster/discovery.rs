//! API discovery of the manifest's kinds, and the registry of what is served now.
//!
//! Guarantees:
//! - the primary kind must be served and namespaced, or startup fails naming the fix;
//! - a kind the manifest does not mark `optional` must be served at startup;
//! - an optional kind may be absent: it is recorded as such, writes to it fail with a
//!   clear error, and [`KindRegistry::absent`] tells the re-discovery loop what to
//!   look for again, so the kind is picked up when its CRD appears later;
//! - the registry is keyed by `apiVersion`/`kind`, exactly what actions name.

use super::index::KindKey;
use kube::Client;
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use reconcile_sdk::{KindRef, Manifest};
use std::collections::HashMap;
use std::sync::RwLock;

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The primary kind is not served: its CRD is not installed.
    #[error(
        "the primary kind {kind} ({api_version}, resource {plural}) is not served by the API server at {server}: \
         install its CustomResourceDefinition first, e.g. `kubectl apply -f crds/`"
    )]
    PrimaryMissing {
        /// The kind.
        kind: String,
        /// Its apiVersion.
        api_version: String,
        /// Its plural.
        plural: String,
        /// The API server.
        server: String,
    },
    /// A kind the manifest needs (not optional) is not served.
    #[error(
        "the {role} kind {kind} ({api_version}) is not served by the API server at {server} and the manifest does \
         not mark it optional: install its CustomResourceDefinition"
    )]
    KindMissing {
        /// `related` or `reads`.
        role: &'static str,
        /// The kind.
        kind: String,
        /// Its apiVersion.
        api_version: String,
        /// The API server.
        server: String,
    },
    /// A kind is cluster-scoped; the operator only manages namespaced objects.
    #[error("the kind {kind} ({api_version}) is cluster-scoped: a module may only name namespaced kinds")]
    NotNamespaced {
        /// The kind.
        kind: String,
        /// Its apiVersion.
        api_version: String,
    },
    /// The API server could not be reached at all.
    #[error(
        "cannot reach the Kubernetes API server at {server} (check KUBECONFIG and that the cluster is up)"
    )]
    Unreachable {
        /// The API server.
        server: String,
        /// The transport error.
        #[source]
        source: kube::Error,
    },
    /// The API server answered discovery with an error.
    #[error("discovery of {kind} ({api_version}) failed")]
    Api {
        /// The kind.
        kind: String,
        /// Its apiVersion.
        api_version: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Looks `kind` up; `Ok(None)` when the API server does not serve it.
pub async fn resolve(
    client: &Client,
    server: &str,
    kind: &KindRef,
) -> Result<Option<ApiResource>, DiscoveryError> {
    let (group, version) = match kind.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", kind.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &kind.kind);
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, caps)) => {
            if caps.scope != Scope::Namespaced {
                return Err(DiscoveryError::NotNamespaced {
                    kind: kind.kind.clone(),
                    api_version: kind.api_version.clone(),
                });
            }
            if resource.plural != kind.plural {
                tracing::warn!(
                    kind = %kind.kind, manifest = %kind.plural, served = %resource.plural,
                    "the manifest's plural differs from the served one; using the served one"
                );
            }
            Ok(Some(resource))
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(err @ kube::Error::Api(_)) => Err(DiscoveryError::Api {
            kind: kind.kind.clone(),
            api_version: kind.api_version.clone(),
            source: err,
        }),
        Err(source) => Err(DiscoveryError::Unreachable { server: server.to_owned(), source }),
    }
}

/// How the host reads `kind` from `role`'s list: a core Secret in `reads` is always
/// digested, whatever the manifest's `digestOnly` says, so that no manifest (and no
/// hot swap) can bring Secret values into the sandbox. (A Secret in `related` is
/// refused by the administrator's policy unless `--allow-secret-values`.)
pub fn read_as_declared(role: &str, kind: &KindRef) -> KindRef {
    let mut kind = kind.clone();
    if role == "reads" && kind.api_version == "v1" && kind.kind == "Secret" {
        kind.digest_only = true;
    }
    kind
}

/// The manifest's kinds and, for each, the resource the API server serves for it
/// (`None` while an optional kind is absent).
#[derive(Debug)]
pub struct KindRegistry {
    primary: ApiResource,
    kinds: RwLock<HashMap<KindKey, (KindRef, Option<ApiResource>)>>,
}

/// What the registry knows about a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindLookup {
    /// Served, with this resource.
    Served(KindRef, ApiResource),
    /// Declared optional and not served (yet).
    Absent(KindRef),
    /// Not in the manifest's related or reads kinds.
    Undeclared,
}

impl KindRegistry {
    /// Discovers every kind of `manifest`; fails if the primary or a non-optional kind
    /// is not served.
    pub async fn discover(
        client: &Client,
        server: &str,
        manifest: &Manifest,
    ) -> Result<Self, DiscoveryError> {
        let primary = resolve(client, server, &manifest.primary).await?.ok_or_else(|| {
            DiscoveryError::PrimaryMissing {
                kind: manifest.primary.kind.clone(),
                api_version: manifest.primary.api_version.clone(),
                plural: manifest.primary.plural.clone(),
                server: server.to_owned(),
            }
        })?;
        let mut kinds = HashMap::new();
        for (role, kind) in
            manifest.related.iter().map(|k| ("related", k)).chain(manifest.reads.iter().map(|k| ("reads", k)))
        {
            let key = KindKey::new(&kind.api_version, &kind.kind);
            if kinds.contains_key(&key) {
                continue;
            }
            let resource = resolve(client, server, kind).await?;
            if resource.is_none() {
                if !kind.optional {
                    return Err(DiscoveryError::KindMissing {
                        role,
                        kind: kind.kind.clone(),
                        api_version: kind.api_version.clone(),
                        server: server.to_owned(),
                    });
                }
                tracing::warn!(kind = %kind.kind, api_version = %kind.api_version,
                    "optional kind is not served; watching nothing for it until its CRD appears");
            }
            kinds.insert(key, (read_as_declared(role, kind), resource));
        }
        Ok(Self { primary, kinds: RwLock::new(kinds) })
    }

    /// A registry from already known resources (for tests and offline tools).
    pub fn from_parts(primary: ApiResource, kinds: Vec<(KindRef, Option<ApiResource>)>) -> Self {
        let kinds = kinds.into_iter().map(|(k, r)| (KindKey::new(&k.api_version, &k.kind), (k, r))).collect();
        Self { primary, kinds: RwLock::new(kinds) }
    }

    /// The primary's resource.
    pub fn primary(&self) -> &ApiResource {
        &self.primary
    }

    /// What is known about `kind`.
    pub fn lookup(&self, kind: &KindKey) -> KindLookup {
        let kinds = self.kinds.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match kinds.get(kind) {
            Some((decl, Some(resource))) => KindLookup::Served(decl.clone(), resource.clone()),
            Some((decl, None)) => KindLookup::Absent(decl.clone()),
            None => KindLookup::Undeclared,
        }
    }

    /// The declared kinds that are not served yet.
    pub fn absent(&self) -> Vec<KindRef> {
        let kinds = self.kinds.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        kinds.values().filter(|(_, r)| r.is_none()).map(|(k, _)| k.clone()).collect()
    }

    /// Records that `kind` is served now.
    pub fn mark_served(&self, kind: &KindRef, resource: ApiResource) {
        let mut kinds = self.kinds.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        kinds.insert(KindKey::new(&kind.api_version, &kind.kind), (kind.clone(), Some(resource)));
    }
}
