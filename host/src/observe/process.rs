//! The process metrics every Prometheus client exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), read from `/proc/self` at each scrape.
//!
//! Linux only, as the operator's image is; elsewhere, or when `/proc` is not mounted,
//! the families are left out rather than reported as zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The kernel reports times in clock ticks of `USER_HZ`, which Linux fixes at 100 for
/// userspace on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads `/proc/self` when scraped.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Start time, seconds since the epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Parses `/proc/self/stat`'s line and `/proc/stat`'s `btime` line out of their
    /// files' text; `None` when either is malformed.
    pub fn parse(stat: &str, system_stat: &str, page_size: u64) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces or ')'.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields from 3 on: utime is field 14, stime 15, starttime 22, rss 24.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let boot = system_stat
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) as f64 / TICKS_PER_SECOND,
            resident_bytes: field(24)? * page_size,
            start_time_seconds: boot as f64 + field(22)? as f64 / TICKS_PER_SECOND,
        })
    }

    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let system = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(&stat, &system, rustix::param::page_size() as u64)
    }
}

/// The soft limit on open files, from `/proc/self/limits`'s text.
pub fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// Writes one gauge family with a single value.
fn gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: N) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(stats) = ProcessStats::read() {
            let cpu = ConstCounter::new(stats.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            let rss = i64::try_from(stats.resident_bytes).unwrap_or(i64::MAX);
            gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size in bytes", rss)?;
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                stats.start_time_seconds,
            )?;
        }
        if let Some(count) = open_fds() {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            gauge(&mut encoder, "process_open_fds", "Number of open file descriptors", count)?;
        }
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        if let Some(max) = limits.as_deref().and_then(max_open_files) {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            gauge(&mut encoder, "process_max_fds", "Maximum number of open file descriptors", max)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_spaces_and_parentheses_in_the_name() {
        let stat = "4242 (wasm op) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 1200 \
                    300000000 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let system = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        let stats = ProcessStats::parse(stat, system, 4096).expect("a valid stat line");
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.resident_bytes, 5000 * 4096);
        assert_eq!(stats.start_time_seconds, 1_700_000_012.0);
        assert_eq!(ProcessStats::parse("4242 (x) S 1", system, 4096), None, "truncated");
        assert_eq!(ProcessStats::parse(stat, "cpu 1 2\n", 4096), None, "no btime");
    }

    #[test]
    fn the_soft_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(max_open_files("Max open files unlimited unlimited files"), None);
    }
}
