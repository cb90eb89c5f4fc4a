//! What one outcome may cost, against the real control plane, with hostile native
//! modules: outcomes over a cap write nothing and say why; a requeue of 2^64-1 s loses
//! no worker; a refused event never stops the batch, and a long note is cut by bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use anyhow::Result;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use operator_support::*;
use reconcile_sdk::{Action, EventType, Manifest, Outcome};
use serde_json::json;
use wasm_operator::ActionLabels;

const LABEL: &str = configmap_mirror::OWNER_LABEL;
const FINALIZER: &str = configmap_mirror::FINALIZER;

fn manifest() -> Manifest {
    Manifest { name: "bounded".into(), field_manager: "bounded".into(), ..configmap_mirror::manifest() }
}

fn config_map(owner: &str, name: &str) -> Action {
    Action::Apply {
        object: json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {LABEL: owner}}, "data": {"k": "v"}}),
    }
}

fn event(message: String) -> Action {
    Action::Event { event_type: EventType::Normal, reason: "Bounded".into(), message }
}

/// Waits until the module was called `times` times for the primary `name`.
async fn wait_called(module: &NativeModule, name: &str, times: usize) -> Result<()> {
    eventually(&format!("{times} calls for {name}"), || async {
        Ok((calls_of(module, name) >= times).then_some(()))
    })
    .await
}

#[tokio::test]
async fn an_outcome_over_a_cap_writes_nothing_and_says_which_cap() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "bounds-caps").await?;
    let ns = ns.name().to_owned();
    let module = NativeModule::new(manifest(), |snapshot| {
        let name = name_of(&snapshot);
        let actions = match name.as_str() {
            "many-actions" => (0..300).map(|i| config_map(&name, &format!("{name}-{i}"))).collect(),
            "many-events" => {
                let mut actions: Vec<Action> = (0..100).map(|i| event(format!("event {i}"))).collect();
                actions.push(config_map(&name, &format!("{name}-0")));
                actions
            }
            // 300,000 small numbers: about 600 KB of JSON, many times that as a Value.
            "big-status" => vec![
                config_map(&name, &format!("{name}-0")),
                Action::PatchStatus { status: json!({"numbers": vec![0; 300_000]}) },
            ],
            _ => Vec::new(),
        };
        Outcome::actions(actions)
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    for name in ["many-actions", "many-events", "big-status"] {
        create_mirror(&client, &ns, name, json!({})).await?;
    }
    wait_last_failure(&module, "many-actions", "300 actions, more than the limit of 256").await?;
    wait_last_failure(&module, "many-events", "100 events, more than the limit of 16").await?;
    wait_last_failure(&module, "big-status", "the status is over the limit of 524288 bytes").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for name in ["many-actions-0", "many-events-0", "big-status-0"] {
        assert!(cms.get_opt(name).await?.is_none(), "{name} was written from a refused outcome");
    }
    assert_eq!(op.metrics.writes_total(), 0, "a refused outcome wrote");
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_requeue_of_u64_max_seconds_loses_no_worker() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "bounds-requeue").await?;
    let ns = ns.name().to_owned();
    let module = NativeModule::new(manifest(), |_| Outcome::Actions {
        actions: Vec::new(),
        requires: Vec::new(),
        requeue_after_seconds: Some(u64::MAX),
    });
    // Four workers (start_operator's concurrency), four such primaries first.
    let op = start_operator(&client, module.clone(), &ns).await?;
    for i in 0..4 {
        create_mirror(&client, &ns, &format!("forever-{i}"), json!({})).await?;
    }
    for i in 0..4 {
        wait_called(&module, &format!("forever-{i}"), 1).await?;
    }
    create_mirror(&client, &ns, "fifth", json!({})).await?;
    wait_called(&module, "fifth", 1).await?;
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_long_note_is_cut_by_bytes_and_a_failed_event_never_stops_the_batch() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "bounds-events").await?;
    let ns = ns.name().to_owned();
    // 1,000 two-byte characters: 2,000 bytes, over the events API's 1 kB. Cut by
    // characters, as the host once did, the note stayed 2,000 bytes and the write
    // failed, which stopped the batch before its finalizer.
    let module = NativeModule::new(manifest(), |snapshot| {
        let long = event("é".repeat(1000));
        let finalizer = Action::AddFinalizer { finalizer: FINALIZER.into() };
        let done = snapshot.object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        Outcome::actions(if done { Vec::new() } else { vec![long, finalizer] })
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    create_mirror(&client, &ns, "m", json!({})).await?;
    let mirrors = mirror_api(&client, &ns);
    eventually("the finalizer after the event", || async {
        let m = mirrors.get("m").await?;
        Ok(m.metadata.finalizers.unwrap_or_default().iter().any(|f| f == FINALIZER).then_some(()))
    })
    .await?;
    let notes = eventually("the event", || async {
        let found = events(&client, &ns, "m", "Bounded").await?;
        Ok((!found.is_empty()).then_some(found))
    })
    .await?;
    let (_, note) = &notes[0];
    assert!(note.len() <= 1024 && note.len() >= 1022, "note of {} bytes", note.len());
    assert!(note.chars().all(|c| c == 'é'), "cut inside a character");
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_panicking_reconcile_loses_no_worker_and_is_retried() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "bounds-panic").await?;
    let ns = ns.name().to_owned();
    // The native module runs in the worker's task: its panic is one in the reconcile.
    let module = NativeModule::new(manifest(), |snapshot| {
        if name_of(&snapshot).starts_with("boom") {
            panic!("injected panic");
        }
        Outcome::actions(Vec::new())
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    // More panicking primaries than workers: without the catch, none would be left.
    for i in 0..6 {
        create_mirror(&client, &ns, &format!("boom-{i}"), json!({})).await?;
    }
    // Each retried: called again after its panic.
    for i in 0..6 {
        wait_called(&module, &format!("boom-{i}"), 2).await?;
    }
    create_mirror(&client, &ns, "calm", json!({})).await?;
    wait_called(&module, "calm", 1).await?;
    assert!(op.metrics.reconcile_panics.get() >= 12, "{}", op.metrics.reconcile_panics.get());
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_refused_event_never_stops_the_batch() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "bounds-refused-event").await?;
    let ns = ns.name().to_owned();
    // The events API refuses this reporting controller (not a qualified name), so every
    // event fails at the API server; the finalizer after it must still be added.
    let manifest = Manifest { field_manager: "bounded events".into(), ..manifest() };
    let module = NativeModule::new(manifest, |snapshot| {
        let done = snapshot.object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        let actions = vec![event("refused".into()), Action::AddFinalizer { finalizer: FINALIZER.into() }];
        Outcome::actions(if done { Vec::new() } else { actions })
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    create_mirror(&client, &ns, "m", json!({})).await?;
    let mirrors = mirror_api(&client, &ns);
    eventually("the finalizer after the refused event", || async {
        let m = mirrors.get("m").await?;
        Ok(m.metadata.finalizers.unwrap_or_default().iter().any(|f| f == FINALIZER).then_some(()))
    })
    .await?;
    let refused =
        op.metrics.actions.get_or_create(&ActionLabels { op: "event".into(), result: "error".into() }).get();
    assert!(refused >= 1, "the refused event was not counted");
    assert!(events(&client, &ns, "m", "Bounded").await?.is_empty(), "the event was written after all");
    op.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_failing_action_with_requeue_zero_is_retried_with_backoff_not_in_a_loop() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "bounds-retry").await?;
    let ns = ns.name().to_owned();
    // An apply the API server refuses on every attempt (an invalid data key).
    let module = NativeModule::new(manifest(), |snapshot| {
        let name = name_of(&snapshot);
        let refused = Action::Apply {
            object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("{name}-bad"), "labels": {LABEL: name}},
                "data": {"not a valid key": "v"}}),
        };
        Outcome::Actions { actions: vec![refused], requires: Vec::new(), requeue_after_seconds: Some(0) }
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    create_mirror(&client, &ns, "m", json!({})).await?;
    wait_called(&module, "m", 3).await?;
    // The test backoff is 200 ms doubling to 2 s: a handful of attempts in the next 6 s.
    // Retried at the module's 0 s, it was hundreds. A count, not a time, is asserted.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let calls = calls_of(&module, "m");
    assert!(calls < 30, "{calls} attempts: the failing action is retried in a loop");
    op.shutdown().await;
    Ok(())
}
