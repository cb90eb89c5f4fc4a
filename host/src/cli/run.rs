//! `wasm-operator run`: the flags and the pod's environment become an
//! [`OperatorConfig`], and the operator runs until SIGTERM or SIGINT.

use super::args::RunArgs;
use super::failure::Failure;
use crate::control::{Backoff, LeaseConfig};
use crate::lifecycle::{ModuleSource, OciSource, load_module};
use crate::observe::RestClientMetrics;
use crate::{OperatorConfig, Scope, connect, start_from_source};
use std::time::{Duration, SystemTime};

/// `wasm-operator run`.
pub async fn run(args: RunArgs) -> Result<(), Failure> {
    if let Some(addr) = &args.http_addr {
        return Err(Failure::cannot_run(format_args!(
            "--http-addr={addr} was split in two: --metrics-bind-address for /metrics (default :8080) and \
             --health-probe-bind-address for /healthz, /readyz and /module (default :8081)"
        )));
    }
    let concurrency = usize::from(args.concurrency);
    let sandbox = args.sandbox.config(concurrency);
    let source = match (&args.module, &args.module_configmap) {
        (_, Some(cm)) => ModuleSource::ConfigMap(cm.clone()),
        (Some(path), None) => match path.to_str().filter(|text| text.starts_with("oci://")) {
            Some(text) => ModuleSource::Oci(OciSource {
                reference: text.parse().map_err(|err| Failure::cannot_run_with(None, &err))?,
                poll_interval: Duration::from_secs(args.module_poll_interval_seconds),
                registry: args.registry.config(),
            }),
            None => ModuleSource::File(path.clone()),
        },
        (None, None) => {
            return Err(Failure::cannot_run("one of --module and --module-configmap is required"));
        }
    };
    let trust = args.trust.policy().map_err(|err| Failure::cannot_run_with(None, &err))?;
    for key in trust.keys() {
        tracing::info!(key = %key.name(), fingerprint = %key.fingerprint(), "modules must be signed by this key (or another given)");
    }
    if !trust.digests().is_empty() {
        let pinned: Vec<String> = trust.digests().iter().map(ToString::to_string).collect();
        tracing::info!(digests = %pinned.join(","), "only these module digests are accepted");
    }
    if let ModuleSource::File(path) = &source {
        // Fail before connecting when the file is bad or not trusted.
        let module = load_module(path, &sandbox, concurrency, &trust)
            .await
            .map_err(|err| Failure::failed_with(None, &err))?;
        let manifest = crate::Module::manifest(module.as_ref());
        tracing::info!(name = %manifest.name, version = %manifest.version, digest = %crate::Module::digest(module.as_ref()), "module valid");
    }
    let rest_client = RestClientMetrics::default();
    let (client, server) = connect(&args.cluster.config(), &rest_client)
        .await
        .map_err(|err| Failure::failed_with(None, &err))?;
    let instance = instance_name();
    let leader = args.leader_elect.then(|| {
        // Unique per process, so a restarted pod with the same name is a new
        // candidate rather than a holder that believes it still renews.
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let identity = format!("{instance}_{:x}{nanos:x}", std::process::id());
        LeaseConfig::new(
            lease_namespace(args.leader_election_namespace.as_deref()),
            args.lease_name.clone(),
            identity,
        )
    });
    let config = OperatorConfig {
        scope: Scope { namespace: args.namespace.clone(), label_selector: args.label_selector.clone() },
        concurrency,
        metrics_addr: args.metrics_bind_address,
        probe_addr: args.health_probe_bind_address,
        rest_client,
        leader,
        backoff: Backoff::default(),
        instance: Some(instance),
        policy: args.policy.policy(&args.outcome),
        stall_timeout: Duration::from_secs(args.stall_timeout_seconds),
        sync_timeout: Duration::from_secs(args.sync_timeout_seconds),
        drain_timeout: Duration::from_secs(args.drain_timeout_seconds),
        trust,
    };
    let operator = tokio::select! {
        operator = start_from_source(client, &server, &source, &sandbox, config) => {
            operator.map_err(|err| Failure::failed_with(None, &err))?
        }
        signal = shutdown_signal() => {
            signal?;
            tracing::info!("stopped before a module was active");
            return Ok(());
        }
    };
    let signal = shutdown_signal().await;
    operator.shutdown().await;
    signal
}

/// This replica's name: the pod's (POD_NAME, else HOSTNAME), else `wasm-operator`.
fn instance_name() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "wasm-operator".to_owned())
}

/// The Lease namespace: the flag, else the pod's namespace, else `default`.
fn lease_namespace(flag: Option<&str>) -> String {
    if let Some(ns) = flag {
        return ns.to_owned();
    }
    if let Ok(ns) = std::env::var("POD_NAMESPACE")
        && !ns.is_empty()
    {
        return ns;
    }
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|ns| ns.trim().to_owned())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind| {
        signal(kind)
            .map_err(|err| Failure::cannot_run_with(Some("cannot install the SIGTERM/SIGINT handlers"), &err))
    };
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing reconciles in flight"),
        _ = int.recv() => tracing::info!("SIGINT: finishing reconciles in flight"),
    }
    Ok(())
}
