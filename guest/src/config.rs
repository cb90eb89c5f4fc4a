//! The DittoFS configuration file (`config.yaml` in the ConfigMap).
//!
//! It holds no secret: the JWT secret, passwords and database credentials reach the
//! pod as environment variables from their Secrets (see
//! [`crate::objects::statefulset`]). The file is small and of fixed shape, so it is
//! written directly: keys are fixed identifiers, and every string value is a YAML
//! double-quoted scalar (JSON string escaping is valid there), which no value from
//! the spec can break out of.

use std::fmt::Write as _;

use crate::api::DittoServerSpec;

/// How the server's control plane reaches its database.
pub fn uses_postgres(spec: &DittoServerSpec) -> bool {
    spec.percona.enabled
        || spec.database.postgres_secret_ref.is_some()
        || spec.database.kind == crate::api::DatabaseType::Postgres
}

/// Renders the configuration file of the DittoServer `name`.
pub fn render(name: &str, spec: &DittoServerSpec) -> String {
    let mut yaml = Yaml(String::with_capacity(768));
    yaml.comment(&format!(
        "Written by the operator for DittoServer {name}; secrets come from the environment."
    ));
    yaml.section(0, "logging");
    yaml.string(1, "level", "INFO");
    yaml.string(1, "format", "json");
    yaml.string(1, "output", "stdout");
    yaml.section(0, "telemetry");
    yaml.raw(1, "enabled", "false");
    yaml.string(0, "shutdown_timeout", "30s");
    yaml.section(0, "database");
    if uses_postgres(spec) {
        yaml.string(1, "type", "postgres");
    } else {
        yaml.string(1, "type", "sqlite");
        yaml.section(1, "sqlite");
        yaml.string(2, "path", &spec.database.sqlite.path);
    }
    yaml.section(0, "metrics");
    yaml.raw(1, "enabled", if spec.metrics.enabled { "true" } else { "false" });
    yaml.int(1, "port", spec.metrics.port);
    yaml.section(0, "controlplane");
    yaml.int(1, "port", spec.control_plane.port);
    yaml.section(1, "jwt");
    let jwt = spec.identity.jwt.as_ref();
    yaml.string(2, "issuer", jwt.map_or("dittofs", |j| &j.issuer));
    yaml.string(2, "access_token_duration", jwt.map_or("15m", |j| &j.access_token_duration));
    yaml.string(2, "refresh_token_duration", jwt.map_or("168h", |j| &j.refresh_token_duration));
    yaml.section(0, "cache");
    yaml.string(1, "path", &spec.cache.path);
    yaml.string(1, "size", &spec.cache.size);
    yaml.section(0, "admin");
    yaml.string(1, "username", &spec.identity.admin.username);
    yaml.0
}

/// A block-style YAML mapping being written.
struct Yaml(String);

impl Yaml {
    fn key(&mut self, depth: usize, key: &str) {
        for _ in 0..depth {
            self.0.push_str("  ");
        }
        self.0.push_str(key);
        self.0.push(':');
    }

    fn comment(&mut self, text: &str) {
        self.0.push_str("# ");
        self.0.push_str(text);
        self.0.push('\n');
    }

    fn section(&mut self, depth: usize, key: &str) {
        self.key(depth, key);
        self.0.push('\n');
    }

    fn raw(&mut self, depth: usize, key: &str, value: &str) {
        self.key(depth, key);
        self.0.push(' ');
        self.0.push_str(value);
        self.0.push('\n');
    }

    fn int(&mut self, depth: usize, key: &str, value: i32) {
        self.key(depth, key);
        let _ = writeln!(self.0, " {value}");
    }

    fn string(&mut self, depth: usize, key: &str, value: &str) {
        self.key(depth, key);
        self.0.push(' ');
        quote(&mut self.0, value);
        self.0.push('\n');
    }
}

/// Appends `value` as a double-quoted scalar. YAML's double-quoted escapes are a
/// superset of JSON's; control and non-ASCII line-break characters are escaped too.
fn quote(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> DittoServerSpec {
        serde_json::from_value(value).expect("spec")
    }

    #[test]
    fn default_configuration() {
        let yaml = render("nas", &spec(json!({"storage": {"metadataSize": "10Gi"}})));
        let expected = r#"# Written by the operator for DittoServer nas; secrets come from the environment.
logging:
  level: "INFO"
  format: "json"
  output: "stdout"
telemetry:
  enabled: false
shutdown_timeout: "30s"
database:
  type: "sqlite"
  sqlite:
    path: "/data/controlplane/controlplane.db"
metrics:
  enabled: false
  port: 9090
controlplane:
  port: 8080
  jwt:
    issuer: "dittofs"
    access_token_duration: "15m"
    refresh_token_duration: "168h"
cache:
  path: "/data/cache"
  size: "1GB"
admin:
  username: "admin"
"#;
        assert_eq!(yaml, expected);
    }

    #[test]
    fn postgres_wins_whatever_the_type_says() {
        for spec in [
            spec(json!({"storage": {"metadataSize": "1Gi"}, "database": {"type": "sqlite",
                "postgresSecretRef": {"name": "pg", "key": "dsn"}}})),
            spec(json!({"storage": {"metadataSize": "1Gi"}, "percona": {"enabled": true}})),
        ] {
            let yaml = render("nas", &spec);
            assert!(yaml.contains("database:\n  type: \"postgres\"\nmetrics:"), "{yaml}");
            assert!(!yaml.contains("sqlite"), "{yaml}");
        }
    }

    #[test]
    fn values_cannot_break_out_of_their_scalar() {
        let hostile = "x\"\n  injected: true\\ \u{7}\u{2028}é";
        let yaml = render(
            "nas",
            &spec(json!({"storage": {"metadataSize": "1Gi"}, "cache": {"path": hostile},
                "identity": {"admin": {"username": "root"}, "jwt": {"secretRef": {"name": "jwt", "key": "k"},
                "issuer": "me", "accessTokenDuration": "1m", "refreshTokenDuration": "2h"}},
                "metrics": {"enabled": true, "port": 9100}})),
        );
        assert!(yaml.contains(r#"  path: "x\"\n  injected: true\\ \u0007\u2028é""#), "{yaml}");
        assert!(yaml.contains("metrics:\n  enabled: true\n  port: 9100\n"), "{yaml}");
        assert!(yaml.contains("    issuer: \"me\"\n    access_token_duration: \"1m\"\n"), "{yaml}");
        assert!(yaml.contains("admin:\n  username: \"root\"\n"), "{yaml}");

        // And a YAML parser reads back exactly the values.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let parsed: serde_json::Value = serde_yaml_ng::from_str(&yaml).expect("valid YAML");
            assert_eq!(parsed["cache"]["path"], hostile);
            assert_eq!(parsed["metrics"]["port"], 9100);
            assert_eq!(parsed["controlplane"]["jwt"]["refresh_token_duration"], "2h");
            assert_eq!(parsed.as_object().map(|o| o.len()), Some(8));
        }
    }
}
