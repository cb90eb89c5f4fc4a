//! What a process and the API server spent: mutating requests, CPU seconds, resident
//! memory. For tests that bound memory and for `make bench-scale`.
//!
//! - Requests come from the API server's own `apiserver_request_total`, so they count
//!   every client: the host, the garbage collector and the benchmark itself. Mutating
//!   ones have the verbs POST, PUT, PATCH, APPLY, DELETE, DELETECOLLECTION. Leases are
//!   left out (the API server renews its identity lease every 10 s whatever the load),
//!   and so are watches (counted when they end, not when they cost).
//! - CPU is `utime + stime` from `/proc/<pid>/stat`.
//! - Peak RSS is `VmHWM`, which [`reset_peak_rss`] sets back to the current RSS by
//!   writing `5` to `/proc/<pid>/clear_refs`: a peak then covers only what came after.

use std::collections::BTreeMap;

use crate::operator::Metrics;
use anyhow::{Context as _, Result, anyhow};

/// The verbs of `apiserver_request_total` that write.
const MUTATING_VERBS: [&str; 6] = ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];

/// A process whose CPU is measured, and how a report names it.
#[derive(Debug, Clone)]
pub struct Process {
    /// How the report names it.
    pub name: &'static str,
    /// Its pid.
    pub pid: u32,
}

/// Requests by `verb resource[/subresource]`.
pub type Requests = BTreeMap<String, f64>;

/// Whether a [`Requests`] key is a mutating request's.
pub fn is_mutating(key: &str) -> bool {
    key.split_once(' ').is_some_and(|(verb, _)| MUTATING_VERBS.contains(&verb))
}

/// The mutating requests among `requests`.
pub fn mutating(requests: &Requests) -> f64 {
    requests.iter().filter(|(key, _)| is_mutating(key)).map(|(_, count)| count).sum()
}

/// The requests in the API server's metrics but watches, leases left out.
pub fn api_requests(metrics: &Metrics) -> Requests {
    let mut requests = Requests::new();
    for (series, value) in metrics.samples() {
        let Some(labels) = series.strip_prefix("apiserver_request_total{") else { continue };
        let label = |key: &str| {
            let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
            let end = labels[start..].find('"')? + start;
            Some(&labels[start..end])
        };
        let verb = label("verb").unwrap_or_default();
        let resource = label("resource").unwrap_or_default();
        if verb == "WATCH" || resource == "leases" {
            continue;
        }
        let subresource = label("subresource").filter(|s| !s.is_empty());
        let key = match subresource {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        *requests.entry(key).or_default() += value;
    }
    requests
}

/// `after - before`, entries that did not change left out.
pub fn difference(after: &Requests, before: &Requests) -> Requests {
    after
        .iter()
        .map(|(key, value)| (key.clone(), value - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, delta)| *delta > 0.0)
        .collect()
}

/// Seconds of CPU `pid` has used (user and system).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name may hold spaces and parentheses; the fields after it do not.
    let (_, after_name) = stat.rsplit_once(')').ok_or_else(|| anyhow!("{path}: no command name"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `after_name` starts at field 3.
    let ticks = |index: usize| -> Result<f64> {
        let field = fields.get(index).ok_or_else(|| anyhow!("{path}: too few fields"))?;
        Ok(field.parse::<u64>().with_context(|| format!("{path}: bad field {field:?}"))? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

/// `getconf CLK_TCK`: 100 on Linux unless the kernel says otherwise.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Starts a new peak-RSS window for `pid`.
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("cannot write {path}"))
}

/// A process's resident memory, KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rss {
    /// `VmRSS`: now.
    pub current_kib: u64,
    /// `VmHWM`: the peak since the start or the last [`reset_peak_rss`].
    pub peak_kib: u64,
}

/// The resident memory of `pid`.
pub fn rss(pid: u32) -> Result<Rss> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .ok_or_else(|| anyhow!("{path}: no {name}"))?;
        let kib = line.split_whitespace().next().ok_or_else(|| anyhow!("{path}: an empty {name}"))?;
        kib.parse().with_context(|| format!("{path}: bad {name} {line:?}"))
    };
    Ok(Rss { current_kib: field("VmRSS:")?, peak_kib: field("VmHWM:")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_without_leases_and_watches() {
        let metrics = Metrics::parse(
            "apiserver_request_total{code=\"200\",component=\"apiserver\",group=\"apps\",resource=\"statefulsets\",scope=\"resource\",subresource=\"\",verb=\"APPLY\",version=\"v1\"} 7\n\
             apiserver_request_total{code=\"201\",group=\"\",resource=\"configmaps\",subresource=\"\",verb=\"APPLY\"} 3\n\
             apiserver_request_total{code=\"200\",group=\"dittofs.dittofs.com\",resource=\"dittoservers\",subresource=\"status\",verb=\"PATCH\"} 2\n\
             apiserver_request_total{code=\"200\",resource=\"leases\",subresource=\"\",verb=\"PUT\"} 40\n\
             apiserver_request_total{code=\"200\",resource=\"dittoservers\",subresource=\"\",verb=\"LIST\"} 9\n\
             apiserver_request_total{code=\"200\",resource=\"dittoservers\",subresource=\"\",verb=\"WATCH\"} 4\n",
        );
        let requests = api_requests(&metrics);
        assert_eq!(requests.get("APPLY statefulsets"), Some(&7.0));
        assert_eq!(requests.get("APPLY configmaps"), Some(&3.0));
        assert_eq!(requests.get("PATCH dittoservers/status"), Some(&2.0));
        assert_eq!(requests.get("LIST dittoservers"), Some(&9.0));
        assert_eq!(requests.len(), 4, "{requests:?}");
        assert_eq!(mutating(&requests), 12.0);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).expect("this process's CPU") >= 0.0);
        let rss = rss(pid).expect("this process's RSS");
        assert!(rss.current_kib > 0 && rss.peak_kib >= rss.current_kib);
    }
}
