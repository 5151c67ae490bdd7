//! Kelips for quickstore: the protocol as a sans-I/O state machine, and a deterministic
//! simulator that runs thousands of them.
//!
//! * [`Kelips`] is one node: time, received messages, RTT samples and commands go in; messages
//!   to send and events come out ([`Output`]). No sockets, tasks, wall clock, global RNG or
//!   hash-map iteration inside, so a seeded run is reproducible.
//! * It is generic over the node id ([`NodeId`]): the node uses libp2p `PeerId`s, the
//!   simulator compact [`SimId`]s that encode like PeerIds.
//! * Protocol name `/quickstore/kelips/2.0.0` ([`id::PROTOCOL_NAME`]); every message is an
//!   [`Envelope`] carrying the [`NetworkId`], a hash of (network name, k, protocol version).
//! * Defaults and units of every parameter: [`Config`]. Wire bounds: [`limits`].
//! * [`sim`]: N nodes on a plane (RTT = distance), virtual clock, seeded loss, partitions,
//!   kills and restarts, message sizes measured with the real codec.
//!
//! How the algorithm works, and why: `ALGORITHM.md` beside this crate.

pub mod auth;
pub mod codec;
pub mod config;
pub mod contacts;
pub mod digest;
pub mod entry;
pub mod files_core;
pub mod id;
pub mod limits;
pub mod lookup_map;
pub mod message;
pub mod net;
mod node;
pub mod sim;
pub mod structure;
pub mod targets;
pub mod tuple;
pub mod tuple_store;
pub mod view;

/// A time or duration in milliseconds on the caller's monotonic clock.
pub type Millis = u64;

pub use config::{Config, ConfigError};
pub use entry::{AddressRecord, Beat, Entry};
pub use id::{NetworkId, NodeId, SimId};
pub use message::{Envelope, Message};
pub use node::{
    ContactRemoval, Event, Kelips, LookupError, LookupOutcome, LookupResult, Output, Refusal, Stats,
};
pub use tuple::{FileTuple, Version};
