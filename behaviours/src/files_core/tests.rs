//! One hand-driven test per rule: a rule, a scenario, an assertion.

use std::collections::BTreeSet;
use std::sync::Arc;

use rand::SeedableRng;

use super::holders::{HolderKnowledge, keeps_copies};
use super::placement::place;
use super::rank::{by_rank, leader};
use super::*;
use crate::Millis;
use crate::id::SimId;
use crate::tuple::{FileTuple, Version};

const NAME: &str = "docs/report.pdf";
const FREE: u64 = 1 << 40;

fn id(n: u32) -> SimId {
    SimId(n)
}

fn hash(lamport: u64) -> Hash {
    [lamport as u8 + 1; 32]
}

fn tuple(lamport: u64, holders: &[SimId], epoch: u32) -> Arc<FileTuple<SimId>> {
    let mut holders = holders.to_vec();
    holders.sort();
    Arc::new(FileTuple {
        name: NAME.into(),
        version: Version {
            lamport,
            blake3: hash(lamport),
        },
        size: 1000,
        holders,
        epoch,
        deleted: false,
        auth: None,
    })
}

/// Ids 1..=12 ranked for `NAME`, highest first: `ranked()[0]` leads any set it is in.
fn ranked() -> Vec<SimId> {
    by_rank(NAME, (1..=12).map(id).collect())
}

/// One node driven by hand: a view of members (live or failed), a clock, inputs every second.
struct Node {
    core: FilesCore<SimId>,
    now: Millis,
    /// (member, live, last heard)
    members: Vec<(SimId, bool, Millis)>,
    /// Whether anything is heard (false: the node is cut off).
    hearing: bool,
    out: Vec<Output<SimId>>,
}

impl Node {
    fn new(me: SimId, others: &[SimId]) -> Self {
        let mut core = FilesCore::new(me, FilesConfig::default(), 7).unwrap();
        core.set_free_space(FREE);
        Self {
            core,
            now: 1_000,
            members: others.iter().map(|o| (*o, true, 1_000)).collect(),
            hearing: true,
            out: Vec::new(),
        }
    }

    /// A node that joined at the start and has been settled since.
    fn settled(me: SimId, others: &[SimId]) -> Self {
        Self::settled_with(me, others, FilesConfig::default())
    }

    /// As [`Node::settled`], with `config`.
    fn settled_with(me: SimId, others: &[SimId], config: FilesConfig) -> Self {
        let mut node = Self::new(me, others);
        node.core = FilesCore::new(me, config, 7).unwrap();
        node.core.set_free_space(FREE);
        node.core.handle_joined(node.now);
        node.run(25_000);
        assert!(node.core.is_settled(node.now));
        node.out.clear();
        node
    }

    fn snapshot(&self) -> Vec<MemberState<SimId>> {
        self.members
            .iter()
            .map(|(m, live, heard)| MemberState {
                id: *m,
                live: *live,
                last_heard: *heard,
                free_space: FREE,
            })
            .collect()
    }

    /// Runs `ms` of time in one-second steps.
    fn run(&mut self, ms: Millis) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 1_000;
            if self.hearing {
                self.core.handle_heard(self.now);
                for (_, live, heard) in &mut self.members {
                    if *live {
                        *heard = self.now;
                    }
                }
            }
            let view = self.snapshot();
            self.core.handle_view(self.now, view);
            self.core.handle_tick(self.now);
            self.drain();
        }
    }

    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            self.out.push(output);
        }
    }

    fn fail(&mut self, who: SimId) {
        for m in &mut self.members {
            if m.0 == who {
                m.1 = false;
            }
        }
    }

    fn publishes(&self) -> Vec<FileTuple<SimId>> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Command(Command::Publish { tuple }) => Some(tuple.clone()),
                _ => None,
            })
            .collect()
    }

    fn commands(&self) -> Vec<Command<SimId>> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Command(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// The member the first `CopyTo` for `purpose` goes to.
    fn copy_target(&self, purpose: CopyPurpose) -> Option<SimId> {
        self.commands().into_iter().find_map(|c| match c {
            Command::CopyTo { to, purpose: p, .. } if p == purpose => Some(to),
            _ => None,
        })
    }

    /// The names of the `CopyTo`s for `purpose`, in the order asked.
    fn copied_names(&self, purpose: CopyPurpose) -> Vec<String> {
        self.commands()
            .into_iter()
            .filter_map(|c| match c {
                Command::CopyTo {
                    tuple, purpose: p, ..
                } if p == purpose => Some(tuple.name.to_string()),
                _ => None,
            })
            .collect()
    }

    fn events(&self) -> Vec<Event<SimId>> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn deletes(&self) -> Vec<Hash> {
        self.commands()
            .into_iter()
            .filter_map(|c| match c {
                Command::Delete { hash } => Some(hash),
                _ => None,
            })
            .collect()
    }

    fn holds(&mut self, t: &Arc<FileTuple<SimId>>) {
        self.core
            .handle_blob_stored(self.now, t.version.blake3, t.size);
        self.core.handle_tuple(self.now, t.clone());
    }
}

fn set(ids: &[SimId]) -> BTreeSet<SimId> {
    ids.iter().copied().collect()
}

// ---- placement ---------------------------------------------------------------------------

#[test]
fn placement_takes_live_members_with_room_never_excluded_ones() {
    let mut view = Membership::default();
    view.update(
        0,
        vec![
            MemberState {
                id: id(2),
                live: true,
                last_heard: 0,
                free_space: 10,
            },
            MemberState {
                id: id(3),
                live: true,
                last_heard: 0,
                free_space: 5_000,
            },
            MemberState {
                id: id(4),
                live: false,
                last_heard: 0,
                free_space: 9_000,
            },
            MemberState {
                id: id(5),
                live: true,
                last_heard: 0,
                free_space: 8_000,
            },
        ],
        true,
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let picked = place(&mut rng, &id(1), 100, &view, 1_000, &[id(5)], 3);
    // 2 lacks room, 4 is failed, 5 is excluded, 1 (this node) lacks room: only 3 fits.
    assert_eq!(picked, vec![id(3)]);
    // Power of two choices: with two candidates, the one with more room wins whenever both
    // are drawn, so it is picked first more often than not.
    let firsts = (0..200)
        .filter(|seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(*seed);
            place(&mut rng, &id(1), 100, &view, 50, &[id(2)], 1) == vec![id(5)]
        })
        .count();
    assert!(firsts > 120, "{firsts}");
}

// ---- leader choice -----------------------------------------------------------------------

#[test]
fn the_leader_is_the_live_holder_ranked_first_and_only_it_acts() {
    let r = ranked();
    let holders = [r[0], r[1], r[2], r[3]];
    assert_eq!(leader(NAME, holders.iter()), Some(&r[0]));
    // Four live copies, R = 3: the leader trims, the second-ranked holder does not.
    let t = tuple(1, &holders, 0);
    for (me, acts) in [(r[0], true), (r[1], false)] {
        let others: Vec<SimId> = holders.iter().copied().filter(|h| *h != me).collect();
        let mut node = Node::settled(me, &others);
        node.holds(&t);
        node.run(6_000);
        assert_eq!(!node.publishes().is_empty(), acts, "{me:?}");
    }
}

// ---- the ack rule (d) --------------------------------------------------------------------

#[test]
fn a_put_is_acknowledged_only_when_every_counted_home_recorded_the_tuple() {
    let mut node = Node::settled(id(1), &[id(2), id(3), id(4)]);
    let start = node
        .core
        .start_put(node.now, NAME, 1000, &[id(1), id(2), id(3)], 0)
        .unwrap();
    assert_eq!(start.wanted, 3);
    assert_eq!(start.forward_to, vec![id(2), id(3)]);
    let put = start.put;
    node.core.handle_put_home_ready(node.now, put, 4);
    for home in [id(1), id(2), id(3)] {
        node.core.handle_put_stored(node.now, put, home, hash(5));
    }
    node.drain();
    // Durable at 3: published locally, commits sent to the two other homes, no ack yet.
    let published = node.publishes();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].version.lamport, 5);
    assert_eq!(published[0].holders, vec![id(1), id(2), id(3)]);
    let commits: BTreeSet<SimId> = node
        .commands()
        .iter()
        .filter_map(|c| match c {
            Command::SendCommit { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(commits, set(&[id(2), id(3)]));
    let acked = |n: &Node| {
        n.events()
            .iter()
            .any(|e| matches!(e, Event::PutAcknowledged { .. }))
    };
    assert!(!acked(&node));
    node.core.handle_commit_recorded(node.now, put, id(2));
    node.drain();
    assert!(!acked(&node), "one home has not recorded the tuple yet");
    node.core.handle_commit_recorded(node.now, put, id(3));
    node.drain();
    assert!(acked(&node));
}

#[test]
fn a_home_that_fails_is_replaced_by_a_copy_before_the_ack() {
    let mut node = Node::settled(id(1), &[id(2), id(3), id(4)]);
    let put = node
        .core
        .start_put(node.now, NAME, 1000, &[id(1), id(2), id(3)], 0)
        .unwrap()
        .put;
    node.core.handle_put_stored(node.now, put, id(1), hash(1));
    node.core.handle_put_stored(node.now, put, id(2), hash(1));
    node.core.handle_put_home_failed(node.now, put, id(3));
    node.drain();
    let copies: Vec<SimId> = node
        .commands()
        .iter()
        .filter_map(|c| match c {
            Command::CopyTo {
                to,
                purpose: CopyPurpose::Put(p),
                ..
            } if *p == put => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(copies, vec![id(4)], "the only member not tried");
    assert!(
        node.publishes().is_empty(),
        "2 of 3 copies: nothing published"
    );
    node.core
        .handle_copy_done(node.now, NAME, id(4), CopyPurpose::Put(put));
    node.core.handle_commit_recorded(node.now, put, id(2));
    node.core.handle_commit_recorded(node.now, put, id(4));
    node.drain();
    let acked = node.events().into_iter().find_map(|e| match e {
        Event::PutAcknowledged { tuple, copies, .. } => Some((tuple, copies)),
        _ => None,
    });
    let (tuple, copies) = acked.expect("acknowledged");
    assert_eq!(copies, 3);
    assert_eq!(tuple.holders, vec![id(1), id(2), id(4)]);
}

#[test]
fn each_home_records_the_committed_tuple_so_the_name_survives_the_first_home() {
    let t = tuple(3, &[id(1), id(2), id(3)], 0);
    let mut home = Node::settled(id(2), &[id(1), id(3)]);
    // Without the bytes, a commit is refused.
    assert_eq!(
        home.core.handle_commit(home.now, FileTuple::clone(&t)),
        Err(CommitError::NoCopy)
    );
    home.core
        .handle_blob_stored(home.now, t.version.blake3, t.size);
    home.core
        .handle_commit(home.now, FileTuple::clone(&t))
        .unwrap();
    home.drain();
    assert_eq!(home.publishes(), vec![FileTuple::clone(&t)]);
    assert_eq!(home.core.tuple(NAME), Some(&t));
}

#[test]
fn a_put_past_its_deadline_fails() {
    let mut node = Node::settled(id(1), &[id(2), id(3)]);
    let put = node
        .core
        .start_put(node.now, NAME, 1000, &[id(1), id(2), id(3)], 0)
        .unwrap()
        .put;
    node.core.handle_put_stored(node.now, put, id(1), hash(1));
    node.run(FilesConfig::default().put_deadline_ms + 1_000);
    assert!(node.events().iter().any(|e| matches!(
        e,
        Event::PutFailed { put: p, reason: PutFailure::Deadline { .. } } if *p == put
    )));
    // Its own copy names nothing: deleted at once, not after the orphan grace.
    assert_eq!(node.deletes(), vec![hash(1)]);
    assert!(!node.core.has_blob(&hash(1)));
}

#[test]
fn a_failed_put_keeps_bytes_another_name_holds() {
    let mut node = Node::settled(id(1), &[id(2), id(3)]);
    // The same bytes are already held under another name.
    let t = tuple(1, &[id(1), id(2), id(3)], 0);
    node.holds(&t);
    let put = node
        .core
        .start_put(node.now, "other/name", 1000, &[id(1), id(2), id(3)], 0)
        .unwrap()
        .put;
    node.core.handle_put_stored(node.now, put, id(1), hash(1));
    node.run(FilesConfig::default().put_deadline_ms + 1_000);
    assert!(node.deletes().is_empty(), "{:?}", node.deletes());
}

// ---- hazard (a): restart -----------------------------------------------------------------

#[test]
fn a_restarted_node_neither_repairs_nor_publishes_before_it_joined_and_settled() {
    let r = ranked();
    let t = tuple(1, &[r[0], r[1], r[2]], 0);
    // r[0] restarts with its disk: it leads the name, but its view is empty.
    let mut node = Node::new(r[0], &[]);
    node.holds(&t);
    node.run(60_000);
    assert!(node.commands().is_empty(), "{:?}", node.commands());
    // It joins and learns one other holder only; until settled, nothing.
    node.members = vec![(r[1], true, node.now)];
    node.core.handle_joined(node.now);
    node.run(15_000);
    assert!(node.publishes().is_empty());
    // Settled: r[2] is merely unknown (no evidence of death), so it stays listed.
    node.run(20_000);
    assert!(node.core.is_settled(node.now));
    for published in node.publishes() {
        assert!(published.holders.len() >= 3, "{published:?}");
    }
}

// ---- hazard (b): local health ------------------------------------------------------------

#[test]
fn a_paused_node_does_not_shrink_trim_or_delete_on_waking() {
    let r = ranked();
    let t = tuple(1, &[r[0], r[1], r[2]], 0);
    let mut node = Node::settled(r[0], &[r[1], r[2], r[3]]);
    node.holds(&t);
    node.run(6_000);
    node.out.clear();
    // Paused for 20 s: on waking every member looks failed (no rise for t_fail).
    node.now += 20_000;
    for m in &mut node.members {
        m.1 = false;
    }
    node.hearing = false;
    node.run(2_000);
    assert!(
        node.events()
            .iter()
            .any(|e| matches!(e, Event::HealthLost { gap_ms } if *gap_ms > 5_000))
    );
    // They are heard again a few seconds later.
    for m in &mut node.members {
        m.1 = true;
    }
    node.hearing = true;
    node.run(40_000);
    assert!(node.publishes().is_empty(), "{:?}", node.publishes());
    assert!(node.deletes().is_empty());
}

#[test]
fn a_node_that_hears_nothing_does_not_shrink() {
    let r = ranked();
    let t = tuple(1, &[r[0], r[1], r[2]], 0);
    let mut node = Node::settled(r[0], &[r[1], r[2], r[3]]);
    node.holds(&t);
    node.run(6_000);
    node.out.clear();
    // Its link goes down: timers run on time, but nothing is heard and the view fails.
    node.hearing = false;
    node.run(16_000);
    for m in &mut node.members {
        m.1 = false;
    }
    node.run(60_000);
    assert!(node.events().contains(&Event::HealthLost { gap_ms: 0 }));
    assert!(!node.core.is_settled(node.now));
    assert!(node.publishes().is_empty(), "{:?}", node.publishes());
}

// ---- hazard (c): never below the copies known to exist -----------------------------------

#[test]
fn a_bogus_smaller_set_is_merged_not_believed_and_the_dropped_copies_re_add_themselves() {
    let good = tuple(1, &[id(1), id(2), id(3)], 0);
    let bogus = tuple(1, &[id(1)], 1);
    let mut node = Node::settled(id(2), &[id(1), id(3)]);
    node.holds(&good);
    node.core.handle_tuple(node.now, bogus.clone());
    // The knowledge keeps every copy it saw listed.
    assert_eq!(
        node.core.knowledge(NAME).unwrap().known,
        set(&[id(1), id(2), id(3)])
    );
    node.run(6_000);
    // This node holds an intact copy the set lacks while it lists too few: it adds itself
    // back at the same epoch (equal ranks merge by union).
    let readd = node.publishes();
    assert_eq!(readd.len(), 1);
    assert_eq!(readd[0].epoch, 1);
    assert_eq!(readd[0].holders, vec![id(1), id(2)]);
    assert!(node.deletes().is_empty());
}

#[test]
fn no_set_is_published_with_fewer_holders_than_known_copies() {
    let live = |_: &SimId| true;
    let alive = [id(1), id(2), id(3)];
    assert!(!keeps_copies(&[id(1)], &alive, 3, live));
    assert!(!keeps_copies(&[id(1), id(2)], &alive, 3, live));
    assert!(keeps_copies(&[id(1), id(2), id(3)], &alive, 3, live));
    // A trim drops a copy only down to R live ones.
    let four = [id(1), id(2), id(3), id(4)];
    assert!(keeps_copies(&[id(1), id(2), id(3)], &four, 3, live));
    // Knowledge merges an older epoch's holders instead of forgetting them.
    let mut k = HolderKnowledge::new(&tuple(1, &[id(1)], 2));
    k.observe(&tuple(1, &[id(2), id(3)], 1), false);
    assert_eq!(k.known, set(&[id(1), id(2), id(3)]));
}

// ---- repair, trim ------------------------------------------------------------------------

#[test]
fn the_leader_restores_r_copies_when_a_holder_dies() {
    let r = ranked();
    let (me, a, b, spare) = (r[0], r[1], r[2], r[3]);
    let t = tuple(1, &[me, a, b], 0);
    let mut node = Node::settled(me, &[a, b, spare]);
    node.holds(&t);
    node.run(6_000);
    assert!(node.commands().is_empty());
    node.fail(b);
    node.run(6_000);
    let copy = node.copy_target(CopyPurpose::Repair);
    assert_eq!(copy, Some(spare));
    assert!(
        node.publishes().is_empty(),
        "published only once the copy is durable"
    );
    node.core
        .handle_copy_done(node.now, NAME, spare, CopyPurpose::Repair);
    node.drain();
    let published = node.publishes();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].holders, {
        let mut h = vec![me, a, spare];
        h.sort();
        h
    });
    assert_eq!(published[0].epoch, 1);
}

#[test]
fn a_name_down_to_one_copy_is_repaired_before_names_down_to_two() {
    // One repair slot; in name order `NAME` comes first, but `LAST` has lost two of its
    // three holders and `NAME` one: `LAST` takes the slot.
    const LAST: &str = "zz/last.bin";
    let r = ranked();
    let (me, a, b, c, d, spare) = (r[0], r[1], r[2], r[3], r[4], r[5]);
    let config = FilesConfig {
        max_repairs: 1,
        ..FilesConfig::default()
    };
    let mut node = Node::settled_with(me, &[a, b, c, d, spare], config);
    node.holds(&tuple(1, &[me, a, b], 0));
    let mut last = FileTuple::clone(&tuple(1, &[me, c, d], 0));
    last.name = LAST.into();
    last.version.blake3 = [0xee; 32];
    node.holds(&Arc::new(last));
    node.run(6_000);
    assert!(node.commands().is_empty());
    for dead in [b, c, d] {
        node.fail(dead);
    }
    node.run(6_000);
    assert_eq!(
        node.copied_names(CopyPurpose::Repair),
        vec![LAST.to_string()]
    );
}

#[test]
fn a_new_version_frees_the_repair_slots_of_the_old_one() {
    let r = ranked();
    let (me, a, b, spare) = (r[0], r[1], r[2], r[3]);
    let config = FilesConfig {
        max_repairs: 1,
        ..FilesConfig::default()
    };
    let mut node = Node::settled_with(me, &[a, b, spare], config);
    node.holds(&tuple(1, &[me, a, b], 0));
    node.run(6_000);
    node.fail(b);
    node.run(6_000);
    let copies = |node: &Node, lamport: u64| {
        node.commands()
            .into_iter()
            .filter(|c| {
                matches!(c, Command::CopyTo { tuple, purpose: CopyPurpose::Repair, .. }
                    if tuple.version.lamport == lamport)
            })
            .count()
    };
    assert_eq!(copies(&node, 1), 1, "the one repair slot is taken");
    // Version 2 arrives while that copy is in flight; it too lists the dead holder. Its
    // repair needs the slot the old version's copy held.
    node.out.clear();
    node.holds(&tuple(2, &[me, a, b], 0));
    node.run(6_000);
    assert!(
        copies(&node, 2) >= 1,
        "the slot of the superseded copy was never freed"
    );
}

#[test]
fn the_leader_trims_to_the_r_highest_ranked_live_copies() {
    let r = ranked();
    let t = tuple(1, &[r[0], r[1], r[2], r[3]], 0);
    let mut node = Node::settled(r[0], &[r[1], r[2], r[3]]);
    node.holds(&t);
    node.run(6_000);
    let published = node.publishes();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].holders, {
        let mut h = vec![r[0], r[1], r[2]];
        h.sort();
        h
    });
    assert_eq!(published[0].epoch, 1);
}

#[test]
fn a_holder_without_the_bytes_fetches_them_from_a_live_holder() {
    let t = tuple(1, &[id(1), id(2), id(3)], 0);
    let mut node = Node::settled(id(1), &[id(2), id(3)]);
    node.core.handle_tuple(node.now, t.clone());
    node.run(6_000);
    let fetch = node.commands().into_iter().find_map(|c| match c {
        Command::FetchFrom { from, .. } => Some(from),
        _ => None,
    });
    assert_eq!(fetch, Some(id(2)));
    node.core.handle_fetch_done(node.now, NAME, id(2));
    assert!(node.core.has_blob(&t.version.blake3));
}

#[test]
fn a_corrupt_copy_is_deleted_at_once_and_fetched_again() {
    let t = tuple(1, &[id(1), id(2), id(3)], 0);
    let mut node = Node::settled(id(1), &[id(2), id(3)]);
    node.holds(&t);
    node.core.handle_blob_corrupt(node.now, t.version.blake3);
    node.run(6_000);
    assert_eq!(node.deletes(), vec![t.version.blake3]);
    assert!(
        node.commands()
            .iter()
            .any(|c| matches!(c, Command::FetchFrom { .. }))
    );
}

// ---- hazard (e): lost and unavailable ----------------------------------------------------

#[test]
fn a_file_whose_every_copy_is_gone_is_lost_and_listed_without_holders() {
    let t = tuple(1, &[id(1), id(2), id(3)], 0);
    let mut node = Node::settled(id(1), &[id(2), id(3)]);
    node.holds(&t);
    node.core.handle_blob_corrupt(node.now, t.version.blake3);
    node.run(6_000);
    node.core
        .handle_fetch_failed(node.now, NAME, id(2), FetchFailure::Missing);
    node.core
        .handle_fetch_failed(node.now, NAME, id(3), FetchFailure::Corrupt);
    node.drain();
    assert!(
        node.events()
            .iter()
            .any(|e| matches!(e, Event::CopiesLost { .. }))
    );
    assert!(node.core.listed_holders(&t).is_empty());
    assert_eq!(node.core.availability(Some(&t)), Availability::Lost);
}

#[test]
fn a_file_whose_every_holder_is_down_is_unavailable_not_not_found() {
    let t = tuple(1, &[id(2), id(3)], 0);
    let mut node = Node::settled(id(1), &[id(2), id(3), id(4)]);
    assert_eq!(
        node.core.availability(Some(&t)),
        Availability::Available {
            holders: vec![id(2), id(3)]
        }
    );
    node.fail(id(2));
    node.fail(id(3));
    node.run(1_000);
    assert_eq!(
        node.core.availability(Some(&t)),
        Availability::Unavailable {
            holders: vec![id(2), id(3)]
        }
    );
    assert_eq!(node.core.availability(None), Availability::NotFound);
}

// ---- hand-off ----------------------------------------------------------------------------

#[test]
fn a_clean_stop_hands_each_copy_off_before_leaving_the_set() {
    let t = tuple(1, &[id(1), id(2), id(3)], 0);
    let mut node = Node::settled(id(1), &[id(2), id(3), id(4)]);
    node.holds(&t);
    node.out.clear();
    assert_eq!(node.core.hand_off(node.now).asked, 1);
    node.drain();
    assert!(
        node.publishes().is_empty(),
        "not before the copy is durable"
    );
    let to = node.copy_target(CopyPurpose::HandOff);
    assert_eq!(to, Some(id(4)));
    node.core
        .handle_copy_done(node.now, NAME, id(4), CopyPurpose::HandOff);
    node.drain();
    let published = node.publishes();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].holders, vec![id(2), id(3), id(4)]);
    assert_eq!(published[0].epoch, 1);
    assert!(node.events().contains(&Event::HandedOff {
        name: NAME.into(),
        to: id(4)
    }));
}

#[test]
fn a_clean_stop_hands_off_last_copies_first_then_small_names() {
    // The driver serves copies in the order asked: what only this node still holds goes
    // first, then the names that take least time.
    let r = ranked();
    let (me, a, b, c, d, spare) = (r[0], r[1], r[2], r[3], r[4], r[5]);
    let mut node = Node::settled(me, &[a, b, c, d, spare]);
    let named = |name: &str, size: u64, holders: &[SimId], mark: u8| {
        let mut t = FileTuple::clone(&tuple(1, holders, 0));
        t.name = name.into();
        t.size = size;
        t.version.blake3 = [mark; 32];
        Arc::new(t)
    };
    node.holds(&named("a-big", 1 << 30, &[me, a, b], 0xa0));
    node.holds(&named("b-small", 1 << 10, &[me, a, b], 0xb0));
    node.holds(&named("c-last", 1 << 30, &[me, c, d], 0xc0));
    // The stop comes as the view learns that c and d failed (no repair round between).
    node.fail(c);
    node.fail(d);
    let view = node.snapshot();
    node.core.handle_view(node.now, view);
    node.drain();
    node.out.clear();
    assert_eq!(node.core.hand_off(node.now).asked, 3);
    node.drain();
    assert_eq!(
        node.copied_names(CopyPurpose::HandOff),
        vec!["c-last", "b-small", "a-big"]
    );
}

#[test]
fn a_name_every_other_member_holds_is_counted_as_without_member_not_asked() {
    // A group of exactly R members: nobody can take the copy, and the stop says so.
    let t = tuple(1, &[id(1), id(2), id(3)], 0);
    let mut node = Node::settled(id(1), &[id(2), id(3)]);
    node.holds(&t);
    node.out.clear();
    let start = node.core.hand_off(node.now);
    assert_eq!(
        start,
        HandOffStart {
            asked: 0,
            without_member: 1
        }
    );
    node.drain();
    assert!(node.copy_target(CopyPurpose::HandOff).is_none());
}

#[test]
fn a_failed_hand_off_copy_is_tried_on_another_member_then_given_up() {
    let t = tuple(1, &[id(1), id(2), id(3)], 0);
    let mut node = Node::settled(id(1), &[id(2), id(3), id(4), id(5), id(6), id(7)]);
    node.holds(&t);
    node.out.clear();
    assert_eq!(node.core.hand_off(node.now).asked, 1);
    let mut tried = Vec::new();
    for _ in 0..super::limits::MAX_HAND_OFF_ATTEMPTS {
        node.drain();
        let to = node.copy_target(CopyPurpose::HandOff);
        let to = to.expect("a hand-off copy");
        assert!(!tried.contains(&to) && ![id(1), id(2), id(3)].contains(&to));
        tried.push(to);
        node.out.clear();
        node.core
            .handle_copy_failed(node.now, NAME, to, CopyPurpose::HandOff);
    }
    node.drain();
    assert!(
        node.commands().is_empty(),
        "no fourth try: {:?}",
        node.commands()
    );
    assert!(
        node.events()
            .contains(&Event::HandOffFailed { name: NAME.into() })
    );
    assert!(
        node.publishes().is_empty(),
        "still listed: nothing published"
    );
}

// ---- versions ----------------------------------------------------------------------------

#[test]
fn superseded_versions_are_kept_as_configured_and_protected_from_garbage() {
    let mut node = Node::settled(id(1), &[id(2), id(3)]);
    let v1 = tuple(1, &[id(1), id(2), id(3)], 0);
    let v2 = tuple(2, &[id(1), id(2), id(3)], 0);
    let v3 = tuple(3, &[id(1), id(2), id(3)], 0);
    node.holds(&v1);
    node.holds(&v2);
    node.run(6_000);
    // keep_versions = 1: v1 is kept beside v2.
    assert!(node.core.kept_version(NAME, 1).is_some());
    node.holds(&v3);
    node.run(FilesConfig::default().orphan_grace_ms + 10_000);
    assert!(node.core.kept_version(NAME, 1).is_none());
    assert!(node.core.kept_version(NAME, 2).is_some());
    // v1's blob became garbage and was collected; v2's is kept.
    assert_eq!(node.deletes(), vec![v1.version.blake3]);
}

#[test]
fn a_version_replaced_before_the_core_saw_it_is_kept_when_reported() {
    // A second put right after the first: the store replaced v1 before the driver fed it.
    let mut node = Node::settled(id(1), &[id(2), id(3)]);
    let v1 = tuple(1, &[id(1), id(2), id(3)], 0);
    let v2 = tuple(2, &[id(1), id(2), id(3)], 0);
    node.core
        .handle_blob_stored(node.now, v1.version.blake3, v1.size);
    node.core.handle_version_superseded(node.now, &v1);
    node.holds(&v2);
    node.run(FilesConfig::default().orphan_grace_ms + 10_000);
    assert!(node.core.kept_version(NAME, 1).is_some());
    assert!(node.deletes().is_empty(), "{:?}", node.deletes());
    // A version this node did not hold is not kept.
    let mut other = Node::settled(id(4), &[id(2), id(3)]);
    other.core.handle_version_superseded(other.now, &v1);
    assert!(other.core.kept_version(NAME, 1).is_none());
}

// ---- tombstones --------------------------------------------------------------------------

#[test]
fn a_tombstone_outranks_the_file_and_its_copies_become_garbage() {
    let t = tuple(4, &[id(1), id(2), id(3)], 0);
    let mut node = Node::settled(id(1), &[id(2), id(3)]);
    node.holds(&t);
    let tombstone = node.core.delete(node.now, &t).unwrap();
    assert!(tombstone.deleted);
    assert_eq!(tombstone.version.lamport, 5);
    assert_eq!(
        node.core.delete(node.now, &tombstone),
        Err(DeleteError::AlreadyDeleted)
    );
    assert_eq!(
        node.core.availability(Some(&tombstone)),
        Availability::Deleted
    );
    node.run(FilesConfig::default().orphan_grace_ms + 10_000);
    assert_eq!(node.deletes(), vec![t.version.blake3]);
    assert!(node.core.kept_version(NAME, 4).is_none());
}

// ---- orphan collection -------------------------------------------------------------------

#[test]
fn an_unnamed_blob_is_deleted_after_the_grace_period_and_only_when_settled() {
    let grace = FilesConfig::default().orphan_grace_ms;
    let stray = [9u8; 32];
    // Unsettled (never joined): kept however long.
    let mut node = Node::new(id(1), &[id(2)]);
    node.core.handle_blob_stored(node.now, stray, 10);
    node.run(grace + 60_000);
    assert!(node.deletes().is_empty());
    // Settled: deleted once the grace period has passed, not before.
    let mut node = Node::settled(id(1), &[id(2)]);
    node.core.handle_blob_stored(node.now, stray, 10);
    node.run(grace - 10_000);
    assert!(node.deletes().is_empty());
    node.run(20_000);
    assert_eq!(node.deletes(), vec![stray]);
}

#[test]
fn an_unlisted_copy_of_the_current_version_is_not_deleted_while_the_set_lists_too_few() {
    // The set lists one live holder; this node's copy is not listed and stays.
    let t = tuple(1, &[id(2)], 3);
    let mut node = Node::settled(id(1), &[id(2), id(3)]);
    node.holds(&t);
    node.run(FilesConfig::default().orphan_grace_ms + 10_000);
    assert!(node.deletes().is_empty());
    assert!(node.publishes().iter().any(|p| p.holders.contains(&id(1))));
}

#[test]
fn an_unsettled_node_does_not_let_a_small_set_replace_what_it_knows() {
    let r = ranked();
    let good = tuple(1, &[r[0], r[1], r[2]], 0);
    let mut node = Node::settled(r[1], &[r[0], r[2]]);
    node.holds(&good);
    // Paused: on waking its view says everyone failed, so the target looks like 1 and a
    // set listing only this node would look "enough".
    node.now += 20_000;
    node.fail(r[0]);
    node.fail(r[2]);
    node.run(1_000);
    assert!(!node.core.is_settled(node.now));
    node.core.handle_tuple(node.now, tuple(1, &[r[1]], 1));
    assert_eq!(
        node.core.knowledge(NAME).unwrap().known,
        set(&[r[0], r[1], r[2]])
    );
}

// ---- names that change group (groups that size themselves) -------------------------------

/// Two groups: the first bit of the SHA-1.
const SPLIT: crate::id::Grouping = crate::id::Grouping::Prefix(1);

/// `n` ids of group `group` under [`SPLIT`].
fn of_group(group: u32, n: usize) -> Vec<SimId> {
    (1..)
        .map(id)
        .filter(|i| SPLIT.id_facts(i).group == group)
        .take(n)
        .collect()
}

fn confirms(node: &Node) -> usize {
    node.commands()
        .iter()
        .filter(|c| matches!(c, Command::Confirm { .. }))
        .count()
}

#[test]
fn a_name_whose_copies_all_stayed_in_the_old_group_is_fetched_and_restored_in_the_new_one() {
    let group = SPLIT.name_facts(NAME).0;
    let own = by_rank(NAME, of_group(group, 4));
    let foreign = of_group(1 - group, 3);
    let (me, others) = (own[0], &own[1..]);
    let mut node = Node::settled(me, others);
    node.core.handle_structure(node.now, SPLIT, group);
    // A member ranked lower sees the same set and leaves it to the first.
    let mut second = Node::settled(own[1], &[own[0], own[2], own[3]]);
    second.core.handle_structure(second.now, SPLIT, group);
    let moved = tuple(1, &foreign, 4);
    node.core.handle_tuple(node.now, moved.clone());
    second.core.handle_tuple(second.now, moved.clone());
    node.run(6_000);
    second.run(6_000);
    assert!(second.commands().is_empty(), "{:?}", second.commands());
    let from = match node.commands().as_slice() {
        [Command::FetchFrom { from, .. }] => *from,
        other => panic!("expected one fetch, got {other:?}"),
    };
    assert!(foreign.contains(&from));
    node.core.handle_fetch_done(node.now, NAME, from);
    node.out.clear();
    node.run(6_000);
    // The copy lists itself beside the foreign holders, then copies to R within the group.
    let readded = node.publishes();
    assert_eq!(readded.len(), 1);
    assert!(readded[0].holders.contains(&me) && readded[0].holders.len() == 4);
    node.run(6_000);
    let copies: Vec<SimId> = node
        .commands()
        .into_iter()
        .filter_map(|c| match c {
            Command::CopyTo { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(copies.len(), 2);
    assert!(copies.iter().all(|c| others.contains(c)));
    node.out.clear();
    for to in copies.clone() {
        node.core
            .handle_copy_done(node.now, NAME, to, CopyPurpose::Repair);
    }
    node.drain();
    let last = node.publishes().pop().expect("a set with R own copies");
    let mut expected = copies;
    expected.push(me);
    assert_eq!(set(&last.holders), set(&expected), "foreign holders leave");
}

#[test]
fn a_copy_of_a_name_that_left_the_group_stays_until_its_new_group_lists_r_holders() {
    let name_group = SPLIT.name_facts(NAME).0;
    let own = of_group(1 - name_group, 3);
    let theirs = of_group(name_group, 4);
    let (me, others) = (own[0], &own[1..]);
    let mut node = Node::settled(me, others);
    node.core.handle_structure(node.now, SPLIT, 1 - name_group);
    let held = tuple(1, &own, 2);
    node.holds(&held);
    node.run(6_000);
    // Neither led nor repaired here: only asked about.
    assert_eq!(confirms(&node), 1, "{:?}", node.commands());
    assert!(node.publishes().is_empty());
    node.core.handle_confirmed(node.now, NAME, None);
    node.core.handle_confirmed(
        node.now,
        NAME,
        Some(FileTuple::clone(&tuple(1, &[me, theirs[0], theirs[1]], 5))),
    );
    node.out.clear();
    node.run(6_000);
    assert_eq!(
        confirms(&node),
        1,
        "asked again: two of its group are not R"
    );
    node.core.handle_confirmed(
        node.now,
        NAME,
        Some(FileTuple::clone(&tuple(1, &theirs[..3], 6))),
    );
    node.drain();
    assert!(
        node.events()
            .iter()
            .any(|e| matches!(e, Event::Emigrated { .. }))
    );
    assert!(node.core.tuple(NAME).is_none());
    // The tuple this node still has (listing it, naming its blob) does not bring the name
    // back to be asked about again.
    node.core.handle_tuple(node.now, held.clone());
    assert!(node.core.tuple(NAME).is_none(), "tracked again");
    node.out.clear();
    node.run(FilesConfig::default().orphan_grace_ms + 12_000);
    assert_eq!(confirms(&node), 0, "asked again after it moved");
    assert_eq!(node.deletes(), vec![held.version.blake3]);
}
