//! The StatefulSet `<name>` that runs the DittoFS server.
//!
//! Secrets reach the container as environment variables (`valueFrom.secretKeyRef`),
//! never through the ConfigMap. The pod template carries the config hash, so a change
//! of the configuration, of a referenced Secret or of the generation rolls the pod.
//!
//! A StatefulSet's volume claim templates are immutable: once it exists, the claims
//! are taken from the observed object ([`Claim::from_observed`]), so that a changed
//! storage size in the spec does not turn every later apply into a rejected one.

use std::borrow::Cow;

use serde::Deserialize;

use super::model::{
    ClaimSpec, ClaimTemplate, ConfigVolume, Container, ContainerPort, EnvVar, Labels, NameOnly, NamedRef,
    PodAnnotations, PodMeta, PodSecurity, PodSelector, PodSpec, PodTemplate, Probe, RetentionPolicy,
    SecretKeyRef, SecretSource, Selector, StatefulSet, StatefulSetSpec, Storage, StorageRequest, TcpSocket,
    VolumeMount,
};
use crate::api::DittoServerSpec;
use crate::input::Primary;
use crate::lenient::Object;
use crate::meta::Related;
use crate::names;

/// The group the server runs with when the spec sets no pod security context, so
/// that it can write its volumes.
pub const DEFAULT_FS_GROUP: i64 = 65532;
/// Image of the init container that waits for PostgreSQL (Percona).
pub const POSTGRES_WAIT_IMAGE: &str = "postgres:16-alpine";

/// One persistent volume of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Claim template name: `metadata`, `cache` or `content`.
    pub name: String,
    /// Requested size.
    pub size: String,
    /// StorageClass, or the cluster's default.
    pub storage_class_name: Option<String>,
    /// Access modes.
    pub access_modes: Vec<String>,
}

impl Claim {
    /// The claims the spec asks for.
    pub fn from_spec(spec: &DittoServerSpec) -> Vec<Claim> {
        let storage = &spec.storage;
        let claim = |name: &str, size: &str| Claim {
            name: name.into(),
            size: size.into(),
            storage_class_name: storage.storage_class_name.clone(),
            access_modes: vec!["ReadWriteOnce".into()],
        };
        let mut claims = vec![claim("metadata", &storage.metadata_size), claim("cache", &storage.cache_size)];
        if let Some(content) = &storage.content_size {
            claims.push(claim("content", content));
        }
        claims
    }

    /// The claims of an existing StatefulSet, which cannot change; `None` when they
    /// cannot be read.
    pub fn from_observed(statefulset: &Related<'_>) -> Option<Vec<Claim>> {
        #[derive(Deserialize)]
        struct Template {
            metadata: Name,
            spec: TemplateSpec,
        }
        #[derive(Deserialize)]
        struct Name {
            name: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct TemplateSpec {
            access_modes: Option<Vec<String>>,
            resources: Resources,
            storage_class_name: Option<String>,
        }
        #[derive(Deserialize)]
        struct Resources {
            requests: Requests,
        }
        #[derive(Deserialize)]
        struct Requests {
            storage: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Spec {
            #[serde(default)]
            volume_claim_templates: Vec<Template>,
        }
        let spec = serde_json::from_str::<Object<Spec>>(statefulset.spec?.get()).ok()?.0?;
        let templates = spec.volume_claim_templates;
        let claims = templates
            .into_iter()
            .map(|template| Claim {
                name: template.metadata.name,
                size: template.spec.resources.requests.storage,
                storage_class_name: template.spec.storage_class_name,
                access_modes: template.spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            })
            .collect();
        Some(claims)
    }

    fn mount_path(&self) -> Option<&'static str> {
        match self.name.as_str() {
            "metadata" => Some("/data/metadata"),
            "cache" => Some("/data/cache"),
            "content" => Some("/data/content"),
            _ => None,
        }
    }

    fn template(&self) -> ClaimTemplate<'_> {
        ClaimTemplate {
            metadata: NameOnly { name: &self.name },
            spec: ClaimSpec {
                access_modes: &self.access_modes,
                resources: StorageRequest { requests: Storage { storage: &self.size } },
                storage_class_name: self.storage_class_name.as_deref(),
            },
        }
    }
}

/// The StatefulSet of `owner`, with `claims` and the pod annotation `config_hash`.
pub fn build<'a>(
    owner: &'a Primary,
    spec: &'a DittoServerSpec,
    config_hash: &'a str,
    claims: &'a [Claim],
) -> StatefulSet<'a> {
    let security_context = match &spec.pod_security_context {
        Some(context) => PodSecurity::Spec(&context.object),
        None => PodSecurity::Default { fs_group: DEFAULT_FS_GROUP },
    };
    StatefulSet {
        api_version: "apps/v1",
        kind: "StatefulSet",
        metadata: owner.metadata(owner.name.clone()),
        spec: StatefulSetSpec {
            replicas: spec.replicas,
            service_name: names::headless_service(&owner.name),
            selector: Selector { match_labels: PodSelector::of(&owner.name) },
            template: PodTemplate {
                metadata: PodMeta {
                    labels: Labels::of(&owner.name),
                    annotations: PodAnnotations { config_hash },
                },
                spec: PodSpec {
                    security_context,
                    init_containers: spec.percona.enabled.then(|| [wait_for_postgres(&owner.name)]),
                    containers: [server_container(&owner.name, spec, claims)],
                    volumes: [ConfigVolume {
                        name: "config",
                        config_map: NamedRef { name: names::config_map(&owner.name) },
                    }],
                },
            },
            volume_claim_templates: claims.iter().map(Claim::template).collect(),
            persistent_volume_claim_retention_policy: RetentionPolicy {
                when_deleted: "Retain",
                when_scaled: "Retain",
            },
        },
    }
}

fn server_container<'a>(name: &'a str, spec: &'a DittoServerSpec, claims: &'a [Claim]) -> Container<'a> {
    let mut ports =
        vec![container_port("nfs", spec.nfs_port), container_port("api", spec.control_plane.port)];
    if spec.metrics.enabled {
        ports.push(container_port("metrics", spec.metrics.port));
    }
    if spec.smb.enabled {
        ports.push(container_port("smb", spec.smb.port));
    }
    let mut mounts = vec![VolumeMount { name: "config", mount_path: "/config", read_only: Some(true) }];
    mounts.extend(claims.iter().filter_map(|claim| {
        Some(VolumeMount { name: &claim.name, mount_path: claim.mount_path()?, read_only: None })
    }));
    let tcp_probe = |initial_delay_seconds, period_seconds| Probe {
        tcp_socket: TcpSocket { port: "nfs" },
        initial_delay_seconds,
        period_seconds,
    };
    Container {
        name: "dittofs",
        image: &spec.image,
        command: vec!["/app/dittofs"],
        args: vec!["start", "--config", "/config/config.yaml"],
        ports,
        env: environment(name, spec),
        liveness_probe: Some(tcp_probe(30, 10)),
        readiness_probe: Some(tcp_probe(10, 5)),
        resources: spec.resources.as_ref().map(|r| &r.object),
        security_context: spec.security_context.as_ref().map(|c| &c.object),
        volume_mounts: mounts,
    }
}

fn container_port(name: &'static str, number: i32) -> ContainerPort {
    ContainerPort { name, container_port: number, protocol: "TCP" }
}

fn from_secret<'a>(
    env: &'static str,
    secret: impl Into<Cow<'a, str>>,
    key: &'a str,
    optional: bool,
) -> EnvVar<'a> {
    EnvVar {
        name: env,
        value: None,
        value_from: Some(SecretSource {
            secret_key_ref: SecretKeyRef { name: secret.into(), key, optional: optional.then_some(true) },
        }),
    }
}

/// The server's environment: every secret, by reference.
fn environment<'a>(name: &str, spec: &'a DittoServerSpec) -> Vec<EnvVar<'a>> {
    let mut env = Vec::new();
    if let Some(jwt) = &spec.identity.jwt {
        env.push(from_secret(
            "DITTOFS_CONTROLPLANE_SECRET",
            &jwt.secret_ref.name,
            &jwt.secret_ref.key,
            false,
        ));
    }
    if let Some(password) = &spec.identity.admin.password_secret_ref {
        env.push(from_secret("DITTOFS_ADMIN_INITIAL_PASSWORD", &password.name, &password.key, false));
    }
    if spec.percona.enabled {
        env.push(from_secret("DATABASE_URL", names::percona_user_secret(name), "uri", false));
    } else if let Some(postgres) = &spec.database.postgres_secret_ref {
        for (var, key, optional) in [
            ("DITTOFS_DATABASE_POSTGRES_HOST", "host", false),
            ("DITTOFS_DATABASE_POSTGRES_DATABASE", "database", false),
            ("DITTOFS_DATABASE_POSTGRES_USER", "user", false),
            ("DITTOFS_DATABASE_POSTGRES_PASSWORD", "password", false),
            ("DITTOFS_DATABASE_POSTGRES_PORT", "port", true),
            ("DITTOFS_DATABASE_POSTGRES_SSLMODE", "sslmode", true),
        ] {
            env.push(from_secret(var, postgres.name.as_str(), key, optional));
        }
    }
    if let Some(s3) = &spec.s3 {
        let credentials = &s3.credentials_secret_ref;
        let secret = credentials.secret_name.as_str();
        env.push(from_secret("AWS_ACCESS_KEY_ID", secret, &credentials.access_key_id_key, false));
        env.push(from_secret("AWS_SECRET_ACCESS_KEY", secret, &credentials.secret_access_key_key, false));
        env.push(from_secret("AWS_ENDPOINT_URL", secret, &credentials.endpoint_key, true));
        env.push(EnvVar { name: "AWS_REGION", value: Some(&s3.region), value_from: None });
    }
    env
}

/// Waits until the Percona cluster accepts connections as the DittoFS user.
fn wait_for_postgres(name: &str) -> Container<'static> {
    let env = [
        ("PGHOST", "host"),
        ("PGPORT", "port"),
        ("PGUSER", "user"),
        ("PGPASSWORD", "password"),
        ("PGDATABASE", "dbname"),
    ]
    .into_iter()
    .map(|(var, key)| from_secret(var, names::percona_user_secret(name), key, false))
    .collect();
    Container {
        name: "wait-for-postgres",
        image: POSTGRES_WAIT_IMAGE,
        command: vec![
            "/bin/sh",
            "-c",
            "until pg_isready -h \"$PGHOST\" -p \"$PGPORT\" -U \"$PGUSER\" -d \"$PGDATABASE\" -t 5; do \
             echo \"waiting for PostgreSQL at $PGHOST:$PGPORT\"; sleep 2; done",
        ],
        env,
        ..Container::default()
    }
}
