//! Hard bounds of the files core. Everything it keeps or queues has a fixed cap, so a node
//! with a huge store or a flood of inputs still uses bounded memory.

/// Commands and events queued for the driver at most; beyond it, new ones are dropped and
/// counted ([`Stats::outbox_dropped`](super::Stats::outbox_dropped)). Nothing is lost for
/// good: repair is level-triggered, so a dropped command is issued again at the next tick.
pub const MAX_OUTBOX: usize = 65_536;
/// Names tracked at most (names this node holds, stores bytes of, keeps versions of or is
/// putting). Default 262,144; beyond it new names are not tracked (counted).
pub const MAX_TRACKED_NAMES: usize = 262_144;
/// Blobs on disk tracked at most.
pub const MAX_BLOBS: usize = 1_048_576;
/// Puts in progress at this node (as first home) at most.
pub const MAX_PUTS: usize = 1024;
/// Members of the own group remembered as dead (with evidence) at most; the oldest go first.
pub const MAX_DEAD_REMEMBERED: usize = 4096;
/// Members of the own group in one view snapshot at most (the Kelips view's cap).
pub const MAX_VIEW_MEMBERS: usize = crate::limits::MAX_DIGEST_ITEMS;
/// Older versions kept per name at most, whatever `keep_versions` says.
pub const MAX_KEEP_VERSIONS: usize = 16;
/// Holders a put may use at most (its copies; the tuple's own cap).
pub const MAX_COPIES: usize = crate::limits::MAX_HOLDERS;
/// Members a clean stop tries in turn for the hand-off copy of one name: a failed copy (the
/// member went too, or its disk is full) is tried again on another one while time remains.
pub const MAX_HAND_OFF_ATTEMPTS: usize = 3;
