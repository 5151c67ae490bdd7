//! Lookup resolution: name → group → tuple → live holders, in one hop when a contact knows.
//!
//! Order of attempts (DESIGN.md §1): `lookup_parallelism` contacts of the name's group in
//! parallel (fresh ones first, nearest first), then the other contacts, then a TTL-bounded
//! random walk through members the group's nodes suggest, then a member of the own group asked
//! to look it up itself. A lookup in the own group is answered from the local store (0 hops)
//! and otherwise asks group members. "Not found" is final only when every step is exhausted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Event, Kelips, Refusal};
use crate::Millis;
use crate::entry::Entry;
use crate::id::NodeId;
use crate::limits::{MAX_HOLDERS, MAX_NAME_BYTES};
use crate::message::{LookupReply, LookupRequest, Message};
use crate::tuple::{FileTuple, TupleError, check_name};

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum LookupResult<I> {
    /// The tuple and the entries of its live holders.
    Found {
        /// Newest version known to the answering node.
        tuple: Arc<FileTuple<I>>,
        /// Entries of live holders (to reach them).
        holders: Vec<Entry<I>>,
    },
    /// The name is known, but none of its holders is live in the view of any node that
    /// answered: its bytes may sit on disks that are down ("unavailable", not "not found").
    Unavailable {
        /// The newest version found.
        tuple: Arc<FileTuple<I>>,
    },
    /// Every node asked answered that it does not know the name.
    NotFound,
    /// Nobody able to answer could be reached.
    Unreachable,
}

/// A finished lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupOutcome<I> {
    /// The id [`Kelips::lookup`] returned.
    pub query: u64,
    /// The name.
    pub name: Arc<str>,
    /// The result.
    pub result: LookupResult<I>,
    /// Sequential rounds of requests needed: 0 when answered locally, 1 when the first
    /// contacts knew.
    pub hops: u32,
    /// Who was asked in the first round.
    pub first_targets: Vec<I>,
    /// Milliseconds from start to finish.
    pub elapsed_ms: u64,
}

/// Why a lookup could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Bad name.
    #[error(transparent)]
    Name(#[from] TupleError),
    /// Too many lookups in flight.
    #[error("too many lookups in flight ({0})")]
    TooMany(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Contacts,
    Walk,
    Proxy,
}

#[derive(Debug)]
struct Pending<I> {
    name: Arc<str>,
    group: u32,
    started: Millis,
    hops: u32,
    stage: Stage,
    outstanding: BTreeMap<I, Millis>,
    tried: BTreeSet<I>,
    walk: Vec<Entry<I>>,
    walk_steps: u8,
    not_found: bool,
    /// The newest tuple an answer carried without a live holder.
    unavailable: Option<Arc<FileTuple<I>>>,
    /// The proxy step ran (it runs once).
    proxied: bool,
    first_targets: Vec<I>,
    /// A proxied lookup answers this peer and query id.
    requester: Option<(I, u64)>,
    /// It found nothing in the name's group and asks the sibling group (a split is under
    /// way); it does so once.
    fell_back: bool,
}

/// The lookups in flight.
pub(super) struct Lookups<I> {
    pending: BTreeMap<u64, Pending<I>>,
    next_query: u64,
    max: usize,
}

impl<I: Ord> Lookups<I> {
    pub(super) fn new(max: usize) -> Self {
        Self {
            pending: BTreeMap::new(),
            next_query: 1,
            max,
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Millis> {
        self.pending
            .values()
            .flat_map(|p| p.outstanding.values())
            .min()
            .copied()
    }
}

impl<I: NodeId> Kelips<I> {
    /// Starts resolving `name`; the result comes as [`Event::Lookup`] with the returned id.
    pub fn lookup(&mut self, now: Millis, name: &str) -> Result<u64, LookupError> {
        check_name(name)?;
        self.start_lookup(now, name, None)
    }

    /// Number of lookups in flight.
    pub fn pending_lookups(&self) -> usize {
        self.lookups.pending.len()
    }

    fn start_lookup(
        &mut self,
        now: Millis,
        name: &str,
        requester: Option<(I, u64)>,
    ) -> Result<u64, LookupError> {
        if self.lookups.pending.len() >= self.lookups.max {
            return Err(LookupError::TooMany(self.lookups.max));
        }
        let query = self.lookups.next_query;
        self.lookups.next_query += 1;
        let (group, _) = self.grouping().name_facts(name);
        let name: Arc<str> = name.into();
        let pending = Pending {
            name,
            group,
            started: now,
            hops: 0,
            stage: Stage::Contacts,
            outstanding: BTreeMap::new(),
            tried: BTreeSet::new(),
            walk: Vec::new(),
            walk_steps: 0,
            not_found: false,
            unavailable: None,
            proxied: false,
            first_targets: Vec::new(),
            requester,
            fell_back: false,
        };
        self.resolve_in(now, query, pending);
        Ok(query)
    }

    /// Runs `pending` toward its group: from the local store when that is the own group
    /// (asking other members when the name is not known here yet), else through contacts.
    fn resolve_in(&mut self, now: Millis, query: u64, mut pending: Pending<I>) {
        if pending.group == self.facts.group {
            let (_, fp) = self.grouping().name_facts(&pending.name);
            if let Some(tuple) = self.tuples.get(fp, &pending.name).cloned() {
                let result = self.found(tuple);
                self.finish(now, query, pending, result);
                return;
            }
            // Not known here yet: ask other members. This node is one of them and does not
            // know the name, so when none of the others answers (the only member of its
            // group, or the others down) the answer is "not found", not "unreachable".
            pending.not_found = true;
            pending.stage = Stage::Walk;
            pending.walk = self
                .view
                .random_live(self.config.lookup_walk_ttl.into(), &mut self.rng);
        }
        self.lookups.pending.insert(query, pending);
        self.advance(now, query);
    }

    /// A lookup that found nothing during a split asks the sibling group once: its members
    /// held the name until the hand-over reached the name's new group. Returns the lookup
    /// when there is nowhere else to ask.
    fn fall_back(
        &mut self,
        now: Millis,
        query: u64,
        mut pending: Pending<I>,
    ) -> Option<Pending<I>> {
        if pending.fell_back {
            return Some(pending);
        }
        let Some(sibling) = self
            .structure
            .as_ref()
            .and_then(|s| s.fallback_group(now, pending.group))
        else {
            return Some(pending);
        };
        pending.fell_back = true;
        pending.group = sibling;
        pending.stage = Stage::Contacts;
        pending.outstanding.clear();
        pending.tried.clear();
        pending.walk.clear();
        pending.walk_steps = 0;
        pending.not_found = false;
        pending.proxied = false;
        self.resolve_in(now, query, pending);
        None
    }

    /// The local result for a tuple: it and the entries of its live holders, or unavailable
    /// when none is live.
    fn found(&self, tuple: Arc<FileTuple<I>>) -> LookupResult<I> {
        let holders = self.live_holders(&tuple);
        if holders.is_empty() {
            return LookupResult::Unavailable { tuple };
        }
        LookupResult::Found { tuple, holders }
    }

    fn live_holders(&self, tuple: &FileTuple<I>) -> Vec<Entry<I>> {
        tuple
            .holders
            .iter()
            .filter_map(|holder| {
                if *holder == self.me.id {
                    Some(self.me.clone())
                } else if let Some(member) = self.view.get(holder) {
                    (!member.failed).then(|| member.entry.clone())
                } else {
                    // A holder of another group (a split left the copy there until the
                    // name's new group has its own): known as a contact, it is reachable.
                    self.contacts.get(holder).map(|c| c.entry.clone())
                }
            })
            .collect()
    }

    /// Sends the next round of requests, or finishes when nothing is left to try.
    fn advance(&mut self, now: Millis, query: u64) {
        {
            let Some(pending) = self.lookups.pending.get(&query) else {
                return;
            };
            if !pending.outstanding.is_empty() {
                return;
            }
            let (targets, proxy) = self.next_targets(now, query);
            if targets.is_empty() {
                let Some(mut pending) = self.lookups.pending.remove(&query) else {
                    return;
                };
                let result = if let Some(tuple) = pending.unavailable.take() {
                    LookupResult::Unavailable { tuple }
                } else if pending.not_found {
                    LookupResult::NotFound
                } else {
                    LookupResult::Unreachable
                };
                self.finish(now, query, pending, result);
                return;
            }
            // A proxy runs a whole lookup of its own: give it the time of its contact rounds,
            // its walk and some slack.
            let rounds = if proxy {
                3 + u64::from(self.config.lookup_walk_ttl)
            } else {
                1
            };
            let deadline = now + rounds * self.config.request_timeout_ms;
            let Some(pending) = self.lookups.pending.get_mut(&query) else {
                return;
            };
            pending.hops += 1;
            if pending.first_targets.is_empty() {
                pending.first_targets = targets.clone();
            }
            let name = pending.name.to_string();
            for target in &targets {
                pending.tried.insert(target.clone());
                pending.outstanding.insert(target.clone(), deadline);
            }
            for target in targets {
                let request = LookupRequest {
                    query,
                    name: name.clone(),
                    proxy,
                };
                self.send(target, Message::Lookup(request));
            }
        }
    }

    /// Who to ask next, and whether as a proxy.
    fn next_targets(&mut self, now: Millis, query: u64) -> (Vec<I>, bool) {
        let Some(pending) = self.lookups.pending.get(&query) else {
            return (Vec::new(), false);
        };
        let (stage, group, tried) = (pending.stage, pending.group, pending.tried.clone());
        let walked = pending.walk_steps;
        let is_proxy = pending.requester.is_some();
        if stage == Stage::Contacts {
            let t_contact = self.t_contact();
            let mut candidates: Vec<_> = self
                .contacts
                .of_group(group)
                .iter()
                .filter(|c| !tried.contains(&c.entry.id))
                .map(|c| {
                    let stale = c.is_stale(now, t_contact);
                    (stale, c.rtt_us.unwrap_or(u32::MAX), c.entry.id.clone())
                })
                .collect();
            candidates.sort();
            if !candidates.is_empty() {
                let count = if pending.hops == 0 {
                    self.config.lookup_parallelism
                } else {
                    1
                };
                return (
                    candidates
                        .into_iter()
                        .take(count)
                        .map(|(_, _, id)| id)
                        .collect(),
                    false,
                );
            }
            if let Some(p) = self.lookups.pending.get_mut(&query) {
                p.stage = Stage::Walk;
            }
        }
        let stage = self.lookups.pending.get(&query).map(|p| p.stage);
        if stage == Some(Stage::Walk) {
            if walked < self.config.lookup_walk_ttl {
                let pending = self.lookups.pending.get_mut(&query).expect("present");
                pending.walk.retain(|e| !tried.contains(&e.id));
                if let Some(next) = pending.walk.pop() {
                    pending.walk_steps += 1;
                    return (vec![next.id], false);
                }
            }
            if let Some(p) = self.lookups.pending.get_mut(&query) {
                p.stage = Stage::Proxy;
            }
        }
        let proxied = self.lookups.pending.get(&query).is_some_and(|p| p.proxied);
        if is_proxy || proxied || group == self.facts.group {
            return (Vec::new(), false);
        }
        // Last resort, once: members of the own group look it up with their own contacts
        // (`lookup_parallelism` of them at once, nearest first).
        let mut members: Vec<(u32, I)> = self
            .view
            .live()
            .filter(|m| !tried.contains(&m.entry.id))
            .map(|m| (m.rtt_us.unwrap_or(u32::MAX), m.entry.id.clone()))
            .collect();
        members.sort();
        let chosen: Vec<I> = members
            .iter()
            .take(self.config.lookup_parallelism)
            .map(|(_, id)| id.clone())
            .collect();
        if let Some(p) = self.lookups.pending.get_mut(&query) {
            p.proxied = true;
        }
        (chosen, true)
    }

    fn finish(&mut self, now: Millis, query: u64, pending: Pending<I>, result: LookupResult<I>) {
        let pending = if matches!(result, LookupResult::NotFound) {
            match self.fall_back(now, query, pending) {
                Some(pending) => pending,
                None => return,
            }
        } else {
            pending
        };
        if let Some((requester, their_query)) = pending.requester {
            let (tuple, holders) = match result {
                LookupResult::Found { tuple, holders } => (Some(tuple), holders),
                _ => (None, Vec::new()),
            };
            let reply = LookupReply {
                query: their_query,
                tuple,
                holders,
                next: None,
            };
            self.send(requester, Message::LookupReply(reply));
            return;
        }
        self.emit(Event::Lookup(super::LookupOutcome {
            query,
            name: pending.name,
            result,
            hops: pending.hops,
            first_targets: pending.first_targets,
            elapsed_ms: now.saturating_sub(pending.started),
        }));
    }

    pub(super) fn on_lookup(
        &mut self,
        now: Millis,
        from: I,
        request: LookupRequest,
    ) -> Result<(), Refusal> {
        if request.name.len() > MAX_NAME_BYTES {
            return Err(Refusal::OverBound("name"));
        }
        let (group, fp) = self.grouping().name_facts(&request.name);
        if group != self.facts.group {
            if request.proxy
                && self
                    .start_lookup(now, &request.name, Some((from.clone(), request.query)))
                    .is_ok()
            {
                return Ok(());
            }
            // Not ours: suggest a contact of the right group as the next step.
            let next = self
                .contacts
                .of_group(group)
                .first()
                .map(|c| c.entry.clone());
            let reply = LookupReply {
                query: request.query,
                tuple: None,
                holders: Vec::new(),
                next,
            };
            self.send(from, Message::LookupReply(reply));
            return Ok(());
        }
        let tuple = self.tuples.get(fp, &request.name).cloned();
        let holders = tuple
            .as_ref()
            .map(|t| self.live_holders(t))
            .unwrap_or_default();
        let next = if tuple.is_none() {
            let mut others = self.view.random_live(2, &mut self.rng);
            others.retain(|e| e.id != from);
            others.pop()
        } else {
            None
        };
        let reply = LookupReply {
            query: request.query,
            tuple,
            holders,
            next,
        };
        self.send(from, Message::LookupReply(reply));
        Ok(())
    }

    pub(super) fn on_lookup_reply(
        &mut self,
        now: Millis,
        from: I,
        reply: LookupReply<I>,
    ) -> Result<(), Refusal> {
        if reply.holders.len() > MAX_HOLDERS {
            return Err(Refusal::OverBound("holders"));
        }
        self.contacts.heard(&from, now);
        let query = reply.query;
        let grouping = self.grouping();
        let Some(pending) = self.lookups.pending.get_mut(&query) else {
            return Ok(()); // late or unsolicited
        };
        if pending.outstanding.remove(&from).is_none() {
            return Ok(());
        }
        let group = pending.group;
        if let Some(tuple) = reply.tuple.filter(|t| *t.name == *pending.name) {
            let holders: Vec<Entry<I>> = reply
                .holders
                .into_iter()
                .filter(|e| {
                    tuple.holders.contains(&e.id) && {
                        // The sibling too: a split leaves copies there until the name's
                        // new group holds its own.
                        let holder = grouping.id_facts(&e.id).group;
                        holder == group || grouping.are_siblings(holder, group)
                    }
                })
                .collect();
            if !holders.is_empty() {
                let pending = self.lookups.pending.remove(&query).expect("present");
                self.finish(now, query, pending, LookupResult::Found { tuple, holders });
                return Ok(());
            }
            // Known, but no live holder in that node's view: ask on, and say "unavailable"
            // rather than "not found" if nobody knows better.
            if pending
                .unavailable
                .as_ref()
                .is_none_or(|t| tuple.rank() > t.rank())
            {
                pending.unavailable = Some(tuple);
            }
        }
        pending.not_found = true;
        if let Some(next) = reply.next {
            let next_group = grouping.id_facts(&next.id).group;
            if next_group == group && !pending.tried.contains(&next.id) {
                pending.walk.push(next);
            }
        }
        self.advance(now, query);
        Ok(())
    }

    /// A lookup target refused the connection: no lookup happened there, so another peer of
    /// the same step (a contact, or a member for the proxy step) takes its place in the same
    /// round (no extra hop); otherwise move on at once.
    pub(super) fn lookup_unreachable(&mut self, now: Millis, peer: &I) {
        let queries: Vec<u64> = self
            .lookups
            .pending
            .iter()
            .filter(|(_, p)| p.outstanding.contains_key(peer))
            .map(|(q, _)| *q)
            .collect();
        for query in queries {
            let Some(deadline) = self
                .lookups
                .pending
                .get_mut(&query)
                .and_then(|p| p.outstanding.remove(peer))
            else {
                continue;
            };
            if let Some((substitute, proxy)) = self.substitute(now, query) {
                let Some(pending) = self.lookups.pending.get_mut(&query) else {
                    continue;
                };
                pending.tried.insert(substitute.clone());
                pending.outstanding.insert(substitute.clone(), deadline);
                let request = LookupRequest {
                    query,
                    name: pending.name.to_string(),
                    proxy,
                };
                self.send(substitute, Message::Lookup(request));
                continue;
            }
            self.advance(now, query);
        }
    }

    /// The next untried peer of the step a lookup is in, and whether it is asked as a proxy.
    fn substitute(&self, now: Millis, query: u64) -> Option<(I, bool)> {
        let pending = self.lookups.pending.get(&query)?;
        let t_contact = self.t_contact();
        match pending.stage {
            Stage::Contacts => self
                .contacts
                .of_group(pending.group)
                .iter()
                .filter(|c| !pending.tried.contains(&c.entry.id))
                .min_by_key(|c| {
                    let stale = c.is_stale(now, t_contact);
                    (stale, c.rtt_us.unwrap_or(u32::MAX), &c.entry.id)
                })
                .map(|c| (c.entry.id.clone(), false)),
            Stage::Proxy if pending.proxied => self
                .view
                .live()
                .filter(|m| !pending.tried.contains(&m.entry.id))
                .min_by_key(|m| (m.rtt_us.unwrap_or(u32::MAX), &m.entry.id))
                .map(|m| (m.entry.id.clone(), true)),
            Stage::Walk | Stage::Proxy => None,
        }
    }

    /// Requests unanswered by their deadline count as failed; a contact that timed out is
    /// made stale so that it is probed and replaced first.
    pub(super) fn lookup_timeouts(&mut self, now: Millis) {
        let mut expired: Vec<(u64, I)> = Vec::new();
        for (query, pending) in &self.lookups.pending {
            for (peer, deadline) in &pending.outstanding {
                if *deadline <= now {
                    expired.push((*query, peer.clone()));
                }
            }
        }
        for (query, peer) in expired {
            self.contacts.mark_stale(&peer);
            if let Some(pending) = self.lookups.pending.get_mut(&query) {
                pending.outstanding.remove(&peer);
            }
            self.advance(now, query);
        }
    }
}
