//! `wasm-operator snapshot`: prints exactly the snapshot `run` would pass for one
//! primary, requirements answered (one decision's worth of module calls), as JSON.

use super::args::SnapshotArgs;
use super::failure::Failure;
use crate::lifecycle::{TrustPolicy, load_module};
use crate::observe::RestClientMetrics;
use crate::{ObjectKey, capture, connect};

/// `wasm-operator snapshot`.
pub async fn snapshot(args: SnapshotArgs) -> Result<(), Failure> {
    let (namespace, name) = args
        .object
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| {
            Failure::cannot_run(format_args!("invalid object {:?}: expected NAMESPACE/NAME", args.object))
        })?;
    let key = ObjectKey::new(namespace, name);
    // Nothing the module returns is applied here, so it need not be a trusted one.
    let module = load_module(&args.module, &args.sandbox.config(1), 1, &TrustPolicy::default())
        .await
        .map_err(|err| Failure::failed_with(None, &err))?;
    let (client, server) = connect(&args.cluster.config(), &RestClientMetrics::default())
        .await
        .map_err(|err| Failure::failed_with(None, &err))?;
    let snapshot = capture(&client, &server, module.as_ref(), &key)
        .await
        .map_err(|err| Failure::failed_with(None, &err))?;
    let json = serde_json::to_string_pretty(&snapshot)
        .map_err(|err| Failure::cannot_run_with(Some("cannot encode the snapshot"), &err))?;
    println!("{json}");
    Ok(())
}
