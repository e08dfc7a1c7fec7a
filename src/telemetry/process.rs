//! The process's own gauges, as every Prometheus client library names them: resident memory,
//! CPU seconds, open file descriptors and start time, read from `/proc/self` at scrape time.
//! Off Linux (no `/proc`) they are simply absent.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// `/proc` reports CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100 for user
/// space on every architecture it supports.
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: u64 = 4096;

/// When the process started (first asked at start-up), Unix seconds.
pub fn start_time() -> f64 {
    static STARTED: OnceLock<f64> = OnceLock::new();
    *STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

/// Registers the process gauges this platform can read.
pub fn register(registry: &mut Registry) {
    registry.register_with_unit(
        "process_start_time",
        "Start time of the process since the Unix epoch",
        Unit::Seconds,
        ConstGauge::new(start_time()),
    );
    if let Some(resident) = resident_bytes() {
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory size",
            Unit::Bytes,
            ConstGauge::new(i64::try_from(resident).unwrap_or(i64::MAX)),
        );
    }
    if let Some(cpu) = cpu_seconds() {
        registry.register_with_unit(
            "process_cpu",
            "User and system CPU time spent",
            Unit::Seconds,
            ConstCounter::new(cpu),
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            ConstGauge::new(i64::try_from(fds.count()).unwrap_or(i64::MAX)),
        );
    }
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_SIZE)
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // Fields 3… follow; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}
