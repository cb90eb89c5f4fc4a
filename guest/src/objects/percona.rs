//! The PerconaPGCluster `<name>-postgres` (only with `percona.enabled`).
//!
//! It is created once and never overwritten: users may tune it. It carries a
//! controller ownerReference to the DittoServer only while `deleteWithServer` is true,
//! so that no deletion propagation policy can cascade to the database otherwise.
//!
//! Server-side apply removes fields the field manager owned but leaves out of a later
//! apply, so after creation the module never applies a reduced object: adopting the
//! cluster (adding the ownerReference) applies the observed spec verbatim, and
//! releasing it is an `orphan` action, which touches nothing but ownerReferences.

use reconcile_sdk::Action;
use serde_json::{Map, Value, json};

use crate::api::{DittoServerSpec, PerconaSpec};
use crate::input::Primary;
use crate::meta::Related;
use crate::names::{self, OWNER_LABEL, PERCONA_API_VERSION, PERCONA_KIND, PERCONA_USER};

/// `crVersion` of the clusters the module creates.
pub const CR_VERSION: &str = "2.8.0";
/// PostgreSQL major version of the clusters the module creates.
pub const POSTGRES_VERSION: u32 = 16;

/// What the module knows of the cluster's readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness<'a> {
    /// No cluster observed.
    NotFound,
    /// Observed, with this `status.state` (or none yet), not `ready`.
    NotReady(Option<&'a str>),
    /// `status.state` is `ready`.
    Ready,
}

/// The readiness of the observed cluster.
pub fn readiness<'a>(observed: Option<&'a Related<'a>>) -> Readiness<'a> {
    match observed {
        None => Readiness::NotFound,
        Some(cluster) => match cluster.status.state.as_deref() {
            Some("ready") => Readiness::Ready,
            state => Readiness::NotReady(state),
        },
    }
}

/// Whether the cluster should carry a controller reference to its DittoServer.
pub fn wants_owner_reference(spec: &PerconaSpec) -> bool {
    spec.enabled && spec.delete_with_server
}

/// Queues what the cluster needs: creation, adoption (an ownerReference added) or
/// release (`orphan`). A cluster that Percona was disabled for is released too, so
/// that deleting the DittoServer can never take its data along.
pub fn plan(
    owner: &Primary,
    spec: &DittoServerSpec,
    observed: Option<&Related<'_>>,
    actions: &mut Vec<Action>,
) {
    let wants_reference = wants_owner_reference(&spec.percona);
    match observed {
        None if spec.percona.enabled => actions.push(Action::Apply { object: build(owner, spec) }),
        None => {}
        Some(cluster) => {
            let has_reference = cluster.has_owner_reference(&owner.uid);
            if wants_reference && !has_reference {
                if let Some(object) = adopt(owner, cluster) {
                    actions.push(Action::Apply { object });
                }
            } else if !wants_reference && has_reference {
                actions.push(orphan(&owner.name));
            }
        }
    }
}

/// The action that removes every ownerReference to the DittoServer from its cluster.
pub fn orphan(server: &str) -> Action {
    Action::Orphan {
        api_version: PERCONA_API_VERSION.into(),
        kind: PERCONA_KIND.into(),
        name: names::percona_cluster(server),
    }
}

/// The cluster as first created.
pub fn build(owner: &Primary, spec: &DittoServerSpec) -> Value {
    let percona = &spec.percona;
    let mut claim = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": percona.storage_size}},
    });
    if let (Some(class), Some(claim)) = (&percona.storage_class_name, claim.as_object_mut()) {
        claim.insert("storageClassName".into(), class.as_str().into());
    }
    // Values built elsewhere are moved in by index: `json!` would copy them.
    let mut instance = json!({"name": "instance1", "replicas": percona.replicas});
    instance["dataVolumeClaimSpec"] = claim;
    let mut cluster = json!({
        "apiVersion": PERCONA_API_VERSION,
        "kind": PERCONA_KIND,
        "spec": {
            "crVersion": CR_VERSION,
            "postgresVersion": POSTGRES_VERSION,
            "users": [{"name": PERCONA_USER, "databases": [percona.database_name]}],
        },
    });
    cluster["metadata"] = metadata(owner, wants_owner_reference(percona));
    cluster["spec"]["instances"] = vec![instance].into();
    cluster["spec"]["backups"] = backups(&owner.name, percona);
    cluster
}

fn metadata(owner: &Primary, with_reference: bool) -> Value {
    let mut metadata = json!({
        "name": names::percona_cluster(&owner.name),
        "namespace": &owner.namespace,
        "labels": {OWNER_LABEL: &owner.name},
    });
    if with_reference && let Some(metadata) = metadata.as_object_mut() {
        metadata.insert("ownerReferences".into(), vec![owner.controller_reference()].into());
    }
    metadata
}

/// pgBackRest to S3 (repo1), or backups disabled.
fn backups(server: &str, percona: &PerconaSpec) -> Value {
    let backup = &percona.backup;
    if !backup.enabled {
        return json!({"enabled": false});
    }
    let mut s3 = Map::new();
    s3.insert("bucket".into(), backup.bucket.as_deref().unwrap_or_default().into());
    if let Some(endpoint) = &backup.endpoint {
        s3.insert("endpoint".into(), endpoint.as_str().into());
    }
    s3.insert("region".into(), backup.region.as_str().into());
    let mut pgbackrest = json!({
        "global": {
            "repo1-path": format!("/pgbackrest/{server}/repo1"),
            "repo1-retention-full": backup.retention_days.to_string(),
            "repo1-retention-full-type": "time",
            "repo1-s3-uri-style": "path",
        },
        "repos": [{
            "name": "repo1",
            "schedules": {"full": backup.full_schedule, "incremental": backup.incr_schedule},
        }],
    });
    pgbackrest["repos"][0]["s3"] = s3.into();
    if let (Some(credentials), Some(pgbackrest)) =
        (&backup.credentials_secret_ref, pgbackrest.as_object_mut())
    {
        pgbackrest.insert("configuration".into(), json!([{"secret": {"name": credentials.name}}]));
    }
    let mut backups = json!({"enabled": true});
    backups["pgbackrest"] = pgbackrest;
    backups
}

/// The observed cluster with the DittoServer's controller reference: its spec
/// verbatim, so that the apply changes nothing else. `None` when the observed cluster
/// has no spec to keep.
fn adopt(owner: &Primary, cluster: &Related<'_>) -> Option<Value> {
    let spec: Map<String, Value> = serde_json::from_str(cluster.spec?.get()).ok()?;
    let mut adopted = json!({"apiVersion": PERCONA_API_VERSION, "kind": PERCONA_KIND});
    adopted["metadata"] = metadata(owner, true);
    adopted["spec"] = spec.into();
    Some(adopted)
}
