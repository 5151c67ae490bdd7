//! Every tunable of the Kelips core in one place.
//!
//! Times are in milliseconds (the field names end in `_ms`), counts are plain numbers. The
//! defaults are those of `DESIGN.md` §2, with `t_fail_ms`, the rations, the fanouts and
//! `t_contact_ms` chosen from simulator runs recorded in `BENCHMARKS.md`. Tests use
//! millisecond-scale periods through the same struct.

use serde::{Deserialize, Serialize};

use crate::limits;

/// Parameters of one Kelips node. All nodes of a network must agree on `network_name` and
/// `groups` (they form the network id); the rest may differ from node to node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name of the network; hashed with `groups` and the protocol version into the network id
    /// that every message carries. Default `"quickstore"`.
    pub network_name: String,
    /// Number of affinity groups `k`, fixed when a network is created (about √N); 0: groups
    /// that size themselves (`k = 2^b` prefix groups, `b` following the network's size, see
    /// [`crate::structure`]; the simulator runs it, the node not yet). Default 16.
    pub groups: u32,
    /// Contacts kept per foreign group (`c`). Default 3.
    pub contacts_per_group: usize,
    /// A node bumps its own heartbeat counter this often. Default 1000 ms.
    pub heartbeat_period_ms: u64,
    /// One gossip round (group and cross-group) this often. Default 1000 ms.
    pub gossip_period_ms: u64,
    /// Group members gossiped to per round; one of them is chosen uniformly, the others with
    /// probability ∝ 1/rtt². Default 3.
    pub fanout: usize,
    /// Of the `fanout` group targets, how many are drawn uniformly (at least one); the rest
    /// ∝ 1/rtt². Default 1.
    pub uniform_targets: usize,
    /// Contacts gossiped to per round. Default 2.
    pub contact_fanout: usize,
    /// A member whose (incarnation, heartbeat) has not risen for this long is failed; it is
    /// removed after twice this (`T_cleanup`). Default 15 000 ms: the simulator shows no false
    /// detection at N = 3,000 and N = 10,000 with 5% loss (BENCHMARKS.md).
    pub t_fail_ms: u64,
    /// A contact not heard from for this long is stale: it is probed first, and any fresher
    /// candidate replaces it. Must exceed `t_fail_ms`. Default 60 000 ms.
    pub t_contact_ms: u64,
    /// Rounds during which a new or changed entry or tuple is fresh, i.e. sent before older
    /// ones. Default 3.
    pub fresh_rounds: u8,
    /// Full group entries per group message, fresh ones first. Default 4.
    pub entry_ration: usize,
    /// Of those, how many may be older entries picked at random when fewer are fresh. Default 0:
    /// a member missed while fresh is pulled (`Want`) as soon as a digest names it, and one
    /// random entry per message cost ~9% of all gossip bytes at N = 10,000.
    pub random_entry_ration: usize,
    /// Fingerprints of fresh file tuples announced per group message; receivers pull the
    /// tuples they lack. Default 16.
    pub tuple_ration: usize,
    /// Own-group entries a cross-group message carries (candidates for the receiver's
    /// contacts). Default 1 (2 cost 15% more bytes for no measured gain, BENCHMARKS.md).
    pub cross_entry_ration: usize,
    /// Contacts a cross-group message carries: one of the receiver's own group when known,
    /// the rest of other groups. Default 1.
    pub cross_contact_ration: usize,
    /// Anti-entropy exchange of file tuples with one random group member this often.
    /// Default 10 000 ms.
    pub sync_period_ms: u64,
    /// Tuples sent at most per anti-entropy reply or push. Default 64.
    pub sync_ration: usize,
    /// Re-contact a bootstrap or a remembered peer this often, so partitions heal. Default
    /// 30 000 ms.
    pub rejoin_period_ms: u64,
    /// How long to wait for the answer to a join, view or lookup request. Default 2000 ms.
    pub request_timeout_ms: u64,
    /// Contacts asked in parallel in the first round of a lookup. Default 3 (every contact of
    /// the group), where DESIGN.md says 2: at N = 10,000 after half the nodes die at once, 2
    /// answer 98.3% of lookups in one hop and 3 answer 99.1% (BENCHMARKS.md).
    pub lookup_parallelism: usize,
    /// Steps of the random walk inside the target group when contacts fail. Default 3.
    pub lookup_walk_ttl: u8,
    /// Lookups in flight at once; more are refused. Default 1024.
    pub max_pending_lookups: usize,
    /// Largest group view kept; entries beyond it are refused. Default 4096.
    pub max_group_size: usize,
    /// Largest number of file tuples kept. Default 1 000 000.
    pub max_tuples: usize,
    /// A tuple none of whose holders is in the view any more (all failed and removed: down
    /// or gone) is kept this long before the store drops it, so that lookups answer
    /// "unavailable" while its holders may come back with their disks, not "not found". 0
    /// drops it at once (the simulator's setting, so its traces stay comparable). Default
    /// 3 600 000 ms (1 h).
    pub orphan_tuple_ttl_ms: u64,
    /// Peers remembered (bounded) for rejoins after a partition. Default 64.
    pub remembered_peers: usize,
    /// Replicas per file (`R`). Default 3.
    pub replication: usize,
    /// With `groups = 0`: how long a node's estimate of the network's size must ask for
    /// another level before the node proposes it. Default 10 000 ms.
    pub structure_hold_ms: u64,
    /// With `groups = 0`: how long after a change of level the previous structure is kept
    /// (lookups ask under both, tuples that left the group are kept to answer them).
    /// Default 60 000 ms.
    pub structure_transition_ms: u64,
    /// Who may write names: [`WritePolicy::Open`] (anyone; the default here and in the
    /// simulator) or [`WritePolicy::Signed`] (versions signed by the name's owner or a key it
    /// granted a prefix; the real node's default). Every node of a network must use the same.
    /// Not a `[kelips]` key: the node sets it from `network.writes`.
    #[serde(skip)]
    pub writes: crate::auth::WritePolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network_name: "quickstore".into(),
            groups: 16,
            contacts_per_group: 3,
            heartbeat_period_ms: 1000,
            gossip_period_ms: 1000,
            fanout: 3,
            uniform_targets: 1,
            contact_fanout: 2,
            t_fail_ms: 15_000,
            t_contact_ms: 60_000,
            fresh_rounds: 3,
            entry_ration: 4,
            random_entry_ration: 0,
            tuple_ration: 16,
            cross_entry_ration: 1,
            cross_contact_ration: 1,
            sync_period_ms: 10_000,
            sync_ration: 64,
            rejoin_period_ms: 30_000,
            request_timeout_ms: 2000,
            lookup_parallelism: 3,
            lookup_walk_ttl: 3,
            max_pending_lookups: 1024,
            max_group_size: 4096,
            max_tuples: 1_000_000,
            orphan_tuple_ttl_ms: 3_600_000,
            remembered_peers: 64,
            replication: 3,
            structure_hold_ms: 10_000,
            structure_transition_ms: 60_000,
            writes: crate::auth::WritePolicy::Open,
        }
    }
}

/// A configuration value that cannot work, with the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{key}`: {reason}")]
pub struct ConfigError {
    /// The offending key, as spelled in the config file.
    pub key: &'static str,
    /// Why the value is refused.
    pub reason: String,
}

fn check(ok: bool, key: &'static str, reason: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            key,
            reason: reason(),
        })
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    check(value >= min && value <= max, key, || {
        format!("{value} is outside {min}..={max}")
    })
}

impl Config {
    /// Refuses values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            !self.network_name.is_empty() && self.network_name.len() <= 64,
            "network_name",
            || "must be 1 to 64 bytes".into(),
        )?;
        in_range("groups", self.groups, 0, limits::MAX_GROUPS)?;
        in_range("structure_hold_ms", self.structure_hold_ms, 0, 86_400_000)?;
        in_range(
            "structure_transition_ms",
            self.structure_transition_ms,
            0,
            86_400_000,
        )?;
        in_range(
            "orphan_tuple_ttl_ms",
            self.orphan_tuple_ttl_ms,
            0,
            30 * 24 * 3_600_000,
        )?;
        in_range(
            "contacts_per_group",
            self.contacts_per_group,
            1,
            limits::MAX_CONTACTS_PER_GROUP,
        )?;
        in_range(
            "heartbeat_period_ms",
            self.heartbeat_period_ms,
            1,
            3_600_000,
        )?;
        in_range("gossip_period_ms", self.gossip_period_ms, 1, 3_600_000)?;
        in_range("fanout", self.fanout, 1, 16)?;
        in_range("uniform_targets", self.uniform_targets, 1, self.fanout)?;
        in_range("contact_fanout", self.contact_fanout, 0, 16)?;
        check(
            self.t_fail_ms >= 2 * self.gossip_period_ms.max(self.heartbeat_period_ms),
            "t_fail_ms",
            || "must be at least two gossip and heartbeat periods".into(),
        )?;
        check(self.t_contact_ms > self.t_fail_ms, "t_contact_ms", || {
            format!("must exceed t_fail_ms ({})", self.t_fail_ms)
        })?;
        in_range("fresh_rounds", self.fresh_rounds, 1, 64)?;
        in_range(
            "entry_ration",
            self.entry_ration,
            1,
            limits::MAX_RATION_ENTRIES,
        )?;
        check(
            self.random_entry_ration <= self.entry_ration,
            "random_entry_ration",
            || format!("must not exceed entry_ration ({})", self.entry_ration),
        )?;
        in_range(
            "tuple_ration",
            self.tuple_ration,
            0,
            limits::MAX_RATION_TUPLES,
        )?;
        in_range(
            "cross_entry_ration",
            self.cross_entry_ration,
            0,
            limits::MAX_RATION_ENTRIES,
        )?;
        in_range(
            "cross_contact_ration",
            self.cross_contact_ration,
            0,
            limits::MAX_RATION_ENTRIES,
        )?;
        in_range("sync_period_ms", self.sync_period_ms, 1, 86_400_000)?;
        in_range("sync_ration", self.sync_ration, 1, limits::MAX_SYNC_TUPLES)?;
        in_range("rejoin_period_ms", self.rejoin_period_ms, 1, 86_400_000)?;
        in_range("request_timeout_ms", self.request_timeout_ms, 1, 600_000)?;
        in_range("lookup_parallelism", self.lookup_parallelism, 1, 8)?;
        in_range("lookup_walk_ttl", self.lookup_walk_ttl, 0, 16)?;
        in_range("max_pending_lookups", self.max_pending_lookups, 1, 1 << 20)?;
        in_range(
            "max_group_size",
            self.max_group_size,
            1,
            limits::MAX_DIGEST_ITEMS,
        )?;
        in_range("max_tuples", self.max_tuples, 1, 100_000_000)?;
        in_range("remembered_peers", self.remembered_peers, 1, 4096)?;
        in_range("replication", self.replication, 1, limits::MAX_HOLDERS)?;
        Ok(())
    }

    /// `T_cleanup`: a failed member is removed this long after its last heartbeat increase.
    pub fn t_cleanup_ms(&self) -> u64 {
        2 * self.t_fail_ms
    }

    /// Whether groups size themselves (`groups = 0`).
    pub fn self_sizing(&self) -> bool {
        self.groups == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = Config {
            groups: limits::MAX_GROUPS + 1,
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "groups");
        let bad = Config {
            t_contact_ms: 5_000,
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "t_contact_ms");
        let bad = Config {
            random_entry_ration: 9,
            ..Config::default()
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(err.key, "random_entry_ration");
        assert!(err.to_string().contains("random_entry_ration"));
    }
}
