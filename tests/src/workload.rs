//! What the real workload controllers report, read back by the tests.
//!
//! The local cluster runs the StatefulSet controller, the scheduler and kwok's fake
//! nodes (`tests/cluster/up.sh`), so a StatefulSet's pods really are created,
//! scheduled, replaced on a template change and reported Running and Ready; no test
//! writes a StatefulSet's status. These helpers wait for the state that those
//! controllers produce.

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use crate::wait::{DEFAULT_TIMEOUT, wait_until};

/// True when the StatefulSet controller has seen the current spec and finished
/// rolling it out: every desired replica exists, runs the update revision and is
/// ready. At zero replicas, when every pod is gone.
pub fn rollout_complete(sts: &StatefulSet) -> bool {
    let desired = sts.spec.replicas.unwrap_or(1);
    let Some(status) = sts.status.as_ref() else { return false };
    let observed =
        status.observed_generation.is_some() && status.observed_generation == sts.metadata.generation;
    let revision_done = desired == 0
        || (status.update_revision.is_some() && status.current_revision == status.update_revision);
    observed
        && revision_done
        && status.replicas == desired
        && status.ready_replicas.unwrap_or(0) == desired
        && status.updated_replicas.unwrap_or(0) == desired
}

/// Waits until StatefulSet `name`'s rollout is complete ([`rollout_complete`]), as
/// the StatefulSet controller and kwok report it; returns the StatefulSet.
pub async fn wait_rollout(api: &Api<StatefulSet>, name: &str) -> Result<StatefulSet> {
    let waited = wait_until(
        format!("StatefulSet {name}: every replica updated and ready"),
        DEFAULT_TIMEOUT,
        || async move { Ok(api.get_opt(name).await?.filter(rollout_complete)) },
    )
    .await;
    match waited {
        Ok(sts) => Ok(sts),
        // The state it stopped in says which controller did not do its part.
        Err(error) => Err(match api.get_opt(name).await {
            Ok(Some(sts)) => error.context(format!("StatefulSet {name} status: {:?}", sts.status)),
            Ok(None) => error.context(format!("StatefulSet {name} does not exist")),
            Err(read) => error.context(format!("cannot read StatefulSet {name}: {read}")),
        }),
    }
}

/// The pods of StatefulSet `name` (by their ordinal names `name-0` …), as they are.
pub async fn statefulset_pods(pods: &Api<Pod>, sts: &StatefulSet) -> Result<Vec<Pod>> {
    let name = sts.metadata.name.as_deref().context("a StatefulSet without a name")?;
    let desired = sts.spec.replicas.unwrap_or(1);
    let mut found = Vec::new();
    for ordinal in 0..desired {
        let pod_name = format!("{name}-{ordinal}");
        found.push(pods.get(&pod_name).await.with_context(|| format!("pod {pod_name}"))?);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(replicas: i32, generation: i64, status: serde_json::Value) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "nas", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "serviceName": "nas", "template": {}},
            "status": status,
        }))
        .expect("a StatefulSet")
    }

    #[test]
    fn a_finished_rollout_is_complete() {
        let done = json!({"observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                          "currentRevision": "nas-b", "updateRevision": "nas-b"});
        assert!(rollout_complete(&sts(1, 2, done)));
    }

    #[test]
    fn a_rollout_is_not_complete_while_anything_lags() {
        let base = json!({"observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                          "currentRevision": "nas-b", "updateRevision": "nas-b"});
        for (field, value) in [
            ("observedGeneration", json!(1)),
            ("readyReplicas", json!(0)),
            ("updatedReplicas", json!(0)),
            ("currentRevision", json!("nas-a")),
            ("replicas", json!(2)),
        ] {
            let mut status = base.clone();
            status[field] = value;
            assert!(!rollout_complete(&sts(1, 2, status)), "complete with {field} changed");
        }
        assert!(!rollout_complete(&sts(1, 2, serde_json::Value::Null)), "complete without a status");
    }

    #[test]
    fn zero_replicas_are_complete_once_the_pods_are_gone() {
        let gone = json!({"observedGeneration": 3, "replicas": 0, "currentRevision": "nas-b", "updateRevision": "nas-b"});
        assert!(rollout_complete(&sts(0, 3, gone)));
        let going = json!({"observedGeneration": 3, "replicas": 1, "readyReplicas": 1});
        assert!(!rollout_complete(&sts(0, 3, going)));
    }
}
