//! Kelips on libp2p: the node id ([`peer::Peer`]), the wire ([`protocol`]) and the
//! `NetworkBehaviour` that drives the sans-I/O core ([`behaviour::Behaviour`]).
//!
//! Protocol id `/quickstore/kelips/2.0.0`; framing and messages in `docs/PROTOCOL.md`.

pub mod behaviour;
pub mod peer;
pub mod protocol;
pub mod record;
pub mod site;

pub use behaviour::{Behaviour, BehaviourEvent, DriverConfig, NetStats};
pub use peer::Peer;
