//! [`Kelips`]: one node's protocol state machine, sans I/O.
//!
//! Inputs are method calls carrying the caller's clock (`now`, milliseconds): received
//! messages, RTT samples, unreachable peers, commands (join, lookup, publish) and timer ticks
//! ([`Kelips::handle_tick`] at [`Kelips::next_deadline`]). Outputs are queued [`Output`]s:
//! envelopes to send and events. Randomness comes from a seeded ChaCha8 generator and every
//! collection is ordered, so the same inputs give the same outputs.

mod gossip;
mod hello;
mod lookup;
mod restructure;
mod sync;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Millis;
use crate::config::{Config, ConfigError};
use crate::contacts::{Contacts, Offered};
use crate::entry::{AddressRecord, Beat, Entry};
use crate::id::{Grouping, IdFacts, NetworkId, NodeId};
use crate::message::{Envelope, Message, StructureNote};
use crate::structure::{LevelRule, Structure, StructureState};
use crate::tuple::{FileTuple, TupleError};
use crate::tuple_store::TupleStore;
use crate::view::{Change, GroupView};

use lookup::Lookups;
pub use lookup::{LookupError, LookupOutcome, LookupResult};

/// Verified address records remembered, so a record is checked once.
const CHECKED_RECORDS: usize = 4096;

/// Something for the driver to do.
#[derive(Debug, Clone)]
pub enum Output<I> {
    /// Send `envelope` to `to`.
    Send {
        /// Receiver.
        to: I,
        /// The message.
        envelope: Envelope<I>,
    },
    /// Something happened.
    Event(Event<I>),
}

/// Why a contact left the contact table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactRemoval {
    /// A dial or request to it failed.
    Unreachable,
    /// A closer (lower RTT) or fresher contact took its slot.
    Replaced,
    /// A member of its group, asked at a hello, did not vouch for it.
    NotVouched,
    /// The group structure changed and its group kept others (two groups merged).
    Restructured,
}

/// What the core reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<I> {
    /// A member joined the view (or came back after removal).
    MemberAdded(I),
    /// A member's stamp has not risen for `t_fail`.
    MemberFailed(I),
    /// A member marked failed showed a higher stamp.
    MemberRecovered(I),
    /// A member was removed after `T_cleanup`.
    MemberRemoved(I),
    /// A contact was added for `group`.
    ContactAdded {
        /// Its group.
        group: u32,
        /// The contact.
        id: I,
    },
    /// A contact was dropped (unreachable, replaced or not vouched for).
    ContactRemoved {
        /// Its group.
        group: u32,
        /// The contact.
        id: I,
        /// Why it was dropped.
        reason: ContactRemoval,
    },
    /// The group structure changed (groups that size themselves): adopted or proposed.
    StructureChanged(crate::structure::Change),
    /// The join finished: `founded` when the own group was empty.
    Joined {
        /// Whether this node founded its group.
        founded: bool,
    },
    /// The node heard a stamp for itself at or above its own and jumped above it; the driver
    /// persists the new incarnation.
    IncarnationChanged(u64),
    /// A lookup finished.
    Lookup(LookupOutcome<I>),
    /// A version of a file this node held was replaced by a newer version (the node may keep
    /// the old bytes for a while).
    VersionSuperseded(Arc<FileTuple<I>>),
}

/// Why a whole message was refused (the driver answers "refused: reason").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Another network (name, k or protocol version differ).
    #[error("wrong network: expected {expected}, got {got}")]
    WrongNetwork {
        /// Ours.
        expected: NetworkId,
        /// Theirs.
        got: NetworkId,
    },
    /// A message only group members may send came from another group.
    #[error("sender belongs to group {actual}, not {expected}")]
    WrongGroup {
        /// Ours.
        expected: u32,
        /// The sender's.
        actual: u32,
    },
    /// The sender's own entry names someone else.
    #[error("sender entry does not match the connection's peer")]
    ForgedSender,
    /// A field over its bound.
    #[error("message over a bound: {0}")]
    OverBound(&'static str),
}

impl Refusal {
    /// Its code on the wire.
    pub fn code(&self) -> crate::codec::RefusalCode {
        use crate::codec::RefusalCode;
        match self {
            Refusal::WrongNetwork { .. } => RefusalCode::WrongNetwork,
            Refusal::WrongGroup { .. } => RefusalCode::WrongGroup,
            Refusal::ForgedSender => RefusalCode::ForgedSender,
            Refusal::OverBound(_) => RefusalCode::OverABound,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages handled.
    pub messages_in: u64,
    /// Messages queued for sending.
    pub messages_out: u64,
    /// Whole messages refused.
    pub refused_messages: u64,
    /// Entries or tuples inside messages refused (wrong group, implausible jump, bounds).
    pub refused_items: u64,
    /// Tuples dropped because their signature, grant or owner did not hold (signed writes).
    pub unauthorized_tuples: u64,
    /// Members marked failed.
    pub failures_detected: u64,
    /// Members removed.
    pub members_removed: u64,
    /// Outputs dropped because the queue was full.
    pub outputs_dropped: u64,
}

/// Most outputs queued before new ones are dropped (the driver drains after every input).
const MAX_OUTPUTS: usize = 65_536;
/// Most RTT samples kept for peers that are neither members nor contacts yet.
const RTT_CACHE: usize = 1024;
/// Tuples checked for live holders per round.
const TUPLE_SWEEP_BUDGET: usize = 64;

/// Where news about a node comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The node itself (sender of the message): a proof of life, and news to spread.
    Itself,
    /// A member of the own group relays it: news to spread.
    Member,
    /// A member or bootstrap hands over what it knows (view or join reply): not news.
    Known,
    /// A foreign node relays it.
    Relay,
}

/// Join progress.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JoinState<I> {
    /// Not started.
    Idle,
    /// Waiting for the bootstrap's reply.
    AwaitingContacts { bootstrap: I, deadline: Millis },
    /// Waiting for a group member's view.
    AwaitingView { member: I, deadline: Millis },
    /// In the network.
    Joined,
}

/// The fixed k of `config`, or the current level of `structure` when groups size themselves.
fn grouping_of(config: &Config, structure: Option<&StructureState>) -> Grouping {
    match structure {
        Some(s) => Grouping::Prefix(s.current().level),
        None => Grouping::Fixed(config.groups),
    }
}

/// The Kelips protocol state of one node.
pub struct Kelips<I: NodeId> {
    config: Config,
    network: NetworkId,
    me: Entry<I>,
    facts: IdFacts,
    own_fresh_rounds: u8,
    view: GroupView<I>,
    contacts: Contacts<I>,
    tuples: TupleStore<I>,
    lookups: Lookups<I>,
    bootstraps: Vec<I>,
    bootstrap_cursor: usize,
    join: JoinState<I>,
    remembered: BTreeMap<I, Millis>,
    /// Hellos awaiting their reply: target → (contacts asked about, local send time).
    verifying: BTreeMap<I, (Vec<I>, Millis)>,
    /// Address records verified lately, per node (bounded by [`CHECKED_RECORDS`]).
    checked_records: BTreeMap<I, AddressRecord>,
    rtt_cache: BTreeMap<I, u32>,
    rtt_cache_order: VecDeque<I>,
    rng: ChaCha8Rng,
    next_heartbeat: Millis,
    next_round: Millis,
    next_sync: Millis,
    next_rejoin: Millis,
    outputs: VecDeque<Output<I>>,
    stats: Stats,
    /// This round's group gossip, for retargeting.
    round_gossip: Option<gossip::RoundGossip<I>>,
    /// The group structure, when groups size themselves (`groups = 0`).
    structure: Option<StructureState>,
    /// When tuples of names that left the group at a split are dropped (the transition's end,
    /// once they have all been handed over).
    trim_tuples_at: Option<Millis>,
    /// Tuples of names that left the group at a split, still to push to the sibling group.
    handover: VecDeque<Arc<FileTuple<I>>>,
}

impl<I: NodeId> Kelips<I> {
    /// A node `id` at `incarnation` (persisted by the driver, bumped at every start), with its
    /// address record, configuration and RNG seed. It does nothing until [`Kelips::join`].
    pub fn new(
        id: I,
        incarnation: u64,
        address: AddressRecord,
        config: Config,
        seed: u64,
        now: Millis,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let structure = config.self_sizing().then(|| {
            let rule = LevelRule {
                replication: config.replication as u64,
                max_level: crate::limits::MAX_GROUPS.ilog2() as u8,
            };
            StructureState::new(
                rule,
                Structure::SINGLE,
                config.structure_hold_ms,
                config.structure_transition_ms,
            )
        });
        let facts = grouping_of(&config, structure.as_ref()).id_facts(&id);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // The lookup maps' key, drawn from the seed apart from the RNG stream.
        let hash_seed = ChaCha8Rng::seed_from_u64(seed ^ 0x6c6f_6f6b_7570_6d61).random();
        let phase = |rng: &mut ChaCha8Rng, period: u64| now + rng.random_range(0..period);
        let next_heartbeat = phase(&mut rng, config.heartbeat_period_ms);
        let next_round = phase(&mut rng, config.gossip_period_ms);
        let next_sync = phase(&mut rng, config.sync_period_ms);
        let next_rejoin =
            now + config.rejoin_period_ms + rng.random_range(0..config.rejoin_period_ms);
        Ok(Self {
            network: NetworkId::new(&config.network_name, config.groups),
            me: Entry {
                id,
                incarnation,
                heartbeat: 0,
                address,
                free_space: 0,
            },
            facts,
            own_fresh_rounds: config.fresh_rounds,
            view: GroupView::new(config.max_group_size, hash_seed),
            contacts: Contacts::new(config.contacts_per_group, hash_seed),
            tuples: TupleStore::new(config.max_tuples, hash_seed),
            lookups: Lookups::new(config.max_pending_lookups),
            bootstraps: Vec::new(),
            bootstrap_cursor: 0,
            join: JoinState::Idle,
            remembered: BTreeMap::new(),
            verifying: BTreeMap::new(),
            checked_records: BTreeMap::new(),
            rtt_cache: BTreeMap::new(),
            rtt_cache_order: VecDeque::new(),
            rng,
            next_heartbeat,
            next_round,
            next_sync,
            next_rejoin,
            outputs: VecDeque::new(),
            stats: Stats::default(),
            round_gossip: None,
            structure,
            trim_tuples_at: None,
            handover: VecDeque::new(),
            config,
        })
    }

    /// This node's id.
    pub fn id(&self) -> &I {
        &self.me.id
    }

    /// This node's own entry (stamp, address record, free space).
    pub fn own_entry(&self) -> &Entry<I> {
        &self.me
    }

    /// The entry held for `id`, as a group member or a contact.
    pub fn entry_of(&self, id: &I) -> Option<&Entry<I>> {
        self.view
            .get(id)
            .map(|m| &m.entry)
            .or_else(|| self.contacts.get(id).map(|c| &c.entry))
    }

    /// This node's group.
    pub fn group(&self) -> u32 {
        self.facts.group
    }

    /// How groups are chosen now: the fixed k, or the current level of a network whose groups
    /// size themselves.
    pub fn grouping(&self) -> Grouping {
        grouping_of(&self.config, self.structure.as_ref())
    }

    /// The number of groups now.
    pub fn groups(&self) -> u32 {
        self.grouping().groups()
    }

    /// The group structure and this node's estimate of the network's size, when groups size
    /// themselves.
    pub fn structure(&self) -> Option<(Structure, u64)> {
        self.structure.as_ref().map(|s| (s.current(), s.estimate()))
    }

    /// The network id every message carries.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The group view.
    pub fn view(&self) -> &GroupView<I> {
        &self.view
    }

    /// The contacts.
    pub fn contacts(&self) -> &Contacts<I> {
        &self.contacts
    }

    /// The file tuples of the own group.
    pub fn tuples(&self) -> &TupleStore<I> {
        &self.tuples
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the join has finished.
    pub fn is_joined(&self) -> bool {
        self.join == JoinState::Joined
    }

    /// Peers remembered for rejoins (bounded), with the local time they were last known.
    pub fn remembered(&self) -> impl Iterator<Item = (&I, &Millis)> {
        self.remembered.iter()
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output<I>> {
        self.outputs.pop_front()
    }

    /// The earliest time at which [`Kelips::handle_tick`] has work to do.
    pub fn next_deadline(&self) -> Millis {
        let mut next = self
            .next_heartbeat
            .min(self.next_round)
            .min(self.next_sync)
            .min(self.next_rejoin);
        match &self.join {
            JoinState::AwaitingContacts { deadline, .. }
            | JoinState::AwaitingView { deadline, .. } => next = next.min(*deadline),
            JoinState::Idle | JoinState::Joined => {}
        }
        if let Some(deadline) = self.lookups.next_deadline() {
            next = next.min(deadline);
        }
        next
    }

    // ---- commands ----------------------------------------------------------------------

    /// Starts joining through `bootstraps` (tried in turn); with none, founds a network.
    /// Bootstraps are also remembered for rejoins.
    pub fn join(&mut self, now: Millis, bootstraps: Vec<I>) {
        self.bootstraps = bootstraps
            .into_iter()
            .filter(|b| *b != self.me.id)
            .collect();
        self.bootstrap_cursor = 0;
        if self.bootstraps.is_empty() {
            self.join = JoinState::Joined;
            self.emit(Event::Joined { founded: true });
            return;
        }
        self.send_join(now);
    }

    /// Publishes (or merges) a file tuple as a node of its group, e.g. the home node of a put.
    /// A tuple of the sibling group (groups that size themselves: a put or a repair that began
    /// before a split) is handed over to that group like the tuples the split moved.
    pub fn publish(&mut self, tuple: FileTuple<I>) -> Result<(), TupleError> {
        let tuple = tuple.normalize()?;
        let (group, fp) = self.grouping().name_facts(&tuple.name);
        if self.grouping().are_siblings(group, self.facts.group)
            && self.handover.len() < self.config.max_tuples
        {
            self.handover.push_back(Arc::new(tuple));
            return Ok(());
        }
        if group != self.facts.group {
            return Err(TupleError::WrongGroup {
                expected: self.facts.group,
                actual: group,
            });
        }
        self.merge_tuple(fp, &Arc::new(tuple)).map(|_| ())
    }

    /// Merges a checked tuple of the own group; reports a held version that a newer one
    /// replaced.
    pub(super) fn merge_tuple(
        &mut self,
        fp: u64,
        tuple: &Arc<FileTuple<I>>,
    ) -> Result<crate::tuple_store::Merged, TupleError> {
        // An orphan this node dropped lately comes back only with a holder it can see (a
        // holder that returned): otherwise members would hand it to each other for ever.
        if self.tuples.was_dropped(fp, &tuple.name)
            && !tuple
                .holders
                .iter()
                .any(|h| *h == self.me.id || self.view.get(h).is_some())
        {
            return Ok(crate::tuple_store::Merged::Unchanged);
        }
        let before = self.tuples.get(fp, &tuple.name).cloned();
        if let Err(e) = crate::auth::admits(self.config.writes, before.as_ref(), tuple) {
            self.stats.unauthorized_tuples += 1;
            return Err(TupleError::Unauthorized(e));
        }
        let merged = self.tuples.merge(fp, tuple, self.config.fresh_rounds)?;
        if let Some(before) = before
            && before.version != tuple.version
            && !before.deleted
            && before.holders.contains(&self.me.id)
            && self
                .tuples
                .get(fp, &tuple.name)
                .is_some_and(|now| now.version != before.version)
        {
            self.emit(Event::VersionSuperseded(before));
        }
        Ok(merged)
    }

    /// Replaces this node's address record; the change is gossiped as fresh.
    pub fn set_address(&mut self, address: AddressRecord) {
        self.me.address = address;
        self.me.heartbeat += 1;
        self.own_fresh_rounds = self.config.fresh_rounds;
    }

    /// Sets the free space (bytes) this node advertises. A change that is news
    /// ([`crate::entry::free_space_news`]) raises the heartbeat and makes the own entry fresh
    /// again, so members learn it (placement reads it); before, members kept the value they
    /// first heard.
    pub fn set_free_space(&mut self, bytes: u64) {
        let announced = self.me.free_space;
        if crate::entry::free_space_news(announced, bytes) {
            self.me.free_space = bytes;
            self.me.heartbeat += 1;
            self.own_fresh_rounds = self.config.fresh_rounds;
        }
    }

    // ---- inputs ------------------------------------------------------------------------

    /// Runs the timers that are due.
    pub fn handle_tick(&mut self, now: Millis) {
        if now >= self.next_heartbeat {
            self.me.heartbeat += 1;
            self.next_heartbeat =
                next_period(self.next_heartbeat, now, self.config.heartbeat_period_ms);
        }
        if now >= self.next_round {
            self.observe_structure(now);
            self.gossip_round(now);
            self.next_round = next_period(self.next_round, now, self.config.gossip_period_ms);
        }
        if now >= self.next_sync {
            self.start_sync(None);
            self.next_sync = next_period(self.next_sync, now, self.config.sync_period_ms);
        }
        if now >= self.next_rejoin {
            self.rejoin(now);
            self.next_rejoin = next_period(self.next_rejoin, now, self.config.rejoin_period_ms);
        }
        self.join_timeouts(now);
        self.lookup_timeouts(now);
    }

    /// Handles a message from `from` (authenticated by the transport).
    pub fn handle_message(
        &mut self,
        now: Millis,
        from: I,
        envelope: Envelope<I>,
    ) -> Result<(), Refusal> {
        self.stats.messages_in += 1;
        if envelope.network != self.network {
            self.stats.refused_messages += 1;
            return Err(Refusal::WrongNetwork {
                expected: self.network,
                got: envelope.network,
            });
        }
        if from == self.me.id {
            return Ok(());
        }
        if let Some(note) = envelope.structure {
            self.hear_structure(now, note);
        }
        let result = match envelope.message {
            Message::Group(gossip) => self.on_group(now, from, &gossip),
            Message::Want(want) => self.on_want(from, want),
            Message::Entries(entries) => self.on_entries(now, from, entries),
            Message::Hello(hello) => self.on_hello(now, from, hello),
            Message::HelloReply(reply) => self.on_hello_reply(now, from, reply),
            Message::ViewRequest(request) => self.on_view_request(now, from, request),
            Message::ViewReply(reply) => self.on_view_reply(now, from, reply),
            Message::TuplePull(pull) => self.on_tuple_pull(from, pull),
            Message::SyncRequest(request) => self.on_sync_request(from, request),
            Message::SyncReply(reply) => self.on_sync_reply(from, reply),
            Message::SyncPush(push) => self.on_sync_push(from, push),
            Message::Lookup(request) => self.on_lookup(now, from, request),
            Message::LookupReply(reply) => self.on_lookup_reply(now, from, reply),
        };
        if result.is_err() {
            self.stats.refused_messages += 1;
        }
        result
    }

    /// Records an RTT sample for `peer`, in microseconds.
    pub fn handle_rtt(&mut self, peer: &I, rtt_us: u32) {
        if self.view.record_rtt(peer, rtt_us) || self.contacts.record_rtt(peer, rtt_us) {
            return;
        }
        if self.rtt_cache.insert(peer.clone(), rtt_us).is_none() {
            self.rtt_cache_order.push_back(peer.clone());
            if self.rtt_cache_order.len() > RTT_CACHE
                && let Some(oldest) = self.rtt_cache_order.pop_front()
            {
                self.rtt_cache.remove(&oldest);
            }
        }
    }

    /// `peer` could not be reached (dial failure, connection refused, request failed).
    pub fn handle_unreachable(&mut self, now: Millis, peer: &I) {
        if let Some(group) = self.contacts.group_of(peer) {
            let t_contact = self.t_contact();
            self.contacts.drop_dead(peer, now, t_contact);
            self.remember(peer.clone(), now);
            self.emit(Event::ContactRemoved {
                group,
                id: peer.clone(),
                reason: ContactRemoval::Unreachable,
            });
            self.verification_failed(now, peer, group);
        }
        self.member_unreachable(now, peer);
        self.lookup_unreachable(now, peer);
        let stuck = match &self.join {
            JoinState::AwaitingContacts { bootstrap, .. } => bootstrap == peer,
            JoinState::AwaitingView { member, .. } => member == peer,
            _ => false,
        };
        if stuck {
            self.retry_join(now);
        }
    }

    // ---- shared helpers ----------------------------------------------------------------

    fn emit(&mut self, event: Event<I>) {
        self.push_output(Output::Event(event));
    }

    fn send(&mut self, to: I, message: Message<I>) {
        self.stats.messages_out += 1;
        let structure = self.structure.as_ref().map(|s| StructureNote {
            epoch: s.current().epoch,
            level: s.current().level,
            estimate: s.estimate(),
        });
        let envelope = Envelope {
            network: self.network,
            message,
            structure,
        };
        self.push_output(Output::Send { to, envelope });
    }

    fn push_output(&mut self, output: Output<I>) {
        if self.outputs.len() >= MAX_OUTPUTS {
            self.stats.outputs_dropped += 1;
            return;
        }
        self.outputs.push_back(output);
    }

    fn remember(&mut self, id: I, now: Millis) {
        self.remembered.insert(id, now);
        if self.remembered.len() > self.config.remembered_peers {
            let oldest = self
                .remembered
                .iter()
                .min_by_key(|(id, seen)| (**seen, (*id).clone()))
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.remembered.remove(&oldest);
            }
        }
    }

    /// Most a heartbeat can rise in one step: the beats of `T_cleanup` plus the elapsed time,
    /// at four times the configured rate. A bigger jump is an implausible claim.
    fn max_jump(&self) -> u64 {
        4 * (self.config.t_cleanup_ms() / self.config.heartbeat_period_ms + 1)
    }

    /// Group and short id of `id`, from the view when known, else hashed.
    fn facts_of(&self, id: &I) -> IdFacts {
        match self.view.get(id) {
            Some(member) => IdFacts {
                group: self.facts.group,
                short: member.short,
            },
            None => self.grouping().id_facts(id),
        }
    }

    /// Takes in news about a node: own-group entries merge into the view (news to spread when
    /// they come from the node itself or a member), foreign ones are contact candidates.
    /// Removed members leave tombstones that outlive any contact table's memory of them
    /// (`2·t_fail + t_contact`), so a stale relay never brings one back. Returns false if
    /// refused.
    fn learn(&mut self, now: Millis, entry: &Entry<I>, source: Source) -> bool {
        if entry.id == self.me.id {
            self.learn_about_self(entry);
            return true;
        }
        let (found, facts) = self.look_up(&entry.id);
        self.learn_looked_up(now, entry, source, found, facts)
    }

    /// Where `id` is in the view, if there, and its group and short id ([`Self::facts_of`]).
    fn look_up(&self, id: &I) -> (Option<usize>, IdFacts) {
        match self.view.find(id) {
            Some(index) => (
                Some(index),
                IdFacts {
                    group: self.facts.group,
                    short: self.view.at(index).short,
                },
            ),
            None => (None, self.grouping().id_facts(id)),
        }
    }

    /// [`Self::learn`] of an entry not about this node, with what [`Self::look_up`] gave.
    fn learn_looked_up(
        &mut self,
        now: Millis,
        entry: &Entry<I>,
        source: Source,
        found: Option<usize>,
        facts: IdFacts,
    ) -> bool {
        if !self.record_acceptable(entry, found) {
            self.stats.refused_items += 1;
            return false;
        }
        if facts.group == self.facts.group {
            // Liveness of members is the group's business: a foreign relay can introduce a
            // member this node lacks (that is how split groups merge) but never refresh one.
            if source == Source::Relay && found.is_some() {
                return true;
            }
            let fresh_rounds = match source {
                Source::Itself | Source::Member => self.config.fresh_rounds,
                Source::Relay | Source::Known => 0,
            };
            let change = self.view.merge_entry_found(
                found,
                entry,
                facts.short,
                now,
                fresh_rounds,
                self.max_jump(),
            );
            match change {
                Change::Added => {
                    if let Some(rtt) = self.rtt_cache.remove(&entry.id) {
                        self.view.record_rtt(&entry.id, rtt);
                    }
                    self.emit(Event::MemberAdded(entry.id.clone()));
                }
                Change::Recovered => self.emit(Event::MemberRecovered(entry.id.clone())),
                Change::Refused => {
                    self.stats.refused_items += 1;
                    return false;
                }
                Change::None | Change::Refreshed => {}
            }
            true
        } else {
            let rtt = self.rtt_cache.get(&entry.id).copied();
            let offered = self.contacts.offer(
                entry,
                facts.group,
                facts.short,
                now,
                source == Source::Itself,
                rtt,
                self.t_contact(),
            );
            if let Offered::Added { evicted } = offered {
                if let Some(evicted) = evicted {
                    self.remember(evicted.clone(), now);
                    self.emit(Event::ContactRemoved {
                        group: facts.group,
                        id: evicted,
                        reason: ContactRemoval::Replaced,
                    });
                }
                self.rtt_cache.remove(&entry.id);
                self.emit(Event::ContactAdded {
                    group: facts.group,
                    id: entry.id.clone(),
                });
            }
            true
        }
    }

    /// The entry's address record is one its node signed, or the same one already held or
    /// recently checked (so each record is verified once, not per gossip repetition or per
    /// refused contact candidate). `found`: where the entry's node is in the view.
    fn record_acceptable(&mut self, entry: &Entry<I>, found: Option<usize>) -> bool {
        if entry.address.as_bytes().is_empty() {
            return entry.id.accepts_record(&entry.address);
        }
        if I::ACCEPTS_EVERY_RECORD {
            return true;
        }
        let held = match found {
            Some(index) => Some(&self.view.at(index).entry.address),
            None => self.contacts.get(&entry.id).map(|c| &c.entry.address),
        };
        if held == Some(&entry.address)
            || self.checked_records.get(&entry.id) == Some(&entry.address)
        {
            return true;
        }
        if !entry.id.accepts_record(&entry.address) {
            return false;
        }
        if self.checked_records.len() >= CHECKED_RECORDS {
            self.checked_records.pop_first();
        }
        self.checked_records
            .insert(entry.id.clone(), entry.address.clone());
        true
    }

    /// Contacts not heard for this long are stale: `t_contact_ms`, but at least two cycles of
    /// contact verification (`groups / contact_fanout` rounds), so that live contacts are
    /// always checked before they go stale.
    fn t_contact(&self) -> Millis {
        let fanout = self.config.contact_fanout.max(1) as u64;
        let cycle = u64::from(self.groups()).div_ceil(fanout) * self.config.gossip_period_ms;
        self.config.t_contact_ms.max(2 * cycle)
    }

    /// Someone relays a stamp for this node at or above its own: jump above it.
    fn learn_about_self(&mut self, entry: &Entry<I>) {
        if entry.beat() < self.me.beat() {
            return;
        }
        let before = self.me.incarnation;
        self.me.incarnation = entry.incarnation;
        self.me.heartbeat = entry.heartbeat + 1;
        if self.me.incarnation != before {
            self.emit(Event::IncarnationChanged(self.me.incarnation));
        }
    }

    /// The own stamp.
    pub fn beat(&self) -> Beat {
        self.me.beat()
    }

    /// Estimated bytes of soft state this node holds: for every view entry, contact and tuple,
    /// its encoded size plus the bookkeeping a real node keeps beside it.
    pub fn state_bytes(&self) -> usize {
        self.entry_state_bytes().0 + self.tuple_state_bytes().0
    }

    /// Bytes and count of view entries and contacts (encoded size + bookkeeping).
    pub fn entry_state_bytes(&self) -> (usize, usize) {
        /// Key, short id, times, RTT, flags and a share of the tree node.
        const MEMBER_OVERHEAD: usize = 64;
        let entries = self
            .view
            .iter()
            .map(|m| &m.entry)
            .chain(self.contacts.all().map(|c| &c.entry));
        entries.fold((0, 0), |(bytes, count), entry| {
            (
                bytes + crate::codec::encoded_len(entry) + MEMBER_OVERHEAD,
                count + 1,
            )
        })
    }

    /// Bytes and count of file tuples (encoded size + bookkeeping).
    pub fn tuple_state_bytes(&self) -> (usize, usize) {
        /// Key, fingerprint, reference count and a share of the tree node.
        const TUPLE_OVERHEAD: usize = 48;
        self.tuples.iter().fold((0, 0), |(bytes, count), tuple| {
            (
                bytes + crate::codec::encoded_len(&**tuple) + TUPLE_OVERHEAD,
                count + 1,
            )
        })
    }

    fn random_index(&mut self, len: usize) -> usize {
        self.rng.random_range(0..len)
    }

    fn live_member_ids(&self) -> Vec<I> {
        self.view.live().map(|m| m.entry.id.clone()).collect()
    }
}

/// The next tick of a periodic timer after `now`, without drifting or bunching.
fn next_period(scheduled: Millis, now: Millis, period: Millis) -> Millis {
    let mut next = scheduled + period;
    if next <= now {
        next = now + period - (now - scheduled) % period;
    }
    next
}
