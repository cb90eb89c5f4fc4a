//! The `DittoServer` API (`dittofs.dittofs.com/v1alpha1`): spec, status and the CRD.
//!
//! These types are the single source of the CRD (`make crds` renders
//! `crds/dittoservers.yaml` from them): field docs become descriptions, serde defaults
//! become CRD defaults, and the `schemars` bounds, patterns and enums, and the CEL
//! rules of the `x_kube` attributes (`rules`), become CRD validation, so the API
//! server rejects bad objects before the module sees them. The module still checks
//! what it relies on ([`crate::validate`]): a snapshot may come from anywhere.
//!
//! Optional sections have no default of their own: the CRD defaults their fields once
//! a section is written, and the module applies the same defaults when it is not.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::{
    LocalObjectReference, PodSecurityContext, ResourceRequirements, SecretKeySelector, SecurityContext,
};
use kube::core::{Message, Reason, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The pattern of the server's volume sizes (`metadataSize`, `contentSize`, `cacheSize`).
pub const VOLUME_SIZE_PATTERN: &str = r"^[0-9]+(Gi|Mi|Ti)$";

/// A DittoFS server (NFSv3, SMB2, REST control plane), run as a one-replica StatefulSet.
// Several `printcolumn(type_ = "integer", ...)` read as duplicates to clippy.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "dittofs.dittofs.com",
    version = "v1alpha1",
    kind = "DittoServer",
    plural = "dittoservers",
    namespaced,
    status = "DittoServerStatus",
    shortname = "ditto",
    shortname = "dittofs",
    doc = "A DittoFS server: the operator runs it as a StatefulSet with its configuration, Services and, optionally, a Percona PostgreSQL cluster.",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.availableReplicas"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = rules::distinct(rules::Port::ControlPlane, rules::Port::Nfs),
    validation = rules::distinct(rules::Port::Metrics, rules::Port::Nfs),
    validation = rules::distinct(rules::Port::Metrics, rules::Port::ControlPlane),
    validation = rules::distinct(rules::Port::Smb, rules::Port::Nfs),
    validation = rules::distinct(rules::Port::Smb, rules::Port::ControlPlane),
    validation = rules::distinct(rules::Port::Smb, rules::Port::Metrics),
    validation = rules::postgres_needs_a_database()
)]
#[serde(rename_all = "camelCase")]
pub struct DittoServerSpec {
    /// Container image of the DittoFS server.
    #[serde(default = "defaults::image")]
    pub image: String,

    /// Number of server replicas: 1 runs the server, 0 stops it (keeping its volumes).
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 0, max = 1))]
    pub replicas: i32,

    /// Persistent volumes of the server.
    pub storage: StorageSpec,

    /// The control plane's database: SQLite on the server's volume, or PostgreSQL.
    #[serde(default, skip_serializing_if = "is_default")]
    pub database: DatabaseSpec,

    /// The server's local cache.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cache: CacheSpec,

    /// Prometheus metrics endpoint.
    #[serde(default, skip_serializing_if = "is_default")]
    pub metrics: MetricsSpec,

    /// The REST control plane.
    #[serde(default, skip_serializing_if = "is_default")]
    pub control_plane: ControlPlaneSpec,

    /// Identity store, JWT authentication of the control plane, and the initial admin user.
    #[serde(default, skip_serializing_if = "is_default")]
    pub identity: IdentitySpec,

    /// The Service that exposes the file protocols (`<name>-file`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub service: ServiceSpec,

    /// NFS port of the server and of its Services.
    #[serde(default = "defaults::nfs_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub nfs_port: i32,

    /// The SMB2 adapter.
    #[serde(default, skip_serializing_if = "is_default")]
    pub smb: SmbSpec,

    /// S3 credentials for S3-backed content stores, passed to the server as AWS_* variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,

    /// A PostgreSQL cluster for the control plane, created through the Percona operator.
    #[serde(default, skip_serializing_if = "is_default")]
    pub percona: PerconaSpec,

    /// Compute resources of the server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<CoreV1<ResourceRequirements>>,

    /// Security context of the server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<CoreV1<SecurityContext>>,

    /// Security context of the server pod; `fsGroup: 65532` when not set, so that the
    /// server can write its volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<CoreV1<PodSecurityContext>>,
}

/// A core/v1 object (`T`) the module passes through to the pod unchanged: kept as a
/// JSON object, described in the CRD by `T`'s schema.
///
/// The module only copies these objects, so it does not decode them into `T`: that
/// would take a large share of the module's size for no decision it makes. The API
/// server validates them, against the CRD and again in the StatefulSet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(transparent)]
pub struct CoreV1<T> {
    /// The object.
    pub object: Map<String, Value>,
    #[serde(skip)]
    kind: PhantomData<fn() -> T>,
}

impl<T> CoreV1<T> {
    /// Wraps a JSON object.
    pub fn new(object: Map<String, Value>) -> Self {
        CoreV1 { object, kind: PhantomData }
    }
}

impl<T: JsonSchema> JsonSchema for CoreV1<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// Persistent volumes of the server (StatefulSet volume claim templates).
///
/// A StatefulSet's claim templates cannot change once created: size changes here apply
/// to a re-created StatefulSet only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of the metadata volume (mounted at /data/metadata), e.g. `10Gi`.
    #[schemars(pattern(VOLUME_SIZE_PATTERN))]
    pub metadata_size: String,

    /// Size of the content volume (mounted at /data/content); no content volume when
    /// not set (content kept in S3 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(VOLUME_SIZE_PATTERN))]
    pub content_size: Option<String>,

    /// Size of the cache volume (mounted at /data/cache).
    #[serde(default = "defaults::cache_size")]
    #[schemars(pattern(VOLUME_SIZE_PATTERN))]
    pub cache_size: String,

    /// StorageClass of the server's volumes; the cluster's default when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// The control plane's database.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Database type. `postgresSecretRef` (or Percona) selects PostgreSQL whatever this says.
    #[serde(default, rename = "type")]
    pub kind: DatabaseType,

    /// SQLite settings (used with type `sqlite`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub sqlite: SqliteSpec,

    /// A Secret with the PostgreSQL connection: keys `host`, `database`, `user`,
    /// `password`, and optionally `port` and `sslmode`. When set, PostgreSQL is used
    /// whatever `type` says (Percona, when enabled, wins over it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_secret_ref: Option<SecretKeySelector>,
}

/// Control plane database types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseType {
    /// SQLite, in a file on the server's volumes.
    #[default]
    Sqlite,
    /// PostgreSQL, from `postgresSecretRef` or Percona.
    Postgres,
}

/// SQLite settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqliteSpec {
    /// Path of the database file inside the container.
    #[serde(default = "defaults::sqlite_path")]
    pub path: String,
}

impl Default for SqliteSpec {
    fn default() -> Self {
        SqliteSpec { path: defaults::sqlite_path() }
    }
}

/// The server's local cache.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// Cache directory inside the container.
    #[serde(default = "defaults::cache_path")]
    pub path: String,
    /// Cache size, in DittoFS notation (e.g. `1GB`).
    #[serde(default = "defaults::cache_limit")]
    pub size: String,
}

impl Default for CacheSpec {
    fn default() -> Self {
        CacheSpec { path: defaults::cache_path(), size: defaults::cache_limit() }
    }
}

/// Prometheus metrics endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Serve metrics, and create the `<name>-metrics` Service (deleted when turned off).
    #[serde(default)]
    pub enabled: bool,
    /// Metrics port.
    #[serde(default = "defaults::metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        MetricsSpec { enabled: false, port: defaults::metrics_port() }
    }
}

/// The REST control plane.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// Port of the REST API (and of the `<name>-api` Service).
    #[serde(default = "defaults::api_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for ControlPlaneSpec {
    fn default() -> Self {
        ControlPlaneSpec { port: defaults::api_port() }
    }
}

/// Identity store, JWT authentication and the initial admin user.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// Identity store type.
    #[serde(default, rename = "type")]
    pub kind: IdentityType,
    /// JWT authentication of the control plane. Without it the server signs tokens
    /// with a secret of its own, and the defaults below apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// The initial admin user.
    #[serde(default, skip_serializing_if = "is_default")]
    pub admin: AdminSpec,
}

/// Identity store types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdentityType {
    /// In-memory identity store.
    #[default]
    Memory,
}

/// JWT authentication of the control plane.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtSpec {
    /// The Secret key holding the JWT signing secret (at least 32 characters); passed
    /// as DITTOFS_CONTROLPLANE_SECRET, never written to the ConfigMap.
    pub secret_ref: SecretKeySelector,
    /// Lifetime of access tokens (Go duration).
    #[serde(default = "defaults::access_token_duration")]
    pub access_token_duration: String,
    /// Lifetime of refresh tokens (Go duration).
    #[serde(default = "defaults::refresh_token_duration")]
    pub refresh_token_duration: String,
    /// Token issuer.
    #[serde(default = "defaults::issuer")]
    pub issuer: String,
}

/// The initial admin user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminSpec {
    /// Admin user name.
    #[serde(default = "defaults::admin_username")]
    pub username: String,
    /// The Secret key holding the admin's initial password (cleartext), passed as
    /// DITTOFS_ADMIN_INITIAL_PASSWORD; the server generates one when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeySelector>,
}

impl Default for AdminSpec {
    fn default() -> Self {
        AdminSpec { username: defaults::admin_username(), password_secret_ref: None }
    }
}

/// The Service exposing the file protocols.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub kind: ServiceType,
    /// Annotations of the Service (e.g. cloud load balancer settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes Service types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The type as the Service API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The SMB2 adapter. `enabled` and `port` shape the pod and the `<name>-file` Service;
/// the tuning fields are kept for the adapter, which the DittoFS control plane
/// configures at run time (they are not part of the server's config file).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmbSpec {
    /// Serve SMB2 (adds the `smb` port to the pod and to the `<name>-file` Service).
    #[serde(default)]
    pub enabled: bool,
    /// SMB port.
    #[serde(default = "defaults::smb_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Maximum concurrent connections; 0 means unlimited.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_connections: i32,
    /// Maximum requests in flight per connection.
    #[serde(default = "defaults::max_requests_per_connection")]
    #[schemars(range(min = 0))]
    pub max_requests_per_connection: i32,
    /// Connection timeouts (Go durations).
    #[serde(default, skip_serializing_if = "is_default")]
    pub timeouts: SmbTimeouts,
    /// SMB2 credit (flow control) settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub credits: SmbCredits,
    /// How often the adapter logs its metrics (Go duration).
    #[serde(default = "defaults::five_minutes")]
    pub metrics_log_interval: String,
}

impl Default for SmbSpec {
    fn default() -> Self {
        SmbSpec {
            enabled: false,
            port: defaults::smb_port(),
            max_connections: 0,
            max_requests_per_connection: defaults::max_requests_per_connection(),
            timeouts: SmbTimeouts::default(),
            credits: SmbCredits::default(),
            metrics_log_interval: defaults::five_minutes(),
        }
    }
}

/// SMB connection timeouts (Go durations).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmbTimeouts {
    /// Read timeout.
    #[serde(default = "defaults::five_minutes")]
    pub read: String,
    /// Write timeout.
    #[serde(default = "defaults::thirty_seconds")]
    pub write: String,
    /// Idle timeout.
    #[serde(default = "defaults::five_minutes")]
    pub idle: String,
    /// Graceful shutdown timeout.
    #[serde(default = "defaults::thirty_seconds")]
    pub shutdown: String,
}

impl Default for SmbTimeouts {
    fn default() -> Self {
        SmbTimeouts {
            read: defaults::five_minutes(),
            write: defaults::thirty_seconds(),
            idle: defaults::five_minutes(),
            shutdown: defaults::thirty_seconds(),
        }
    }
}

/// SMB2 credit settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmbCredits {
    /// How credits are granted.
    #[serde(default)]
    pub strategy: CreditStrategy,
    /// Minimum credits per response.
    #[serde(default = "defaults::min_grant")]
    #[schemars(range(min = 0))]
    pub min_grant: i32,
    /// Maximum credits per response.
    #[serde(default = "defaults::max_grant")]
    #[schemars(range(min = 0))]
    pub max_grant: i32,
    /// Credits granted to initial requests.
    #[serde(default = "defaults::initial_grant")]
    #[schemars(range(min = 0))]
    pub initial_grant: i32,
    /// Maximum outstanding credits per session.
    #[serde(default = "defaults::max_session_credits")]
    #[schemars(range(min = 0))]
    pub max_session_credits: i32,
    /// Load above which the adaptive strategy throttles.
    #[serde(default = "defaults::load_threshold_high")]
    #[schemars(range(min = 0))]
    pub load_threshold_high: i32,
    /// Load below which the adaptive strategy boosts.
    #[serde(default = "defaults::load_threshold_low")]
    #[schemars(range(min = 0))]
    pub load_threshold_low: i32,
    /// Outstanding requests from which a client counts as aggressive.
    #[serde(default = "defaults::aggressive_client_threshold")]
    #[schemars(range(min = 0))]
    pub aggressive_client_threshold: i32,
}

impl Default for SmbCredits {
    fn default() -> Self {
        SmbCredits {
            strategy: CreditStrategy::default(),
            min_grant: defaults::min_grant(),
            max_grant: defaults::max_grant(),
            initial_grant: defaults::initial_grant(),
            max_session_credits: defaults::max_session_credits(),
            load_threshold_high: defaults::load_threshold_high(),
            load_threshold_low: defaults::load_threshold_low(),
            aggressive_client_threshold: defaults::aggressive_client_threshold(),
        }
    }
}

/// SMB2 credit strategies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CreditStrategy {
    /// Always grant `initialGrant`.
    Fixed,
    /// Grant what the client asks for, within bounds.
    Echo,
    /// Adapt grants to the server's load.
    #[default]
    Adaptive,
}

/// S3 credentials for S3-backed content stores.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// The Secret holding the credentials.
    pub credentials_secret_ref: S3CredentialsRef,
    /// S3 region (AWS_REGION).
    #[serde(default = "defaults::region")]
    pub region: String,
    /// Bucket name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

/// The Secret holding S3 credentials, and its keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsRef {
    /// Name of the Secret, in the DittoServer's namespace.
    pub secret_name: String,
    /// Key of the access key id (AWS_ACCESS_KEY_ID).
    #[serde(default = "defaults::access_key_id_key")]
    pub access_key_id_key: String,
    /// Key of the secret access key (AWS_SECRET_ACCESS_KEY).
    #[serde(default = "defaults::secret_access_key_key")]
    pub secret_access_key_key: String,
    /// Key of the endpoint URL (AWS_ENDPOINT_URL), optional in the Secret.
    #[serde(default = "defaults::endpoint_key")]
    pub endpoint_key: String,
}

/// A PostgreSQL cluster for the control plane, through the Percona operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = rules::percona_storage_size(),
    validation = rules::percona_database_name(),
    validation = rules::percona_backup_bucket()
)]
#[serde(rename_all = "camelCase")]
pub struct PerconaSpec {
    /// Create a PerconaPGCluster `<name>-postgres` and use it as the control plane's
    /// database. The server is started once the cluster is ready. The cluster is
    /// created once and never overwritten: tune it directly.
    #[serde(default)]
    pub enabled: bool,

    /// Delete the PerconaPGCluster when this DittoServer is deleted.
    ///
    /// WARNING: when true, deleting the DittoServer deletes the PostgreSQL cluster and
    /// ALL ITS DATA. When false (the default) the cluster is left in place, tied to the
    /// server by its label only, and a DittoServer re-created with the same name reuses
    /// it.
    #[serde(default)]
    pub delete_with_server: bool,

    /// PostgreSQL instances.
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,

    /// Size of each instance's data volume (a Kubernetes quantity).
    #[serde(default = "defaults::percona_storage_size")]
    #[schemars(length(max = 64))]
    pub storage_size: String,

    /// StorageClass of the PostgreSQL volumes; the cluster's default when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// Database created for DittoFS.
    #[serde(default = "defaults::database_name")]
    pub database_name: String,

    /// pgBackRest backups to S3.
    #[serde(default, skip_serializing_if = "is_default")]
    pub backup: PerconaBackupSpec,
}

impl Default for PerconaSpec {
    fn default() -> Self {
        PerconaSpec {
            enabled: false,
            delete_with_server: false,
            replicas: 1,
            storage_size: defaults::percona_storage_size(),
            storage_class_name: None,
            database_name: defaults::database_name(),
            backup: PerconaBackupSpec::default(),
        }
    }
}

/// pgBackRest backups of the PostgreSQL cluster to S3.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerconaBackupSpec {
    /// Configure backups (at creation of the cluster).
    #[serde(default)]
    pub enabled: bool,
    /// A Secret with pgBackRest's S3 credentials (s3.conf format), projected into
    /// pgBackRest's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// Bucket of the backups (required when enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Endpoint of S3-compatible storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region.
    #[serde(default = "defaults::region")]
    pub region: String,
    /// Cron schedule of full backups.
    #[serde(default = "defaults::full_schedule")]
    pub full_schedule: String,
    /// Cron schedule of incremental backups.
    #[serde(default = "defaults::incr_schedule")]
    pub incr_schedule: String,
    /// Days full backups are kept.
    #[serde(default = "defaults::retention_days")]
    #[schemars(range(min = 1))]
    pub retention_days: i32,
}

impl Default for PerconaBackupSpec {
    fn default() -> Self {
        PerconaBackupSpec {
            enabled: false,
            credentials_secret_ref: None,
            bucket: None,
            endpoint: None,
            region: defaults::region(),
            full_schedule: defaults::full_schedule(),
            incr_schedule: defaults::incr_schedule(),
            retention_days: defaults::retention_days(),
        }
    }
}

/// What the operator last observed of a DittoServer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DittoServerStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the StatefulSet.
    #[serde(default)]
    pub replicas: i32,
    /// Ready pods of the StatefulSet.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Available pods of the StatefulSet.
    #[serde(default)]
    pub available_replicas: i32,
    /// Where NFS clients mount from: `<name>-file.<namespace>.svc.cluster.local:<nfsPort>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_endpoint: Option<String>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Hash of the configuration the pod runs with (config file, referenced Secrets,
    /// generation); a change rolls the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Name of the PerconaPGCluster, when Percona is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percona_cluster_name: Option<String>,
    /// Latest observations: ConfigReady, DatabaseReady (with Percona), Available,
    /// Progressing and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Lifecycle phases of a DittoServer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Not running yet (starting, waiting for the database, or not ready).
    Pending,
    /// Every desired replica is ready.
    Running,
    /// The spec cannot be used; see the Ready condition.
    Failed,
    /// Scaled to zero replicas.
    Stopped,
    /// Being deleted.
    Deleting,
}

/// A standard Kubernetes condition (`metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// Machine-readable UpperCamelCase reason of the last transition.
    pub reason: String,
    /// Human-readable details.
    pub message: String,
}

/// The status of a condition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known.
    Unknown,
}

/// The CEL rules of the spec (`x-kubernetes-validations`): the checks of
/// [`crate::validate`] that involve more than one field, so that the API server
/// refuses such a spec at apply time, with a message that names the field and the
/// fix, instead of the server ending in phase Failed. (The rules on `metadata.name`
/// are added by `crate::crdgen`: the derive leaves `metadata` out of the schema.)
///
/// The API server defaults the fields of a section only once the section is written,
/// so a rule reads the fields of optional sections through CEL optionals
/// (`self.?section.?field.orValue(default)`), with the API's defaults. A rule about a
/// spec stored before it only applies once that spec changes (the API server
/// ratchets unchanged values): status and finalizer writes keep working.
mod rules {
    use super::{Message, Reason, Rule, defaults};

    /// A port of the server, as CEL reads it from the spec.
    #[derive(Clone, Copy)]
    pub enum Port {
        /// `spec.nfsPort`.
        Nfs,
        /// `spec.controlPlane.port`.
        ControlPlane,
        /// `spec.metrics.port`, in use while metrics are enabled.
        Metrics,
        /// `spec.smb.port`, in use while SMB is enabled.
        Smb,
    }

    impl Port {
        /// The field, relative to the spec.
        fn field(self) -> &'static str {
            match self {
                Port::Nfs => "nfsPort",
                Port::ControlPlane => "controlPlane.port",
                Port::Metrics => "metrics.port",
                Port::Smb => "smb.port",
            }
        }

        /// The port when the field is not set.
        fn default(self) -> i32 {
            match self {
                Port::Nfs => defaults::nfs_port(),
                Port::ControlPlane => defaults::api_port(),
                Port::Metrics => defaults::metrics_port(),
                Port::Smb => defaults::smb_port(),
            }
        }

        /// The port's value (`nfsPort` is always defaulted: it is not in a section).
        fn value(self) -> String {
            match self {
                Port::Nfs => "self.nfsPort".into(),
                Port::ControlPlane => format!("self.?controlPlane.?port.orValue({})", self.default()),
                Port::Metrics => format!("self.?metrics.?port.orValue({})", self.default()),
                Port::Smb => format!("self.?smb.?port.orValue({})", self.default()),
            }
        }

        /// When the port is in use (always when `None`).
        fn in_use(self) -> Option<&'static str> {
            match self {
                Port::Nfs | Port::ControlPlane => None,
                Port::Metrics => Some("self.?metrics.?enabled.orValue(false)"),
                Port::Smb => Some("self.?smb.?enabled.orValue(false)"),
            }
        }
    }

    /// `port` must differ from `other` while both are in use (the module reports the
    /// later of two features on one port; so does this rule, on `port`).
    pub fn distinct(port: Port, other: Port) -> Rule {
        let (value, other_value) = (port.value(), other.value());
        let differ = format!("{value} != {other_value}");
        let rule = match (port.in_use(), other.in_use()) {
            (None, None) => differ,
            (Some(used), None) | (None, Some(used)) => format!("!{used} || {differ}"),
            (Some(used), Some(other_used)) => format!("!({used} && {other_used}) || {differ}"),
        };
        // A static message: CEL estimates the cost of a messageExpression that prints
        // the port far beyond the CRD's budget.
        let (field, other_field) = (port.field(), other.field());
        Rule::new(rule)
            .message(Message::Message(format!(
                "spec.{field} is already used by spec.{other_field}: give one of them another port \
                 (unless set, spec.{field} is {} and spec.{other_field} is {})",
                port.default(),
                other.default()
            )))
            // Not `FieldValueDuplicate`: the API server prints no message with that reason.
            .field_path(format!(".{}", port.field()))
    }

    /// Database type `postgres` needs a database: `postgresSecretRef`, or Percona.
    pub fn postgres_needs_a_database() -> Rule {
        Rule::new(
            "self.?database.?type.orValue('') != 'postgres' || self.?database.?postgresSecretRef.hasValue() \
             || self.?percona.?enabled.orValue(false)",
        )
        .message(
            "spec.database.type is postgres, but neither spec.database.postgresSecretRef nor \
             spec.percona.enabled is set: set one of them, or use type sqlite",
        )
        .field_path(".database.type")
        .reason(Reason::FieldValueRequired)
    }

    /// With Percona, `storageSize` is the size of a volume claim: a positive quantity.
    pub fn percona_storage_size() -> Rule {
        Rule::new(
            "!self.enabled || (isQuantity(self.storageSize) \
             && quantity(self.storageSize).isGreaterThan(quantity('0')))",
        )
        .message(
            "spec.percona.storageSize must be a positive quantity such as 10Gi when \
             spec.percona.enabled is true",
        )
        .field_path(".storageSize")
    }

    /// With Percona, `databaseName` names the database created for DittoFS.
    pub fn percona_database_name() -> Rule {
        Rule::new("!self.enabled || self.databaseName != ''")
            .message("spec.percona.databaseName must not be empty when spec.percona.enabled is true")
            .field_path(".databaseName")
            .reason(Reason::FieldValueRequired)
    }

    /// Backups of the Percona cluster go to a bucket.
    pub fn percona_backup_bucket() -> Rule {
        Rule::new(
            "!(self.enabled && self.?backup.?enabled.orValue(false)) \
             || self.?backup.?bucket.orValue('') != ''",
        )
        .message(
            "spec.percona.backup.bucket is required when spec.percona.enabled and \
             spec.percona.backup.enabled are true",
        )
        .field_path(".backup.bucket")
        .reason(Reason::FieldValueRequired)
    }
}

/// Whether a section holds nothing but defaults: such a section is left out when a
/// spec is written, and the CRD gives defaults to the section's fields only (as
/// kubebuilder's markers do), so stored objects stay as small as what users wrote.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The defaults of the API, shared by serde and (through schemars) the CRD.
mod defaults {
    pub fn image() -> String {
        "marmos91c/dittofs:latest".into()
    }
    pub fn one() -> i32 {
        1
    }
    pub fn nfs_port() -> i32 {
        2049
    }
    pub fn cache_size() -> String {
        "5Gi".into()
    }
    pub fn sqlite_path() -> String {
        "/data/controlplane/controlplane.db".into()
    }
    pub fn cache_path() -> String {
        "/data/cache".into()
    }
    pub fn cache_limit() -> String {
        "1GB".into()
    }
    pub fn metrics_port() -> i32 {
        9090
    }
    pub fn api_port() -> i32 {
        8080
    }
    pub fn access_token_duration() -> String {
        "15m".into()
    }
    pub fn refresh_token_duration() -> String {
        "168h".into()
    }
    pub fn issuer() -> String {
        "dittofs".into()
    }
    pub fn admin_username() -> String {
        "admin".into()
    }
    pub fn smb_port() -> i32 {
        445
    }
    pub fn max_requests_per_connection() -> i32 {
        100
    }
    pub fn five_minutes() -> String {
        "5m".into()
    }
    pub fn thirty_seconds() -> String {
        "30s".into()
    }
    pub fn min_grant() -> i32 {
        16
    }
    pub fn max_grant() -> i32 {
        8192
    }
    pub fn initial_grant() -> i32 {
        256
    }
    pub fn max_session_credits() -> i32 {
        65535
    }
    pub fn load_threshold_high() -> i32 {
        1000
    }
    pub fn load_threshold_low() -> i32 {
        100
    }
    pub fn aggressive_client_threshold() -> i32 {
        256
    }
    pub fn region() -> String {
        "eu-west-1".into()
    }
    pub fn access_key_id_key() -> String {
        "accessKeyId".into()
    }
    pub fn secret_access_key_key() -> String {
        "secretAccessKey".into()
    }
    pub fn endpoint_key() -> String {
        "endpoint".into()
    }
    pub fn percona_storage_size() -> String {
        "10Gi".into()
    }
    pub fn database_name() -> String {
        "dittofs".into()
    }
    pub fn full_schedule() -> String {
        "0 2 * * *".into()
    }
    pub fn incr_schedule() -> String {
        "0 * * * *".into()
    }
    pub fn retention_days() -> i32 {
        7
    }
}
