//! [`Gateway`]: the file commands as calls, for the node's HTTP API. It is a client peer
//! like the one `put`, `get`, `rm` and `ls` run, kept for the node's lifetime: the same
//! entry node requests, the same put path (homes, R copies, the ack rule, signed versions)
//! and the same verified pieces, so HTTP users get what CLI users get.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use futures::future::Either;
use indicatif::ProgressBar;
use quickstore_behaviours::FileTuple;
use quickstore_behaviours::net::Peer;
use tokio::sync::mpsc;

use super::get::locate;
use super::list::{Deleted, list_names, remove};
use super::put::{PutRules, put_file};
use super::report::{FileReport, shown};
use super::session::Session;
use crate::client::Target;
use crate::files::pieces::fetch::Job;
use crate::files::pieces::ordered::{OrderedError, send_in_order};
use crate::files::service::FilesService;
use crate::files::wire::PeerInfo;

/// A name's current (or asked-for) version and the holders that are up.
#[derive(Debug, Clone)]
pub struct Located {
    /// The version.
    pub tuple: FileTuple<Peer>,
    /// Its live holders, nearest first.
    pub holders: Vec<PeerInfo>,
}

/// The names under a prefix, and the groups that could not be listed.
#[derive(Debug, Clone)]
pub struct Names {
    /// Live names (no tombstones), sorted.
    pub tuples: Vec<FileTuple<Peer>>,
    /// Groups not listed, with the reason: their names are missing.
    pub unreachable: Vec<(u32, String)>,
}

/// A long-lived client of one entry node.
pub struct Gateway {
    session: Session,
    /// The entry node's own file service, when the gateway runs inside it: the copies it
    /// holds are read through an in-memory stream instead of over the network to itself.
    local: Option<Arc<FilesService>>,
}

impl Gateway {
    /// A client of `target`; every open, read and write times out after `timeout`, and the
    /// first request waits up to `wait_ready` for the entry node to finish joining.
    pub fn open(target: &Target, timeout: Duration, wait_ready: Duration) -> anyhow::Result<Self> {
        let mut session = Session::open(target, timeout)?;
        session.set_wait_ready(wait_ready);
        Ok(Self {
            session,
            local: None,
        })
    }

    /// Reads the copies the entry node holds through `files`, the entry node's own file
    /// service (the gateway runs inside the node).
    pub fn with_local(mut self, files: Arc<FilesService>) -> Self {
        self.local = Some(files);
        self
    }

    /// Puts the regular file `file` under `name`, as `quickstore put` does; the copies must
    /// be durable within `deadline`.
    pub async fn put(
        &self,
        file: &Path,
        name: &str,
        deadline: Duration,
    ) -> anyhow::Result<FileReport> {
        let rules = PutRules {
            deadline,
            min_copies: 0,
        };
        put_file(&self.session, file, name, rules, &ProgressBar::hidden()).await
    }

    /// The current version of `name` (or version `version`), with its live holders. A
    /// deleted name is not found; one whose holders are all down is `unavailable`.
    pub async fn locate(&self, name: &str, version: Option<u64>) -> anyhow::Result<Located> {
        let (tuple, holders, _) = locate(&self.session, name, version, 1).await?;
        if tuple.deleted {
            bail!("not found: {} (deleted)", shown(name));
        }
        Ok(Located { tuple, holders })
    }

    /// Sends the verified bytes `from..to` of `located` into `out`, in order, fetched from
    /// every live holder at once (dialed at once; a dead one costs no timeout, a failing one
    /// leaves its pieces to the others). Nothing goes out that has not been checked against
    /// the version's BLAKE3.
    pub async fn send(
        &self,
        located: &Located,
        from: u64,
        to: u64,
        out: &mpsc::Sender<io::Result<Bytes>>,
    ) -> anyhow::Result<()> {
        let session = &self.session;
        let tuple = &located.tuple;
        let job = Job {
            hash: tuple.version.blake3,
            size: tuple.size,
            io: session.timeout,
        };
        if located.holders.is_empty() {
            bail!(
                "unavailable: {} is stored, but none of its {} listed holders is up now",
                shown(&tuple.name),
                tuple.holders.len()
            );
        }
        let sources = located
            .holders
            .iter()
            .map(|holder| async move {
                let label = holder.peer.to_string();
                match &self.local {
                    Some(files) if holder.peer.0 == session.entry => {
                        (label, Ok(Either::Right(files.local_pieces())))
                    }
                    _ => (
                        label,
                        session
                            .open_pieces(holder, tuple.size)
                            .await
                            .map(Either::Left),
                    ),
                }
            })
            .collect();
        match send_in_order(sources, job, from, to, out).await {
            Ok(()) => Ok(()),
            Err(OrderedError::Reader) => bail!("the reader stopped taking bytes"),
            Err(OrderedError::Source(why)) => bail!(
                "unreachable: no holder of {} could serve the rest ({why})",
                shown(&tuple.name)
            ),
        }
    }

    /// Deletes `name`, as `quickstore rm` does.
    pub async fn remove(&self, name: &str) -> anyhow::Result<Deleted> {
        remove(&self.session, name).await
    }

    /// The live names under `prefix`, as `quickstore ls` lists them.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Names> {
        let listing = list_names(&self.session, prefix).await?;
        Ok(Names {
            tuples: listing.tuples,
            unreachable: listing.unreachable,
        })
    }
}
