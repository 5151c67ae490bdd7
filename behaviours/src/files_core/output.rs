//! What the files core asks the driver to do ([`Command`]) and reports ([`Event`]), queued in
//! a bounded [`Outbox`] the driver drains with
//! [`FilesCore::poll_output`](super::FilesCore::poll_output).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::tuple::{FileTuple, Version};

use super::limits::MAX_OUTBOX;

/// A BLAKE3 hash: the name of a blob on disk.
pub type Hash = [u8; 32];

/// A put in progress at this node, as first home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PutId(pub u64);

/// Why a copy is being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPurpose {
    /// To replace a home that failed during a put.
    Put(PutId),
    /// A repair leader restoring R copies.
    Repair,
    /// A clean stop handing this node's copy to another member.
    HandOff,
}

/// Something for the driver to do. Each names the input that reports its outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<I> {
    /// Copy this node's blob of `tuple` to member `to`. Report with
    /// [`handle_copy_done`](super::FilesCore::handle_copy_done) or
    /// [`handle_copy_failed`](super::FilesCore::handle_copy_failed).
    CopyTo {
        /// The tuple (the receiver checks the bytes against its BLAKE3).
        tuple: Arc<FileTuple<I>>,
        /// The member to copy to.
        to: I,
        /// Why.
        purpose: CopyPurpose,
    },
    /// Fetch the blob of `tuple` from holder `from`. Report with
    /// [`handle_fetch_done`](super::FilesCore::handle_fetch_done) or
    /// [`handle_fetch_failed`](super::FilesCore::handle_fetch_failed).
    FetchFrom {
        /// The tuple whose bytes are missing here.
        tuple: Arc<FileTuple<I>>,
        /// The holder to fetch from.
        from: I,
    },
    /// Send the committed tuple of a put to home `to`, which records it in its own tuple
    /// store ([`handle_commit`](super::FilesCore::handle_commit) there). Report with
    /// [`handle_commit_recorded`](super::FilesCore::handle_commit_recorded) or
    /// [`handle_commit_failed`](super::FilesCore::handle_commit_failed).
    SendCommit {
        /// The put.
        put: PutId,
        /// The home.
        to: I,
        /// The tuple to record.
        tuple: Arc<FileTuple<I>>,
    },
    /// Merge `tuple` into the local Kelips core (`Kelips::publish`), which gossips it.
    Publish {
        /// The tuple.
        tuple: FileTuple<I>,
    },
    /// Delete this blob from disk. Report with
    /// [`handle_blob_removed`](super::FilesCore::handle_blob_removed).
    Delete {
        /// The blob.
        hash: Hash,
    },
    /// Look `name` up in its group (a Kelips lookup: the name left this node's group when the
    /// groups split) and report the newest tuple found, or none, with
    /// [`handle_confirmed`](super::FilesCore::handle_confirmed). This node keeps its copy
    /// until that group lists R holders of its own.
    Confirm {
        /// The name.
        name: Arc<str>,
    },
}

/// Why a put failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutFailure {
    /// Not enough copies durable and recorded before the deadline.
    #[error("{durable} of {wanted} copies durable, {recorded} recorded, before the deadline")]
    Deadline {
        /// Copies durable.
        durable: usize,
        /// Homes that recorded the tuple.
        recorded: usize,
        /// Copies wanted.
        wanted: usize,
    },
    /// No member left to place a copy on.
    #[error("{durable} of {wanted} copies durable and no other member to copy to")]
    NoMember {
        /// Copies durable.
        durable: usize,
        /// Copies wanted.
        wanted: usize,
    },
    /// The first home could not store its own copy.
    #[error("the first home could not store the bytes")]
    FirstHome,
}

/// Something the core reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<I> {
    /// A put is acknowledged: durable at `copies` ≥ `wanted` holders, every one of which
    /// recorded the tuple.
    PutAcknowledged {
        /// The put.
        put: PutId,
        /// The tuple as published.
        tuple: Arc<FileTuple<I>>,
        /// Copies durable.
        copies: usize,
        /// min(R, live members) at the start.
        wanted: usize,
    },
    /// A put failed; no tuple was published.
    PutFailed {
        /// The put.
        put: PutId,
        /// Why.
        reason: PutFailure,
    },
    /// This node published a new holder set (as repair leader, at a hand-off, or re-adding
    /// itself).
    HolderSetPublished {
        /// The name.
        name: Arc<str>,
        /// Holders listed before.
        before: usize,
        /// Holders listed after.
        after: usize,
    },
    /// A holder set change that would shrink it, trim or delete was held back because this
    /// node is not settled (local health).
    ShrinkDeferred {
        /// The name.
        name: Arc<str>,
    },
    /// Every listed holder of this version is known to lack the bytes: the file is lost.
    CopiesLost {
        /// The name.
        name: Arc<str>,
        /// The version lost.
        version: Version,
    },
    /// This node's copy was handed to another member and the set without it published.
    HandedOff {
        /// The name.
        name: Arc<str>,
        /// Who took the copy.
        to: I,
    },
    /// A hand-off copy of `name` failed on every member tried (at most
    /// `MAX_HAND_OFF_ATTEMPTS`, or no member left to try): this node stays listed, and its
    /// group's repair restores R once it has gone.
    HandOffFailed {
        /// The name.
        name: Arc<str>,
    },
    /// A name that left this node's group (a split) is held by its new group (R holders of
    /// that group listed, or a newer version): this node forgets it, and its copy becomes
    /// garbage.
    Emigrated {
        /// The name.
        name: Arc<str>,
        /// Holders its group lists.
        holders: usize,
    },
    /// This node's own timers fired late (a gap of `gap_ms` between inputs) or it stopped
    /// hearing its group: it will not shrink, trim or delete until settled again.
    HealthLost {
        /// The gap between inputs in ms, or 0 when the group went silent.
        gap_ms: u64,
    },
    /// The node is settled again: healthy for `settle_ms`.
    Settled,
}

/// One output.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<I> {
    /// A command.
    Command(Command<I>),
    /// An event.
    Event(Event<I>),
}

/// The bounded queue of outputs.
#[derive(Debug)]
pub struct Outbox<I> {
    queue: VecDeque<Output<I>>,
    dropped: u64,
}

impl<I> Default for Outbox<I> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            dropped: 0,
        }
    }
}

impl<I> Outbox<I> {
    /// Queues `output`; returns false (and counts it) when the queue is full.
    pub fn push(&mut self, output: Output<I>) -> bool {
        if self.queue.len() >= MAX_OUTBOX {
            self.dropped += 1;
            return false;
        }
        self.queue.push_back(output);
        true
    }

    /// The oldest output.
    pub fn pop(&mut self) -> Option<Output<I>> {
        self.queue.pop_front()
    }

    /// Outputs dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Outputs waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
