//! The Secrets the pod reads, and their digests.
//!
//! The module never sees a secret value: the manifest declares Secrets `digestOnly`,
//! so the host replaces each `data` value with `sha256:<hex>`. The digests go into the
//! config hash, so that a changed Secret rolls the pod. A Secret the snapshot does not
//! carry yet is asked for through `requires`.

use reconcile_sdk::{RequiredObject, Requirement};
use serde_json::Value;

use crate::api::DittoServerSpec;
use crate::hash::ConfigHasher;
use crate::names;

/// The names of the Secrets the server's pod reads, sorted and without duplicates.
pub fn referenced(name: &str, spec: &DittoServerSpec) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some(jwt) = &spec.identity.jwt {
        secrets.push(jwt.secret_ref.name.clone());
    }
    if let Some(password) = &spec.identity.admin.password_secret_ref {
        secrets.push(password.name.clone());
    }
    if spec.percona.enabled {
        secrets.push(names::percona_user_secret(name));
    } else if let Some(postgres) = &spec.database.postgres_secret_ref {
        secrets.push(postgres.name.clone());
    }
    if let Some(s3) = &spec.s3 {
        secrets.push(s3.credentials_secret_ref.secret_name.clone());
    }
    secrets.sort_unstable();
    secrets.dedup();
    secrets
}

/// A requirement for each Secret of `names`.
///
/// The final outcome lists them all, answered or not: the host remembers a primary's
/// requirements from its last outcome and reconciles it again when one of them
/// changes, which is how a rotated Secret rolls the pod.
pub fn requirements(names: &[String]) -> Vec<Requirement> {
    names
        .iter()
        .map(|name| Requirement { api_version: "v1".into(), kind: "Secret".into(), name: name.clone() })
        .collect()
}

/// The Secrets among `names` that `required` does not answer yet.
pub fn missing(names: &[String], required: &[RequiredObject]) -> Vec<Requirement> {
    requirements(names)
        .into_iter()
        .filter(|requirement| !required.iter().any(|answer| answer.answers(requirement)))
        .collect()
}

/// Adds each Secret's name and data digests (in key order) to the config hash; a
/// Secret that does not exist counts as such, so that its creation rolls the pod.
pub fn hash_digests(hasher: &mut ConfigHasher, names: &[String], required: &[RequiredObject]) {
    for name in names {
        hasher.part(name.as_bytes());
        let object = required
            .iter()
            .find(|answer| answer.kind == "Secret" && answer.api_version == "v1" && &answer.name == name)
            .and_then(|answer| answer.object.as_ref());
        match object.map(|secret| secret.get("data")) {
            None => {
                hasher.part(b"absent");
            }
            Some(data) => {
                hasher.part(b"present");
                // `data` is a JSON object, whose keys serde_json keeps sorted.
                for (key, digest) in data.and_then(Value::as_object).into_iter().flatten() {
                    hasher.part(key.as_bytes()).part(digest.as_str().unwrap_or_default().as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(name: &str, object: Option<Value>) -> RequiredObject {
        RequiredObject { api_version: "v1".into(), kind: "Secret".into(), name: name.into(), object }
    }

    #[test]
    fn lists_every_secret_the_pod_reads() {
        let spec: DittoServerSpec = serde_json::from_value(json!({
            "storage": {"metadataSize": "1Gi"},
            "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "k"}},
                         "admin": {"passwordSecretRef": {"name": "admin", "key": "p"}}},
            "database": {"postgresSecretRef": {"name": "pg", "key": "dsn"}},
            "s3": {"credentialsSecretRef": {"secretName": "jwt"}}
        }))
        .expect("spec");
        assert_eq!(referenced("nas", &spec), ["admin", "jwt", "pg"]);
        let mut percona = spec.clone();
        percona.percona.enabled = true;
        assert_eq!(referenced("nas", &percona), ["admin", "jwt", "nas-postgres-pguser-dittofs"]);
    }

    #[test]
    fn missing_secrets_are_required() {
        let names = vec!["a".to_string(), "b".to_string()];
        let missing = missing(&names, &[answer("a", None)]);
        assert_eq!(
            missing,
            [Requirement { api_version: "v1".into(), kind: "Secret".into(), name: "b".into() }]
        );
    }

    #[test]
    fn digests_change_the_hash() {
        let names = vec!["s".to_string()];
        let hash = |required: &[RequiredObject]| {
            let mut hasher = ConfigHasher::new();
            hash_digests(&mut hasher, &names, required);
            hasher.finish()
        };
        let absent = hash(&[answer("s", None)]);
        let empty = hash(&[answer("s", Some(json!({})))]);
        let v1 = hash(&[answer("s", Some(json!({"data": {"k": "sha256:1"}})))]);
        let v2 = hash(&[answer("s", Some(json!({"data": {"k": "sha256:2"}})))]);
        let other = hash(&[answer("t", Some(json!({"data": {"k": "sha256:1"}})))]);
        assert_eq!(absent, other);
        let all = [&absent, &empty, &v1, &v2];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
