//! Hellos: cross-group gossip with contact verification, joins and rejoins, and the view
//! transfer that ends a join.
//!
//! Every round a node sends a hello to the best contact of each of the `contact_fanout`
//! groups it verified longest ago. The hello carries its own entry, a few entries of its group
//! and a few fresh contacts, and asks about its other contacts in the receiver's group; the
//! reply vouches for those the receiver holds live, and the others are dropped. So every
//! contact is checked every `groups / contact_fanout` rounds.

use super::{ContactRemoval, Event, JoinState, Kelips, Refusal, Source};
use crate::Millis;
use crate::digest::{DigestItem, HeartbeatDigest};
use crate::entry::Entry;
use crate::id::NodeId;
use crate::limits::{MAX_CONTACTS_PER_GROUP, MAX_RATION_ENTRIES, MAX_REPLY_ENTRIES};
use crate::message::{Hello, HelloKind, HelloReply, Message, ViewReply, ViewRequest};

/// Groups without a contact asked for in one hello.
const MAX_WANTED_GROUPS: usize = 4;
/// Bootstraps (configured and introduced) kept at most.
pub const MAX_INTRODUCED: usize = 32;
/// Entries per wanted group in a hello reply.
const PER_WANTED_GROUP: usize = 2;
/// Members of the joiner's group a join reply carries at most.
const JOIN_GROUP_ENTRIES: usize = 8;

impl<I: NodeId> Kelips<I> {
    /// Cross-group gossip for this round.
    pub(super) fn gossip_to_contacts(&mut self, now: Millis) {
        // A verification whose reply did not come within the request timeout (a lost hello
        // or reply) is retried at once rather than a whole cycle later; one verification per
        // group is in flight at a time.
        let timeout = self.config.request_timeout_ms;
        let expired: Vec<I> = self
            .verifying
            .iter()
            .filter(|(_, (_, sent))| now.saturating_sub(*sent) >= timeout)
            .map(|(target, _)| target.clone())
            .collect();
        let mut missed = Vec::new();
        for target in expired {
            self.verifying.remove(&target);
            if let Some(group) = self.contacts.group_of(&target) {
                missed.push(group);
            }
        }
        if self.config.contact_fanout == 0 {
            return;
        }
        let pending: Vec<u32> = self
            .verifying
            .keys()
            .filter_map(|target| self.contacts.group_of(target))
            .collect();
        let mut groups: Vec<u32> = self
            .contacts
            .groups_to_verify(self.config.contact_fanout, now)
            .into_iter()
            .filter(|g| !pending.contains(g))
            .collect();
        self.refill_contacts(now);
        for group in missed {
            if !groups.contains(&group) && !pending.contains(&group) {
                groups.push(group);
            }
        }
        for group in groups {
            self.verify_group(now, group);
        }
    }

    /// A node without a single contact (its join page was lost, or every contact died) has
    /// nobody to send hellos to: it asks a member of its own group for a join page instead,
    /// one per round until it holds a contact again.
    fn refill_contacts(&mut self, now: Millis) {
        if self.groups() <= 1 || !self.contacts.is_empty() {
            return;
        }
        let members = self.live_member_ids();
        if members.is_empty() {
            return;
        }
        let member = members[self.random_index(members.len())].clone();
        let hello = self.hello(now, HelloKind::Join, None);
        self.send(member, Message::Hello(hello));
    }

    /// Sends a hello to the best contact of `group`, asking it to vouch for the others.
    fn verify_group(&mut self, now: Millis, group: u32) {
        let t_contact = self.t_contact();
        let Some(target) = self.contacts.best_of_group(group, now, t_contact) else {
            return;
        };
        let target = target.entry.id.clone();
        let asked: Vec<(I, u32)> = self
            .contacts
            .of_group(group)
            .iter()
            .filter(|c| c.entry.id != target)
            .map(|c| (c.entry.id.clone(), c.short))
            .collect();
        let mut hello = self.hello(now, HelloKind::Contact, Some(group));
        hello.ask = asked.iter().map(|(_, short)| *short).collect();
        let asked_ids = asked.into_iter().map(|(id, _)| id).collect();
        self.verifying.insert(target.clone(), (asked_ids, now));
        self.send(target, Message::Hello(hello));
    }

    /// A verification target could not be reached: verify its group through the next contact.
    pub(super) fn verification_failed(&mut self, now: Millis, target: &I, group: u32) {
        if self.verifying.remove(target).is_some() {
            self.verify_group(now, group);
        }
    }

    /// A hello carrying the own entry, a few group entries, a few fresh contacts and the
    /// groups without contacts. When the receiver's group is known, the first contact relayed
    /// is one of that group: a foreign view of the receiver's own group, which is how two
    /// halves of a group founded apart find each other.
    fn hello(&mut self, now: Millis, kind: HelloKind, receiver_group: Option<u32>) -> Hello<I> {
        let group_entries = self
            .view
            .random_live(self.config.cross_entry_ration, &mut self.rng);
        // Only contacts heard within t_fail are relayed: older ones may have died since.
        let recent = self.config.t_fail_ms;
        let mut contacts: Vec<Entry<I>> = Vec::new();
        let ration = self.config.cross_contact_ration;
        if let Some(group) = receiver_group.filter(|_| ration > 0) {
            let of_group: Vec<&Entry<I>> = self
                .contacts
                .of_group(group)
                .iter()
                .filter(|c| !c.is_stale(now, recent))
                .map(|c| &c.entry)
                .collect();
            if !of_group.is_empty() {
                let pick = rand::Rng::random_range(&mut self.rng, 0..of_group.len());
                contacts.push(of_group[pick].clone());
            }
        }
        let mut fresh: Vec<&Entry<I>> = Vec::with_capacity(self.contacts.len());
        fresh.extend(
            self.contacts
                .all()
                .filter(|c| !c.is_stale(now, recent) && !contacts.contains(&c.entry))
                .map(|c| &c.entry),
        );
        let count = ration.saturating_sub(contacts.len()).min(fresh.len());
        for index in rand::seq::index::sample(&mut self.rng, fresh.len(), count) {
            contacts.push(Entry::clone(fresh[index]));
        }
        let wanted_groups = self.groups_without_contacts(MAX_WANTED_GROUPS);
        Hello {
            kind,
            sender: self.me.clone(),
            group_entries,
            contacts,
            wanted_groups,
            ask: Vec::new(),
        }
    }

    /// Up to `limit` groups this node knows nobody of, starting at a random group; the own
    /// group counts while the view is empty.
    fn groups_without_contacts(&mut self, limit: usize) -> Vec<u32> {
        let k = self.groups();
        let own_empty = self.view.is_empty();
        // Contacts kept at most, over all foreign groups of the current structure.
        let max_contacts = (k as usize).saturating_sub(1) * self.config.contacts_per_group;
        if (self.contacts.len() >= max_contacts && !own_empty) || k <= 1 {
            return Vec::new();
        }
        let start = rand::Rng::random_range(&mut self.rng, 0..k);
        (0..k)
            .map(|i| (start + i) % k)
            .filter(|&g| {
                if g == self.facts.group {
                    own_empty
                } else {
                    self.contacts.of_group(g).is_empty()
                }
            })
            .take(limit)
            .collect()
    }

    /// How to take entries relayed by `from`: as a member's news, or a foreign relay.
    fn relay_source(&self, from: &I) -> Source {
        if self.facts_of(from).group == self.facts.group {
            Source::Member
        } else {
            Source::Relay
        }
    }

    pub(super) fn on_hello(
        &mut self,
        now: Millis,
        from: I,
        hello: Hello<I>,
    ) -> Result<(), Refusal> {
        if hello.sender.id != from {
            return Err(Refusal::ForgedSender);
        }
        if hello.group_entries.len() > MAX_RATION_ENTRIES
            || hello.contacts.len() > MAX_RATION_ENTRIES
            || hello.wanted_groups.len() > MAX_WANTED_GROUPS
            || hello.ask.len() > MAX_CONTACTS_PER_GROUP
        {
            return Err(Refusal::OverBound("hello"));
        }
        self.learn(now, &hello.sender, Source::Itself);
        let source = self.relay_source(&from);
        for entry in hello.group_entries.iter().chain(&hello.contacts) {
            self.learn(now, entry, source);
        }
        let entries = match hello.kind {
            HelloKind::Join => self.join_page(&from),
            HelloKind::Contact | HelloKind::Rejoin => {
                let mut entries = self
                    .view
                    .random_live(self.config.cross_entry_ration, &mut self.rng);
                for group in hello.wanted_groups {
                    let of_group = self.entries_of_group(group, PER_WANTED_GROUP);
                    entries.extend(of_group);
                }
                entries.retain(|e| e.id != from);
                entries.truncate(MAX_RATION_ENTRIES);
                entries
            }
        };
        let vouched = self.vouch(&hello.ask);
        // Contacts not vouched for will be dropped: offer live members in their place.
        let missing = hello.ask.len() - vouched.len();
        let mut entries = entries;
        if missing > 0 && hello.kind == HelloKind::Contact {
            let replacements = self.view.random_live(missing, &mut self.rng);
            entries.extend(replacements.into_iter().filter(|e| e.id != from));
        }
        entries.truncate(MAX_REPLY_ENTRIES);
        let reply = HelloReply {
            sender: self.me.clone(),
            entries,
            vouched,
        };
        self.send(from, Message::HelloReply(reply));
        Ok(())
    }

    /// Stamps of the asked short ids this node holds live (itself included).
    fn vouch(&self, asked: &[u32]) -> HeartbeatDigest {
        let mut items: Vec<DigestItem> = self
            .view
            .live()
            .filter(|m| asked.contains(&m.short))
            .map(|m| DigestItem {
                short: m.short,
                beat: m.entry.beat(),
            })
            .collect();
        if asked.contains(&self.facts.short) {
            items.push(DigestItem {
                short: self.facts.short,
                beat: self.me.beat(),
            });
        }
        items.sort_by_key(|item| item.short);
        items.dedup_by_key(|item| item.short);
        HeartbeatDigest::from_sorted(items).unwrap_or_default()
    }

    /// Live entries of `group` known here: view members (and itself) for the own group, else
    /// contacts.
    fn entries_of_group(&mut self, group: u32, limit: usize) -> Vec<Entry<I>> {
        if group == self.facts.group {
            let mut entries = self
                .view
                .random_live(limit.saturating_sub(1), &mut self.rng);
            entries.push(self.me.clone());
            entries
        } else {
            self.contacts
                .of_group(group)
                .iter()
                .take(limit)
                .map(|c| c.entry.clone())
                .collect()
        }
    }

    /// A join reply: entries for every group, one per group first, then a second, up to one
    /// page; members of the joiner's group come first.
    fn join_page(&mut self, joiner: &I) -> Vec<Entry<I>> {
        let joiner_group = self.facts_of(joiner).group;
        let mut per_group: Vec<Vec<Entry<I>>> = Vec::new();
        let mut first = self.entries_of_group(joiner_group, JOIN_GROUP_ENTRIES);
        first.retain(|e| e.id != *joiner);
        per_group.push(first);
        for group in 0..self.groups() {
            if group != joiner_group {
                per_group.push(self.entries_of_group(group, 2));
            }
        }
        let mut page = Vec::new();
        let deepest = per_group.iter().map(Vec::len).max().unwrap_or(0);
        'fill: for depth in 0..deepest {
            for entries in &per_group {
                if let Some(entry) = entries.get(depth) {
                    if page.len() == MAX_REPLY_ENTRIES {
                        break 'fill;
                    }
                    page.push(entry.clone());
                }
            }
        }
        page
    }

    pub(super) fn on_hello_reply(
        &mut self,
        now: Millis,
        from: I,
        reply: HelloReply<I>,
    ) -> Result<(), Refusal> {
        if reply.sender.id != from {
            return Err(Refusal::ForgedSender);
        }
        if reply.entries.len() > MAX_REPLY_ENTRIES {
            return Err(Refusal::OverBound("hello reply"));
        }
        self.learn(now, &reply.sender, Source::Itself);
        self.contacts.heard(&from, now);
        let joining = matches!(
            &self.join,
            JoinState::AwaitingContacts { bootstrap, .. } if *bootstrap == from
        );
        let source = if joining {
            Source::Known
        } else {
            self.relay_source(&from)
        };
        // Vouches first, so that the replacements offered below find free places.
        if let Some((asked, _)) = self.verifying.remove(&from) {
            self.apply_vouches(now, asked, &reply.vouched);
        }
        for entry in &reply.entries {
            self.learn(now, entry, source);
        }
        if joining {
            self.ask_for_view(now);
        }
        Ok(())
    }

    /// Contacts a member of their group vouched for are alive; the others are dropped.
    fn apply_vouches(&mut self, now: Millis, asked: Vec<I>, vouched: &HeartbeatDigest) {
        for id in asked {
            let Some(group) = self.contacts.group_of(&id) else {
                continue;
            };
            let short = self
                .contacts
                .of_group(group)
                .iter()
                .find(|c| c.entry.id == id)
                .map(|c| c.short);
            let stamp = short.and_then(|short| {
                let items = vouched.items();
                let index = items.binary_search_by_key(&short, |item| item.short).ok()?;
                Some(items[index].beat)
            });
            match stamp {
                Some(beat) => self.contacts.vouched(&id, beat, now),
                None => {
                    // Not vouched for: dead, or not yet known to the group (just joined), so
                    // no tombstone; a later relay may offer it again.
                    self.contacts.remove(&id);
                    self.remember(id.clone(), now);
                    self.emit(Event::ContactRemoved {
                        group,
                        id,
                        reason: ContactRemoval::NotVouched,
                    });
                }
            }
        }
    }

    /// Second step of a join: ask one member of the own group for its view. If nobody of the
    /// group is known, the other bootstraps are asked first; only when none knows one does
    /// this node found its group.
    fn ask_for_view(&mut self, now: Millis) {
        let members = self.live_member_ids();
        if members.is_empty() {
            if self.bootstrap_cursor + 1 < self.bootstraps.len() {
                self.bootstrap_cursor += 1;
                self.send_join(now);
                return;
            }
            self.join = JoinState::Joined;
            self.emit(Event::Joined { founded: true });
            return;
        }
        let member = members[self.random_index(members.len())].clone();
        let request = ViewRequest {
            sender: self.me.clone(),
        };
        self.send(member.clone(), Message::ViewRequest(request));
        self.join = JoinState::AwaitingView {
            member,
            deadline: now + self.config.request_timeout_ms,
        };
    }

    pub(super) fn on_view_request(
        &mut self,
        now: Millis,
        from: I,
        request: ViewRequest<I>,
    ) -> Result<(), Refusal> {
        if request.sender.id != from {
            return Err(Refusal::ForgedSender);
        }
        self.check_member(&from)?;
        self.learn(now, &request.sender, Source::Itself);
        let mut entries = self.view.random_live(MAX_REPLY_ENTRIES - 1, &mut self.rng);
        entries.retain(|e| e.id != from);
        entries.push(self.me.clone());
        self.send(from, Message::ViewReply(ViewReply { entries }));
        Ok(())
    }

    pub(super) fn on_view_reply(
        &mut self,
        now: Millis,
        from: I,
        reply: ViewReply<I>,
    ) -> Result<(), Refusal> {
        self.check_member(&from)?;
        if reply.entries.len() > MAX_REPLY_ENTRIES {
            return Err(Refusal::OverBound("view reply"));
        }
        for entry in &reply.entries {
            // Known to the group already: not news to spread.
            self.learn_member(now, entry, Source::Known);
        }
        if matches!(&self.join, JoinState::AwaitingView { member, .. } if *member == from) {
            self.join = JoinState::Joined;
            self.emit(Event::Joined { founded: false });
            self.start_sync(Some(from));
        }
        Ok(())
    }

    /// Sends the join hello to the current bootstrap.
    pub(super) fn send_join(&mut self, now: Millis) {
        if self.bootstraps.is_empty() {
            return;
        }
        let bootstrap = self.bootstraps[self.bootstrap_cursor % self.bootstraps.len()].clone();
        let hello = self.hello(now, HelloKind::Join, None);
        self.send(bootstrap.clone(), Message::Hello(hello));
        self.join = JoinState::AwaitingContacts {
            bootstrap,
            deadline: now + self.config.request_timeout_ms,
        };
    }

    /// The current join step failed: next bootstrap, or ask another member for the view.
    pub(super) fn retry_join(&mut self, now: Millis) {
        match &self.join {
            JoinState::AwaitingContacts { .. } => {
                self.bootstrap_cursor += 1;
                self.send_join(now);
            }
            JoinState::AwaitingView { .. } => self.ask_for_view(now),
            JoinState::Idle | JoinState::Joined => {}
        }
    }

    pub(super) fn join_timeouts(&mut self, now: Millis) {
        let expired = match &self.join {
            JoinState::AwaitingContacts { deadline, .. }
            | JoinState::AwaitingView { deadline, .. } => *deadline <= now,
            JoinState::Idle | JoinState::Joined => false,
        };
        if expired {
            self.retry_join(now);
        }
    }

    /// A peer found outside Kelips (e.g. by mDNS on the LAN) that speaks the protocol: it is
    /// remembered as a bootstrap (at most [`MAX_INTRODUCED`] of them, for joins and periodic
    /// rejoins) and, once joined, greeted at once with a rejoin hello. If it is of another
    /// network it refuses the hello and is never taken in; two networks founded apart on one
    /// LAN merge this way.
    pub fn introduce(&mut self, now: Millis, peer: I) {
        if peer == self.me.id || self.view.get(&peer).is_some() {
            return;
        }
        if !self.bootstraps.contains(&peer) && self.bootstraps.len() < MAX_INTRODUCED {
            self.bootstraps.push(peer.clone());
        }
        if self.join == JoinState::Joined && self.contacts.group_of(&peer).is_none() {
            let hello = self.hello(now, HelloKind::Rejoin, None);
            self.send(peer, Message::Hello(hello));
        }
    }

    /// Forgets a peer introduced (or configured) as a bootstrap, e.g. one that turned out to
    /// belong to another network: it is no longer greeted at rejoins.
    pub fn forget_bootstrap(&mut self, peer: &I) {
        self.bootstraps.retain(|b| b != peer);
        if self.bootstrap_cursor >= self.bootstraps.len() {
            self.bootstrap_cursor = 0;
        }
    }

    /// Periodic rejoin: a hello to a remembered peer that is no longer known (most likely on
    /// the far side of a healed partition), else to a bootstrap.
    pub(super) fn rejoin(&mut self, now: Millis) {
        if self.join != JoinState::Joined {
            return;
        }
        let gone: Vec<I> = self
            .remembered
            .keys()
            .filter(|id| self.view.get(id).is_none() && self.contacts.group_of(id).is_none())
            .cloned()
            .collect();
        let pool = if gone.is_empty() {
            self.bootstraps.clone()
        } else {
            gone
        };
        if pool.is_empty() {
            return;
        }
        let target = pool[self.random_index(pool.len())].clone();
        let hello = self.hello(now, HelloKind::Rejoin, None);
        self.send(target, Message::Hello(hello));
    }
}
