//! `quickstore put`, `get`, `rm` and `ls`: the client commands that move files.
//!
//! Each runs an ephemeral peer ([`ClientPeer`]), asks the entry node (the local node, or
//! `--peer`) over `/quickstore/files/1.0.0`, and moves bytes directly with the holders over
//! `/quickstore/blob/1.0.0`. Exit code 0 on success; otherwise one line naming the reason.
//!
//! * [`session`]: the client peer, the entry node and how a blob stream is opened.
//! * [`report`]: what a command prints (text or `--json`), sizes and names made readable.
//! * [`put`] (files, streams, directories), [`get`] (files, streams, trees), [`list`]
//!   (`ls`, `rm`).
//! * [`Gateway`]: the same calls for the node's HTTP API.

mod gateway;
mod get;
mod get_pieces;
mod grant;
mod list;
mod put;
mod report;
mod session;
mod sign;
mod spool;
mod tree;

use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;

pub use gateway::{Gateway, Located, Names};
pub use get::{GetArgs, get};
pub use grant::{GrantArgs, IdArgs};
pub use list::{Deleted, Listed, LsArgs, RmArgs};
pub use put::{PutArgs, put};
pub use report::{FileReport, SourceReport, count, human_size, ranges, shown};
pub use session::EntryClient;
pub use sign::{decode as decode_grant_list, encode as encode_grant_list};

use crate::client::Target;

/// Set by `--quiet`: print nothing on success, no progress bars.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Makes every command print nothing but errors (`--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Options every file command shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    #[command(flatten)]
    target: Target,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Timeout of every open, read and write, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// How long to wait for the entry node to finish joining its network (a node started a
    /// moment ago), in seconds; 0 does not wait.
    #[arg(long, default_value_t = 20)]
    wait_s: u64,
    /// Never move file bytes through a relay: a node reachable only through one (hole
    /// punching failed) is an error.
    #[arg(long)]
    no_relay_transfers: bool,
}
