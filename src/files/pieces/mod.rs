//! Verified pieces: gets from every holder at once, checked chunk group by chunk group, and
//! resumable (`/quickstore/blob/1.1.0`, PROTOCOL.md §11.6).
//!
//! * [`verified`]: outboards, and pieces encoded with their BLAKE3 proof (synchronous; run
//!   on blocking threads).
//! * [`plan`]: which source fetches which piece, work stealing, bad sources (no I/O).
//! * [`fetch`]: the requester's streams, one per source, driven by the plan.
//! * [`resume`]: the partial file and the record of its verified ranges.
//! * [`in_order`]: which source fetches which piece when bytes go out in order (no I/O).
//! * [`ordered`]: verified bytes in order from every holder (HTTP bodies and ranges).
//! * `serve`: the node's side of a `pieces` stream.
//! * [`streamed`]: an outboard made while a blob's bytes arrive.

pub mod fetch;
pub mod in_order;
pub mod ordered;
pub mod plan;
pub mod resume;
mod serve;
pub use serve::LocalPieces;
pub mod streamed;
pub mod verified;

/// Bytes a get asks one source for at a time: 1 MiB, the largest piece (enough to keep a
/// 100 Mbit/s link busy with two in flight, small enough to steal from a slow source).
pub const PIECE_BYTES: u64 = verified::MAX_PIECE_BYTES;
