//! The host's own status write does not reconcile the primary again, against the real
//! control plane: 50 primaries whose module writes their status once are each called
//! once, while a spec change, and a status write by someone else, still trigger.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use anyhow::Result;
use kube::api::{Patch, PatchParams};
use operator_support::*;
use reconcile_sdk::{Action, Manifest, Outcome};
use serde_json::json;
use std::time::Duration;

const SERVERS: usize = 50;

fn manifest() -> Manifest {
    Manifest {
        name: "status-once".into(),
        field_manager: "status-once".into(),
        ..configmap_mirror::manifest()
    }
}

/// Waits until the module has not been called for `quiet`; its call count then.
async fn settle(module: &NativeModule, quiet: Duration) -> Result<usize> {
    let mut seen = module.call_count();
    for _ in 0..40 {
        tokio::time::sleep(quiet).await;
        let now = module.call_count();
        if now == seen {
            return Ok(now);
        }
        seen = now;
    }
    anyhow::bail!("the module never went quiet: {seen} calls and counting")
}

#[tokio::test]
async fn the_hosts_own_status_write_triggers_no_reconcile() -> Result<()> {
    let (cluster, client) = cluster().await?;
    let ns = TestNamespace::create(cluster, "self-trigger").await?;
    let ns = ns.name().to_owned();
    // Writes the status the spec asks for, and nothing once it is there: a converged
    // call writes nothing, so every call after the first is one the host caused.
    let module = NativeModule::new(manifest(), |snapshot| {
        let wanted = json!({"observed": snapshot.object["spec"]["data"]});
        if snapshot.object.get("status") == Some(&wanted) {
            return Outcome::actions(Vec::new());
        }
        Outcome::actions(vec![Action::PatchStatus { status: wanted }])
    });
    let op = start_operator(&client, module.clone(), &ns).await?;
    for i in 0..SERVERS {
        create_mirror(&client, &ns, &format!("server-{i}"), json!({"data": {"n": i.to_string()}})).await?;
    }
    let api = mirror_api(&client, &ns);
    for i in 0..SERVERS {
        let name = format!("server-{i}");
        eventually(&format!("{name}'s status"), || async {
            let object = api.get(&name).await?;
            Ok(object.data.get("status").filter(|s| s["observed"]["n"] == i.to_string().as_str()).map(|_| ()))
        })
        .await?;
    }
    let total = settle(&module, Duration::from_secs(3)).await?;
    eprintln!("{SERVERS} primaries converged with {total} module calls");
    for i in 0..SERVERS {
        let name = format!("server-{i}");
        assert_eq!(calls_of(&module, &name), 1, "{name}: its own status write reconciled it again");
    }

    // A spec change still triggers, and so does a status write by another manager.
    patch_spec(&client, &ns, "server-0", json!({"data": {"n": "changed"}})).await?;
    eventually("a call for the spec change", || async {
        Ok((calls_of(&module, "server-0") >= 2).then_some(()))
    })
    .await?;
    let someone = PatchParams { field_manager: Some("someone".into()), ..PatchParams::default() };
    api.patch_status("server-1", &someone, &Patch::Merge(json!({"status": {"observed": {"n": "tampered"}}})))
        .await?;
    eventually("a call for the foreign status write", || async {
        Ok((calls_of(&module, "server-1") >= 2).then_some(()))
    })
    .await?;
    settle(&module, Duration::from_secs(3)).await?;
    // Each of those wrote the status once more, and that echo did not trigger either.
    assert_eq!(calls_of(&module, "server-0"), 2);
    assert_eq!(calls_of(&module, "server-1"), 2);
    op.shutdown().await;
    Ok(())
}
