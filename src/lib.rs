//! quickstore: a decentralized file store on the Kelips one-hop DHT.
//!
//! The protocol lives in the `quickstore-behaviours` crate (a sans-I/O core, its libp2p
//! `NetworkBehaviour`, and a simulator); this crate assembles the node (swarm, storage,
//! configuration, metrics) and holds the command line.

pub mod blobs;
pub mod bulk_io;
pub mod candidates;
pub mod client;
pub mod client_identity;
pub mod config;
pub mod conn_room;
pub mod files;
pub mod http;
pub mod identity;
pub mod ip_limits;
pub mod local;
pub mod metrics;
pub mod network_key;
pub mod node;
pub mod output_path;
pub mod reach;
pub mod simulate;
pub mod status;
pub mod store;
pub mod swarm;
pub mod writeback;
