//! [`NodeHandle`]: how file tasks ask the swarm task about the Kelips state (lookups, group
//! members for placement, contacts, tuples) and publish tuples. Commands travel over a bounded
//! channel; the swarm task answers each on a oneshot. [`answer`] is the swarm side.

use std::collections::BTreeSet;
use std::sync::Arc;

use libp2p::PeerId;
pub use quickstore_behaviours::files_core::GroupPlace;
use quickstore_behaviours::files_core::MemberState;
use quickstore_behaviours::net::{Behaviour as KelipsBehaviour, Peer};
use quickstore_behaviours::{Entry, FileTuple, LookupOutcome, LookupResult, Millis};
use tokio::sync::{mpsc, oneshot};

use super::wire::PeerInfo;
use crate::blobs::Hash;

/// Commands queued for the swarm task at most.
pub const MAX_QUEUED_COMMANDS: usize = 256;
/// A lookup a file task waits for is abandoned after this (the core's own fallbacks take a
/// few request timeouts).
pub const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Tuples of the own group whose holders are all of other groups (a split brought the
/// name here) passed to the files core per snapshot at most.
pub const MAX_FOREIGN_SETS: usize = 256;
/// Tuples in one listing page at most.
pub const MAX_PAGE: usize = 256;

/// What a held name looks like to the repair loop.
#[derive(Debug, Clone)]
pub struct HeldTuple {
    /// The newest tuple of the name.
    pub tuple: Arc<FileTuple<Peer>>,
    /// Its holders that are live in this node's view (this node included when it holds).
    pub live: Vec<PeerId>,
    /// Live members of the group, this node included: R copies are wanted, or this many when
    /// the group is smaller.
    pub group_live: usize,
}

/// A question for the swarm task.
#[derive(Debug)]
pub enum NodeCommand {
    /// Run a Kelips lookup.
    Lookup {
        /// The name.
        name: String,
        /// The outcome, or why it could not start.
        reply: oneshot::Sender<Result<LookupOutcome<Peer>, String>>,
    },
    /// Choose up to `count` live members of the own group (this node included) by
    /// power-of-two choices on free space, skipping `exclude` and members with less than
    /// `size` bytes free.
    Place {
        /// Bytes to store.
        size: u64,
        /// Members not to choose.
        exclude: Vec<PeerId>,
        /// How many.
        count: usize,
        /// The chosen ones and the number of live members.
        reply: oneshot::Sender<(Vec<PeerInfo>, usize)>,
    },
    /// Contacts of a foreign group, best first.
    Contacts {
        /// The group.
        group: u32,
        /// Them.
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    /// The newest tuple of a name of the own group, if known.
    Tuple {
        /// The name.
        name: String,
        /// It.
        reply: oneshot::Sender<Option<Arc<FileTuple<Peer>>>>,
    },
    /// Publish (merge) a tuple of the own group.
    Publish {
        /// It.
        tuple: FileTuple<Peer>,
        /// Whether it was accepted.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A page of the own group's tuples in name order.
    List {
        /// Names after this one.
        after: Option<String>,
        /// Page size.
        limit: usize,
        /// The page and the last name when more follow.
        reply: oneshot::Sender<(Vec<FileTuple<Peer>>, Option<String>)>,
    },
    /// Every live (not deleted) tuple naming this node as a holder.
    Held {
        /// Them.
        reply: oneshot::Sender<Vec<HeldTuple>>,
    },
    /// What the files core's driver feeds its core with (see [`super::driver`]).
    Snapshot {
        /// Also the tuples the core should see; `None`: the view only.
        tuples: Option<TupleQuery>,
        /// It.
        reply: oneshot::Sender<FilesSnapshot>,
    },
    /// The node's status, as `quickstore status --json` shows it (answered by the swarm
    /// task, which also knows reachability and counters).
    Status {
        /// It.
        reply: oneshot::Sender<crate::status::Status>,
    },
}

/// The file tasks' side: cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<NodeCommand>,
    /// This node.
    pub me: PeerId,
    /// Copies per file.
    pub replication: usize,
    /// How groups are chosen and this node's group, kept current by the swarm task (in a
    /// network whose groups size themselves both change as the network grows and shrinks).
    place: Arc<std::sync::Mutex<GroupPlace>>,
    /// The public IP this node is seen from (kept current by the swarm task).
    site: Arc<std::sync::Mutex<Option<std::net::IpAddr>>>,
}

/// The swarm task stopped.
#[derive(Debug, thiserror::Error)]
#[error("the node is shutting down")]
pub struct NodeGone;

impl NodeHandle {
    /// A handle and the receiving end for the swarm task.
    pub fn new(
        me: PeerId,
        place: GroupPlace,
        replication: usize,
    ) -> (Self, mpsc::Receiver<NodeCommand>) {
        let (commands, receiver) = mpsc::channel(MAX_QUEUED_COMMANDS);
        (
            Self {
                commands,
                me,
                replication,
                place: Arc::new(std::sync::Mutex::new(place)),
                site: Arc::default(),
            },
            receiver,
        )
    }

    /// How groups are chosen now and this node's group.
    pub fn place_now(&self) -> GroupPlace {
        match self.place.lock() {
            Ok(place) => *place,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Records the structure after a change (called by the swarm task).
    pub fn set_place(&self, place: GroupPlace) {
        if let Ok(mut shown) = self.place.lock() {
            *shown = place;
        }
    }

    /// The public IP this node is seen from, once known.
    pub fn site(&self) -> Option<std::net::IpAddr> {
        self.site.lock().ok().and_then(|s| *s)
    }

    /// Records the public IP this node is seen from (called by the swarm task).
    pub fn set_site(&self, ip: Option<std::net::IpAddr>) {
        if let Ok(mut site) = self.site.lock() {
            *site = ip;
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> NodeCommand,
    ) -> Result<T, NodeGone> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| NodeGone)?;
        answer.await.map_err(|_| NodeGone)
    }

    /// Runs a lookup.
    pub async fn lookup(
        &self,
        name: &str,
    ) -> Result<Result<LookupOutcome<Peer>, String>, NodeGone> {
        let name = name.to_string();
        self.ask(|reply| NodeCommand::Lookup { name, reply }).await
    }

    /// Chooses homes in the own group.
    pub async fn place(
        &self,
        size: u64,
        exclude: Vec<PeerId>,
        count: usize,
    ) -> Result<(Vec<PeerInfo>, usize), NodeGone> {
        self.ask(|reply| NodeCommand::Place {
            size,
            exclude,
            count,
            reply,
        })
        .await
    }

    /// Contacts of `group`.
    pub async fn contacts(&self, group: u32) -> Result<Vec<PeerInfo>, NodeGone> {
        self.ask(|reply| NodeCommand::Contacts { group, reply })
            .await
    }

    /// The newest known tuple of `name`.
    pub async fn tuple(&self, name: &str) -> Result<Option<Arc<FileTuple<Peer>>>, NodeGone> {
        let name = name.to_string();
        self.ask(|reply| NodeCommand::Tuple { name, reply }).await
    }

    /// Publishes `tuple`.
    pub async fn publish(&self, tuple: FileTuple<Peer>) -> Result<Result<(), String>, NodeGone> {
        self.ask(|reply| NodeCommand::Publish { tuple, reply })
            .await
    }

    /// A page of the own group's tuples.
    pub async fn list(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<FileTuple<Peer>>, Option<String>), NodeGone> {
        self.ask(|reply| NodeCommand::List {
            after,
            limit,
            reply,
        })
        .await
    }

    /// What this node holds.
    pub async fn held(&self) -> Result<Vec<HeldTuple>, NodeGone> {
        self.ask(|reply| NodeCommand::Held { reply }).await
    }

    /// The state the files core's driver feeds its core with.
    pub async fn snapshot(&self, tuples: Option<TupleQuery>) -> Result<FilesSnapshot, NodeGone> {
        self.ask(|reply| NodeCommand::Snapshot { tuples, reply })
            .await
    }

    /// The node's status (`quickstore status --json`).
    pub async fn status(&self) -> Result<crate::status::Status, NodeGone> {
        self.ask(|reply| NodeCommand::Status { reply }).await
    }
}

fn info(entry: &Entry<Peer>) -> PeerInfo {
    PeerInfo {
        peer: entry.id,
        record: entry.address.clone(),
    }
}

/// Pending lookups of file tasks, by query id.
pub type PendingLookups =
    std::collections::BTreeMap<u64, oneshot::Sender<Result<LookupOutcome<Peer>, String>>>;

/// The swarm task answers one command from the state of `kelips`.
pub fn answer(kelips: &mut KelipsBehaviour, lookups: &mut PendingLookups, command: NodeCommand) {
    match command {
        NodeCommand::Lookup { name, reply } => match kelips.lookup(&name) {
            Ok(query) => {
                lookups.insert(query, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
            }
        },
        NodeCommand::Place {
            size,
            exclude,
            count,
            reply,
        } => {
            let _ = reply.send(place(kelips, size, &exclude, count));
        }
        NodeCommand::Contacts { group, reply } => {
            let core = kelips.core();
            let mut contacts: Vec<_> = core.contacts().of_group(group).iter().collect();
            contacts.sort_by_key(|c| (c.rtt_us.unwrap_or(u32::MAX), c.entry.id));
            let _ = reply.send(contacts.into_iter().map(|c| info(&c.entry)).collect());
        }
        NodeCommand::Tuple { name, reply } => {
            let core = kelips.core();
            let (_, fp) = core.grouping().name_facts(&name);
            let _ = reply.send(core.tuples().get(fp, &name).cloned());
        }
        NodeCommand::Publish { tuple, reply } => {
            let _ = reply.send(kelips.publish(tuple).map_err(|e| e.to_string()));
        }
        NodeCommand::List {
            after,
            limit,
            reply,
        } => {
            // In the store's order (name fingerprint, then name): a range of its map, never
            // a scan and sort of every tuple (any peer may ask, on the swarm task).
            let limit = limit.clamp(1, MAX_PAGE);
            let core = kelips.core();
            let cursor = after
                .as_deref()
                .map(|name| (core.grouping().name_facts(name).1, name));
            let (names, more) = core.tuples().page_after(cursor, limit);
            let next = more
                .then(|| names.last().map(|t| t.name.to_string()))
                .flatten();
            let page = names.into_iter().map(|t| FileTuple::clone(t)).collect();
            let _ = reply.send((page, next));
        }
        NodeCommand::Held { reply } => {
            let core = kelips.core();
            let me = *core.id();
            let live = |p: &Peer| *p == me || core.view().get(p).is_some_and(|m| !m.failed);
            let group_live = core.view().live().count() + 1;
            let mut held = Vec::new();
            for tuple in core.tuples().iter() {
                if tuple.holders.contains(&me) && !tuple.deleted {
                    held.push(HeldTuple {
                        tuple: tuple.clone(),
                        live: tuple
                            .holders
                            .iter()
                            .filter(|p| live(p))
                            .map(|p| p.0)
                            .collect(),
                        group_live,
                    });
                }
            }
            let _ = reply.send(held);
        }
        NodeCommand::Snapshot { tuples, reply } => {
            let _ = reply.send(snapshot(kelips, tuples.as_ref()));
        }
        NodeCommand::Status { reply } => {
            // The swarm task answers it with reachability and counters; this is the core's
            // part alone, for a caller that has nothing more.
            let _ = reply.send(crate::status::Status::of(kelips));
        }
    }
}

/// Which tuples of the own group the files core wants: those listing this node, those naming
/// one of its blobs, and the newest of each name it tracks.
#[derive(Debug, Clone, Default)]
pub struct TupleQuery {
    /// The blobs on disk.
    pub blobs: Arc<BTreeSet<Hash>>,
    /// The names tracked.
    pub names: Vec<Arc<str>>,
}

/// What the swarm task tells the files core's driver at one tick.
#[derive(Debug, Clone, Default)]
pub struct FilesSnapshot {
    /// The Kelips clock (ms since the behaviour started): `members[..].last_heard` is on it.
    pub now_ms: Millis,
    /// The Kelips join finished.
    pub joined: bool,
    /// Kelips messages received so far (rises while the node hears its network).
    pub messages_in: u64,
    /// The own group but this node. A member without an address record is shown with no
    /// free space: it cannot be dialled, so no copy is placed on it.
    pub members: Vec<MemberState<Peer>>,
    /// The tuples asked for, one per name.
    pub tuples: Vec<Arc<FileTuple<Peer>>>,
    /// How groups are chosen now and this node's group.
    pub place: Option<GroupPlace>,
    /// Versions of names this node held that newer ones replaced since the last snapshot
    /// (Kelips `VersionSuperseded`), oldest first.
    pub superseded: Vec<Arc<FileTuple<Peer>>>,
}

/// The swarm task's answer to [`NodeCommand::Snapshot`] (without `superseded`, which the
/// swarm task adds).
pub fn snapshot(kelips: &KelipsBehaviour, query: Option<&TupleQuery>) -> FilesSnapshot {
    let core = kelips.core();
    let members = core
        .view()
        .iter()
        .map(|m| MemberState {
            // No address record: it cannot be dialled, so no copy is placed on it.
            free_space: if m.entry.address.as_bytes().is_empty() {
                0
            } else {
                m.entry.free_space
            },
            ..MemberState::of(m)
        })
        .collect();
    let mut tuples = Vec::new();
    if let Some(query) = query {
        let me = core.id();
        let grouping = core.grouping();
        let own_group = core.group();
        let self_sizing = core.config().self_sizing();
        // Names a split brought here whose copies are all in the group they left.
        let mut foreign_sets = 0;
        let mut seen: BTreeSet<Arc<str>> = BTreeSet::new();
        for tuple in core.tuples().iter() {
            let foreign_set = self_sizing
                && !tuple.deleted
                && foreign_sets < MAX_FOREIGN_SETS
                && tuple
                    .holders
                    .iter()
                    .all(|h| grouping.id_facts(h).group != own_group);
            if tuple.holders.contains(me)
                || query.blobs.contains(&tuple.version.blake3)
                || foreign_set
            {
                foreign_sets += usize::from(foreign_set);
                seen.insert(tuple.name.clone());
                tuples.push(tuple.clone());
            }
        }
        for name in &query.names {
            if seen.contains(name) {
                continue;
            }
            let (_, fp) = grouping.name_facts(name);
            if let Some(tuple) = core.tuples().get(fp, name) {
                tuples.push(tuple.clone());
            }
        }
    }
    FilesSnapshot {
        now_ms: kelips.now_ms(),
        joined: core.is_joined(),
        messages_in: core.stats().messages_in,
        members,
        tuples,
        place: core.config().self_sizing().then(|| GroupPlace {
            grouping: core.grouping(),
            group: core.group(),
        }),
        superseded: Vec::new(),
    }
}

/// Orders a lookup's holders nearest first, by this node's RTT estimates (unknown last): the
/// client is usually near its entry node, so they stand in for the client's.
pub fn nearest_first(kelips: &KelipsBehaviour, outcome: &mut LookupOutcome<Peer>) {
    let core = kelips.core();
    if let LookupResult::Found { holders, .. } = &mut outcome.result {
        holders.sort_by_key(|e| {
            let rtt = core
                .view()
                .get(&e.id)
                .and_then(|m| m.rtt_us)
                .or_else(|| core.contacts().get(&e.id).and_then(|c| c.rtt_us));
            (rtt.is_none(), rtt, e.id)
        });
    }
}

/// Power-of-two choices on gossiped free space among live members with room.
fn place(
    kelips: &KelipsBehaviour,
    size: u64,
    exclude: &[PeerId],
    count: usize,
) -> (Vec<PeerInfo>, usize) {
    let core = kelips.core();
    let mut candidates: Vec<&Entry<Peer>> = core
        .view()
        .live()
        .map(|m| &m.entry)
        .filter(|e| !e.address.as_bytes().is_empty())
        .chain(std::iter::once(core.own_entry()))
        .collect();
    let live = candidates.len();
    candidates.retain(|e| !exclude.contains(&e.id.0) && e.free_space >= size);
    let mut chosen = Vec::with_capacity(count);
    while chosen.len() < count && !candidates.is_empty() {
        let a = rand::random_range(0..candidates.len());
        let b = rand::random_range(0..candidates.len());
        let pick = if candidates[b].free_space > candidates[a].free_space {
            b
        } else {
            a
        };
        chosen.push(info(candidates.swap_remove(pick)));
    }
    (chosen, live)
}
