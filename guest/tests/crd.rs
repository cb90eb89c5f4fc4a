//! The committed CRD (`crds/dittoservers.yaml`) is the one the API types generate, and
//! it carries the reference's validation, defaults and documentation.
#![cfg(not(target_arch = "wasm32"))]

use std::path::PathBuf;

use serde_json::{Value, json};

fn committed() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/dittoservers.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn crd() -> Value {
    serde_yaml_ng::from_str(&committed()).expect("valid YAML")
}

fn schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, key| if key.is_empty() { v } else { &v["properties"][key] })
}

#[test]
fn the_committed_crd_is_up_to_date() {
    let generated = dittofs_reconciler::crdgen::crd_yaml().expect("renders");
    assert!(committed() == generated, "crds/dittoservers.yaml is stale: run `make crds`");
}

#[test]
fn names_subresources_and_printer_columns() {
    let crd = crd();
    assert_eq!(crd["metadata"]["name"], "dittoservers.dittofs.dittofs.com");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["ditto", "dittofs"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"], json!({"status": {}}));
    let columns: Vec<_> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or(""), c["jsonPath"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        columns,
        [
            ("Replicas", ".spec.replicas"),
            ("Ready", ".status.readyReplicas"),
            ("Available", ".status.availableReplicas"),
            ("Status", ".status.phase"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn defaults_bounds_patterns_and_enums() {
    let schema = schema();
    let spec = at(&schema, "spec");
    let size_pattern = json!("^[0-9]+(Gi|Mi|Ti)$");
    let cases: &[(&str, &str, Value)] = &[
        ("image", "default", json!("marmos91c/dittofs:latest")),
        ("replicas", "default", json!(1)),
        ("replicas", "minimum", json!(0.0)),
        ("replicas", "maximum", json!(1.0)),
        ("storage.metadataSize", "pattern", size_pattern.clone()),
        ("storage.contentSize", "pattern", size_pattern.clone()),
        ("storage.cacheSize", "pattern", size_pattern),
        ("storage.cacheSize", "default", json!("5Gi")),
        ("database.type", "enum", json!(["sqlite", "postgres"])),
        ("database.type", "default", json!("sqlite")),
        ("database.sqlite.path", "default", json!("/data/controlplane/controlplane.db")),
        ("cache.path", "default", json!("/data/cache")),
        ("cache.size", "default", json!("1GB")),
        ("metrics.enabled", "default", json!(false)),
        ("metrics.port", "default", json!(9090)),
        ("metrics.port", "maximum", json!(65535.0)),
        ("controlPlane.port", "default", json!(8080)),
        ("controlPlane.port", "minimum", json!(1.0)),
        ("identity.type", "enum", json!(["memory"])),
        ("identity.jwt.accessTokenDuration", "default", json!("15m")),
        ("identity.jwt.refreshTokenDuration", "default", json!("168h")),
        ("identity.jwt.issuer", "default", json!("dittofs")),
        ("identity.jwt", "required", json!(["secretRef"])),
        ("identity.admin.username", "default", json!("admin")),
        ("service.type", "enum", json!(["ClusterIP", "NodePort", "LoadBalancer"])),
        ("service.type", "default", json!("ClusterIP")),
        ("nfsPort", "default", json!(2049)),
        ("nfsPort", "minimum", json!(1.0)),
        ("smb.port", "default", json!(445)),
        ("smb.maxRequestsPerConnection", "default", json!(100)),
        ("smb.timeouts.write", "default", json!("30s")),
        ("smb.credits.strategy", "enum", json!(["fixed", "echo", "adaptive"])),
        ("smb.credits.strategy", "default", json!("adaptive")),
        ("smb.credits.maxSessionCredits", "default", json!(65535)),
        ("smb.metricsLogInterval", "default", json!("5m")),
        ("s3.credentialsSecretRef", "required", json!(["secretName"])),
        ("s3.credentialsSecretRef.accessKeyIdKey", "default", json!("accessKeyId")),
        ("s3.region", "default", json!("eu-west-1")),
        ("percona.deleteWithServer", "default", json!(false)),
        ("percona.replicas", "minimum", json!(1.0)),
        ("percona.replicas", "maximum", json!(5.0)),
        ("percona.storageSize", "default", json!("10Gi")),
        ("percona.databaseName", "default", json!("dittofs")),
        ("percona.backup.fullSchedule", "default", json!("0 2 * * *")),
        ("percona.backup.incrSchedule", "default", json!("0 * * * *")),
        ("percona.backup.retentionDays", "default", json!(7)),
        ("percona.backup.retentionDays", "minimum", json!(1.0)),
        ("storage", "required", json!(["metadataSize"])),
    ];
    for (path, keyword, expected) in cases {
        assert_eq!(&at(spec, path)[*keyword], expected, "spec.{path} {keyword}");
    }
    assert_eq!(schema["required"], json!(["spec"]));
    assert_eq!(spec["required"], json!(["storage"]));
    // Core/v1 types come with their own schemas.
    assert!(at(spec, "resources.limits").is_object());
    assert!(at(spec, "podSecurityContext.fsGroup").is_object());
}

#[test]
fn descriptions_and_the_data_loss_warning() {
    let schema = schema();
    let spec = at(&schema, "spec");
    let warning = at(spec, "percona.deleteWithServer")["description"].as_str().expect("description");
    assert!(warning.contains("WARNING") && warning.contains("ALL ITS DATA"), "{warning}");
    for path in
        ["image", "storage.metadataSize", "percona.enabled", "smb.credits.minGrant", "identity.jwt.secretRef"]
    {
        assert!(
            at(spec, path)["description"].as_str().is_some_and(|d| d.len() > 10),
            "spec.{path} has no description"
        );
    }
}

#[test]
fn status_conditions_are_a_list_map_keyed_by_type() {
    let schema = schema();
    let status = at(&schema, "status");
    let conditions = at(status, "conditions");
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    assert_eq!(
        conditions["items"]["required"],
        json!(["lastTransitionTime", "message", "reason", "status", "type"])
    );
    assert_eq!(at(status, "phase")["enum"], json!(["Pending", "Running", "Failed", "Stopped", "Deleting"]));
}

/// The `x-kubernetes-validations` of a schema node, as `(rule, message, fieldPath)`.
fn rules(node: &Value) -> Vec<(String, String, String)> {
    let text = |rule: &Value, key: &str| rule[key].as_str().unwrap_or_default().to_owned();
    node["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules.iter().map(|r| (text(r, "rule"), text(r, "message"), text(r, "fieldPath"))).collect()
        })
        .unwrap_or_default()
}

#[test]
fn cel_rules_name_the_field_they_refuse() {
    let schema = schema();
    let spec = at(&schema, "spec");
    let cases: &[(&str, &Value, &[&str])] = &[
        (
            "spec",
            spec,
            &[
                ".controlPlane.port",
                ".metrics.port",
                ".metrics.port",
                ".smb.port",
                ".smb.port",
                ".smb.port",
                ".database.type",
            ],
        ),
        ("spec.percona", at(spec, "percona"), &[".storageSize", ".databaseName", ".backup.bucket"]),
    ];
    for (node, value, paths) in cases {
        let rules = rules(value);
        let found: Vec<_> = rules.iter().map(|(_, _, path)| path.as_str()).collect();
        assert_eq!(&found, paths, "{node}");
        for (rule, message, path) in &rules {
            assert!(message.starts_with(&format!("{node}{path} ")), "{node}: {message:?} for {rule}");
        }
    }
    // A port clash names both fields; a rule on a port is skipped while its feature is off.
    let ports: Vec<_> = rules(spec).into_iter().filter(|(_, _, path)| path.ends_with("port")).collect();
    for (rule, message, _) in &ports {
        assert!(message.contains("is already used by spec."), "{message}");
        for feature in ["metrics", "smb"] {
            let uses = rule.contains(&format!("self.?{feature}.?port"));
            assert_eq!(uses, rule.contains(&format!("self.?{feature}.?enabled.orValue(false)")), "{rule}");
        }
    }
    // Strings that go through CEL functions are bounded, for the CRD's cost budget.
    assert_eq!(at(spec, "percona.storageSize")["maxLength"], json!(64));
}

#[test]
fn cel_rules_read_unwritten_sections_with_the_crd_defaults() {
    let schema = schema();
    let spec = at(&schema, "spec");
    let all: String = rules(spec).into_iter().map(|(rule, _, _)| rule + "\n").collect();
    for section in ["controlPlane", "metrics", "smb"] {
        let default = &at(spec, &format!("{section}.port"))["default"];
        let read = format!("self.?{section}.?port.orValue(");
        let with_default = format!("{read}{default})");
        assert!(all.contains(&with_default), "no rule reads {with_default}");
        assert_eq!(all.matches(&read).count(), all.matches(&with_default).count(), "{section}: {all}");
    }
}

#[test]
fn metadata_name_rules_apply_at_creation_only() {
    let schema = schema();
    let name = at(&schema, "metadata.name");
    assert_eq!(at(&schema, "metadata")["type"], "object");
    let validations = name["x-kubernetes-validations"].as_array().expect("rules on metadata.name");
    assert_eq!(validations.len(), 2);
    for rule in validations {
        assert_eq!(rule["optionalOldSelf"], json!(true), "{rule}");
        let text = rule["rule"].as_str().expect("rule");
        assert!(text.starts_with("oldSelf.hasValue() || "), "{text}");
        assert!(rule["message"].as_str().is_some_and(|m| m.starts_with("metadata.name must ")), "{rule}");
    }
    assert!(validations[0]["rule"].as_str().is_some_and(|r| r.ends_with("self.size() <= 52")));
}
