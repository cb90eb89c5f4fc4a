//! One phase's cost: wall time to its goal, then mutating requests, CPU and the host's
//! peak RSS until it is quiet.

use std::time::Instant;

use anyhow::Result;
use e2e::measure::{Process, Requests, cpu_seconds, difference, mutating, reset_peak_rss, rss};

/// A phase being measured.
#[derive(Debug)]
pub struct Probe {
    started: Instant,
    requests: Requests,
    cpu: Vec<(Process, f64)>,
    host: Option<u32>,
}

/// What a phase cost.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    /// Wall time until the phase's goal was reached, seconds.
    pub seconds: f64,
    /// Requests until the phase was quiet, by verb and resource.
    pub requests: Requests,
    /// CPU seconds by process.
    pub cpu: Vec<(&'static str, f64)>,
    /// The host's peak RSS in the phase, KiB.
    pub host_peak_rss_kib: Option<u64>,
}

impl Cost {
    /// Every mutating request.
    pub fn mutating(&self) -> f64 {
        mutating(&self.requests)
    }

    /// CPU seconds of the process named `name`.
    pub fn cpu_of(&self, name: &str) -> Option<f64> {
        self.cpu.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }
}

impl Probe {
    /// Starts measuring: `requests` is the API server's count now, `processes` are
    /// the processes whose CPU counts, `host` the one whose peak RSS is reported.
    pub fn start(requests: Requests, processes: &[Process], host: Option<u32>) -> Result<Self> {
        if let Some(pid) = host {
            reset_peak_rss(pid)?;
        }
        let cpu =
            processes.iter().map(|p| Ok((p.clone(), cpu_seconds(p.pid)?))).collect::<Result<Vec<_>>>()?;
        Ok(Self { started: Instant::now(), requests, cpu, host })
    }

    /// Counts the host, started after the probe: all its CPU, its peak RSS since its
    /// start.
    pub fn add_new_process(&mut self, process: Process) {
        self.host = Some(process.pid);
        self.cpu.push((process, 0.0));
    }

    /// When the phase started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Ends the phase: its goal was reached at `reached`, and `requests` is the API
    /// server's count once the phase was quiet.
    pub fn finish(self, reached: Instant, requests: &Requests) -> Result<Cost> {
        let cpu = self
            .cpu
            .iter()
            .map(|(p, before)| Ok((p.name, cpu_seconds(p.pid)? - before)))
            .collect::<Result<Vec<_>>>()?;
        let host_peak_rss_kib = self.host.map(rss).transpose()?.map(|rss| rss.peak_kib);
        Ok(Cost {
            seconds: reached.saturating_duration_since(self.started).as_secs_f64(),
            requests: difference(requests, &self.requests),
            cpu,
            host_peak_rss_kib,
        })
    }
}
