//! The owned objects as small serde structs: only the fields the module sets,
//! borrowing from the spec where it can.
//!
//! Hashing a desired object serializes it; on the converged path (every reconcile of a
//! settled DittoServer) nothing else happens to it. Building these structs costs a few
//! small allocations, where a `serde_json::Value` tree costs one per node, and keeps
//! field names checked by the compiler. The typed core/v1 structs of k8s-openapi would
//! do the same at twice the module's size.

use crate::meta::Related;
use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::names::{API_VERSION, APP_LABEL_VALUE, APPLIED_HASH_ANNOTATION, KIND};

/// `metadata` of an owned object.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Meta<'a> {
    /// Object name.
    pub name: String,
    /// The DittoServer's namespace.
    pub namespace: &'a str,
    /// The owner label and the pod labels.
    pub labels: Labels<'a>,
    /// User annotations (Service) and the applied hash.
    #[serde(skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations<'a>,
    /// The controller reference to the DittoServer.
    pub owner_references: [OwnerReference<'a>; 1],
}

/// The labels of every owned object.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct Labels<'a> {
    /// `app: dittofs-server`.
    pub app: &'static str,
    /// The owner label ([`crate::names::OWNER_LABEL`]).
    #[serde(rename = "dittofs.dittofs.com/server")]
    pub server: &'a str,
    /// `instance: <name>`.
    pub instance: &'a str,
}

impl<'a> Labels<'a> {
    /// The labels of the server `name`'s objects.
    pub fn of(name: &'a str) -> Self {
        Labels { app: APP_LABEL_VALUE, server: name, instance: name }
    }
}

/// The labels that select the server's pods.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct PodSelector<'a> {
    /// `app: dittofs-server`.
    pub app: &'static str,
    /// `instance: <name>`.
    pub instance: &'a str,
}

impl<'a> PodSelector<'a> {
    /// The pods of the server `name`.
    pub fn of(name: &'a str) -> Self {
        PodSelector { app: APP_LABEL_VALUE, instance: name }
    }
}

/// With feature `v2-annotation`, an annotation on every owned object: an observably
/// different build for the host's hot-swap tests (`make wasm-v2`); off in real builds.
const V2_ANNOTATION: Option<(&str, &str)> = if cfg!(feature = "v2-annotation") {
    Some(("dittofs.dittofs.com/module-generation", "v2"))
} else {
    None
};

/// Annotations: the user's (for the file Service) and the applied hash, as one map.
#[derive(Debug, Clone, Default)]
pub struct Annotations<'a> {
    /// Annotations from the spec.
    pub user: Option<&'a BTreeMap<String, String>>,
    /// The hash of the object as applied, once known.
    pub applied_hash: Option<String>,
}

impl Annotations<'_> {
    fn is_empty(&self) -> bool {
        self.user.is_none_or(BTreeMap::is_empty) && self.applied_hash.is_none() && V2_ANNOTATION.is_none()
    }
}

impl Serialize for Annotations<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.user.into_iter().flatten() {
            if key != APPLIED_HASH_ANNOTATION {
                map.serialize_entry(key, value)?;
            }
        }
        if let Some((key, value)) = V2_ANNOTATION {
            map.serialize_entry(key, value)?;
        }
        if let Some(hash) = &self.applied_hash {
            map.serialize_entry(APPLIED_HASH_ANNOTATION, hash)?;
        }
        map.end()
    }
}

/// A controller reference to the DittoServer.
#[derive(Serialize, Debug, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference<'a> {
    /// The DittoServer's `apiVersion`.
    pub api_version: &'static str,
    /// `DittoServer`.
    pub kind: &'static str,
    /// Its name.
    pub name: &'a str,
    /// Its uid.
    pub uid: &'a str,
    /// Always true: the DittoServer controls the object.
    pub controller: bool,
    /// Always true: foreground deletion of the owner waits for the object.
    pub block_owner_deletion: bool,
}

impl<'a> OwnerReference<'a> {
    /// A controller reference to the DittoServer `name` with `uid`.
    pub fn controller(name: &'a str, uid: &'a str) -> Self {
        OwnerReference {
            api_version: API_VERSION,
            kind: KIND,
            name,
            uid,
            controller: true,
            block_owner_deletion: true,
        }
    }
}

/// An object that carries its applied hash.
pub trait Owned: Serialize {
    /// Records the hash of the object as applied.
    fn set_applied_hash(&mut self, hash: String);

    /// Whether the observed object was edited by hand away from this desired one in
    /// a field people edit (`kubectl scale`, `kubectl set image`, `kubectl edit`);
    /// such an edit keeps the applied hash, so it is looked for separately.
    ///
    /// Each field is compared the way server-side apply merges it, so that what
    /// another writer added beside the module's own (a sidecar container) never reads
    /// as an edit: applying again could not remove it, and the module would apply on
    /// every reconcile.
    fn edited_by_hand(&self, _observed: &Related<'_>) -> bool {
        false
    }
}

macro_rules! owned {
    ($($kind:ident),*) => {$(
        impl Owned for $kind<'_> {
            fn set_applied_hash(&mut self, hash: String) {
                self.metadata.annotations.applied_hash = Some(hash);
            }
        }
    )*};
}
owned!(Service);

impl Owned for ConfigMap<'_> {
    fn set_applied_hash(&mut self, hash: String) {
        self.metadata.annotations.applied_hash = Some(hash);
    }

    fn edited_by_hand(&self, observed: &Related<'_>) -> bool {
        observed.data.config.as_deref() != Some(self.data.config.as_str())
    }
}

impl Owned for StatefulSet<'_> {
    fn set_applied_hash(&mut self, hash: String) {
        self.metadata.annotations.applied_hash = Some(hash);
    }

    fn edited_by_hand(&self, observed: &Related<'_>) -> bool {
        let observed = observed.hand_edits();
        // Each of the module's containers, by name, with its image; other writers'
        // containers do not count.
        let containers_kept = self.spec.template.spec.containers.iter().all(|container| {
            observed.containers().iter().any(|o| {
                o.name.as_deref() == Some(container.name) && o.image.as_deref() == Some(container.image)
            })
        });
        observed.replicas != Some(i64::from(self.spec.replicas)) || !containers_kept
    }
}

/// A ConfigMap holding the configuration file.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap<'a> {
    /// `v1`.
    pub api_version: &'static str,
    /// `ConfigMap`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: Meta<'a>,
    /// The file.
    pub data: ConfigData,
}

/// The ConfigMap's data.
#[derive(Serialize, Debug, Clone)]
pub struct ConfigData {
    /// `config.yaml` ([`crate::names::CONFIG_FILE_KEY`]).
    #[serde(rename = "config.yaml")]
    pub config: String,
}

/// A Service.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Service<'a> {
    /// `v1`.
    pub api_version: &'static str,
    /// `Service`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: Meta<'a>,
    /// Spec.
    pub spec: ServiceSpec<'a>,
}

/// A Service's spec.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec<'a> {
    /// Service type; the API's default (ClusterIP) when not set.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// `None` for the headless Service.
    #[serde(rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<&'static str>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// The server's pods.
    pub selector: PodSelector<'a>,
}

/// A TCP Service port targeting the container port of the same name.
#[derive(Serialize, Debug, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name, also the target container port's.
    pub name: &'static str,
    /// Port number.
    pub port: i32,
    /// The container port's name.
    pub target_port: &'static str,
    /// `TCP`.
    pub protocol: &'static str,
}

/// A StatefulSet.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSet<'a> {
    /// `apps/v1`.
    pub api_version: &'static str,
    /// `StatefulSet`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: Meta<'a>,
    /// Spec.
    pub spec: StatefulSetSpec<'a>,
}

/// A StatefulSet's spec.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetSpec<'a> {
    /// 0 or 1.
    pub replicas: i32,
    /// The headless Service.
    pub service_name: String,
    /// The server's pods.
    pub selector: Selector<'a>,
    /// The pod.
    pub template: PodTemplate<'a>,
    /// The server's volumes.
    pub volume_claim_templates: Vec<ClaimTemplate<'a>>,
    /// Retain volumes on deletion and scale-down.
    pub persistent_volume_claim_retention_policy: RetentionPolicy,
}

/// A label selector.
#[derive(Serialize, Debug, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct Selector<'a> {
    /// The pod labels.
    pub match_labels: PodSelector<'a>,
}

/// PVC retention of a StatefulSet.
#[derive(Serialize, Debug, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// On deletion of the StatefulSet.
    pub when_deleted: &'static str,
    /// On scale-down.
    pub when_scaled: &'static str,
}

/// A volume claim template.
#[derive(Serialize, Debug, Clone)]
pub struct ClaimTemplate<'a> {
    /// Its name.
    pub metadata: NameOnly<'a>,
    /// Its spec.
    pub spec: ClaimSpec<'a>,
}

/// Metadata with a name only.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct NameOnly<'a> {
    /// The name.
    pub name: &'a str,
}

/// A volume claim's spec.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec<'a> {
    /// Access modes.
    pub access_modes: &'a [String],
    /// The requested size.
    pub resources: StorageRequest<'a>,
    /// StorageClass, or the cluster's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<&'a str>,
}

/// `resources` of a volume claim.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct StorageRequest<'a> {
    /// `requests`.
    pub requests: Storage<'a>,
}

/// `requests` of a volume claim.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct Storage<'a> {
    /// The size.
    pub storage: &'a str,
}

/// A pod template.
#[derive(Serialize, Debug, Clone)]
pub struct PodTemplate<'a> {
    /// Labels and the config hash.
    pub metadata: PodMeta<'a>,
    /// The pod.
    pub spec: PodSpec<'a>,
}

/// A pod template's metadata.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct PodMeta<'a> {
    /// Labels.
    pub labels: Labels<'a>,
    /// The config hash.
    pub annotations: PodAnnotations<'a>,
}

/// The pod's annotations.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct PodAnnotations<'a> {
    /// [`crate::names::CONFIG_HASH_ANNOTATION`].
    #[serde(rename = "dittofs.dittofs.com/config-hash")]
    pub config_hash: &'a str,
}

/// A pod's spec.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec<'a> {
    /// From the spec, or `fsGroup: 65532`.
    pub security_context: PodSecurity<'a>,
    /// With Percona: wait for PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<[Container<'a>; 1]>,
    /// The server.
    pub containers: [Container<'a>; 1],
    /// The ConfigMap.
    pub volumes: [ConfigVolume; 1],
}

/// The pod's security context.
#[derive(Serialize, Debug, Clone)]
#[serde(untagged)]
pub enum PodSecurity<'a> {
    /// The spec's, as written.
    Spec(&'a Map<String, Value>),
    /// The default.
    Default {
        /// The group that may write the volumes.
        #[serde(rename = "fsGroup")]
        fs_group: i64,
    },
}

/// The ConfigMap volume.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ConfigVolume {
    /// `config`.
    pub name: &'static str,
    /// The ConfigMap.
    pub config_map: NamedRef,
}

/// A reference by name.
#[derive(Serialize, Debug, Clone)]
pub struct NamedRef {
    /// The name.
    pub name: String,
}

/// A container.
#[derive(Serialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    /// Its name.
    pub name: &'static str,
    /// Its image.
    pub image: &'a str,
    /// Its command.
    pub command: Vec<&'static str>,
    /// Its arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<&'static str>,
    /// Its ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Its environment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar<'a>>,
    /// Liveness probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Readiness probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Resources, from the spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<&'a Map<String, Value>>,
    /// Security context, from the spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<&'a Map<String, Value>>,
    /// Mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount<'a>>,
}

/// A TCP container port.
#[derive(Serialize, Debug, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Port name.
    pub name: &'static str,
    /// Port number.
    pub container_port: i32,
    /// `TCP`.
    pub protocol: &'static str,
}

/// A TCP probe on a named port.
#[derive(Serialize, Debug, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// The port.
    pub tcp_socket: TcpSocket,
    /// Delay before the first probe.
    pub initial_delay_seconds: i32,
    /// Interval.
    pub period_seconds: i32,
}

/// A TCP probe's target.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct TcpSocket {
    /// The container port's name.
    pub port: &'static str,
}

/// An environment variable: a plain value or a Secret key.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar<'a> {
    /// Its name.
    pub name: &'static str,
    /// A plain value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a str>,
    /// A Secret key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<SecretSource<'a>>,
}

/// `valueFrom` of a variable read from a Secret.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct SecretSource<'a> {
    /// The Secret key.
    pub secret_key_ref: SecretKeyRef<'a>,
}

/// A key of a Secret.
#[derive(Serialize, Debug, Clone)]
pub struct SecretKeyRef<'a> {
    /// The Secret.
    pub name: Cow<'a, str>,
    /// The key.
    pub key: &'a str,
    /// Whether the key (or Secret) may be missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A volume mount.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount<'a> {
    /// The volume.
    pub name: &'a str,
    /// Where.
    pub mount_path: &'static str,
    /// Read-only (the configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{CONFIG_FILE_KEY, CONFIG_HASH_ANNOTATION, OWNER_LABEL};

    #[test]
    fn renamed_keys_match_the_names() {
        let labels = serde_json::to_value(Labels::of("x")).expect("encodes");
        assert_eq!(labels[OWNER_LABEL], "x");
        let pod = serde_json::to_value(PodAnnotations { config_hash: "h" }).expect("encodes");
        assert_eq!(pod[CONFIG_HASH_ANNOTATION], "h");
        let data = serde_json::to_value(ConfigData { config: "c".into() }).expect("encodes");
        assert_eq!(data[CONFIG_FILE_KEY], "c");
    }

    #[test]
    fn the_applied_hash_wins_over_a_user_annotation_of_the_same_name() {
        let user = BTreeMap::from([
            (APPLIED_HASH_ANNOTATION.to_string(), "forged".to_string()),
            ("a".into(), "b".into()),
        ]);
        let annotations = Annotations { user: Some(&user), applied_hash: Some("real".into()) };
        assert_eq!(
            serde_json::to_string(&annotations).expect("encodes"),
            r#"{"a":"b","dittofs.dittofs.com/applied-hash":"real"}"#
        );
    }
}
