//! The driver's parameters, derived from the node's configuration.

use std::time::Duration;

use quickstore_behaviours::files_core::FilesConfig;

/// The driver ticks at least this often.
const MAX_TICK: Duration = Duration::from_secs(1);

/// How the driver runs its core.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The core's parameters.
    pub core: FilesConfig,
    /// How often the driver feeds the view and ticks the core.
    pub tick: Duration,
    /// Bytes of stored blobs re-hashed per second at most (`files.scrub_bytes_per_s`).
    pub scrub_bytes_per_s: u64,
    /// A copy or fetch is abandoned after this.
    pub transfer_timeout: Duration,
}

impl DriverConfig {
    /// From the node's `[files]` section and the Kelips `t_fail_ms`. The driver ticks every
    /// second or every repair period, whichever is shorter; a gap of more than a tick plus
    /// `t_fail / 2` between inputs means the node was paused or starved. A node settles after
    /// `2 · t_fail` of health and counts an absent holder as dead after `4 · t_fail`.
    pub fn new(files: &crate::config::FilesConfig, replication: usize, t_fail_ms: u64) -> Self {
        let tick = Duration::from_millis(files.repair_period_ms.max(1)).min(MAX_TICK);
        let tick_ms = tick.as_millis() as u64;
        DriverConfig {
            core: FilesConfig {
                replication,
                repair_period_ms: files.repair_period_ms,
                max_repairs: files.max_repairs,
                orphan_grace_ms: files.orphan_grace_ms,
                keep_versions: files.keep_versions,
                put_deadline_ms: files.put_deadline_ms,
                t_fail_ms,
                max_input_gap_ms: tick_ms + t_fail_ms / 2,
                settle_ms: 2 * t_fail_ms,
                absent_after_ms: 4 * t_fail_ms,
            },
            tick,
            scrub_bytes_per_s: files.scrub_bytes_per_s,
            transfer_timeout: Duration::from_millis(files.put_deadline_ms + files.io_timeout_ms),
        }
    }
}
