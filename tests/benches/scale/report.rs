//! The benchmark's tables: each phase of one run against the bare client, the
//! issue's targets, and how the figures grow with N.

use crate::probe::Cost;

/// One phase's result.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Its name.
    pub name: &'static str,
    /// What it cost.
    pub cost: Cost,
    /// The benchmark's own mutating requests in it (left out of the figures).
    pub own_writes: f64,
    /// The host's writes (`wasm_operator_writes_total`) and reconciles in it.
    pub host: Option<(f64, f64)>,
}

impl Phase {
    /// A phase without host figures.
    pub fn new(name: &'static str, cost: Cost, own_writes: f64) -> Self {
        Self { name, cost, own_writes, host: None }
    }

    /// With the host's writes and reconciles.
    #[must_use]
    pub fn host(mut self, writes: f64, reconciles: f64) -> Self {
        self.host = Some((writes, reconciles));
        self
    }

    /// Mutating requests of everyone but the benchmark.
    pub fn mutating(&self) -> f64 {
        (self.cost.mutating() - self.own_writes).max(0.0)
    }
}

/// One N's results.
#[derive(Debug, Clone)]
pub struct Run {
    /// DittoServers.
    pub n: usize,
    /// The host's `--concurrency`, and the bare client's.
    pub concurrency: usize,
    /// kwok nodes running the servers' pods (0: no pods).
    pub nodes: u32,
    /// The bare client's phases.
    pub bare: Vec<Phase>,
    /// The operator's phases.
    pub operator: Vec<Phase>,
}

impl Run {
    fn bare(&self, name: &str) -> Option<&Phase> {
        self.bare.iter().find(|p| p.name == name)
    }

    fn operator(&self, name: &str) -> Option<&Phase> {
        self.operator.iter().find(|p| p.name == name)
    }

    /// The host's largest peak RSS over the phases, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.operator.iter().filter_map(|p| p.cost.host_peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }

    /// Host CPU per server in the converge phase, ms.
    pub fn converge_cpu_ms_per_server(&self) -> f64 {
        let cpu = self.operator("converge").and_then(|p| p.cost.cpu_of("host")).unwrap_or(0.0);
        cpu * 1000.0 / self.n as f64
    }

    fn seconds(&self, name: &str) -> f64 {
        self.operator(name).map_or(0.0, |p| p.cost.seconds)
    }

    fn ratio(&self, name: &str) -> Option<f64> {
        let bare = self.bare(name)?.cost.seconds;
        (bare > 0.0).then(|| self.seconds(name) / bare)
    }
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// Prints one run's table, request breakdown and targets.
pub fn print(run: &Run) {
    let n = run.n as f64;
    println!();
    let pods =
        if run.nodes > 0 { format!("pods on {} kwok node(s)", run.nodes) } else { "no pods".to_owned() };
    println!(
        "scale: {} DittoServers, concurrency {}, {pods} (operator against the bare client)",
        run.n, run.concurrency
    );
    println!(
        "{:<16} {:>8} {:>8} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>7}",
        "phase",
        "time s",
        "bare s",
        "ratio",
        "mut/srv",
        "bare m/s",
        "h writes",
        "h recon",
        "h CPU s",
        "ms/server",
        "RSS MiB",
        "apisrv s",
        "etcd s"
    );
    for phase in &run.operator {
        let bare = run.bare(phase.name);
        let cpu = phase.cost.cpu_of("host");
        println!(
            "{:<16} {:>8.2} {:>8} {:>6} {:>9.2} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9.2} {:>7.2}",
            phase.name,
            phase.cost.seconds,
            or_dash(bare.map(|b| format!("{:.2}", b.cost.seconds))),
            or_dash(run.ratio(phase.name).map(|r| format!("{r:.2}"))),
            phase.mutating() / n,
            or_dash(bare.map(|b| format!("{:.2}", b.mutating() / n))),
            or_dash(phase.host.map(|(w, _)| format!("{w:.0}"))),
            or_dash(phase.host.map(|(_, r)| format!("{r:.0}"))),
            or_dash(cpu.map(|c| format!("{c:.2}"))),
            or_dash(cpu.map(|c| format!("{:.2}", c * 1000.0 / n))),
            or_dash(phase.cost.host_peak_rss_kib.map(|k| format!("{:.1}", k as f64 / 1024.0))),
            phase.cost.cpu_of("kube-apiserver").unwrap_or(0.0),
            phase.cost.cpu_of("etcd").unwrap_or(0.0),
        );
    }
    for phase in &run.bare {
        println!(
            "{:<16} {:>8.2} {:>8} {:>6} {:>9.2} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9.2} {:>7.2}",
            format!("bare {}", phase.name),
            phase.cost.seconds,
            "",
            "",
            phase.mutating() / n,
            "",
            "",
            "",
            "",
            "",
            "",
            phase.cost.cpu_of("kube-apiserver").unwrap_or(0.0),
            phase.cost.cpu_of("etcd").unwrap_or(0.0),
        );
    }
    println!("requests by verb and resource (the benchmark's own included):");
    for (who, phases) in [("operator", &run.operator), ("bare", &run.bare)] {
        for phase in phases {
            let requests: Vec<String> =
                phase.cost.requests.iter().map(|(key, count)| format!("{key} {count:.0}")).collect();
            println!("  {who:<8} {:<12} {}", phase.name, requests.join(", "));
        }
    }
    let finalize = run.seconds("finalize");
    let touch_writes = run.operator("touch").and_then(|p| p.host).map_or(f64::NAN, |(w, _)| w);
    let targets = [
        (
            "converge <= 1.3x bare".to_owned(),
            run.ratio("converge").is_some_and(|r| r <= 1.3),
            or_dash(run.ratio("converge").map(|r| format!("{r:.2}x"))),
        ),
        (
            "finalize <= 3 s or <= 1.3x bare".to_owned(),
            finalize <= 3.0 || run.ratio("finalize").is_some_and(|r| r <= 1.3),
            format!("{finalize:.2} s, {}", or_dash(run.ratio("finalize").map(|r| format!("{r:.2}x")))),
        ),
        ("touch = 0 writes".to_owned(), touch_writes == 0.0, format!("{touch_writes:.0}")),
        (
            "host RSS <= 80 MB".to_owned(),
            run.peak_rss_mib() * 1.048_576 <= 80.0,
            format!("{:.1} MiB", run.peak_rss_mib()),
        ),
        (
            "host CPU <= 5 ms per converged server".to_owned(),
            run.converge_cpu_ms_per_server() <= 5.0,
            format!("{:.2} ms", run.converge_cpu_ms_per_server()),
        ),
    ];
    println!("targets (N=500 is the one the issue sets):");
    for (target, met, figure) in targets {
        println!("  {:<4} {target:<40} {figure}", if met { "met" } else { "MISS" });
    }
}

/// Prints how converge and finalize time, RSS and CPU grow with N.
pub fn print_growth(runs: &[Run]) {
    println!();
    println!("growth with N:");
    println!(
        "{:>6} {:>10} {:>12} {:>10} {:>12} {:>9} {:>12}",
        "N", "converge s", "ms/server", "finalize s", "gc s", "RSS MiB", "CPU ms/srv"
    );
    for run in runs {
        let converge = run.seconds("converge");
        println!(
            "{:>6} {:>10.2} {:>12.2} {:>10.2} {:>12.2} {:>9.1} {:>12.2}",
            run.n,
            converge,
            converge * 1000.0 / run.n as f64,
            run.seconds("finalize"),
            run.seconds("gc complete"),
            run.peak_rss_mib(),
            run.converge_cpu_ms_per_server()
        );
    }
}
