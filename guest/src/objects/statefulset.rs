//! The StatefulSet `<name>` that runs the DittoFS server.
//!
//! Secrets reach the container as environment variables (`valueFrom.secretKeyRef`),
//! never through the ConfigMap. The pod template carries the config hash, so a change
//! of the configuration, of a referenced Secret or of the generation rolls the pod.
//!
//! A StatefulSet's volume claim templates are immutable: once it exists, the claims
//! are taken from the observed object ([`Claim::from_observed`]), so that a changed
//! storage size in the spec does not turn every later apply into a rejected one.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{labels, pod_selector};
use crate::api::DittoServerSpec;
use crate::input::Primary;
use crate::lenient::Object;
use crate::meta::Related;
use crate::names::{self, CONFIG_HASH_ANNOTATION};

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

    fn template(&self) -> Value {
        let mut spec = json!({
            "accessModes": self.access_modes,
            "resources": {"requests": {"storage": self.size}},
        });
        if let Some(class) = &self.storage_class_name {
            spec["storageClassName"] = class.as_str().into();
        }
        let mut template = json!({"metadata": {"name": self.name}});
        template["spec"] = spec;
        template
    }
}

/// The StatefulSet of `owner`, with `claims` and the pod annotation `config_hash`.
pub fn build(owner: &Primary, spec: &DittoServerSpec, config_hash: &str, claims: &[Claim]) -> Value {
    let name = &owner.name;
    // Values built elsewhere are moved in by index: `json!` would copy them.
    let mut pod = json!({
        "volumes": [{"name": "config", "configMap": {"name": names::config_map(name)}}],
    });
    pod["securityContext"] = match &spec.pod_security_context {
        Some(context) => Value::Object(context.object.clone()),
        None => json!({"fsGroup": DEFAULT_FS_GROUP}),
    };
    pod["containers"] = vec![server_container(name, spec, claims)].into();
    if spec.percona.enabled {
        pod["initContainers"] = vec![wait_for_postgres(name, spec)].into();
    }
    let mut statefulset = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "spec": {
            "replicas": spec.replicas,
            "serviceName": names::headless_service(name),
            "template": {"metadata": {"annotations": {CONFIG_HASH_ANNOTATION: config_hash}}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        },
    });
    statefulset["metadata"] = owner.metadata(name);
    let set = &mut statefulset["spec"];
    set["selector"]["matchLabels"] = pod_selector(name);
    set["template"]["metadata"]["labels"] = labels(name);
    set["template"]["spec"] = pod;
    set["volumeClaimTemplates"] = claims.iter().map(Claim::template).collect();
    statefulset
}

fn server_container(name: &str, spec: &DittoServerSpec, claims: &[Claim]) -> Value {
    let port = |name: &str, number: i32| json!({"name": name, "containerPort": number, "protocol": "TCP"});
    let mut ports = vec![port("nfs", spec.nfs_port), port("api", spec.control_plane.port)];
    if spec.metrics.enabled {
        ports.push(port("metrics", spec.metrics.port));
    }
    if spec.smb.enabled {
        ports.push(port("smb", spec.smb.port));
    }
    let mut mounts = vec![json!({"name": "config", "mountPath": "/config", "readOnly": true})];
    mounts.extend(
        claims.iter().filter_map(|claim| Some(json!({"name": claim.name, "mountPath": claim.mount_path()?}))),
    );
    let tcp_probe = |initial_delay: i32, period: i32| json!({"tcpSocket": {"port": "nfs"}, "initialDelaySeconds": initial_delay, "periodSeconds": period});
    let mut container = json!({
        "name": "dittofs",
        "image": spec.image,
        "command": ["/app/dittofs"],
        "args": ["start", "--config", "/config/config.yaml"],
    });
    container["ports"] = ports.into();
    container["livenessProbe"] = tcp_probe(30, 10);
    container["readinessProbe"] = tcp_probe(10, 5);
    container["volumeMounts"] = mounts.into();
    let env = environment(name, spec);
    if !env.is_empty() {
        container["env"] = env.into();
    }
    if let Some(resources) = &spec.resources {
        container["resources"] = Value::Object(resources.object.clone());
    }
    if let Some(context) = &spec.security_context {
        container["securityContext"] = Value::Object(context.object.clone());
    }
    container
}

/// The variable `env` read from `key` of the Secret `secret`.
fn from_secret(env: &str, secret: &str, key: &str, optional: bool) -> Value {
    let mut reference = json!({"name": secret, "key": key});
    if optional {
        reference["optional"] = true.into();
    }
    let mut variable = json!({"name": env});
    variable["valueFrom"]["secretKeyRef"] = reference;
    variable
}

/// The server's environment: every secret, by reference.
fn environment(name: &str, spec: &DittoServerSpec) -> Vec<Value> {
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
        env.push(from_secret("DATABASE_URL", &names::percona_user_secret(name), "uri", false));
    } else if let Some(postgres) = &spec.database.postgres_secret_ref {
        for (var, key, optional) in [
            ("DITTOFS_DATABASE_POSTGRES_HOST", "host", false),
            ("DITTOFS_DATABASE_POSTGRES_DATABASE", "database", false),
            ("DITTOFS_DATABASE_POSTGRES_USER", "user", false),
            ("DITTOFS_DATABASE_POSTGRES_PASSWORD", "password", false),
            ("DITTOFS_DATABASE_POSTGRES_PORT", "port", true),
            ("DITTOFS_DATABASE_POSTGRES_SSLMODE", "sslmode", true),
        ] {
            env.push(from_secret(var, &postgres.name, key, optional));
        }
    }
    if let Some(s3) = &spec.s3 {
        let credentials = &s3.credentials_secret_ref;
        let secret = credentials.secret_name.as_str();
        env.push(from_secret("AWS_ACCESS_KEY_ID", secret, &credentials.access_key_id_key, false));
        env.push(from_secret("AWS_SECRET_ACCESS_KEY", secret, &credentials.secret_access_key_key, false));
        env.push(from_secret("AWS_ENDPOINT_URL", secret, &credentials.endpoint_key, true));
        env.push(json!({"name": "AWS_REGION", "value": s3.region}));
    }
    env
}

/// Waits until the Percona cluster accepts connections as the DittoFS user.
///
/// It runs under the server container's `securityContext` from the spec: a
/// namespace that enforces a Pod Security level admits a pod only when every
/// container meets it, and this is the one container the user cannot configure.
fn wait_for_postgres(name: &str, spec: &DittoServerSpec) -> Value {
    let secret = names::percona_user_secret(name);
    let env: Vec<Value> = [
        ("PGHOST", "host"),
        ("PGPORT", "port"),
        ("PGUSER", "user"),
        ("PGPASSWORD", "password"),
        ("PGDATABASE", "dbname"),
    ]
    .into_iter()
    .map(|(var, key)| from_secret(var, &secret, key, false))
    .collect();
    let mut container = json!({
        "name": "wait-for-postgres",
        "image": POSTGRES_WAIT_IMAGE,
        "command": [
            "/bin/sh",
            "-c",
            "until pg_isready -h \"$PGHOST\" -p \"$PGPORT\" -U \"$PGUSER\" -d \"$PGDATABASE\" -t 5; do \
             echo \"waiting for PostgreSQL at $PGHOST:$PGPORT\"; sleep 2; done",
        ],
    });
    container["env"] = env.into();
    if let Some(context) = &spec.security_context {
        container["securityContext"] = Value::Object(context.object.clone());
    }
    container
}
