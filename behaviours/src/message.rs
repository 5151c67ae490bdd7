//! Every Kelips message, as it travels: CBOR maps with one-letter keys (see
//! `docs/PROTOCOL.md`). Each is wrapped in an [`Envelope`] carrying the network id.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::digest::HeartbeatDigest;
use crate::entry::Entry;
use crate::id::NetworkId;
use crate::tuple::FileTuple;

/// A message with the id of the network it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub struct Envelope<I> {
    /// Network id; a mismatch is refused with a reason.
    #[serde(rename = "n")]
    pub network: NetworkId,
    /// The message.
    #[serde(rename = "m")]
    pub message: Message<I>,
    /// The sender's group structure and size estimate, in networks whose groups size
    /// themselves (`groups = 0`); absent (not written) in fixed-k networks.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<StructureNote>,
}

/// A node's group structure and its estimate of the network's size, carried by every envelope
/// of a network whose groups size themselves ([`crate::structure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StructureNote {
    /// The structure's epoch.
    #[serde(rename = "e")]
    pub epoch: u32,
    /// Its level: `2^level` groups.
    #[serde(rename = "l")]
    pub level: u8,
    /// The sender's estimate of the number of nodes.
    #[serde(rename = "n")]
    pub estimate: u64,
}

/// The Kelips messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub enum Message<I> {
    /// Gossip to members of the sender's own group.
    #[serde(rename = "g")]
    Group(Arc<GroupGossip<I>>),
    /// Short ids of a digest the receiver does not know: send their full entries.
    #[serde(rename = "w")]
    Want(Want),
    /// Full group entries, answering a [`Message::Want`].
    #[serde(rename = "e")]
    Entries(Entries<I>),
    /// Cross-group gossip to a contact, a rejoin hello, or a join request.
    #[serde(rename = "x")]
    Hello(Hello<I>),
    /// Answer to a [`Message::Hello`].
    #[serde(rename = "y")]
    HelloReply(HelloReply<I>),
    /// Asks a member of the own group for its whole view (second step of a join).
    #[serde(rename = "v")]
    ViewRequest(ViewRequest<I>),
    /// One page of a group view.
    #[serde(rename = "V")]
    ViewReply(ViewReply<I>),
    /// Tuples behind announced fingerprints, please.
    #[serde(rename = "u")]
    TuplePull(TuplePull),
    /// Anti-entropy: the sender's tuple bucket digest.
    #[serde(rename = "s")]
    SyncRequest(SyncRequest),
    /// Anti-entropy: tuples of the buckets that differ.
    #[serde(rename = "S")]
    SyncReply(SyncReply<I>),
    /// Anti-entropy: the initiator's tuples the responder lacks.
    #[serde(rename = "p")]
    SyncPush(SyncPush<I>),
    /// Which version of a name, and who holds it?
    #[serde(rename = "l")]
    Lookup(LookupRequest),
    /// Answer to a [`Message::Lookup`].
    #[serde(rename = "L")]
    LookupReply(LookupReply<I>),
}

impl<I> Message<I> {
    /// A short name of the message kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Group(_) => "group",
            Message::Want(_) => "want",
            Message::Entries(_) => "entries",
            Message::Hello(hello) => match hello.kind {
                HelloKind::Contact => "hello",
                HelloKind::Rejoin => "rejoin",
                HelloKind::Join => "join",
            },
            Message::HelloReply(_) => "hello_reply",
            Message::ViewRequest(_) => "view_request",
            Message::ViewReply(_) => "view_reply",
            Message::TuplePull(_) => "tuple_pull",
            Message::SyncRequest(_) => "sync_request",
            Message::SyncReply(_) => "sync_reply",
            Message::SyncPush(_) => "sync_push",
            Message::Lookup(_) => "lookup",
            Message::LookupReply(_) => "lookup_reply",
        }
    }
}

/// Group gossip: the digest of every live member and bounded rations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub struct GroupGossip<I> {
    /// (short id, incarnation, heartbeat) of every live member, the sender included.
    #[serde(rename = "d")]
    pub digest: HeartbeatDigest,
    /// New or changed full entries first, then older ones at random.
    #[serde(rename = "e")]
    pub entries: Vec<Entry<I>>,
    /// Fingerprints of fresh file tuples of the group; receivers pull those they lack with
    /// [`Message::TuplePull`].
    #[serde(rename = "t")]
    pub news: Vec<u64>,
}

/// Asks a group member for the tuples behind announced fingerprints (answered with a
/// [`Message::SyncPush`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TuplePull {
    /// The fingerprints.
    #[serde(rename = "f")]
    pub fingerprints: Vec<u64>,
}

/// Short ids wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    /// The short ids.
    #[serde(rename = "s")]
    pub shorts: Vec<u32>,
}

/// Full group entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub struct Entries<I> {
    /// The entries.
    #[serde(rename = "e")]
    pub entries: Vec<Entry<I>>,
}

/// What a [`Hello`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloKind {
    /// Periodic cross-group gossip to a contact.
    #[serde(rename = "c")]
    Contact,
    /// Periodic rejoin to a bootstrap or remembered peer.
    #[serde(rename = "r")]
    Rejoin,
    /// First contact of a joining node with a bootstrap: answer with contacts of every group.
    #[serde(rename = "j")]
    Join,
}

/// The sender's own entry, a few of its group and a few contacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub struct Hello<I> {
    /// Purpose.
    #[serde(rename = "k")]
    pub kind: HelloKind,
    /// The sender's own entry.
    #[serde(rename = "s")]
    pub sender: Entry<I>,
    /// Entries of the sender's group (candidate contacts for the receiver).
    #[serde(rename = "g")]
    pub group_entries: Vec<Entry<I>>,
    /// Contacts of third groups.
    #[serde(rename = "c")]
    pub contacts: Vec<Entry<I>>,
    /// Groups the sender has no contact for (at most a few).
    #[serde(rename = "w")]
    pub wanted_groups: Vec<u32>,
    /// Short ids of the sender's contacts in the receiver's group: is each still alive?
    #[serde(rename = "a")]
    pub ask: Vec<u32>,
}

/// Answer to a hello: the responder's own entry and entries it picked for the sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub struct HelloReply<I> {
    /// The responder's own entry.
    #[serde(rename = "s")]
    pub sender: Entry<I>,
    /// Entries: of the responder's group, of the groups the sender wanted, or for a join one
    /// page of contacts covering every group.
    #[serde(rename = "e")]
    pub entries: Vec<Entry<I>>,
    /// Stamps of the asked contacts the responder holds live; the others are not vouched for.
    #[serde(rename = "v")]
    pub vouched: HeartbeatDigest,
}

/// Asks for the whole view; carries the asker's entry, which the responder adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub struct ViewRequest<I> {
    /// The asker.
    #[serde(rename = "s")]
    pub sender: Entry<I>,
}

/// One page of the responder's group view (the responder included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub struct ViewReply<I> {
    /// Live members.
    #[serde(rename = "e")]
    pub entries: Vec<Entry<I>>,
}

/// Tuple-set digest: per bucket, the XOR of the fingerprints of its tuples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// One fingerprint per bucket ([`crate::limits::SYNC_BUCKETS`] of them).
    #[serde(rename = "b")]
    pub buckets: Vec<u64>,
}

/// Tuples of the buckets that differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub struct SyncReply<I> {
    /// Buckets whose fingerprints differ.
    #[serde(rename = "d")]
    pub differing: Vec<u8>,
    /// The responder's tuples of those buckets (bounded).
    #[serde(rename = "t")]
    pub tuples: Vec<Arc<FileTuple<I>>>,
    /// Whether `tuples` holds all of them (then the initiator pushes what the responder lacks).
    #[serde(rename = "c")]
    pub complete: bool,
}

/// Tuples the responder of a sync lacked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub struct SyncPush<I> {
    /// The tuples.
    #[serde(rename = "t")]
    pub tuples: Vec<Arc<FileTuple<I>>>,
}

/// Asks for the tuple of a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// Chosen by the asker, echoed in the reply.
    #[serde(rename = "q")]
    pub query: u64,
    /// The name.
    #[serde(rename = "n")]
    pub name: String,
    /// If the receiver is not in the name's group, it runs the lookup itself and answers
    /// with the result (the last fallback: a member of the asker's own group).
    #[serde(rename = "p")]
    pub proxy: bool,
}

/// Answer to a lookup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: serde::de::DeserializeOwned"))]
pub struct LookupReply<I> {
    /// The asker's query id.
    #[serde(rename = "q")]
    pub query: u64,
    /// The tuple, if the responder knows it.
    #[serde(rename = "t")]
    pub tuple: Option<Arc<FileTuple<I>>>,
    /// Entries of the live holders (so the asker can reach them).
    #[serde(rename = "h")]
    pub holders: Vec<Entry<I>>,
    /// When not found: another member of the name's group, the next step of a random walk.
    #[serde(rename = "x")]
    pub next: Option<Entry<I>>,
}
