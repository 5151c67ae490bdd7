//! The node's side of the files core's driver: [`DriverHandle`] (puts, commits, the hand-off
//! at a clean stop) and the requests it sends over a bounded channel.

use std::sync::Arc;

use libp2p::PeerId;
use quickstore_behaviours::FileTuple;
use quickstore_behaviours::auth::WriteAuth;
use quickstore_behaviours::files_core::{CommitError, PutError, PutFailure, PutId, PutStart};
use quickstore_behaviours::net::Peer;
use tokio::sync::{mpsc, oneshot};

use crate::blobs::Hash;

/// Requests from the node's tasks queued at most (they wait when it is full).
const MAX_REQUESTS: usize = 64;

/// What a put ends with: the tuple acknowledged, or why it failed.
pub type PutOutcome = Result<Arc<FileTuple<Peer>>, PutFailure>;

/// A put started: where to forward the bytes, and where its outcome will come.
pub type PutStarted = (PutStart<Peer>, oneshot::Receiver<PutOutcome>);

/// What happened to one home of a put (reported by the put task, which moves the bytes).
#[derive(Debug, Clone, Copy)]
pub enum PutHome {
    /// A forwarded-to home is ready; it knew this Lamport counter for the name.
    Ready {
        /// Its newest Lamport counter.
        newest: u64,
    },
    /// The home (this node or another) stored the bytes durably, with this BLAKE3.
    Stored {
        /// The home.
        home: PeerId,
        /// The bytes' hash.
        hash: Hash,
    },
    /// The home failed (could not be reached, refused, or its stream broke).
    Failed {
        /// The home.
        home: PeerId,
    },
}

/// What the node's tasks ask of the driver.
#[derive(Debug)]
pub(super) enum Request {
    HandOff {
        reply: oneshot::Sender<usize>,
    },
    StartPut {
        name: String,
        size: u64,
        homes: Vec<PeerId>,
        after: u64,
        reply: oneshot::Sender<Result<PutStarted, PutError>>,
    },
    PutHome {
        put: PutId,
        home: PutHome,
    },
    Commit {
        tuple: FileTuple<Peer>,
        reply: oneshot::Sender<Result<(), CommitError>>,
    },
    FixLamport {
        put: PutId,
        reply: oneshot::Sender<Option<u64>>,
    },
    SignPut {
        put: PutId,
        auth: Arc<WriteAuth>,
    },
}

/// The driver stopped (the node is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the node is shutting down")]
pub struct DriverGone;

/// The node's side of the driver: puts, commits and the hand-off at a clean stop go through
/// it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DriverHandle {
    requests: mpsc::Sender<Request>,
}

/// The driver's end of [`DriverHandle`], given to [`spawn`].
pub struct DriverInbox {
    pub(super) requests: mpsc::Receiver<Request>,
}

/// A handle and the inbox for [`spawn`] (the handle goes into the [`FilesService`] first).
pub fn channel() -> (DriverHandle, DriverInbox) {
    let (requests_tx, requests) = mpsc::channel(MAX_REQUESTS);
    (
        DriverHandle {
            requests: requests_tx,
        },
        DriverInbox { requests },
    )
}

impl DriverHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, DriverGone> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| DriverGone)?;
        answer.await.map_err(|_| DriverGone)
    }

    /// Hands every held name to another member (see the core's `hand_off`); returns how
    /// many were handed off once every copy has ended, or 0 if the driver is gone.
    pub async fn hand_off(&self) -> usize {
        self.ask(|reply| Request::HandOff { reply })
            .await
            .unwrap_or(0)
    }

    /// Starts a put at this node as its first home (the core's `start_put`): where to
    /// forward the bytes, and where its outcome will come.
    pub async fn start_put(
        &self,
        name: String,
        size: u64,
        homes: Vec<PeerId>,
        after: u64,
    ) -> Result<Result<PutStarted, PutError>, DriverGone> {
        self.ask(|reply| Request::StartPut {
            name,
            size,
            homes,
            after,
            reply,
        })
        .await
    }

    /// Reports what happened to one home of `put`.
    pub async fn put_home(&self, put: PutId, home: PutHome) {
        let _ = self.requests.send(Request::PutHome { put, home }).await;
    }

    /// Fixes the put's Lamport counter (the core's `fix_put_lamport`) for a writer that
    /// signs; `None` if the put is gone.
    pub async fn fix_lamport(&self, put: PutId) -> Result<Option<u64>, DriverGone> {
        self.ask(|reply| Request::FixLamport { put, reply }).await
    }

    /// Gives the put the writer's signature of its version (the core's `sign_put`).
    pub async fn sign_put(&self, put: PutId, auth: Arc<WriteAuth>) {
        let _ = self.requests.send(Request::SignPut { put, auth }).await;
    }

    /// A first home's commit (the core's `handle_commit`): answered once the tuple is
    /// published here.
    pub async fn commit(
        &self,
        tuple: FileTuple<Peer>,
    ) -> Result<Result<(), CommitError>, DriverGone> {
        self.ask(|reply| Request::Commit { tuple, reply }).await
    }
}
