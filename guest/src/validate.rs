//! Checks that a decoded spec can be turned into working objects.
//!
//! The CRD already enforces these bounds and patterns, but the module does not trust
//! its input: a spec that decodes yet cannot work (an unparseable quantity, a port out
//! of range, two features on one port) puts the DittoServer in phase Failed, and no
//! object is applied from it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SecretKeySelector;
use serde_json::Value;

use crate::api::{DatabaseType, DittoServerSpec};

/// The longest DittoServer name: the StatefulSet's pods carry a
/// `controller-revision-hash` label of `<name>-<10 characters>`, at most 63 long.
pub const MAX_NAME_LEN: usize = 52;

/// Every problem of `spec` (for the DittoServer `name`), each naming its field.
pub fn problems(name: &str, spec: &DittoServerSpec) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| problems.push(format!("{field}: {message}"));

    if name.len() > MAX_NAME_LEN {
        problem("metadata.name", format!("{name:?} is longer than {MAX_NAME_LEN} characters"));
    } else if !is_dns_label(name) {
        problem("metadata.name", format!("{name:?} is not a DNS label (Services are named after it)"));
    }

    if !(0..=1).contains(&spec.replicas) {
        problem("spec.replicas", format!("{} is out of range 0..1", spec.replicas));
    }
    if spec.image.trim().is_empty() {
        problem("spec.image", "is empty".into());
    }

    let storage = &spec.storage;
    for (field, size) in [
        ("spec.storage.metadataSize", Some(&storage.metadata_size)),
        ("spec.storage.cacheSize", Some(&storage.cache_size)),
        ("spec.storage.contentSize", storage.content_size.as_ref()),
    ] {
        if let Some(size) = size
            && let Err(message) = check_volume_size(size)
        {
            problem(field, message);
        }
    }

    let mut ports: BTreeMap<i32, &str> = BTreeMap::new();
    let mut port = |field: &'static str, value: i32, problem: &mut dyn FnMut(&str, String)| {
        if !(1..=65535).contains(&value) {
            problem(field, format!("{value} is out of range 1..65535"));
        } else if let Some(other) = ports.insert(value, field) {
            problem(field, format!("{value} is already used by {other}"));
        }
    };
    port("spec.nfsPort", spec.nfs_port, &mut problem);
    port("spec.controlPlane.port", spec.control_plane.port, &mut problem);
    if spec.metrics.enabled {
        port("spec.metrics.port", spec.metrics.port, &mut problem);
    } else if !(1..=65535).contains(&spec.metrics.port) {
        problem("spec.metrics.port", format!("{} is out of range 1..65535", spec.metrics.port));
    }
    if spec.smb.enabled {
        port("spec.smb.port", spec.smb.port, &mut problem);
    } else if !(1..=65535).contains(&spec.smb.port) {
        problem("spec.smb.port", format!("{} is out of range 1..65535", spec.smb.port));
    }
    let smb = &spec.smb;
    for (field, value) in [
        ("spec.smb.maxConnections", smb.max_connections),
        ("spec.smb.maxRequestsPerConnection", smb.max_requests_per_connection),
        ("spec.smb.credits.minGrant", smb.credits.min_grant),
        ("spec.smb.credits.maxGrant", smb.credits.max_grant),
        ("spec.smb.credits.initialGrant", smb.credits.initial_grant),
        ("spec.smb.credits.maxSessionCredits", smb.credits.max_session_credits),
        ("spec.smb.credits.loadThresholdHigh", smb.credits.load_threshold_high),
        ("spec.smb.credits.loadThresholdLow", smb.credits.load_threshold_low),
        ("spec.smb.credits.aggressiveClientThreshold", smb.credits.aggressive_client_threshold),
    ] {
        if value < 0 {
            problem(field, format!("{value} is negative"));
        }
    }

    if let Some(jwt) = &spec.identity.jwt {
        check_secret_key("spec.identity.jwt.secretRef", &jwt.secret_ref, &mut problem);
    }
    if let Some(password) = &spec.identity.admin.password_secret_ref {
        check_secret_key("spec.identity.admin.passwordSecretRef", password, &mut problem);
    }
    if spec.identity.admin.username.is_empty() {
        problem("spec.identity.admin.username", "is empty".into());
    }
    match &spec.database.postgres_secret_ref {
        Some(postgres) if postgres.name.is_empty() => {
            problem("spec.database.postgresSecretRef.name", "is empty".into());
        }
        None if spec.database.kind == DatabaseType::Postgres && !spec.percona.enabled => problem(
            "spec.database.type",
            "is postgres, but neither database.postgresSecretRef nor percona is set".into(),
        ),
        _ => {}
    }
    if let Some(s3) = &spec.s3 {
        let credentials = &s3.credentials_secret_ref;
        if credentials.secret_name.is_empty() {
            problem("spec.s3.credentialsSecretRef.secretName", "is empty".into());
        }
        for (field, key) in [
            ("spec.s3.credentialsSecretRef.accessKeyIdKey", &credentials.access_key_id_key),
            ("spec.s3.credentialsSecretRef.secretAccessKeyKey", &credentials.secret_access_key_key),
            ("spec.s3.credentialsSecretRef.endpointKey", &credentials.endpoint_key),
        ] {
            if key.is_empty() {
                problem(field, "is empty".into());
            }
        }
    }

    let percona = &spec.percona;
    if percona.enabled {
        if !(1..=5).contains(&percona.replicas) {
            problem("spec.percona.replicas", format!("{} is out of range 1..5", percona.replicas));
        }
        if !is_quantity(&percona.storage_size) || is_zero_quantity(&percona.storage_size) {
            problem(
                "spec.percona.storageSize",
                format!("{:?} is not a positive quantity", percona.storage_size),
            );
        }
        if percona.database_name.is_empty() {
            problem("spec.percona.databaseName", "is empty".into());
        }
        let backup = &percona.backup;
        if backup.enabled && backup.bucket.as_deref().is_none_or(str::is_empty) {
            problem("spec.percona.backup.bucket", "is required when backups are enabled".into());
        }
        if backup.retention_days < 1 {
            problem("spec.percona.backup.retentionDays", format!("{} is less than 1", backup.retention_days));
        }
    }

    if let Some(resources) = &spec.resources {
        for section in ["limits", "requests"] {
            let Some(list) = resources.object.get(section) else { continue };
            let Some(list) = list.as_object() else {
                problem(&format!("spec.resources.{section}"), "is not a map of quantities".into());
                continue;
            };
            for (resource, value) in list {
                let valid = match value {
                    Value::String(text) => is_quantity(text),
                    Value::Number(_) => true,
                    _ => false,
                };
                if !valid {
                    problem(
                        &format!("spec.resources.{section}.{resource}"),
                        format!("{value} is not a quantity"),
                    );
                }
            }
        }
    }
    problems
}

fn check_secret_key(field: &str, selector: &SecretKeySelector, problem: &mut dyn FnMut(&str, String)) {
    if selector.name.is_empty() {
        problem(&format!("{field}.name"), "is empty".into());
    }
    if selector.key.is_empty() {
        problem(&format!("{field}.key"), "is empty".into());
    }
}

/// Checks a volume size against `^[0-9]+(Gi|Mi|Ti)$`, and that it is not zero.
fn check_volume_size(size: &str) -> Result<(), String> {
    let digits =
        size.strip_suffix("Gi").or_else(|| size.strip_suffix("Mi")).or_else(|| size.strip_suffix("Ti"));
    match digits {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            if digits.bytes().all(|b| b == b'0') { Err(format!("{size:?} is zero")) } else { Ok(()) }
        }
        _ => Err(format!("{size:?} is not a size like 10Gi (^[0-9]+(Gi|Mi|Ti)$)")),
    }
}

/// Whether `text` is a Kubernetes resource quantity (`1.5Gi`, `500m`, `1e3`).
pub fn is_quantity(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let number_len = unsigned.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (number, suffix) = unsigned.split_at(number_len);
    let mut parts = number.split('.');
    let (whole, fraction) = (parts.next().unwrap_or(""), parts.next());
    if parts.next().is_some() || (whole.is_empty() && fraction.is_none_or(str::is_empty)) {
        return false;
    }
    match suffix {
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        exponent => match exponent.strip_prefix(['e', 'E']) {
            Some(power) => {
                let power = power.strip_prefix(['+', '-']).unwrap_or(power);
                !power.is_empty() && power.bytes().all(|b| b.is_ascii_digit())
            }
            None => false,
        },
    }
}

fn is_zero_quantity(text: &str) -> bool {
    text.bytes().take_while(|b| !b.is_ascii_alphabetic()).all(|b| matches!(b, b'0' | b'.' | b'+' | b'-'))
}

/// Whether `name` is an RFC 1035 label (what Service names must be).
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z'))
        && matches!(bytes.last(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StorageSpec;

    fn spec() -> DittoServerSpec {
        serde_json::from_value(serde_json::json!({"storage": {"metadataSize": "10Gi"}})).expect("spec")
    }

    #[test]
    fn a_default_spec_is_fine() {
        assert_eq!(problems("server", &spec()), Vec::<String>::new());
    }

    #[test]
    fn quantities() {
        for good in ["1", "1Gi", "1.5Gi", "500m", "+1k", "1e3", "1E-3", ".5", "5.", "10Gi", "0"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "ten", "1GB", "Gi", "1.2.3Gi", ".", "1e", "1 Gi", "1gi", "--1"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn each_problem_names_its_field() {
        type Edit = fn(&mut DittoServerSpec);
        let cases: &[(&str, Edit, &str)] = &[
            ("server", |s| s.storage.metadata_size = "ten".into(), "spec.storage.metadataSize: \"ten\""),
            ("server", |s| s.storage.cache_size = "5GB".into(), "spec.storage.cacheSize"),
            (
                "server",
                |s| s.storage.content_size = Some("0Gi".into()),
                "spec.storage.contentSize: \"0Gi\" is zero",
            ),
            ("server", |s| s.nfs_port = 70000, "spec.nfsPort: 70000 is out of range"),
            ("server", |s| s.control_plane.port = 0, "spec.controlPlane.port: 0 is out of range"),
            ("server", |s| s.metrics.port = -1, "spec.metrics.port: -1 is out of range"),
            (
                "server",
                |s| {
                    s.metrics.enabled = true;
                    s.metrics.port = 2049;
                },
                "spec.metrics.port: 2049 is already used by spec.nfsPort",
            ),
            (
                "server",
                |s| {
                    s.smb.enabled = true;
                    s.smb.port = 8080;
                },
                "spec.smb.port: 8080 is already used by spec.controlPlane.port",
            ),
            ("server", |s| s.replicas = 2, "spec.replicas: 2 is out of range 0..1"),
            ("server", |s| s.smb.credits.max_grant = -5, "spec.smb.credits.maxGrant: -5 is negative"),
            ("server", |s| s.image = " ".into(), "spec.image: is empty"),
            (
                "server",
                |s| s.database.kind = DatabaseType::Postgres,
                "spec.database.type: is postgres, but neither",
            ),
            (
                "server",
                |s| {
                    s.percona.enabled = true;
                    s.percona.storage_size = "lots".into();
                },
                "spec.percona.storageSize: \"lots\"",
            ),
            (
                "server",
                |s| {
                    s.percona.enabled = true;
                    s.percona.replicas = 9;
                },
                "spec.percona.replicas: 9 is out of range 1..5",
            ),
            (
                "server",
                |s| {
                    s.percona.enabled = true;
                    s.percona.backup.enabled = true;
                },
                "spec.percona.backup.bucket: is required",
            ),
            (
                "server",
                |s| {
                    s.identity.jwt = Some(crate::api::JwtSpec {
                        secret_ref: SecretKeySelector {
                            name: String::new(),
                            key: "k".into(),
                            optional: None,
                        },
                        access_token_duration: "15m".into(),
                        refresh_token_duration: "168h".into(),
                        issuer: "dittofs".into(),
                    })
                },
                "spec.identity.jwt.secretRef.name: is empty",
            ),
            (
                "server",
                |s| {
                    s.resources = serde_json::from_value(serde_json::json!({"limits": {"cpu": "fast"}}))
                        .expect("resources")
                },
                "spec.resources.limits.cpu: \"fast\" is not a quantity",
            ),
            ("Server", |_| {}, "metadata.name: \"Server\" is not a DNS label"),
            ("a.b", |_| {}, "metadata.name: \"a.b\" is not a DNS label"),
            ("a2345678901234567890123456789012345678901234567890123", |_| {}, "longer than 52"),
        ];
        for (name, edit, expected) in cases {
            let mut spec = spec();
            edit(&mut spec);
            let problems = problems(name, &spec);
            assert!(problems.iter().any(|p| p.contains(expected)), "{expected:?} not in {problems:?}");
        }
    }

    #[test]
    fn volume_sizes() {
        let spec = |size: &str| StorageSpec {
            metadata_size: size.into(),
            content_size: None,
            cache_size: "5Gi".into(),
            storage_class_name: None,
        };
        for good in ["1Gi", "512Mi", "2Ti", "10Gi"] {
            assert!(check_volume_size(&spec(good).metadata_size).is_ok(), "{good}");
        }
        for bad in ["", "Gi", "1G", "1.5Gi", "-1Gi", "1Pi", "0Mi", " 1Gi"] {
            assert!(check_volume_size(bad).is_err(), "{bad}");
        }
    }
}
