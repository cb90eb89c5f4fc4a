//! `make bench-scale`: how the operator converges, leaves alone, rolls and deletes N
//! DittoServers, against the floor of a bare client writing the same objects.
//!
//! On a private control plane of its own (`target/cluster-faults-scale`), for each
//! N of `N` (default 500; a comma list such as `N=250,500,1000` runs each on a fresh
//! control plane and adds a table of how the figures grow):
//!
//! 1. **Bare client** (namespace `scale-bare`): creates N DittoServers, then writes
//!    what the module would for each (finalizer, objects by server-side apply,
//!    status; [`bare`]) with the host's concurrency; changes every spec and applies
//!    the changed objects; deletes them all and patches the finalizers away; waits
//!    for the garbage collector.
//! 2. **Operator** (namespace `scale-op`): creates N DittoServers with the operator
//!    stopped, starts the release host (`--namespace scale-op`), and times the same
//!    phases plus a touch (an annotation on every server, which must cost no write).
//!
//! A phase's time runs until its goal is seen through a watch (every server has a
//! phase and a StatefulSet; every StatefulSet has a new config hash; every server is
//! gone; every owned object is gone). Its requests, CPU and peak RSS are counted
//! until the host is quiet again (no write, no reconcile for 2 s). Mutating requests
//! are the API server's own count, all clients, the benchmark's own writes (the
//! touch and spec patches, the delete) left out.
//!
//! **With pods** (`NODES=1` or more): the control plane gets the scheduler, the
//! workload controllers and that many kwok nodes (`tests/cluster/up.sh`), so every
//! server's pod is created, its volumes bound and the pod reported Running and Ready.
//! Converging then means every StatefulSet rolled out (its pod ready) and, for the
//! operator, every server in phase Running; a spec change means every pod replaced
//! and ready again (and Running again); the garbage collector's goal includes the
//! pods. The bare client still writes each status once: the floor is the time the
//! cluster takes to bring up N pods behind objects written at full speed, and the
//! operator's later status writes are part of its cost. Without `NODES` (0), nothing
//! runs pods and converging means every StatefulSet exists.
//!
//! Environment: `N`; `NODES` (default 0); `CONCURRENCY` (the host's `--concurrency`
//! and the bare client's; default: the host's default, read from its `--help`);
//! `E2E_WASM_OPERATOR` and `E2E_MODULE` as for the tests.

mod bare;
mod fleet;
mod probe;
mod report;
mod tally;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use e2e::dittofs::CONFIG_HASH_ANNOTATION;
use e2e::host_process::{HostOptions, HostProcess};
use e2e::measure::{Process, Requests, api_requests};
use e2e::operator::artifacts;
use e2e::private_cluster::{Component, PrivateCluster};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::Value;

use crate::bare::Bare;
use crate::fleet::Fleet;
use crate::probe::Probe;
use crate::report::{Phase, Run};
use crate::tally::Tally;

#[tokio::main]
async fn main() -> Result<()> {
    let sizes = sizes()?;
    let nodes = nodes()?;
    let concurrency = concurrency().await?;
    let mut runs = Vec::new();
    for n in sizes {
        eprintln!("scale benchmark: {n} DittoServers, concurrency {concurrency}, {nodes} kwok node(s)");
        let run = run(n, concurrency, nodes).await.with_context(|| format!("the run with N={n} failed"))?;
        report::print(&run);
        runs.push(run);
    }
    if runs.len() > 1 {
        report::print_growth(&runs);
    }
    Ok(())
}

/// `N`: one size or a comma list.
fn sizes() -> Result<Vec<usize>> {
    let text = std::env::var("N").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| "500".to_owned());
    let sizes = text
        .split(',')
        .map(|n| n.trim().parse::<usize>().ok().filter(|n| *n > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            anyhow!("N={text:?}: give a positive number of DittoServers, or a comma list of them")
        })?;
    Ok(sizes)
}

/// `NODES`: kwok nodes for the servers' pods; 0 (the default) for none.
fn nodes() -> Result<u32> {
    match std::env::var("NODES") {
        Ok(text) if !text.is_empty() => text
            .parse()
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| anyhow!("NODES={text:?}: give a number of kwok nodes from 0 to 100")),
        _ => Ok(0),
    }
}

/// `CONCURRENCY`, or the host's default `--concurrency` as its `--help` states it.
async fn concurrency() -> Result<usize> {
    if let Ok(text) = std::env::var("CONCURRENCY")
        && !text.is_empty()
    {
        return text
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| anyhow!("CONCURRENCY={text:?}: give a positive number"));
    }
    let host = &artifacts().await?.host;
    let help = std::process::Command::new(host)
        .args(["run", "--help"])
        .output()
        .context("cannot run the host's --help")?;
    let help = String::from_utf8_lossy(&help.stdout);
    let after = help
        .split("--concurrency")
        .nth(1)
        .ok_or_else(|| anyhow!("the host's run --help has no --concurrency"))?;
    let default = after
        .split("[default: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("the host's run --help states no default --concurrency"))?;
    Ok(default)
}

/// How long a phase may take before the benchmark gives up on it.
fn phase_timeout(n: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(400) * u32::try_from(n).unwrap_or(u32::MAX)
}

async fn run(n: usize, concurrency: usize, nodes: u32) -> Result<Run> {
    let cluster = PrivateCluster::start("scale", nodes, &[]).await?;
    let pods = Pods(nodes > 0);
    let client = cluster.client()?;
    let control_plane = [Component::ApiServer, Component::Etcd, Component::ControllerManager]
        .into_iter()
        .map(|c| Ok(Process { name: c.name(), pid: cluster.pid(c)? }))
        .collect::<Result<Vec<_>>>()?;
    gc_warm_up(&client).await?;
    let bare = bare_run(&cluster, &client, n, concurrency, pods, &control_plane).await?;
    let operator = operator_run(&cluster, &client, n, concurrency, pods, &control_plane).await?;
    Ok(Run { n, concurrency, nodes, bare, operator })
}

/// Waits until the garbage collector deletes what a deleted DittoServer owned. It
/// starts watching a newly installed kind (the CRD) only at its next resync of the
/// API's resources, up to 30 s later; a benchmark phase must not wait for that.
async fn gc_warm_up(client: &Client) -> Result<()> {
    let started = Instant::now();
    let fleet = Fleet::create(client, "scale-warm-up", 1).await?;
    let server = fleet.objects().next().ok_or_else(|| anyhow!("no DittoServer was created"))?;
    let owned: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "owned", "ownerReferences": [{
            "apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "name": server.name_any(), "uid": server.uid(),
        }]},
    }))?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), fleet.namespace());
    config_maps.create(&PostParams::default(), &owned).await.context("cannot create the owned ConfigMap")?;
    fleet.servers().delete(&server.name_any(), &DeleteParams::background()).await?;
    e2e::wait_until(
        "the garbage collector to delete a DittoServer's ConfigMap",
        Duration::from_secs(120),
        || async { Ok(config_maps.get_opt("owned").await?.is_none().then_some(())) },
    )
    .await?;
    eprintln!(
        "  the garbage collector follows DittoServers (after {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn requests(cluster: &PrivateCluster, client: &Client) -> Result<Requests> {
    Ok(api_requests(&cluster.apiserver_metrics(client).await?))
}

fn has_phase(server: &DynamicObject) -> bool {
    let finalized = server.finalizers().iter().any(|f| f == dittofs_reconciler::names::FINALIZER);
    finalized && server.data.pointer("/status/phase").and_then(Value::as_str).is_some_and(|p| !p.is_empty())
}

fn statefulsets() -> ApiResource {
    ApiResource::erase::<StatefulSet>(&())
}

async fn bare_run(
    cluster: &PrivateCluster,
    client: &Client,
    n: usize,
    concurrency: usize,
    pods: Pods,
    processes: &[Process],
) -> Result<Vec<Phase>> {
    eprintln!(" bare client");
    let mut fleet = Fleet::create(client, "scale-bare", n).await?;
    let mut bare = Bare::new(concurrency);
    let mut phases = Vec::new();

    let timeout = phase_timeout(n);
    let mut goal = Converged::watch(&fleet, pods, false).await?;
    let probe = Probe::start(requests(cluster, client).await?, processes, None)?;
    bare.converge(&fleet).await?;
    let reached = goal.wait(n, timeout).await?;
    let cost = probe.finish(reached, &requests(cluster, client).await?)?;
    phases.push(Phase::new("converge", cost, 0.0));
    drop(goal);

    let mut goal = Rolled::watch(client, &fleet, pods, false).await?;
    let probe = Probe::start(requests(cluster, client).await?, processes, None)?;
    let changed = fleet.change_spec().await?;
    bare.roll(&fleet, &changed).await?;
    let reached = goal.wait(n, timeout).await?;
    let cost = probe.finish(reached, &requests(cluster, client).await?)?;
    phases.push(Phase::new("spec change", cost, n as f64));
    drop(goal);

    let mut goal = Gone::watch(&fleet, pods).await?;
    let probe = Probe::start(requests(cluster, client).await?, processes, None)?;
    let deleted_at = probe.started();
    let deleting = fleet.delete_all().await?;
    bare.finalize(&fleet, &deleting).await?;
    let reached = goal.wait_servers(timeout).await?;
    let cost = probe.finish(reached, &requests(cluster, client).await?)?;
    phases.push(Phase::new("finalize", cost, 1.0));
    phases.push(gc_phase(cluster, client, processes, &mut goal, deleted_at, None, n).await?);
    Ok(phases)
}

/// Whether the servers' pods run (kwok nodes, `NODES`).
#[derive(Debug, Clone, Copy)]
struct Pods(bool);

fn rolled_out(sts: &DynamicObject) -> bool {
    let Ok(sts) = serde_json::from_value::<StatefulSet>(serde_json::to_value(sts).unwrap_or_default()) else {
        return false;
    };
    e2e::workload::rollout_complete(&sts)
}

fn is_running(server: &DynamicObject) -> bool {
    server.data.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
}

/// The converge phase's goal: every server has the finalizer and a phase, and every
/// StatefulSet exists. With pods, every StatefulSet's rollout is complete, and with
/// `running` every server is Running.
struct Converged {
    servers: Tally,
    sets: Tally,
}

impl Converged {
    async fn watch(fleet: &Fleet, pods: Pods, running: bool) -> Result<Self> {
        let servers = if pods.0 && running {
            Tally::start("DittoServers", fleet.servers(), |s| has_phase(s) && is_running(s)).await?
        } else {
            Tally::start("DittoServers", fleet.servers(), has_phase).await?
        };
        let sets = if pods.0 {
            Tally::start("StatefulSets", fleet.api(&statefulsets()), rolled_out).await?
        } else {
            Tally::start("StatefulSets", fleet.api(&statefulsets()), |_| true).await?
        };
        Ok(Self { servers, sets })
    }

    async fn wait(&mut self, n: usize, timeout: Duration) -> Result<Instant> {
        let servers = self.servers.wait("every server converged", timeout, |c| c.matching == n).await?;
        let sets = self.sets.wait("every StatefulSet created", timeout, |c| c.matching == n).await?;
        Ok(servers.max(sets))
    }
}

/// The spec change's goal: every StatefulSet has a config hash other than now, and
/// every server's status has observed its new generation. With pods, every
/// StatefulSet's new pod is ready, and with `running` every server Running again.
struct Rolled {
    sets: Tally,
    servers: Tally,
}

impl Rolled {
    async fn watch(client: &Client, fleet: &Fleet, pods: Pods, running: bool) -> Result<Self> {
        let hashes = config_hashes(client, fleet.namespace()).await?;
        let sets = Tally::start("StatefulSets", fleet.api(&statefulsets()), move |sts| {
            config_hash(sts).is_some_and(|hash| hashes.get(&sts.name_any()) != Some(&hash))
                && (!pods.0 || rolled_out(sts))
        })
        .await?;
        let servers = Tally::start("DittoServers", fleet.servers(), move |server| {
            let observed = server.data.pointer("/status/observedGeneration").and_then(Value::as_i64);
            observed.is_some()
                && observed == server.metadata.generation
                && (!(pods.0 && running) || is_running(server))
        })
        .await?;
        Ok(Self { sets, servers })
    }

    async fn wait(&mut self, n: usize, timeout: Duration) -> Result<Instant> {
        let sets = self.sets.wait("every StatefulSet rolled", timeout, |c| c.matching == n).await?;
        let servers = self.servers.wait("every status observed", timeout, |c| c.matching == n).await?;
        Ok(sets.max(servers))
    }
}

/// Finalize's goal, every server gone; then the garbage collector's, every owned
/// object gone (with pods, the pods too; their volumes stay, as the module's
/// retention policy says).
struct Gone {
    servers: Tally,
    owned: Vec<Tally>,
}

impl Gone {
    async fn watch(fleet: &Fleet, pods: Pods) -> Result<Self> {
        let servers = Tally::start("DittoServers", fleet.servers(), |_| true).await?;
        let mut owned = Vec::new();
        for (what, resource) in Fleet::owned_kinds() {
            owned.push(Tally::start(what, fleet.api(&resource), |_| true).await?);
        }
        if pods.0 {
            owned.push(Tally::start("Pods", fleet.api(&ApiResource::erase::<Pod>(&())), |_| true).await?);
        }
        Ok(Self { servers, owned })
    }

    async fn wait_servers(&mut self, timeout: Duration) -> Result<Instant> {
        self.servers.wait("every server gone", timeout, |c| c.present == 0).await
    }

    async fn wait_owned(&mut self, timeout: Duration) -> Result<Instant> {
        let mut reached = Instant::now();
        for tally in &mut self.owned {
            reached = reached.max(tally.wait("every object gone", timeout, |c| c.present == 0).await?);
        }
        Ok(reached)
    }
}

/// The garbage collector's phase: from the delete request (`deleted_at`) until
/// every owned object is gone; requests and CPU counted from now.
async fn gc_phase(
    cluster: &PrivateCluster,
    client: &Client,
    processes: &[Process],
    goal: &mut Gone,
    deleted_at: Instant,
    host: Option<&HostProcess>,
    n: usize,
) -> Result<Phase> {
    let probe = Probe::start(requests(cluster, client).await?, processes, host.map(HostProcess::pid))?;
    let reached = goal.wait_owned(phase_timeout(n)).await?;
    if let Some(host) = host {
        quiet(host).await?;
    }
    let mut cost = probe.finish(reached, &requests(cluster, client).await?)?;
    cost.seconds = reached.saturating_duration_since(deleted_at).as_secs_f64();
    Ok(Phase::new("gc complete", cost, 0.0))
}

/// The host's writes and reconciles.
async fn activity(host: &HostProcess) -> Result<(f64, f64)> {
    let metrics = host.metrics().await?;
    Ok((metrics.writes(), metrics.sum("wasm_operator_reconciles_total", &[])))
}

/// Waits until the host has neither written nor reconciled for 2 s.
async fn quiet(host: &HostProcess) -> Result<()> {
    let mut last = activity(host).await?;
    let mut unchanged = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while unchanged < 4 {
        if Instant::now() > deadline {
            bail!("the host did not become quiet within 300 s (log: {})", host.log_path().display());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = activity(host).await?;
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
    }
    Ok(())
}

async fn operator_run(
    cluster: &PrivateCluster,
    client: &Client,
    n: usize,
    concurrency: usize,
    pods: Pods,
    control_plane: &[Process],
) -> Result<Vec<Phase>> {
    eprintln!(" operator");
    let mut fleet = Fleet::create(client, "scale-op", n).await?;
    let timeout = phase_timeout(n);
    let mut phases = Vec::new();

    // Converge: from the host's start until every server has a phase and a StatefulSet
    // (with pods: until every pod is ready and every server Running).
    let mut goal = Converged::watch(&fleet, pods, true).await?;
    let mut probe = Probe::start(requests(cluster, client).await?, control_plane, None)?;
    let options = HostOptions::new(fleet.namespace(), "scale")
        .args(["--concurrency".to_owned(), concurrency.to_string()]);
    let host = cluster.spawn_host(options).await?;
    probe.add_new_process(Process { name: "host", pid: host.pid() });
    let reached = goal.wait(n, timeout).await?;
    quiet(&host).await?;
    let cost = probe.finish(reached, &requests(cluster, client).await?)?;
    // A new process: everything it counted is this phase's.
    phases.push(with_host(Phase::new("converge", cost, 0.0), &host, (0.0, 0.0)).await?);
    drop(goal);
    let processes = processes_with_host(control_plane, &host);

    // Touch: every server reconciled once more, no write.
    let before = activity(&host).await?;
    let probe = Probe::start(requests(cluster, client).await?, &processes, Some(host.pid()))?;
    fleet.touch().await?;
    let reached = wait_reconciles(&host, before.1 + n as f64, timeout).await?;
    quiet(&host).await?;
    let cost = probe.finish(reached, &requests(cluster, client).await?)?;
    phases.push(with_host(Phase::new("touch", cost, n as f64), &host, before).await?);

    // Spec change: every StatefulSet rolled to a new config hash, every status observed.
    let mut goal = Rolled::watch(client, &fleet, pods, true).await?;
    let before = activity(&host).await?;
    let probe = Probe::start(requests(cluster, client).await?, &processes, Some(host.pid()))?;
    fleet.change_spec().await?;
    let reached = goal.wait(n, timeout).await?;
    quiet(&host).await?;
    let cost = probe.finish(reached, &requests(cluster, client).await?)?;
    phases.push(with_host(Phase::new("spec change", cost, n as f64), &host, before).await?);
    drop(goal);

    // Finalize: from the delete until every server is gone; then the garbage collector.
    let mut goal = Gone::watch(&fleet, pods).await?;
    let before = activity(&host).await?;
    let probe = Probe::start(requests(cluster, client).await?, &processes, Some(host.pid()))?;
    let deleted_at = probe.started();
    fleet.delete_all().await?;
    let reached = goal.wait_servers(timeout).await?;
    quiet(&host).await?;
    let cost = probe.finish(reached, &requests(cluster, client).await?)?;
    phases.push(with_host(Phase::new("finalize", cost, 1.0), &host, before).await?);
    let before = activity(&host).await?;
    let gc = gc_phase(cluster, client, &processes, &mut goal, deleted_at, Some(&host), n).await?;
    phases.push(with_host(gc, &host, before).await?);
    host.terminate()?;
    Ok(phases)
}

fn processes_with_host(control_plane: &[Process], host: &HostProcess) -> Vec<Process> {
    let mut processes = vec![Process { name: "host", pid: host.pid() }];
    processes.extend(control_plane.iter().cloned());
    processes
}

/// `phase` with the host's writes and reconciles since `before` (from [`activity`]).
async fn with_host(phase: Phase, host: &HostProcess, before: (f64, f64)) -> Result<Phase> {
    let (writes, reconciles) = activity(host).await?;
    Ok(phase.host(writes - before.0, reconciles - before.1))
}

async fn wait_reconciles(host: &HostProcess, target: f64, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, reconciles) = activity(host).await?;
        if reconciles >= target {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the host reconciled {reconciles} times, not {target}, within {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config_hash(sts: &DynamicObject) -> Option<String> {
    sts.data
        .pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

async fn config_hashes(client: &Client, namespace: &str) -> Result<HashMap<String, String>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &statefulsets());
    let list = api.list(&ListParams::default()).await.context("cannot list the StatefulSets")?;
    Ok(list.items.iter().filter_map(|sts| Some((sts.name_any(), config_hash(sts)?))).collect())
}
