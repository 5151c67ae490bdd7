//! Anti-entropy for file tuples: compare bucket digests with one random group member, pull
//! what differs, push back what the other side lacks. Bounded per exchange.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Kelips, Refusal};
use crate::id::NodeId;
use crate::limits::{MAX_SYNC_TUPLES, SYNC_BUCKETS};
use crate::message::{Message, SyncPush, SyncReply, SyncRequest, TuplePull};
use crate::tuple::Version;

impl<I: NodeId> Kelips<I> {
    /// Starts an exchange with `with`, or with a random live member.
    pub(super) fn start_sync(&mut self, with: Option<I>) {
        let peer = match with {
            Some(peer) => peer,
            None => {
                let members = self.live_member_ids();
                if members.is_empty() {
                    return;
                }
                members[self.random_index(members.len())].clone()
            }
        };
        let request = SyncRequest {
            buckets: self.tuples.bucket_digest(),
        };
        self.send(peer, Message::SyncRequest(request));
    }

    pub(super) fn on_sync_request(&mut self, from: I, request: SyncRequest) -> Result<(), Refusal> {
        self.check_member(&from)?;
        if request.buckets.len() != SYNC_BUCKETS {
            return Err(Refusal::OverBound("sync buckets"));
        }
        let differing = self.tuples.differing_buckets(&request.buckets);
        if differing.is_empty() {
            return Ok(());
        }
        let (tuples, complete) =
            self.tuples
                .tuples_in_buckets(&differing, self.config.sync_ration, &mut self.rng);
        let reply = SyncReply {
            differing,
            tuples,
            complete,
        };
        self.send(from, Message::SyncReply(reply));
        Ok(())
    }

    pub(super) fn on_sync_reply(&mut self, from: I, reply: SyncReply<I>) -> Result<(), Refusal> {
        self.check_member(&from)?;
        if reply.tuples.len() > MAX_SYNC_TUPLES || reply.differing.len() > SYNC_BUCKETS {
            return Err(Refusal::OverBound("sync reply"));
        }
        let theirs: BTreeMap<Arc<str>, Version> = reply
            .tuples
            .iter()
            .map(|t| (t.name.clone(), t.version))
            .collect();
        for tuple in &reply.tuples {
            self.learn_tuple(tuple);
        }
        if !reply.complete {
            return Ok(());
        }
        // Their side of those buckets is known exactly: push what they lack or hold older.
        let differing: Vec<u8> = reply
            .differing
            .iter()
            .copied()
            .filter(|b| usize::from(*b) < SYNC_BUCKETS)
            .collect();
        let (mine, _) = self
            .tuples
            .tuples_in_buckets(&differing, usize::MAX, &mut self.rng);
        let push: Vec<_> = mine
            .into_iter()
            .filter(|t| theirs.get(&t.name).is_none_or(|v| *v < t.version))
            .take(self.config.sync_ration)
            .collect();
        if !push.is_empty() {
            self.send(from, Message::SyncPush(SyncPush { tuples: push }));
        }
        Ok(())
    }

    pub(super) fn on_tuple_pull(&mut self, from: I, pull: TuplePull) -> Result<(), Refusal> {
        self.check_member(&from)?;
        if pull.fingerprints.len() > MAX_SYNC_TUPLES {
            return Err(Refusal::OverBound("tuple pull"));
        }
        let tuples = self.tuples.by_fingerprints(&pull.fingerprints);
        if !tuples.is_empty() {
            self.send(from, Message::SyncPush(SyncPush { tuples }));
        }
        Ok(())
    }

    pub(super) fn on_sync_push(&mut self, from: I, push: SyncPush<I>) -> Result<(), Refusal> {
        // A member, or (groups that size themselves) a node of the sibling group handing over
        // the tuples of a split; each tuple is checked against the own group below.
        if !self.is_sibling(&from) {
            self.check_member(&from)?;
        }
        if push.tuples.len() > MAX_SYNC_TUPLES {
            return Err(Refusal::OverBound("sync push"));
        }
        for tuple in &push.tuples {
            self.learn_tuple(tuple);
        }
        Ok(())
    }

    /// The fingerprint and group of a name (exposed for drivers that pre-check names).
    pub fn name_facts(&self, name: &str) -> (u32, u64) {
        self.grouping().name_facts(name)
    }
}
