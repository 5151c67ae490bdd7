//! Files: put, get, delete and list by name.
//!
//! * [`wire`]: the two protocols, `/quickstore/files/1.0.0` (control) and
//!   `/quickstore/blob/1.0.0` (bytes).
//! * [`handle`]: how file tasks ask the swarm task (lookups, placement, tuples).
//! * [`service`]: the node's side of both protocols, one task per stream behind a limit.
//!   Older versions (`version`, `versions`) are answered in `version_lookup`.
//! * [`driver`]: runs the files core (`quickstore_behaviours::files_core`), which decides
//!   repair, trimming, garbage, versions and the hand-off at a clean stop; [`repair`] moves
//!   the bytes it asks for and scrubs stored blobs.
//! * [`pieces`]: verified pieces of blobs, fetched from every holder at once
//!   (`/quickstore/blob/1.1.0`).
//! * [`client`]: the ephemeral peer the CLI runs; [`cli`]: `put`, `get`, `rm`, `ls`.

mod block_pipe;
pub mod cli;
pub mod client;
pub mod driver;
pub mod handle;
pub mod pieces;
mod put;
pub mod repair;
pub mod service;
pub mod sink;
pub mod slots;
pub mod source;
mod version_lookup;
pub mod versions;
pub mod wire;
