//! Errors at apply time: the CRD's CEL rules (`x-kubernetes-validations`) make the
//! API server refuse a DittoServer whose fields contradict each other, with a
//! message that names the field and the fix, where the server would otherwise be
//! stored and end in phase Failed.
//!
//! Every bad spec here passes the CRD's schema keywords (types, bounds, patterns):
//! only its CEL rule refuses it, so each case fails without its rule. Each is also a
//! spec the module itself refuses (`validate::problems`, kept as defence), and each
//! good spec one it accepts: the rules follow the module's checks, no stricter and no
//! looser. No host runs: this is the API server alone.

use anyhow::{Context as _, Result, bail, ensure};
use dittofs_reconciler::api::DittoServerSpec;
use dittofs_reconciler::validate;
use e2e::Scenario;
use kube::ResourceExt as _;
use kube::api::ListParams;
use serde_json::{Value, json};

/// `extra` with the one required field added.
fn spec(extra: Value) -> Value {
    let mut spec = json!({"storage": {"metadataSize": "1Gi"}});
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    spec
}

/// The module's problems with `spec` for a server `name`.
fn module_problems(name: &str, spec: &Value) -> Result<Vec<String>> {
    let decoded: DittoServerSpec =
        serde_json::from_value(spec.clone()).with_context(|| format!("{name}: the spec does not decode"))?;
    Ok(validate::problems(name, &decoded))
}

/// The API server's refusal of a write, as `(code, message)`.
fn refusal(error: &anyhow::Error) -> Option<(u16, String)> {
    error.chain().find_map(|e| match e.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) => Some((status.code, status.message.clone())),
        _ => None,
    })
}

/// Checks that a write was refused as invalid, naming `field` with `message`.
fn ensure_refused<T>(case: &str, result: Result<T>, field: &str, message: &str) -> Result<()> {
    let error = match result {
        Ok(_) => bail!("{case}: the API server accepted it"),
        Err(error) => error,
    };
    let (code, text) = refusal(&error).with_context(|| format!("{case}: not an API error: {error:#}"))?;
    ensure!(code == 422, "{case}: {code} {text}");
    ensure!(text.contains(&format!("{field}: ")), "{case}: the refusal does not name {field}: {text}");
    ensure!(text.contains(message), "{case}: the refusal does not say {message:?}: {text}");
    Ok(())
}

/// One bad spec per rule: `(server name, spec, field, message)`.
fn bad_specs() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let long_name = "a2345678901234567890123456789012345678901234567890123";
    vec![
        (
            "api-on-nfs",
            spec(json!({"nfsPort": 8080})),
            "spec.controlPlane.port",
            "spec.controlPlane.port is already used by spec.nfsPort: give one of them another port \
             (unless set, spec.controlPlane.port is 8080 and spec.nfsPort is 2049)",
        ),
        (
            "metrics-on-nfs",
            spec(json!({"metrics": {"enabled": true, "port": 2049}})),
            "spec.metrics.port",
            "spec.metrics.port is already used by spec.nfsPort: give one of them another port",
        ),
        (
            "metrics-on-api",
            spec(json!({"metrics": {"enabled": true}, "controlPlane": {"port": 9090}})),
            "spec.metrics.port",
            "spec.metrics.port is already used by spec.controlPlane.port: give one of them another port",
        ),
        (
            "smb-on-nfs",
            spec(json!({"smb": {"enabled": true, "port": 2049}})),
            "spec.smb.port",
            "spec.smb.port is already used by spec.nfsPort: give one of them another port",
        ),
        (
            "smb-on-api",
            spec(json!({"smb": {"enabled": true, "port": 8080}})),
            "spec.smb.port",
            "spec.smb.port is already used by spec.controlPlane.port: give one of them another port",
        ),
        (
            "smb-on-metrics",
            spec(json!({"smb": {"enabled": true, "port": 9191}, "metrics": {"enabled": true, "port": 9191}})),
            "spec.smb.port",
            "spec.smb.port is already used by spec.metrics.port: give one of them another port",
        ),
        (
            "postgres-without-database",
            spec(json!({"database": {"type": "postgres"}})),
            "spec.database.type",
            "spec.database.type is postgres, but neither spec.database.postgresSecretRef nor \
             spec.percona.enabled is set: set one of them, or use type sqlite",
        ),
        (
            "percona-storage-size",
            spec(json!({"percona": {"enabled": true, "storageSize": "lots"}})),
            "spec.percona.storageSize",
            "spec.percona.storageSize must be a positive quantity such as 10Gi when \
             spec.percona.enabled is true",
        ),
        (
            "percona-storage-zero",
            spec(json!({"percona": {"enabled": true, "storageSize": "0Gi"}})),
            "spec.percona.storageSize",
            "spec.percona.storageSize must be a positive quantity",
        ),
        (
            "percona-database-name",
            spec(json!({"percona": {"enabled": true, "databaseName": ""}})),
            "spec.percona.databaseName",
            "spec.percona.databaseName must not be empty when spec.percona.enabled is true",
        ),
        (
            "backup-without-bucket",
            spec(json!({"percona": {"enabled": true, "backup": {"enabled": true}}})),
            "spec.percona.backup.bucket",
            "spec.percona.backup.bucket is required when spec.percona.enabled and \
             spec.percona.backup.enabled are true",
        ),
        (
            "backup-empty-bucket",
            spec(json!({"percona": {"enabled": true, "backup": {"enabled": true, "bucket": ""}}})),
            "spec.percona.backup.bucket",
            "spec.percona.backup.bucket is required",
        ),
        // A DNS subdomain (what the API server asks of any name), not a DNS label.
        (
            "dotted.name",
            spec(json!({})),
            "metadata.name",
            "metadata.name must be a DNS label (lower-case letters, digits and '-', starting with a letter \
             and ending with a letter or digit): the server's Services are named after it",
        ),
        (
            long_name,
            spec(json!({})),
            "metadata.name",
            "metadata.name must be at most 52 characters long: the server's pods carry a label \
             `<name>-<10 characters>` of at most 63",
        ),
    ]
}

/// Specs every rule lets through, among them the ones a rule's condition exempts
/// (a clash with a disabled feature, Percona settings while Percona is off).
fn good_specs() -> Vec<(&'static str, Value)> {
    vec![
        (
            "everything",
            spec(json!({
                "nfsPort": 2049, "controlPlane": {"port": 8080},
                "metrics": {"enabled": true, "port": 9090}, "smb": {"enabled": true, "port": 445},
                "database": {"type": "postgres"},
                "percona": {"enabled": true, "storageSize": "2Gi", "databaseName": "ditto",
                            "backup": {"enabled": true, "bucket": "backups"}},
            })),
        ),
        (
            "disabled-features",
            spec(json!({
                "metrics": {"port": 2049}, "smb": {"port": 8080},
                "database": {"type": "postgres", "postgresSecretRef": {"name": "pg", "key": "password"}},
                "percona": {"storageSize": "lots", "databaseName": "", "backup": {"enabled": true}},
            })),
        ),
        ("smb-and-metrics-off", spec(json!({"smb": {"enabled": true, "port": 9090}}))),
        ("a234567890123456789012345678901234567890123456789012", spec(json!({}))),
    ]
}

/// Each bad spec is refused at creation, with its message, and nothing is stored.
#[tokio::test]
async fn contradicting_specs_are_refused_at_apply_time() -> Result<()> {
    let s = Scenario::new("cel-refused").await?;
    for (name, spec, field, message) in bad_specs() {
        let problems = module_problems(name, &spec)?;
        ensure!(problems.iter().any(|p| p.starts_with(field)), "{name}: the module accepts it: {problems:?}");
        ensure_refused(name, s.create_server(name, spec).await, field, message)?;
    }
    let stored = s.servers().list(&ListParams::default()).await?.items;
    ensure!(stored.is_empty(), "stored: {:?}", stored.iter().map(|o| o.name_any()).collect::<Vec<_>>());
    Ok(())
}

/// The good specs are accepted and stored.
#[tokio::test]
async fn consistent_specs_are_accepted() -> Result<()> {
    let s = Scenario::new("cel-accepted").await?;
    let mut names = Vec::new();
    for (name, spec) in good_specs() {
        let problems = module_problems(name, &spec)?;
        ensure!(problems.is_empty(), "{name}: the module refuses it: {problems:?}");
        s.create_server(name, spec).await?;
        names.push(name.to_owned());
    }
    let mut stored: Vec<_> =
        s.servers().list(&ListParams::default()).await?.items.iter().map(|o| o.name_any()).collect();
    stored.sort();
    names.sort();
    ensure!(stored == names, "stored {stored:?}, created {names:?}");
    Ok(())
}

/// The rules hold for updates too: a stored server cannot be changed into a
/// contradiction, and fixing one field of a pair is enough.
#[tokio::test]
async fn an_update_into_a_contradiction_is_refused() -> Result<()> {
    let s = Scenario::new("cel-update").await?;
    s.create_server("server", spec(json!({"metrics": {"port": 2049}}))).await?;
    ensure_refused(
        "enabling metrics on the NFS port",
        s.patch_spec("server", json!({"metrics": {"enabled": true}})).await,
        "spec.metrics.port",
        "spec.metrics.port is already used by spec.nfsPort",
    )?;
    ensure_refused(
        "enabling backups without a bucket",
        s.patch_spec("server", json!({"percona": {"enabled": true, "backup": {"enabled": true}}})).await,
        "spec.percona.backup.bucket",
        "spec.percona.backup.bucket is required",
    )?;
    let fixed = s.patch_spec("server", json!({"metrics": {"enabled": true, "port": 9091}})).await?;
    ensure!(
        fixed.data["spec"]["metrics"] == json!({"enabled": true, "port": 9091}),
        "{}",
        fixed.data["spec"]
    );
    Ok(())
}
