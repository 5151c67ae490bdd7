//! Parameters of the files core, with defaults and units. The node fills them from the
//! `[files]` section of its configuration and from the Kelips `t_fail_ms`.

use crate::Millis;

use super::limits::{MAX_COPIES, MAX_KEEP_VERSIONS};

/// What the files core needs to know. All durations are in milliseconds of the caller's
/// monotonic clock ([`Millis`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Copies per file, R. Default 3. A put is acknowledged at min(R, live members) copies,
    /// repair restores that many and trims to that many.
    pub replication: usize,
    /// How often held names are checked for repair, trimming and garbage (the driver calls
    /// [`FilesCore::handle_tick`](super::FilesCore::handle_tick) at least this often).
    /// Default 5,000 ms (`files.repair_period_ms`).
    pub repair_period_ms: Millis,
    /// Copies being made at once for repair and hand-off. Default 4 (`files.max_repairs`).
    pub max_repairs: usize,
    /// A blob no tracked tuple or kept version names is deleted after staying unnamed this
    /// long (and only while the node is settled). Default 600,000 ms (`files.orphan_grace_ms`).
    pub orphan_grace_ms: Millis,
    /// Older versions a holder keeps per name besides the newest. Default 1
    /// (`files.keep_versions`), at most [`MAX_KEEP_VERSIONS`].
    pub keep_versions: usize,
    /// A put must be durable and recorded at enough homes within this. Default 600,000 ms
    /// (`files.put_deadline_ms`).
    pub put_deadline_ms: Millis,
    /// The Kelips failure time: a member whose stamp has not risen for this long is failed.
    /// Default 15,000 ms (Kelips `t_fail_ms`).
    pub t_fail_ms: Millis,
    /// A gap between two inputs longer than this means the node's own timers fired late (it
    /// was paused, suspended or starved): its view is stale. Default 5,000 ms (five heartbeat
    /// periods; the driver feeds at least one input per heartbeat period).
    pub max_input_gap_ms: Millis,
    /// How long a node must be healthy again (joined, inputs on time, hearing its group)
    /// before it may shrink holder sets, trim or delete. At least `t_fail_ms`, so that a
    /// failed flag it acts on was earned in a healthy window. Default 20,000 ms
    /// (`t_fail_ms` + 5 s of dissemination).
    pub settle_ms: Millis,
    /// A holder absent from the view (never seen since this node started, or removed while
    /// this node was not settled) counts as dead only once the node has been settled this
    /// long: by then a live member would have been learned by gossip, and a dead one removed
    /// (`T_cleanup` = `2·t_fail_ms`) by everyone. Default 60,000 ms (four `t_fail_ms`).
    pub absent_after_ms: Millis,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            replication: 3,
            repair_period_ms: 5_000,
            max_repairs: 4,
            orphan_grace_ms: 600_000,
            keep_versions: 1,
            put_deadline_ms: 600_000,
            t_fail_ms: 15_000,
            max_input_gap_ms: 5_000,
            settle_ms: 20_000,
            absent_after_ms: 60_000,
        }
    }
}

/// A parameter out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesConfigError {
    /// `replication` must be 1 to [`MAX_COPIES`].
    #[error("replication must be 1 to {MAX_COPIES}, got {0}")]
    Replication(usize),
    /// `max_repairs` must be at least 1.
    #[error("max_repairs must be at least 1")]
    MaxRepairs,
    /// `keep_versions` must be at most [`MAX_KEEP_VERSIONS`].
    #[error("keep_versions must be at most {MAX_KEEP_VERSIONS}, got {0}")]
    KeepVersions(usize),
    /// `settle_ms` must be at least `t_fail_ms`.
    #[error("settle_ms ({settle}) must be at least t_fail_ms ({t_fail})")]
    Settle {
        /// The value given.
        settle: Millis,
        /// `t_fail_ms`.
        t_fail: Millis,
    },
    /// A period or duration of 0.
    #[error("{0} must be positive")]
    Zero(&'static str),
}

impl FilesConfig {
    /// Checks every parameter against its range.
    pub fn validate(&self) -> Result<(), FilesConfigError> {
        if !(1..=MAX_COPIES).contains(&self.replication) {
            return Err(FilesConfigError::Replication(self.replication));
        }
        if self.max_repairs == 0 {
            return Err(FilesConfigError::MaxRepairs);
        }
        if self.keep_versions > MAX_KEEP_VERSIONS {
            return Err(FilesConfigError::KeepVersions(self.keep_versions));
        }
        for (name, value) in [
            ("repair_period_ms", self.repair_period_ms),
            ("put_deadline_ms", self.put_deadline_ms),
            ("t_fail_ms", self.t_fail_ms),
            ("max_input_gap_ms", self.max_input_gap_ms),
        ] {
            if value == 0 {
                return Err(FilesConfigError::Zero(name));
            }
        }
        if self.settle_ms < self.t_fail_ms {
            return Err(FilesConfigError::Settle {
                settle: self.settle_ms,
                t_fail: self.t_fail_ms,
            });
        }
        Ok(())
    }
}
