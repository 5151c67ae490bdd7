//! This process's CPU time and memory, from `/proc/self` (Linux). Included by the benchmark
//! examples with `#[path = "support/process.rs"] mod process;`.

/// User plus system CPU time this process has used so far, in seconds (0 where `/proc` is
/// unreadable).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A `/proc/self/status` field in KiB, as MiB (0 where unreadable).
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Resident memory now, in MiB.
#[allow(dead_code)]
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// Peak resident memory so far, in MiB.
#[allow(dead_code)]
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}
