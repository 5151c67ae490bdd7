//! Hard bounds of the wire protocol. A message or field beyond one of these is refused, whatever
//! the configuration says; the configuration can only choose values inside them.

/// Largest encoded message, in bytes (frame payload, after the length prefix).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Largest node id on the wire, in bytes (a libp2p PeerId is 38 bytes for ed25519 keys).
pub const MAX_ID_BYTES: usize = 64;
/// Largest opaque address record (a signed peer record with a few addresses), in bytes.
pub const MAX_ADDRESS_RECORD_BYTES: usize = 1024;
/// Largest file name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 1024;
/// Largest number of affinity groups `k`.
pub const MAX_GROUPS: u32 = 1024;
/// Largest number of contacts per foreign group.
pub const MAX_CONTACTS_PER_GROUP: usize = 16;
/// Largest number of members in one heartbeat digest (and so the largest group view).
pub const MAX_DIGEST_ITEMS: usize = 4096;
/// Largest number of full entries in a gossip ration.
pub const MAX_RATION_ENTRIES: usize = 16;
/// Largest number of file tuples in a gossip ration.
pub const MAX_RATION_TUPLES: usize = 32;
/// Largest number of full entries in a join or view reply (one page).
pub const MAX_REPLY_ENTRIES: usize = 128;
/// Largest number of tuples in one anti-entropy reply or push.
pub const MAX_SYNC_TUPLES: usize = 64;
/// Largest number of holders of one file tuple.
pub const MAX_HOLDERS: usize = 8;
/// Largest number of short ids asked for in one `Want`.
pub const MAX_WANTED: usize = 64;
/// Buckets of the tuple-set digest used by anti-entropy.
pub const SYNC_BUCKETS: usize = 64;
