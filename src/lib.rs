//! quickstore: a decentralized file store on the Kelips one-hop DHT.
//!
//! The protocol lives in the `quickstore-behaviours` crate (a sans-I/O core and a simulator);
//! this crate holds the command line.

pub mod simulate;
