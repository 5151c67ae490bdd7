//! The ack rule.
//!
//! The first home of a put receives the client's bytes and forwards them to the other homes
//! as they arrive (the driver moves the bytes). A put is **acknowledged** only when
//!
//! 1. the bytes are durable (hash checked, fsynced, renamed) at ≥ `wanted` = min(R, live
//!    members) homes — a home that failed is replaced by a copy from the first home's durable
//!    blob, placed by power of two choices among members not tried yet; and
//! 2. **every counted home has recorded the tuple** in its own tuple store (the first home
//!    publishes it; each other home is sent a commit and records and publishes it on
//!    receipt). A home that cannot record is not counted and another copy is made.
//!
//! So the acknowledged name survives the death of the first home right after the ack: the
//! other homes know the tuple and gossip it. (Before, only the first home published it, and
//! a crash right after the ack left copies nobody listed.) Commits of one put carry the same
//! version at epoch 0, so their holder sets merge by union wherever they meet.
//!
//! The version is (max Lamport counter the homes and the entry knew + 1, BLAKE3). A put that
//! misses `put_deadline_ms` fails; its unnamed copies are collected as garbage.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::Millis;
use crate::auth::WriteAuth;
use crate::id::NodeId;
use crate::tuple::{FileTuple, TupleError, Version, check_name};

use super::FilesCore;
use super::limits::{MAX_COPIES, MAX_PUTS};
use super::output::{Command, CopyPurpose, Event, Hash, PutFailure, PutId};
use super::placement::place;

/// Why a put could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutError {
    /// A bad name.
    #[error(transparent)]
    Name(#[from] TupleError),
    /// Too many puts in progress.
    #[error("{MAX_PUTS} puts in progress")]
    Busy,
    /// The node has not joined its group yet.
    #[error("the node has not joined yet")]
    NotJoined,
}

/// Why a home refused a commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// A malformed tuple.
    #[error(transparent)]
    Tuple(#[from] TupleError),
    /// This node does not hold the bytes the tuple names.
    #[error("no durable copy of the bytes here")]
    NoCopy,
    /// The tuple does not list this node.
    #[error("the tuple does not list this node")]
    NotListed,
    /// A tombstone is no commit.
    #[error("a tombstone is not a put")]
    Tombstone,
}

/// A put started: where the driver forwards the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutStart<I> {
    /// The put.
    pub put: PutId,
    /// The other homes the bytes are forwarded to as they arrive.
    pub forward_to: Vec<I>,
    /// Copies wanted: min(R, live members).
    pub wanted: usize,
}

/// One put in progress at its first home.
#[derive(Debug, Clone)]
pub(crate) struct PutState<I> {
    name: Arc<str>,
    size: u64,
    wanted: usize,
    deadline: Millis,
    /// Lamport counter floor: the newest the entry and the homes knew.
    newest: u64,
    /// The first home's own copy, once durable.
    hash: Option<Hash>,
    /// Homes still receiving the pipelined bytes.
    pipeline: BTreeSet<I>,
    /// Every member asked to hold a copy.
    tried: BTreeSet<I>,
    /// Homes with a durable copy.
    durable: BTreeSet<I>,
    /// Homes that hold a copy but could not record the tuple (not counted).
    unrecorded: BTreeSet<I>,
    /// Copies being made to replace failed homes.
    copying: BTreeSet<I>,
    /// Homes sent a commit, not answered yet.
    committing: BTreeSet<I>,
    /// Homes that recorded the tuple.
    recorded: BTreeSet<I>,
    /// The tuple, once the version is fixed.
    tuple: Option<Arc<FileTuple<I>>>,
    /// The Lamport counter told to a writer that signs ([`FilesCore::fix_put_lamport`]).
    lamport: Option<u64>,
    /// The writer's signature of the version ([`FilesCore::sign_put`]).
    auth: Option<Arc<WriteAuth>>,
}

impl<I: NodeId> PutState<I> {
    fn counted(&self) -> usize {
        self.durable.difference(&self.unrecorded).count()
    }
}

impl<I: NodeId> FilesCore<I> {
    /// Starts a put of `size` bytes under `name` at this node, its first home. `homes` are
    /// the homes placement chose (this node among them or not); `after` the newest Lamport
    /// counter the entry node knew. The driver forwards the bytes to `forward_to` and reports
    /// with [`handle_put_home_ready`](Self::handle_put_home_ready),
    /// [`handle_put_stored`](Self::handle_put_stored) (this node's copy too) and
    /// [`handle_put_home_failed`](Self::handle_put_home_failed).
    pub fn start_put(
        &mut self,
        now: Millis,
        name: &str,
        size: u64,
        homes: &[I],
        after: u64,
    ) -> Result<PutStart<I>, PutError> {
        self.input(now);
        check_name(name)?;
        if !self.health.is_joined() {
            return Err(PutError::NotJoined);
        }
        if self.puts.len() >= MAX_PUTS {
            return Err(PutError::Busy);
        }
        let wanted = self.target().min(MAX_COPIES);
        let mut forward_to: Vec<I> = Vec::new();
        for home in homes {
            if *home != self.me && !forward_to.contains(home) && forward_to.len() + 1 < wanted {
                forward_to.push(home.clone());
            }
        }
        let known = self.names.get(name).map_or(0, |t| t.tuple.version.lamport);
        let put = PutId(self.next_put);
        self.next_put += 1;
        let mut tried: BTreeSet<I> = forward_to.iter().cloned().collect();
        tried.insert(self.me.clone());
        self.puts.insert(
            put,
            PutState {
                name: name.into(),
                size,
                wanted,
                deadline: now + self.config.put_deadline_ms,
                newest: after.max(known),
                hash: None,
                pipeline: forward_to.iter().cloned().collect(),
                tried,
                durable: BTreeSet::new(),
                unrecorded: BTreeSet::new(),
                copying: BTreeSet::new(),
                committing: BTreeSet::new(),
                recorded: BTreeSet::new(),
                tuple: None,
                lamport: None,
                auth: None,
            },
        );
        Ok(PutStart {
            put,
            forward_to,
            wanted,
        })
    }

    /// A forwarded-to home is ready; it knew Lamport counter `newest` for the name.
    pub fn handle_put_home_ready(&mut self, now: Millis, put: PutId, newest: u64) {
        self.input(now);
        if let Some(state) = self.puts.get_mut(&put) {
            state.newest = state.newest.max(newest);
        }
    }

    /// `home` (this node or a forwarded-to home) stored the put's bytes durably; `hash` is
    /// their BLAKE3.
    pub fn handle_put_stored(&mut self, now: Millis, put: PutId, home: I, hash: Hash) {
        self.input(now);
        let Some(state) = self.puts.get_mut(&put) else {
            return;
        };
        if home == self.me {
            state.hash = Some(hash);
            let size = state.size;
            self.blobs.insert(hash, size);
        } else if state.hash.is_some_and(|h| h != hash) {
            // Other bytes than the first home's: not a copy.
            state.pipeline.remove(&home);
            return self.advance_put(now, put);
        }
        let state = self.puts.get_mut(&put).expect("checked above");
        state.pipeline.remove(&home);
        state.durable.insert(home);
        self.advance_put(now, put);
    }

    /// `home` failed (its stream broke, it refused). When it is this node, the put fails.
    pub fn handle_put_home_failed(&mut self, now: Millis, put: PutId, home: I) {
        self.input(now);
        let Some(state) = self.puts.get_mut(&put) else {
            return;
        };
        if home == self.me {
            return self.fail_put(put, PutFailure::FirstHome);
        }
        state.pipeline.remove(&home);
        state.durable.remove(&home);
        self.advance_put(now, put);
    }

    /// A home sent a commit recorded the tuple.
    pub fn handle_commit_recorded(&mut self, now: Millis, put: PutId, home: I) {
        self.input(now);
        if let Some(state) = self.puts.get_mut(&put) {
            state.committing.remove(&home);
            if state.durable.contains(&home) {
                state.recorded.insert(home);
            }
            self.advance_put(now, put);
        }
    }

    /// A home could not record the tuple (it refused or could not be reached): it is no
    /// longer counted, and another copy is made.
    pub fn handle_commit_failed(&mut self, now: Millis, put: PutId, home: I) {
        self.input(now);
        if let Some(state) = self.puts.get_mut(&put) {
            state.committing.remove(&home);
            state.unrecorded.insert(home);
            self.advance_put(now, put);
        }
    }

    /// A home's side of the ack rule: `from`, the first home, sends the committed tuple of a
    /// put this node stored a copy of. It is recorded and published here (so the name
    /// survives the first home), and the driver answers `from` (the first home's
    /// [`handle_commit_recorded`](Self::handle_commit_recorded)).
    pub fn handle_commit(&mut self, now: Millis, tuple: FileTuple<I>) -> Result<(), CommitError> {
        self.input(now);
        let tuple = tuple.normalize()?;
        if tuple.deleted {
            return Err(CommitError::Tombstone);
        }
        if !tuple.holders.contains(&self.me) {
            return Err(CommitError::NotListed);
        }
        if !self.blobs.contains_key(&tuple.version.blake3) {
            return Err(CommitError::NoCopy);
        }
        self.publish(tuple);
        Ok(())
    }

    pub(crate) fn put_copy_done(&mut self, now: Millis, put: PutId, to: I) {
        if let Some(state) = self.puts.get_mut(&put) {
            state.copying.remove(&to);
            state.durable.insert(to);
            self.advance_put(now, put);
        }
    }

    pub(crate) fn put_copy_failed(&mut self, now: Millis, put: PutId, to: I) {
        if let Some(state) = self.puts.get_mut(&put) {
            state.copying.remove(&to);
            self.advance_put(now, put);
        }
    }

    /// Fixes the put's Lamport counter now, one above the newest the entry node and the
    /// ready homes knew, so that the writer can sign the version before its bytes are in.
    /// Call after every pipelined home reported ready. `None` for an unknown put.
    pub fn fix_put_lamport(&mut self, now: Millis, put: PutId) -> Option<u64> {
        self.input(now);
        let state = self.puts.get_mut(&put)?;
        Some(*state.lamport.get_or_insert(state.newest + 1))
    }

    /// The writer's signature of the put's version, carried by the tuple the put publishes.
    pub fn sign_put(&mut self, now: Millis, put: PutId, auth: Arc<WriteAuth>) {
        self.input(now);
        if let Some(state) = self.puts.get_mut(&put) {
            state.auth = Some(auth);
        }
    }

    /// The hashes of puts in progress (named: not garbage).
    pub(crate) fn put_hashes(&self) -> BTreeSet<Hash> {
        self.puts.values().filter_map(|p| p.hash).collect()
    }

    fn advance_put(&mut self, _now: Millis, put: PutId) {
        let Some(state) = self.puts.get(&put) else {
            return;
        };
        // Wait for the own copy and every pipelined home to answer.
        let Some(hash) = state.hash else { return };
        if !state.pipeline.is_empty() {
            return;
        }
        let mut state = self.puts.remove(&put).expect("present");
        let mut holders: Vec<I> = state.durable.iter().cloned().collect();
        holders.truncate(MAX_COPIES);
        let tuple = Arc::new(FileTuple {
            name: state.name.clone(),
            version: Version {
                lamport: state
                    .tuple
                    .as_ref()
                    .map_or(state.lamport.unwrap_or(state.newest + 1), |t| {
                        t.version.lamport
                    }),
                blake3: hash,
            },
            size: state.size,
            holders,
            epoch: 0,
            deleted: false,
            auth: state.auth.clone(),
        });
        state.tuple = Some(tuple.clone());
        if state.counted() < state.wanted {
            // Replace failed homes with copies from the own durable blob.
            let missing = state.wanted - state.counted();
            let more = missing.saturating_sub(state.copying.len());
            if more > 0 {
                let exclude: Vec<I> = state.tried.iter().cloned().collect();
                let picked = place(
                    &mut self.rng,
                    &self.me,
                    self.own_free,
                    &self.view,
                    state.size,
                    &exclude,
                    more,
                );
                for to in picked {
                    if self.outbox_push_copy(&tuple, &to, CopyPurpose::Put(put)) {
                        state.tried.insert(to.clone());
                        state.copying.insert(to);
                    }
                }
            }
            if state.copying.is_empty() && state.committing.is_empty() {
                let failure = PutFailure::NoMember {
                    durable: state.counted(),
                    wanted: state.wanted,
                };
                self.puts.insert(put, state);
                return self.fail_put(put, failure);
            }
            self.puts.insert(put, state);
            return;
        }
        // Enough durable copies: every counted home records the tuple.
        if !state.recorded.contains(&self.me) {
            self.publish(FileTuple::clone(&tuple));
            state.recorded.insert(self.me.clone());
        }
        let to_commit: Vec<I> = state
            .durable
            .iter()
            .filter(|h| {
                !state.recorded.contains(*h)
                    && !state.committing.contains(*h)
                    && !state.unrecorded.contains(*h)
            })
            .cloned()
            .collect();
        for to in to_commit {
            let sent = self.command(Command::SendCommit {
                put,
                to: to.clone(),
                tuple: tuple.clone(),
            });
            if sent {
                state.committing.insert(to);
            }
        }
        let recorded = state.recorded.difference(&state.unrecorded).count();
        if recorded >= state.wanted {
            self.stats.puts_acknowledged += 1;
            self.emit(Event::PutAcknowledged {
                put,
                tuple,
                copies: state.counted(),
                wanted: state.wanted,
            });
            return;
        }
        self.puts.insert(put, state);
    }

    fn outbox_push_copy(
        &mut self,
        tuple: &Arc<FileTuple<I>>,
        to: &I,
        purpose: CopyPurpose,
    ) -> bool {
        self.command(Command::CopyTo {
            tuple: tuple.clone(),
            to: to.clone(),
            purpose,
        })
    }

    /// Fails `put`. Its own copy, if nothing else names those bytes, is deleted at once: a
    /// failed put's bytes are no copy of anything, and their room is wanted now (a disk that
    /// filled up), not after the orphan grace.
    fn fail_put(&mut self, put: PutId, reason: PutFailure) {
        let Some(state) = self.puts.remove(&put) else {
            return;
        };
        self.stats.puts_failed += 1;
        self.emit(Event::PutFailed { put, reason });
        if let Some(hash) = state.hash
            && !self.names_blob(&hash)
            && self.command(Command::Delete { hash })
        {
            self.blobs.remove(&hash);
            self.orphans.named(&hash);
            self.stats.blobs_deleted += 1;
        }
    }

    /// Whether a tracked version, a kept version or a put in progress names `hash`.
    fn names_blob(&self, hash: &Hash) -> bool {
        self.names.values().any(|t| t.tuple.version.blake3 == *hash)
            || self.kept.hashes().contains(hash)
            || self.put_hashes().contains(hash)
    }

    /// Fails the puts whose deadline passed.
    pub(crate) fn expire_puts(&mut self, now: Millis) {
        let late: Vec<(PutId, PutFailure)> = self
            .puts
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(id, p)| {
                (
                    *id,
                    PutFailure::Deadline {
                        durable: p.counted(),
                        recorded: p.recorded.len(),
                        wanted: p.wanted,
                    },
                )
            })
            .collect();
        for (put, reason) in late {
            self.fail_put(put, reason);
        }
    }
}
