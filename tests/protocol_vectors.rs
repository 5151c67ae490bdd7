//! The test vectors of `docs/PROTOCOL.md`, checked against the real code, so that the document
//! cannot drift from what nodes send.
//!
//! In the document a vector is a line `vector: <name>` followed by fenced blocks:
//!
//! * ```` ```hex ```` — bytes (whitespace ignored): a whole frame (varint length + CBOR), or
//!   other bytes (a digest, an address record, an entry);
//! * ```` ```cbor-diag ```` — the CBOR of the hex block above (after the length prefix, for a
//!   frame) in RFC 8949 diagnostic notation;
//! * ```` ```kv ```` — `key = value` lines (hashes, groups, constants, bounds, refusal reasons);
//!   a value ending in `…` only has to be a prefix of the real one;
//! * ```` ```json ```` — the JSON of a status answer (§12), as `serde_json` pretty-prints it.
//!
//! Every vector is rebuilt here from values, encoded with the real code (the wire codec
//! `KelipsCodec`, `codec::encode`, the id functions, a `Kelips` node for bounds and refusals)
//! and compared byte for byte; hex is decoded back with the real decoder and compared with the
//! value. The frames of the file protocols (§11) and of the status protocol (§12) are written
//! by the node's own writers (`files::wire::write_message`, `StatusCodec`) and read back by its
//! readers. A name in the document unknown here, or a vector here missing from the document,
//! fails.
//!
//! After a deliberate wire change, print every block in the document's format with
//! `PROTOCOL_VECTORS_PRINT=1 cargo test --test protocol_vectors -- --nocapture` and paste.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on;
use futures::io::Cursor;
use libp2p::core::{PeerRecord, SignedEnvelope};
use libp2p::identity::Keypair;
use libp2p::request_response::Codec as _;
use libp2p::{Multiaddr, PeerId};
use quickstore::blobs::BlobError;
use quickstore::files::handle::MAX_PAGE;
use quickstore::files::pieces::verified::{
    FileAt, GROUP_BYTES, MAX_PIECE_BYTES, Piece, decode_piece, encode_piece, open_outboard,
};
use quickstore::files::service::FilesCounters;
use quickstore::files::wire::{
    BLOB_PIECES_PROTOCOL, BLOB_PROTOCOL, BlobRequest, BlobResponse, BlobTrailer, CHUNK_BYTES,
    FILES_PROTOCOL, FilesRequest, FilesResponse, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
    MAX_VERSIONS_LISTED, PeerInfo, PieceRequest, SignedDelete, read_message, write_message,
};
use quickstore::reach::Reach;
use quickstore::status::{
    FilesView, MAX_STATUS_BYTES, NameCopies, STATUS_PROTOCOL, Status, StatusCodec, StatusRequest,
    ViewMember,
};
use quickstore_behaviours::auth::{
    SignedVersion, WriteAuth, grant_message, grants_name, sign_grant, sign_version, verify,
    version_message,
};
use quickstore_behaviours::codec::{self, MAX_REPLY_BYTES, RefusalCode, Reply};
use quickstore_behaviours::digest::{DigestItem, HeartbeatDigest};
use quickstore_behaviours::id::{
    PROTOCOL_NAME, PROTOCOL_VERSION, id_facts, name_facts, name_group,
};
use quickstore_behaviours::limits::*;
use quickstore_behaviours::message::*;
use quickstore_behaviours::net::peer::{Peer, sign_record, verified_addresses};
use quickstore_behaviours::net::protocol::{Inbound, KelipsCodec, PROTOCOL};
use quickstore_behaviours::net::{Behaviour as KelipsBehaviour, DriverConfig};
use quickstore_behaviours::tuple::{FileTuple, Version};
use quickstore_behaviours::tuple_store::{bucket_of, tuple_fingerprint};
use quickstore_behaviours::{AddressRecord, Config, Entry, Kelips, NetworkId, NodeId, Refusal};
use serde::Serialize;
use serde::de::DeserializeOwned;

const PRINT_ENV: &str = "PROTOCOL_VECTORS_PRINT";

// ---- the example world ------------------------------------------------------------------------

/// Secret-key bytes of the example peers (the ed25519 secret key is the byte repeated 32 times).
const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;
const D: u8 = 20;

/// Domain and payload type of the address records the code signs: the standard libp2p peer
/// record (RFC 0003, multicodec `libp2p-peer-record` 0x0301), as go-libp2p and js-libp2p sign it.
const RECORD_DOMAIN: &str = "libp2p-peer-record";
const RECORD_PAYLOAD_TYPE: &[u8] = &[0x03, 0x01];

/// rust-libp2p's legacy peer-record constants, which receivers also accept.
const LEGACY_RECORD_DOMAIN: &str = "libp2p-routing-state";
const LEGACY_RECORD_PAYLOAD_TYPE: &[u8] = b"/libp2p/routing-state-record";

fn keypair(byte: u8) -> Keypair {
    Keypair::ed25519_from_bytes([byte; 32]).expect("any 32 bytes are an ed25519 secret key")
}

fn peer(byte: u8) -> Peer {
    Peer(keypair(byte).public().to_peer_id())
}

fn entry(byte: u8, incarnation: u64, heartbeat: u64, free_space: u64) -> Entry<Peer> {
    Entry {
        id: peer(byte),
        incarnation,
        heartbeat,
        address: AddressRecord::default(),
        free_space,
    }
}

fn entry_a() -> Entry<Peer> {
    entry(A, 3, 42, 1_000_000_000)
}

fn entry_b() -> Entry<Peer> {
    entry(B, 1, 300, 500_000_000)
}

fn entry_c() -> Entry<Peer> {
    entry(C, 2, 1000, 0)
}

fn entry_d() -> Entry<Peer> {
    entry(D, 5, 1200, 250_000_000_000)
}

fn short(byte: u8) -> u32 {
    id_facts(&peer(byte), 16).short
}

fn network() -> NetworkId {
    NetworkId::new("quickstore", 16)
}

const NAME: &str = "hello.txt";

/// A placeholder BLAKE3 hash (bytes 00..1f), not the hash of real content.
fn blake3() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

fn tuple() -> Arc<FileTuple<Peer>> {
    let tuple = FileTuple {
        name: NAME.into(),
        version: Version {
            lamport: 1,
            blake3: blake3(),
        },
        size: 6,
        holders: vec![peer(B), peer(A)],
        epoch: 0,
        deleted: false,
        auth: None,
    }
    .normalize()
    .expect("a valid tuple");
    Arc::new(tuple)
}

fn tuple_fp() -> u64 {
    tuple_fingerprint(name_facts(NAME, 16).1, &tuple())
}

fn digest(items: &[(u8, u64, u64)]) -> HeartbeatDigest {
    let mut items: Vec<DigestItem> = items
        .iter()
        .map(|&(byte, incarnation, heartbeat)| DigestItem {
            short: short(byte),
            beat: quickstore_behaviours::Beat::new(incarnation, heartbeat),
        })
        .collect();
    items.sort_by_key(|item| item.short);
    HeartbeatDigest::from_sorted(items).expect("distinct short ids")
}

fn envelope(message: Message<Peer>) -> Envelope<Peer> {
    Envelope {
        network: network(),
        message,
        structure: None,
    }
}

fn lookup() -> LookupRequest {
    LookupRequest {
        query: 7,
        name: NAME.into(),
        proxy: false,
    }
}

fn hello_contact() -> Hello<Peer> {
    Hello {
        kind: HelloKind::Contact,
        sender: entry_a(),
        group_entries: vec![entry_b()],
        contacts: Vec::new(),
        wanted_groups: Vec::new(),
        ask: vec![short(D)],
    }
}

fn hello_join() -> Hello<Peer> {
    Hello {
        kind: HelloKind::Join,
        sender: entry_b(),
        group_entries: Vec::new(),
        contacts: Vec::new(),
        wanted_groups: vec![13, 14, 15, 0],
        ask: Vec::new(),
    }
}

// ---- what the document must hold --------------------------------------------------------------

/// A check that the real reader reads a vector's bytes (or text) back to the value.
type ReadsBack<T> = Box<dyn Fn(&T) -> Result<(), String>>;

/// What a vector of the document must be.
enum Expect {
    /// A request frame (varint length + CBOR `Envelope`), and the bytes it must be: the real
    /// encoding, or for a decode-only vector other bytes that must decode to the same value.
    Request {
        envelope: Box<Envelope<Peer>>,
        frame: Vec<u8>,
    },
    /// A reply frame (varint length + CBOR `Reply`).
    Reply { reply: Reply, frame: Vec<u8> },
    /// Bytes; `cbor` when they are one CBOR item (then a diagnostic block is required).
    Bytes { bytes: Vec<u8>, cbor: bool },
    /// `key = value` lines, in this order.
    Facts(Vec<(String, String)>),
    /// A frame of the file or status protocols (varint length + CBOR or JSON) as the real
    /// writer writes it, and a check that the real reader reads the document's bytes back to
    /// the same value.
    Frame {
        frame: Vec<u8>,
        reads_back: ReadsBack<[u8]>,
    },
    /// JSON as `serde_json` pretty-prints the value, and a check of the document's text
    /// against what the real codec writes and reads.
    Json {
        text: String,
        reads_back: ReadsBack<str>,
    },
}

fn facts(pairs: &[(&str, String)]) -> Expect {
    Expect::Facts(
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.clone()))
            .collect(),
    )
}

fn request(envelope: Envelope<Peer>) -> Expect {
    let mut io = Cursor::new(Vec::new());
    block_on(KelipsCodec::default().write_request(
        &PROTOCOL,
        &mut io,
        Inbound::Valid(Box::new(envelope.clone())),
    ))
    .expect("the codec writes the request");
    let frame = io.into_inner();
    let encoded = codec::encode(&envelope).expect("within the bound");
    assert_eq!(
        frame,
        codec::frame(&encoded),
        "the wire codec frames codec::encode"
    );
    Expect::Request {
        envelope: Box::new(envelope),
        frame,
    }
}

fn reply(reply: Reply) -> Expect {
    let mut io = Cursor::new(Vec::new());
    block_on(KelipsCodec::default().write_response(&PROTOCOL, &mut io, reply.clone()))
        .expect("the codec writes the reply");
    Expect::Reply {
        reply,
        frame: io.into_inner(),
    }
}

/// Every vector, in the order of the document.
fn expected() -> Vec<(&'static str, Expect)> {
    let mut out: Vec<(&'static str, Expect)> = vec![
        ("constants", constants()),
        ("varint", varints()),
        ("network-id/quickstore-16", network_facts("quickstore", 16)),
        (
            "network-id/quickstore-100",
            network_facts("quickstore", 100),
        ),
        (
            "network-id/quickstore-self-sizing",
            network_facts("quickstore", 0),
        ),
        ("peer/a", peer_facts(A)),
        ("peer/b", peer_facts(B)),
        ("peer/c", peer_facts(C)),
        ("peer/d", peer_facts(D)),
        ("name/hello.txt", name_vector(NAME)),
        ("name/non-ascii", name_vector("photos/été.jpg")),
        ("tuple-fingerprint/hello.txt", tuple_fingerprint_facts()),
        ("record-format", record_format()),
        ("record/a-payload", record_a_payload()),
        ("record/a", record_a()),
        ("entry/a-with-record", entry_with_record()),
        (
            "digest/a-b",
            Expect::Bytes {
                bytes: digest(&[(A, 3, 42), (B, 1, 300)]).to_bytes(),
                cbor: false,
            },
        ),
    ];
    let requests: Vec<(&'static str, Message<Peer>)> = vec![
        (
            "request/group",
            Message::Group(Arc::new(GroupGossip {
                digest: digest(&[(A, 3, 42), (B, 1, 300)]),
                entries: vec![entry_a()],
                news: vec![tuple_fp()],
            })),
        ),
        (
            "request/want",
            Message::Want(Want {
                shorts: vec![short(A)],
            }),
        ),
        (
            "request/entries",
            Message::Entries(Entries {
                entries: vec![entry_a()],
            }),
        ),
        ("request/hello-contact", Message::Hello(hello_contact())),
        (
            "request/hello-reply",
            Message::HelloReply(HelloReply {
                sender: entry_c(),
                entries: vec![entry_d()],
                vouched: digest(&[(D, 5, 1200)]),
            }),
        ),
        ("request/hello-join", Message::Hello(hello_join())),
        (
            "request/hello-reply-join",
            Message::HelloReply(HelloReply {
                sender: entry_c(),
                entries: vec![entry_a(), entry_d()],
                vouched: HeartbeatDigest::default(),
            }),
        ),
        (
            "request/view-request",
            Message::ViewRequest(ViewRequest { sender: entry_b() }),
        ),
        (
            "request/view-reply",
            Message::ViewReply(ViewReply {
                entries: vec![entry_a()],
            }),
        ),
        (
            "request/tuple-pull",
            Message::TuplePull(TuplePull {
                fingerprints: vec![tuple_fp()],
            }),
        ),
        ("request/sync-request", Message::SyncRequest(sync_request())),
        (
            "request/sync-reply",
            Message::SyncReply(SyncReply {
                differing: vec![bucket_of(name_facts(NAME, 16).1) as u8],
                tuples: vec![tuple()],
                complete: true,
            }),
        ),
        (
            "request/sync-push",
            Message::SyncPush(SyncPush {
                tuples: vec![tuple()],
            }),
        ),
        ("request/lookup", Message::Lookup(lookup())),
        (
            "request/lookup-reply-found",
            Message::LookupReply(LookupReply {
                query: 7,
                tuple: Some(tuple()),
                holders: vec![entry_a(), entry_b()],
                next: None,
            }),
        ),
        (
            "request/lookup-reply-not-found",
            Message::LookupReply(LookupReply {
                query: 8,
                tuple: None,
                holders: Vec::new(),
                next: Some(entry_b()),
            }),
        ),
    ];
    for (name, message) in requests {
        out.push((name, request(envelope(message))));
    }
    // The same Want in a network whose groups size themselves: k = 0 in the network id, and
    // the structure with the sender's estimate of N.
    out.push((
        "request/want-self-sizing",
        request(Envelope {
            network: NetworkId::new("quickstore", 0),
            message: Message::Want(Want {
                shorts: vec![short(A)],
            }),
            structure: Some(StructureNote {
                epoch: 3,
                level: 2,
                estimate: 57,
            }),
        }),
    ));
    out.push(("request/lookup-reordered", lookup_reordered()));
    out.push(("reply/ack", reply(Reply::Ack)));
    out.push((
        "reply/refused",
        reply(Reply::refused(
            RefusalCode::WrongNetwork,
            Refusal::WrongNetwork {
                expected: network(),
                got: NetworkId::new("quickstore", 100),
            }
            .to_string(),
        )),
    ));
    out.push(("refusal-reasons", refusal_reasons(false)));
    out.push(("refusal-codes", refusal_reasons(true)));
    out.push(("bounds", bounds()));
    out.extend(files_vectors());
    out
}

fn constants() -> Expect {
    let config = Config::default();
    facts(&[
        ("protocol id", PROTOCOL_NAME.to_string()),
        ("protocol version", PROTOCOL_VERSION.to_string()),
        ("default network name", config.network_name.clone()),
        ("default k", config.groups.to_string()),
        ("max message bytes", MAX_MESSAGE_BYTES.to_string()),
        ("max reply bytes", MAX_REPLY_BYTES.to_string()),
        ("max id bytes", MAX_ID_BYTES.to_string()),
        (
            "max address record bytes",
            MAX_ADDRESS_RECORD_BYTES.to_string(),
        ),
        ("max name bytes", MAX_NAME_BYTES.to_string()),
        ("max groups", MAX_GROUPS.to_string()),
        ("max contacts per group", MAX_CONTACTS_PER_GROUP.to_string()),
        ("max digest items", MAX_DIGEST_ITEMS.to_string()),
        ("max ration entries", MAX_RATION_ENTRIES.to_string()),
        ("max ration tuples", MAX_RATION_TUPLES.to_string()),
        ("max reply entries", MAX_REPLY_ENTRIES.to_string()),
        ("max sync tuples", MAX_SYNC_TUPLES.to_string()),
        ("max holders", MAX_HOLDERS.to_string()),
        ("max wanted", MAX_WANTED.to_string()),
        ("sync buckets", SYNC_BUCKETS.to_string()),
    ])
}

fn varints() -> Expect {
    let values = [0u64, 1, 127, 128, 300, 1024, 262_144, u64::MAX];
    Expect::Facts(
        values
            .iter()
            .map(|&value| {
                let mut out = Vec::new();
                codec::put_varint(value, &mut out);
                (value.to_string(), hex(&out))
            })
            .collect(),
    )
}

fn network_facts(name: &str, k: u32) -> Expect {
    let mut input = Vec::new();
    input.extend_from_slice(b"quickstore-network");
    input.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    input.extend_from_slice(&k.to_be_bytes());
    input.extend_from_slice(name.as_bytes());
    let digest = sha1(&input);
    let id = NetworkId::new(name, k);
    assert_eq!(
        id.0,
        digest[..8],
        "the network id is the first 8 bytes of SHA-1 of the documented input"
    );
    let input_shown = format!(
        "{} {} {} {}",
        hex(b"quickstore-network"),
        hex(&PROTOCOL_VERSION.to_be_bytes()),
        hex(&k.to_be_bytes()),
        hex(name.as_bytes())
    );
    facts(&[
        ("name", name.to_string()),
        ("k", k.to_string()),
        ("sha1 input", input_shown),
        ("sha1", hex(&digest)),
        ("network id", hex(&id.0)),
    ])
}

fn peer_facts(byte: u8) -> Expect {
    let keypair = keypair(byte);
    let public = keypair
        .public()
        .try_into_ed25519()
        .expect("an ed25519 key")
        .to_bytes();
    let peer = Peer(keypair.public().to_peer_id());
    let bytes = NodeId::to_bytes(&peer);
    let digest = sha1(&bytes);
    let mut pairs = vec![
        ("ed25519 secret key", hex(&[byte; 32])),
        ("ed25519 public key", hex(&public)),
        ("peer id", peer.0.to_base58()),
        ("peer id bytes", hex(&bytes)),
        ("sha1", hex(&digest)),
    ];
    let facts16 = id_facts(&peer, 16);
    assert_eq!(
        facts16.short.to_be_bytes(),
        digest[..4],
        "short id = SHA-1[0..4]"
    );
    pairs.push((
        "short id",
        format!("0x{:08x} ({})", facts16.short, facts16.short),
    ));
    for (key, k) in [
        ("group k=16", 16),
        ("group k=100", 100),
        ("group k=1000", 1000),
    ] {
        let group = id_facts(&peer, k).group;
        assert_eq!(
            group,
            be_mod(&digest, k),
            "group = SHA-1 as a big-endian integer mod k"
        );
        pairs.push((key, group.to_string()));
    }
    facts(&pairs)
}

fn name_vector(name: &str) -> Expect {
    let digest = sha1(name.as_bytes());
    let (group16, fp) = name_facts(name, 16);
    assert_eq!(
        fp.to_be_bytes(),
        digest[..8],
        "name fingerprint = SHA-1[0..8]"
    );
    assert_eq!(group16, name_group(name, 16));
    let mut pairs = vec![
        ("name", name.to_string()),
        ("utf-8", hex(name.as_bytes())),
        ("sha1", hex(&digest)),
        ("name fingerprint", format!("0x{fp:016x}")),
    ];
    for (key, k) in [
        ("group k=16", 16),
        ("group k=100", 100),
        ("group k=1000", 1000),
    ] {
        let group = name_group(name, k);
        assert_eq!(
            group,
            be_mod(&digest, k),
            "group = SHA-1 as a big-endian integer mod k"
        );
        pairs.push((key, group.to_string()));
    }
    pairs.push(("sync bucket", bucket_of(fp).to_string()));
    facts(&pairs)
}

/// The tuple fingerprint as the document spells it out (§4.4), for a tuple of epoch 0.
fn documented_tuple_fingerprint(
    name_fp: u64,
    lamport: u64,
    blake3: &[u8; 32],
    holders: &[PeerId],
) -> u64 {
    fn mix(mut x: u64) -> u64 {
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    let h = u64::from_le_bytes(blake3[..8].try_into().expect("8 bytes"));
    let s = holders.iter().fold(0u64, |s, holder| {
        let hash = blake3::hash(&holder.to_bytes());
        s ^ u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
    });
    mix(name_fp ^ mix(lamport ^ mix(h ^ s)))
}

fn tuple_fingerprint_facts() -> Expect {
    let fp = name_facts(NAME, 16).1;
    let tuple = tuple();
    let real = tuple_fingerprint(fp, &tuple);
    assert_eq!(
        real,
        documented_tuple_fingerprint(
            fp,
            tuple.version.lamport,
            &tuple.version.blake3,
            &tuple.holders.iter().map(|h| h.0).collect::<Vec<_>>(),
        ),
        "the documented tuple fingerprint formula"
    );
    facts(&[
        ("name", NAME.to_string()),
        ("name fingerprint", format!("0x{fp:016x}")),
        ("lamport", tuple.version.lamport.to_string()),
        ("blake3", hex(&tuple.version.blake3)),
        (
            "holders",
            tuple
                .holders
                .iter()
                .map(|h| h.0.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("tuple fingerprint", format!("0x{real:016x} ({real})")),
    ])
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

fn record_addresses() -> Vec<Multiaddr> {
    vec![
        "/ip4/192.0.2.1/tcp/4001".parse().expect("a multiaddr"),
        "/ip4/192.0.2.1/udp/4001/quic-v1"
            .parse()
            .expect("a multiaddr"),
    ]
}

fn record_format() -> Expect {
    let a = keypair(A);
    let peer = Peer(a.public().to_peer_id());
    let own = sign_record(&a, record_addresses()).expect("signable");
    let signed = SignedEnvelope::from_protobuf_encoding(own.as_bytes()).expect("an envelope");
    let own_format = signed
        .payload_and_signing_key(RECORD_DOMAIN.into(), RECORD_PAYLOAD_TYPE)
        .is_ok();
    let legacy = |keypair: &Keypair| {
        let record = PeerRecord::new(keypair, record_addresses()).expect("signable");
        let bytes = record.into_signed_envelope().into_protobuf_encoding();
        let signed = SignedEnvelope::from_protobuf_encoding(&bytes).expect("an envelope");
        assert!(
            signed
                .payload_and_signing_key(LEGACY_RECORD_DOMAIN.into(), LEGACY_RECORD_PAYLOAD_TYPE)
                .is_ok(),
            "PeerRecord::new signs with the legacy constants"
        );
        AddressRecord::new(bytes).expect("small")
    };
    let other = keypair(B);
    let foreign = sign_record(&other, record_addresses()).expect("signable");
    facts(&[
        ("domain", RECORD_DOMAIN.to_string()),
        ("payload type", hex(RECORD_PAYLOAD_TYPE)),
        ("records signed by the node use them", yes_no(own_format)),
        (
            "accepts the own record of the entry's peer",
            yes_no(peer.accepts_record(&own)),
        ),
        (
            "accepts an empty record",
            yes_no(peer.accepts_record(&AddressRecord::default())),
        ),
        (
            "accepts a record signed by another peer",
            yes_no(peer.accepts_record(&foreign)),
        ),
        ("legacy domain", LEGACY_RECORD_DOMAIN.to_string()),
        (
            "legacy payload type",
            String::from_utf8(LEGACY_RECORD_PAYLOAD_TYPE.to_vec()).expect("text"),
        ),
        (
            "accepts a legacy record of the entry's peer",
            yes_no(peer.accepts_record(&legacy(&a))),
        ),
        (
            "accepts a legacy record signed by another peer",
            yes_no(peer.accepts_record(&legacy(&other))),
        ),
    ])
}

fn pb_key(field: u64, wire_type: u64, out: &mut Vec<u8>) {
    codec::put_varint((field << 3) | wire_type, out);
}

fn pb_bytes(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    pb_key(field, 2, out);
    codec::put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The `PeerRecord` protobuf of peer A, sequence number 1, built as the document describes.
fn record_payload() -> Vec<u8> {
    let mut out = Vec::new();
    pb_bytes(1, &peer(A).0.to_bytes(), &mut out);
    pb_key(2, 0, &mut out);
    codec::put_varint(1, &mut out);
    for address in record_addresses() {
        let mut info = Vec::new();
        pb_bytes(1, &address.to_vec(), &mut info);
        pb_bytes(3, &info, &mut out);
    }
    out
}

fn record_a_payload() -> Expect {
    Expect::Bytes {
        bytes: record_payload(),
        cbor: false,
    }
}

/// The signed envelope of A's record, built as the document describes and checked against
/// libp2p's own and against the code's verification.
fn record_a_bytes() -> Vec<u8> {
    let a = keypair(A);
    let payload = record_payload();
    let mut signed = Vec::new();
    for part in [RECORD_DOMAIN.as_bytes(), RECORD_PAYLOAD_TYPE, &payload] {
        codec::put_varint(part.len() as u64, &mut signed);
        signed.extend_from_slice(part);
    }
    let signature = a.sign(&signed).expect("ed25519 signs");
    let mut built = Vec::new();
    pb_bytes(1, &a.public().encode_protobuf(), &mut built);
    pb_bytes(2, RECORD_PAYLOAD_TYPE, &mut built);
    pb_bytes(3, &payload, &mut built);
    pb_bytes(5, &signature, &mut built);
    let libp2p = SignedEnvelope::new(
        &a,
        RECORD_DOMAIN.into(),
        RECORD_PAYLOAD_TYPE.to_vec(),
        payload,
    )
    .expect("signable")
    .into_protobuf_encoding();
    assert_eq!(built, libp2p, "the documented envelope layout is libp2p's");
    let envelope = SignedEnvelope::from_protobuf_encoding(&built).expect("an envelope");
    assert!(
        PeerRecord::from_signed_envelope_interop(envelope).is_ok(),
        "the documented record is a standard (interop) peer record"
    );
    let record = AddressRecord::new(built.clone()).expect("small");
    assert_eq!(
        verified_addresses(peer(A).0, &record),
        Some(record_addresses()),
        "the code accepts the documented record"
    );
    assert_eq!(verified_addresses(peer(B).0, &record), None);
    built
}

fn record_a() -> Expect {
    Expect::Bytes {
        bytes: record_a_bytes(),
        cbor: false,
    }
}

fn entry_with_record() -> Expect {
    let mut entry = entry_a();
    entry.address = AddressRecord::new(record_a_bytes()).expect("small");
    let bytes = cbor4ii::serde::to_vec(Vec::new(), &entry).expect("encodable");
    let back: Entry<Peer> = cbor4ii::serde::from_slice(&bytes).expect("decodable");
    assert_eq!(back, entry);
    assert!(entry.id.accepts_record(&entry.address));
    Expect::Bytes { bytes, cbor: true }
}

fn sync_request() -> SyncRequest {
    let mut buckets = vec![0u64; SYNC_BUCKETS];
    buckets[bucket_of(name_facts(NAME, 16).1)] = tuple_fp();
    SyncRequest { buckets }
}

// A few CBOR heads, to build the decode-only vector by hand.
fn cbor_head(major: u8, value: u64, out: &mut Vec<u8>) {
    let major = major << 5;
    if value < 24 {
        out.push(major | value as u8);
    } else if value <= 0xff {
        out.extend_from_slice(&[major | 24, value as u8]);
    } else if value <= 0xffff {
        out.push(major | 25);
        out.extend_from_slice(&(value as u16).to_be_bytes());
    } else if value <= 0xffff_ffff {
        out.push(major | 26);
        out.extend_from_slice(&(value as u32).to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

fn cbor_text(text: &str, out: &mut Vec<u8>) {
    cbor_head(3, text.len() as u64, out);
    out.extend_from_slice(text.as_bytes());
}

/// The lookup of `request/lookup` with the keys of both maps in another order and an unknown
/// key: receivers decode it to the same value.
fn lookup_reordered() -> Expect {
    let mut payload = Vec::new();
    cbor_head(5, 2, &mut payload);
    cbor_text("m", &mut payload);
    cbor_head(5, 1, &mut payload);
    cbor_text("l", &mut payload);
    cbor_head(5, 4, &mut payload);
    cbor_text("p", &mut payload);
    payload.push(0xf4);
    cbor_text("z", &mut payload);
    cbor_text("ignored", &mut payload);
    cbor_text("n", &mut payload);
    cbor_text(NAME, &mut payload);
    cbor_text("q", &mut payload);
    cbor_head(0, 7, &mut payload);
    cbor_text("n", &mut payload);
    cbor_head(2, 8, &mut payload);
    payload.extend_from_slice(&network().0);
    let value = envelope(Message::Lookup(lookup()));
    assert_ne!(
        payload,
        codec::encode(&value).expect("encodable"),
        "not the canonical form"
    );
    Expect::Request {
        envelope: Box::new(value),
        frame: codec::frame(&payload),
    }
}

// ---- refusals and bounds, from a real node ----------------------------------------------------

/// Node A (group 13 of 16) with the default configuration.
fn node() -> Kelips<Peer> {
    Kelips::new(
        peer(A),
        3,
        AddressRecord::default(),
        Config::default(),
        1,
        0,
    )
    .expect("valid configuration")
}

fn handle(node: &mut Kelips<Peer>, from: u8, message: Message<Peer>) -> Result<(), Refusal> {
    let result = node.handle_message(1, peer(from), envelope(message));
    while node.poll_output().is_some() {}
    result
}

fn read_request(frame: &[u8]) -> Inbound {
    block_on(KelipsCodec::default().read_request(&PROTOCOL, &mut Cursor::new(frame.to_vec())))
        .expect("the frame is read")
}

/// The reason (`codes` false) or the code (`codes` true) of each kind of refusal, from a real
/// core and the real frame reader.
fn refusal_reasons(codes: bool) -> Expect {
    let mut node = node();
    let other_network = node
        .handle_message(
            1,
            peer(B),
            Envelope {
                network: NetworkId::new("quickstore", 100),
                message: Message::Want(Want { shorts: Vec::new() }),
                structure: None,
            },
        )
        .expect_err("refused");
    let gossip = GroupGossip {
        digest: HeartbeatDigest::default(),
        entries: Vec::new(),
        news: Vec::new(),
    };
    let wrong_group = handle(&mut node, C, Message::Group(Arc::new(gossip))).expect_err("refused");
    let forged = Hello {
        sender: entry_d(),
        ..hello_contact()
    };
    let forged = handle(&mut node, C, Message::Hello(forged)).expect_err("refused");
    let over = Hello {
        sender: entry_c(),
        wanted_groups: vec![0, 1, 2, 4, 5],
        ..hello_contact()
    };
    let over = handle(&mut node, C, Message::Hello(over)).expect_err("refused");
    let mut too_large = Vec::new();
    codec::put_varint(MAX_MESSAGE_BYTES as u64 + 1, &mut too_large);
    let (too_large_code, too_large) = match read_request(&too_large) {
        Inbound::Invalid(code, reason) => (code, reason),
        Inbound::Valid(_) => panic!("an oversized frame is refused before its body is read"),
    };
    let (undecodable_code, undecodable) = match read_request(&codec::frame(&[0xa0])) {
        Inbound::Invalid(code, reason) => (code, reason),
        Inbound::Valid(_) => panic!("an empty map is not an envelope"),
    };
    if codes {
        return facts(&[
            ("wrong network", other_network.code().to_string()),
            ("wrong group", wrong_group.code().to_string()),
            ("forged sender", forged.code().to_string()),
            ("over a bound", over.code().to_string()),
            ("frame too large", too_large_code.to_string()),
            ("undecodable", undecodable_code.to_string()),
        ]);
    }
    let undecodable = format!(
        "{}…",
        undecodable
            .split_once(": ")
            .map(|(head, _)| format!("{head}: "))
            .unwrap_or(undecodable.clone())
    );
    facts(&[
        ("wrong network", other_network.to_string()),
        ("wrong group", wrong_group.to_string()),
        ("forged sender", forged.to_string()),
        ("over a bound", over.to_string()),
        ("frame too large", too_large),
        ("undecodable", undecodable),
    ])
}

/// The sizes `0..=max` a message accepts, described: "at most N" or "exactly N".
fn accepted(max: usize, mut attempt: impl FnMut(usize) -> Result<(), Refusal>) -> String {
    let ok: Vec<usize> = (0..=max).filter(|&n| attempt(n).is_ok()).collect();
    match ok.as_slice() {
        [] => "none".to_string(),
        [only] if *only > 0 => format!("exactly {only}"),
        [0, .., last] if ok.len() == last + 1 && *last < max => format!("at most {last}"),
        _ => format!("irregular: {ok:?}"),
    }
}

fn bounds() -> Expect {
    let mut node = node();
    let node = &mut node;
    let many = |n: usize, entry: Entry<Peer>| vec![entry; n];
    let gossip = |entries: usize, news: usize| {
        Message::Group(Arc::new(GroupGossip {
            digest: HeartbeatDigest::default(),
            entries: many(entries, entry_b()),
            news: vec![1; news],
        }))
    };
    let hello = |g: usize, c: usize, w: usize, a: usize| {
        Message::Hello(Hello {
            kind: HelloKind::Contact,
            sender: entry_c(),
            group_entries: many(g, entry_d()),
            contacts: many(c, entry_b()),
            wanted_groups: (0..w as u32).collect(),
            ask: (0..a as u32).collect(),
        })
    };
    let pairs = vec![
        ("Group.e", accepted(64, |n| handle(node, B, gossip(n, 0)))),
        ("Group.t", accepted(64, |n| handle(node, B, gossip(0, n)))),
        (
            "Want.s",
            accepted(200, |n| {
                let shorts = (0..n as u32).collect();
                handle(node, B, Message::Want(Want { shorts }))
            }),
        ),
        (
            "Entries.e",
            accepted(200, |n| {
                let entries = many(n, entry_b());
                handle(node, B, Message::Entries(Entries { entries }))
            }),
        ),
        (
            "Hello.g",
            accepted(64, |n| handle(node, C, hello(n, 0, 0, 0))),
        ),
        (
            "Hello.c",
            accepted(64, |n| handle(node, C, hello(0, n, 0, 0))),
        ),
        (
            "Hello.w",
            accepted(64, |n| handle(node, C, hello(0, 0, n, 0))),
        ),
        (
            "Hello.a",
            accepted(64, |n| handle(node, C, hello(0, 0, 0, n))),
        ),
        (
            "HelloReply.e",
            accepted(200, |n| {
                let reply = HelloReply {
                    sender: entry_c(),
                    entries: many(n, entry_d()),
                    vouched: HeartbeatDigest::default(),
                };
                handle(node, C, Message::HelloReply(reply))
            }),
        ),
        (
            "ViewReply.e",
            accepted(200, |n| {
                let entries = many(n, entry_b());
                handle(node, B, Message::ViewReply(ViewReply { entries }))
            }),
        ),
        (
            "TuplePull.f",
            accepted(200, |n| {
                let fingerprints = vec![1; n];
                handle(node, B, Message::TuplePull(TuplePull { fingerprints }))
            }),
        ),
        (
            "SyncRequest.b",
            accepted(200, |n| {
                let buckets = vec![0; n];
                handle(node, B, Message::SyncRequest(SyncRequest { buckets }))
            }),
        ),
        (
            "SyncReply.d",
            accepted(200, |n| {
                let reply = SyncReply {
                    differing: vec![0; n],
                    tuples: Vec::new(),
                    complete: false,
                };
                handle(node, B, Message::SyncReply(reply))
            }),
        ),
        (
            "SyncReply.t",
            accepted(200, |n| {
                let reply = SyncReply {
                    differing: Vec::new(),
                    tuples: vec![tuple(); n],
                    complete: false,
                };
                handle(node, B, Message::SyncReply(reply))
            }),
        ),
        (
            "SyncPush.t",
            accepted(200, |n| {
                let tuples = vec![tuple(); n];
                handle(node, B, Message::SyncPush(SyncPush { tuples }))
            }),
        ),
        (
            "Lookup.n (bytes)",
            accepted(2000, |n| {
                let request = LookupRequest {
                    query: 1,
                    name: "x".repeat(n),
                    proxy: false,
                };
                handle(node, C, Message::Lookup(request))
            }),
        ),
        (
            "LookupReply.h",
            accepted(64, |n| {
                let reply = LookupReply {
                    query: 1,
                    tuple: None,
                    holders: many(n, entry_a()),
                    next: None,
                };
                handle(node, C, Message::LookupReply(reply))
            }),
        ),
    ];
    facts(&pairs)
}

// ---- the file protocols and the status protocol (§11, §12) ------------------------------------

/// Runs `future` on a runtime with a timer (the file protocols' reader and writer time out).
fn run<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
        .block_on(future)
}

const FILES_TIMEOUT: Duration = Duration::from_secs(5);

/// A frame of `/quickstore/files/1.0.0` or `/quickstore/blob/1.0.0` written by the real writer
/// (`write_message`, within `limit`), read back by the real reader.
fn files_frame<T>(value: T, limit: usize) -> Expect
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
{
    let mut io = Cursor::new(Vec::new());
    run(write_message(&mut io, &value, limit, FILES_TIMEOUT)).expect("the frame is written");
    let frame = io.into_inner();
    Expect::Frame {
        frame,
        reads_back: Box::new(move |bytes: &[u8]| {
            let mut io = Cursor::new(bytes.to_vec());
            let read: T = run(read_message(&mut io, limit, FILES_TIMEOUT))
                .map_err(|e| format!("the reader refuses it: {e}"))?;
            if io.position() != bytes.len() as u64 {
                return Err("bytes after the frame".into());
            }
            if read != value {
                return Err(format!("reads back as {read:?}"));
            }
            Ok(())
        }),
    }
}

fn control_request(request: FilesRequest) -> Expect {
    files_frame(request, MAX_REQUEST_BYTES)
}

fn control_response(response: FilesResponse) -> Expect {
    files_frame(response, MAX_RESPONSE_BYTES)
}

fn blob_request(request: BlobRequest) -> Expect {
    files_frame(request, MAX_REQUEST_BYTES)
}

fn blob_response(response: BlobResponse) -> Expect {
    files_frame(response, MAX_RESPONSE_BYTES)
}

/// A peer with an empty record (real ones carry their signed record, §5.3).
fn info(byte: u8) -> PeerInfo {
    PeerInfo {
        peer: peer(byte),
        record: AddressRecord::default(),
    }
}

/// The prefix A grants B in the signed vectors (it covers [`NAME`]).
const GRANT_PREFIX: &str = "hello";

/// The ed25519 writer identity of seed `byte` (32 times).
fn writer(byte: u8) -> libp2p::identity::ed25519::Keypair {
    keypair(byte).try_into_ed25519().expect("an ed25519 key")
}

/// B writes [`files_tuple`] for its owner A, with A's grant of [`GRANT_PREFIX`].
fn granted_auth() -> WriteAuth {
    let owner = writer(A).public().to_bytes();
    let grant = sign_grant(&writer(A), &writer(B).public().to_bytes(), GRANT_PREFIX);
    sign_version(
        &writer(B),
        SignedVersion::from(&files_tuple()),
        &owner,
        Some(grant),
    )
}

/// A, the owner, signs the tombstone (version 2) of [`files_tuple`]'s name.
fn owner_tombstone_auth() -> WriteAuth {
    let owner = writer(A).public().to_bytes();
    let tombstone = SignedVersion {
        name: NAME,
        lamport: 2,
        blake3: &[0; 32],
        size: 0,
        deleted: true,
    };
    sign_version(&writer(A), tombstone, &owner, None)
}

fn auth_keys() -> Expect {
    facts(&[
        ("owner_seed", hex(&[A; 32])),
        ("owner_key", hex(&writer(A).public().to_bytes())),
        ("owner_peer_id", peer(A).0.to_string()),
        ("writer_seed", hex(&[B; 32])),
        ("writer_key", hex(&writer(B).public().to_bytes())),
        ("writer_peer_id", peer(B).0.to_string()),
        ("grant_prefix", GRANT_PREFIX.to_string()),
        (
            "grants_name",
            grants_name(
                &writer(A).public().to_bytes(),
                &writer(B).public().to_bytes(),
            ),
        ),
    ])
}

fn auth_signatures() -> Expect {
    let granted = granted_auth();
    let grant = granted.grant.clone().expect("a grant");
    let tuple = files_tuple();
    assert_eq!(verify(SignedVersion::from(&tuple), &granted), Ok(()));
    facts(&[
        ("version_signature_by_writer", hex(&granted.signature)),
        ("grant_signature_by_owner", hex(&grant.signature)),
        (
            "tombstone_signature_by_owner",
            hex(&owner_tombstone_auth().signature),
        ),
    ])
}

fn files_tuple() -> FileTuple<Peer> {
    FileTuple::clone(&tuple())
}

fn files_constants() -> Expect {
    let files = quickstore::config::FilesConfig::default();
    facts(&[
        ("control protocol id", FILES_PROTOCOL.to_string()),
        ("bytes protocol id", BLOB_PROTOCOL.to_string()),
        ("pieces protocol id", BLOB_PIECES_PROTOCOL.to_string()),
        ("status protocol id", STATUS_PROTOCOL.to_string()),
        ("max request bytes", MAX_REQUEST_BYTES.to_string()),
        ("max response bytes", MAX_RESPONSE_BYTES.to_string()),
        ("max versions listed", MAX_VERSIONS_LISTED.to_string()),
        ("max listing page", MAX_PAGE.to_string()),
        ("chunk bytes", CHUNK_BYTES.to_string()),
        ("chunk group bytes", GROUP_BYTES.to_string()),
        ("max piece bytes", MAX_PIECE_BYTES.to_string()),
        ("default io timeout ms", files.io_timeout_ms.to_string()),
        ("default put deadline ms", files.put_deadline_ms.to_string()),
        ("default max streams", files.max_streams.to_string()),
        ("max status bytes", MAX_STATUS_BYTES.to_string()),
    ])
}

/// The blob of the pieces vectors: 40,000 bytes, byte i = i mod 251 (three chunk groups, the
/// last one short).
fn pieces_blob() -> Vec<u8> {
    (0..40_000u32).map(|i| (i % 251) as u8).collect()
}

/// The blob's outboard and the proofs of two pieces, checked by decoding them back.
fn pieces_encoding() -> Expect {
    let blob = pieces_blob();
    let root = *blake3::hash(&blob).as_bytes();
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("blob");
    std::fs::write(&path, &blob).expect("blob");
    let outboard =
        open_outboard(&path, &dir.path().join("ob"), blob.len() as u64, &root).expect("outboard");
    let outboard_bytes = std::fs::read(dir.path().join("ob")).expect("outboard bytes");
    let file = quickstore::bulk_io::RangeReader::open(&path, blob.len() as u64).expect("blob");
    let mut out = vec![("blake3".to_string(), hex(&root))];
    out.push(("outboard".into(), hex(&outboard_bytes)));
    for (start, end) in [(32_768u64, 40_000u64), (0, 16_384)] {
        let piece = Piece { start, end };
        let mut encoded = Vec::new();
        encode_piece(&file, &outboard, piece, &mut encoded).expect("encoded");
        let proof = encoded.len() - piece.len() as usize;
        assert_eq!(
            encoded[proof..],
            blob[start as usize..end as usize],
            "proof first, then data"
        );
        let target = std::fs::File::create(dir.path().join(format!("out-{start}"))).expect("out");
        decode_piece(
            &root,
            blob.len() as u64,
            piece,
            &encoded,
            &mut FileAt(&target),
        )
        .expect("the encoding verifies");
        out.push((
            format!("piece {start}..{end} encoded bytes"),
            encoded.len().to_string(),
        ));
        out.push((
            format!("piece {start}..{end} proof"),
            hex(&encoded[..proof]),
        ));
    }
    Expect::Facts(out)
}

/// The file protocols' vectors, in the order of the document.
fn files_vectors() -> Vec<(&'static str, Expect)> {
    let tombstone = FileTuple {
        name: NAME.into(),
        version: Version {
            lamport: 2,
            blake3: [0; 32],
        },
        size: 0,
        holders: vec![peer(A)],
        epoch: 0,
        deleted: true,
        auth: None,
    };
    vec![
        ("files-constants", files_constants()),
        (
            "files/locate",
            control_request(FilesRequest::Locate { name: NAME.into() }),
        ),
        (
            "files/located",
            control_response(FilesResponse::Located {
                tuple: files_tuple(),
                holders: vec![info(A), info(B)],
                hops: 1,
            }),
        ),
        ("files/not-found", control_response(FilesResponse::NotFound)),
        (
            "files/unreachable",
            control_response(FilesResponse::Unreachable {
                reason: "no node of group 13 could be reached".into(),
            }),
        ),
        (
            "files/place",
            control_request(FilesRequest::Place {
                name: NAME.into(),
                size: 6,
                forwarded: false,
            }),
        ),
        (
            "files/placed",
            control_response(FilesResponse::Placed {
                homes: vec![info(B), info(A)],
                group_size: 2,
                newest: 0,
                replication: 3,
                owner: None,
            }),
        ),
        (
            "files/refused",
            control_response(FilesResponse::Refused {
                reason: BlobError::TooLarge {
                    size: 1 << 40,
                    max: 1 << 36,
                }
                .to_string(),
            }),
        ),
        (
            "files/list",
            control_request(FilesRequest::List {
                group: 13,
                after: None,
                limit: 256,
                forwarded: false,
            }),
        ),
        (
            "files/list-after",
            control_request(FilesRequest::List {
                group: 13,
                after: Some(NAME.into()),
                limit: 256,
                forwarded: true,
            }),
        ),
        (
            "files/listing",
            control_response(FilesResponse::Listing {
                tuples: vec![files_tuple()],
                next: Some(NAME.into()),
                groups: 16,
            }),
        ),
        (
            "files/delete",
            control_request(FilesRequest::Delete {
                name: NAME.into(),
                forwarded: false,
                signed: None,
            }),
        ),
        (
            "files/deleted",
            control_response(FilesResponse::Deleted { tuple: tombstone }),
        ),
        (
            "files/version",
            control_request(FilesRequest::Version {
                name: NAME.into(),
                lamport: 1,
                forwarded: false,
            }),
        ),
        (
            "files/has-version",
            control_request(FilesRequest::HasVersion {
                name: NAME.into(),
                lamport: 1,
            }),
        ),
        (
            "files/commit",
            control_request(FilesRequest::Commit {
                tuple: files_tuple(),
            }),
        ),
        (
            "files/committed",
            control_response(FilesResponse::Committed {}),
        ),
        (
            "files/versions",
            control_request(FilesRequest::Versions {
                name: NAME.into(),
                forwarded: false,
            }),
        ),
        (
            "files/kept",
            control_request(FilesRequest::Kept { name: NAME.into() }),
        ),
        (
            "files/kept-versions",
            control_response(FilesResponse::KeptVersions {
                versions: vec![files_tuple()],
            }),
        ),
        ("files/site", control_request(FilesRequest::Site {})),
        (
            "files/site-reply",
            control_response(FilesResponse::Site {
                ip: Some("198.51.100.11".into()),
            }),
        ),
        (
            "blob/put",
            blob_request(BlobRequest::Put {
                name: NAME.into(),
                size: 6,
                homes: vec![info(A)],
                after: 0,
                signed: false,
            }),
        ),
        ("blob/ready", blob_response(BlobResponse::Ready)),
        (
            "blob/trailer",
            files_frame(
                BlobTrailer {
                    blake3: blake3(),
                    auth: None,
                },
                MAX_REQUEST_BYTES,
            ),
        ),
        (
            "blob/stored",
            blob_response(BlobResponse::Stored {
                tuple: files_tuple(),
            }),
        ),
        (
            "blob/refused",
            blob_response(BlobResponse::Refused {
                reason: format!(
                    "{NAME:?} belongs to group {}; this node is in group 3",
                    name_group(NAME, 16)
                ),
            }),
        ),
        (
            "blob/forward",
            blob_request(BlobRequest::Forward {
                name: NAME.into(),
                size: 6,
            }),
        ),
        (
            "blob/ready-after",
            blob_response(BlobResponse::ReadyAfter { newest: 0 }),
        ),
        (
            "blob/replicate",
            blob_request(BlobRequest::Replicate {
                tuple: files_tuple(),
            }),
        ),
        (
            "blob/get",
            blob_request(BlobRequest::Get { blake3: blake3() }),
        ),
        (
            "blob/sending",
            blob_response(BlobResponse::Sending { size: 6 }),
        ),
        ("blob/not-found", blob_response(BlobResponse::NotFound)),
        (
            "blob/put-signed",
            blob_request(BlobRequest::Put {
                name: NAME.into(),
                size: 6,
                homes: vec![info(A)],
                after: 0,
                signed: true,
            }),
        ),
        (
            "blob/ready-at",
            blob_response(BlobResponse::ReadyAt { lamport: 1 }),
        ),
        (
            "blob/trailer-signed",
            files_frame(
                BlobTrailer {
                    blake3: blake3(),
                    auth: Some(granted_auth()),
                },
                MAX_REQUEST_BYTES,
            ),
        ),
        (
            "files/delete-signed",
            control_request(FilesRequest::Delete {
                name: NAME.into(),
                forwarded: false,
                signed: Some(SignedDelete {
                    lamport: 2,
                    auth: owner_tombstone_auth(),
                }),
            }),
        ),
        ("auth/keys", auth_keys()),
        (
            "auth/version-message",
            Expect::Bytes {
                bytes: version_message(
                    SignedVersion::from(&files_tuple()),
                    &writer(A).public().to_bytes(),
                ),
                cbor: false,
            },
        ),
        (
            "auth/grant-message",
            Expect::Bytes {
                bytes: grant_message(
                    &writer(A).public().to_bytes(),
                    &writer(B).public().to_bytes(),
                    GRANT_PREFIX,
                ),
                cbor: false,
            },
        ),
        ("auth/signatures", auth_signatures()),
        (
            "blob/pieces",
            blob_request(BlobRequest::Pieces { blake3: blake3() }),
        ),
        (
            "blob/serving",
            blob_response(BlobResponse::Serving { size: 40_000 }),
        ),
        (
            "blob/piece-request",
            files_frame(
                PieceRequest {
                    start: 32_768,
                    end: 40_000,
                },
                MAX_REQUEST_BYTES,
            ),
        ),
        ("pieces/encoding", pieces_encoding()),
        (
            "blob/pull",
            blob_request(BlobRequest::Pull {
                tuple: files_tuple(),
            }),
        ),
        ("status/request", status_request()),
        ("status/reply", status_reply()),
    ]
}

fn status_request() -> Expect {
    let mut io = Cursor::new(Vec::new());
    block_on(StatusCodec::default().write_request(&STATUS_PROTOCOL, &mut io, StatusRequest {}))
        .expect("the codec writes the request");
    let frame = io.into_inner();
    Expect::Frame {
        frame,
        reads_back: Box::new(|bytes: &[u8]| {
            let mut io = Cursor::new(bytes.to_vec());
            block_on(StatusCodec::default().read_request(&STATUS_PROTOCOL, &mut io))
                .map(|_| ())
                .map_err(|e| format!("the codec refuses it: {e}"))
        }),
    }
}

/// The status of node A as the node builds it (`Status::of`, `with_reach`, then the file
/// counters and the files core's state as `node.rs` adds them), with a view, contacts and
/// addresses filled in for the example.
fn example_status() -> Status {
    let driver = DriverConfig {
        kelips: Config::default(),
        incarnation: 3,
        bootstraps: Vec::new(),
        external_addresses: Vec::new(),
        backoff: Duration::from_secs(1),
        max_concurrent_streams: 64,
    };
    let kelips = KelipsBehaviour::new(keypair(A), driver).expect("a behaviour");
    let reach = Reach::new(peer(A).0, quickstore::config::NatConfig::default(), &[]);
    let mut status = Status::of(&kelips).with_reach(&reach);
    let files = FilesCounters::default().snapshot().into_iter().chain([
        ("storage_used_bytes", 6),
        ("storage_free_bytes", 1_000_000_000),
    ]);
    status
        .counters
        .extend(files.map(|(k, v)| (k.to_string(), v)));
    status.files = Some(FilesView {
        settled: true,
        names_tracked: 1,
        transfers_in_flight: 0,
        puts_in_progress: 0,
    });
    // The example's state: joined, with B in the view and C, D as contacts of group 3.
    status.heartbeat = 42;
    status.joined = true;
    status.ready = quickstore::status::Ready::Local;
    status.addresses = vec!["/ip4/192.168.1.10/tcp/4001".into()];
    status.view = vec![ViewMember {
        peer_id: peer(B).0.to_string(),
        incarnation: 1,
        heartbeat: 300,
        age_ms: 250,
        rtt_ms: Some(0.75),
        failed: false,
        path: Some(quickstore::reach::Path::Lan),
    }];
    status.paths = [(peer(B).0.to_string(), quickstore::reach::Path::Lan)].into();
    status.contacts = [(3, vec![peer(C).0.to_string(), peer(D).0.to_string()])].into();
    if let Some(view) = &mut status.network_view {
        view.network_size_estimate = 4;
        view.groups_without_node = (0..16).filter(|g| *g != 3 && *g != 13).collect();
        view.names_below_replication = vec![NameCopies {
            name: NAME.into(),
            copies: 2,
        }];
        view.names_below_replication_total = 1;
        view.names_in_group = 1;
    }
    for (name, value) in [("messages_in", 1200), ("messages_out", 1180)] {
        status.counters.insert(name.into(), value);
    }
    status
}

fn status_reply() -> Expect {
    let status = example_status();
    let mut io = Cursor::new(Vec::new());
    block_on(StatusCodec::default().write_response(&STATUS_PROTOCOL, &mut io, status.clone()))
        .expect("the codec writes the reply");
    let frame = io.into_inner();
    let compact = serde_json::to_vec(&status).expect("JSON");
    assert_eq!(
        frame,
        codec::frame(&compact),
        "the codec frames compact JSON"
    );
    let text = serde_json::to_string_pretty(&status).expect("JSON");
    Expect::Json {
        text,
        reads_back: Box::new(move |text: &str| {
            // The document's JSON, compacted, is what the codec wrote; the codec reads it back.
            let read: Status = serde_json::from_str(text).map_err(|e| e.to_string())?;
            let again = serde_json::to_vec(&read).map_err(|e| e.to_string())?;
            if again != compact {
                return Err("the compact form differs from what the codec writes".into());
            }
            let mut io = Cursor::new(codec::frame(&again));
            block_on(StatusCodec::default().read_response(&STATUS_PROTOCOL, &mut io))
                .map(|_| ())
                .map_err(|e| format!("the codec refuses it: {e}"))
        }),
    }
}

// ---- the document -----------------------------------------------------------------------------

/// A vector as written in the document.
#[derive(Debug, Default)]
struct DocVector {
    name: String,
    line: usize,
    hex: Option<Vec<u8>>,
    diag: Option<String>,
    kv: Option<Vec<(String, String)>>,
    json: Option<String>,
}

const VECTOR_LANGS: [&str; 4] = ["hex", "cbor-diag", "kv", "json"];

fn parse_doc(text: &str) -> Vec<DocVector> {
    let mut vectors = Vec::new();
    let mut current: Option<DocVector> = None;
    let mut fence: Option<(String, usize, Vec<&str>)> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some((lang, start, body)) = &mut fence {
            if line.trim() == "```" {
                if VECTOR_LANGS.contains(&lang.as_str()) {
                    let vector = current.as_mut().unwrap_or_else(|| {
                        panic!("line {start}: a ```{lang} block outside a vector")
                    });
                    attach(vector, lang, *start, body);
                }
                fence = None;
            } else {
                body.push(line);
            }
            continue;
        }
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            let lang = lang.trim().to_string();
            if !VECTOR_LANGS.contains(&lang.as_str()) {
                vectors.extend(current.take());
            }
            fence = Some((lang, number, Vec::new()));
        } else if let Some(name) = line.strip_prefix("vector: ") {
            vectors.extend(current.take());
            current = Some(DocVector {
                name: name.trim().trim_matches('`').to_string(),
                line: number,
                ..DocVector::default()
            });
        } else if !line.trim().is_empty() {
            vectors.extend(current.take());
        }
    }
    assert!(fence.is_none(), "unclosed fenced block");
    vectors.extend(current.take());
    for vector in &vectors {
        assert!(
            vector.hex.is_some() || vector.kv.is_some() || vector.json.is_some(),
            "line {}: vector {} has no ```hex, ```kv or ```json block",
            vector.line,
            vector.name
        );
    }
    vectors
}

fn attach(vector: &mut DocVector, lang: &str, start: usize, body: &[&str]) {
    let twice = || {
        panic!(
            "line {start}: a second ```{lang} block in vector {}",
            vector.name
        )
    };
    match lang {
        "hex" => {
            if vector.hex.is_some() {
                twice();
            }
            let digits: String = body.concat().split_whitespace().collect();
            vector.hex =
                Some(unhex(&digits).unwrap_or_else(|e| panic!("line {start}: bad hex: {e}")));
        }
        "cbor-diag" => {
            if vector.diag.is_some() {
                twice();
            }
            let lines: Vec<&str> = body.iter().map(|l| l.trim_end()).collect();
            vector.diag = Some(lines.join("\n").trim().to_string());
        }
        "json" => {
            if vector.json.is_some() {
                twice();
            }
            let lines: Vec<&str> = body.iter().map(|l| l.trim_end()).collect();
            vector.json = Some(lines.join("\n").trim().to_string());
        }
        _ => {
            if vector.kv.is_some() {
                twice();
            }
            let pairs = body
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let (key, value) = l
                        .split_once(" = ")
                        .unwrap_or_else(|| panic!("line {start}: `{l}` is not `key = value`"));
                    (key.trim().to_string(), value.trim().to_string())
                })
                .collect();
            vector.kv = Some(pairs);
        }
    }
}

/// The blocks of a vector in the document's format.
fn render(name: &str, expect: &Expect) -> String {
    let mut out = format!("vector: {name}\n");
    let mut hex_block = |prefix: &[u8], bytes: &[u8]| {
        out.push_str("```hex\n");
        if !prefix.is_empty() {
            out.push_str(&hex(prefix));
            out.push('\n');
        }
        for chunk in bytes.chunks(32) {
            out.push_str(&hex(chunk));
            out.push('\n');
        }
        out.push_str("```\n");
    };
    let mut diag = None;
    match expect {
        Expect::Request { frame, .. } | Expect::Reply { frame, .. } => {
            let (prefix, payload) = split_frame(frame).expect("a frame");
            hex_block(prefix, payload);
            diag = Some(payload.to_vec());
        }
        Expect::Frame { frame, .. } => {
            let (prefix, payload) = split_frame(frame).expect("a frame");
            hex_block(prefix, payload);
            if parse_cbor(payload).is_ok() {
                diag = Some(payload.to_vec());
            }
        }
        Expect::Json { text, .. } => {
            let _ = writeln!(out, "```json\n{text}\n```");
        }
        Expect::Bytes { bytes, cbor } => {
            hex_block(&[], bytes);
            if *cbor {
                diag = Some(bytes.clone());
            }
        }
        Expect::Facts(pairs) => {
            out.push_str("```kv\n");
            for (key, value) in pairs {
                let _ = writeln!(out, "{key} = {value}");
            }
            out.push_str("```\n");
        }
    }
    if let Some(bytes) = diag {
        let item = parse_cbor(&bytes).expect("canonical CBOR");
        let _ = writeln!(out, "```cbor-diag\n{}\n```", pretty(&item, 0, 0));
    }
    out
}

/// Splits a frame into its varint length prefix and its payload, checking the length.
fn split_frame(frame: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let end = frame
        .iter()
        .position(|b| b & 0x80 == 0)
        .ok_or("no end of the length prefix")?;
    let (prefix, payload) = frame.split_at(end + 1);
    let mut len = 0u64;
    for (i, b) in prefix.iter().enumerate() {
        len |= u64::from(b & 0x7f) << (7 * i);
    }
    if len != payload.len() as u64 {
        return Err(format!(
            "length prefix says {len} bytes, {} follow",
            payload.len()
        ));
    }
    Ok((prefix, payload))
}

fn check(doc: &DocVector, expect: &Expect) -> Vec<String> {
    let mut problems = Vec::new();
    let mut need_diag = None;
    match expect {
        Expect::Request { envelope, frame } => {
            if doc.hex.as_ref() != Some(frame) {
                problems.push("hex differs from the encoding".into());
            } else {
                match read_request(frame) {
                    Inbound::Valid(decoded) if decoded == *envelope => {}
                    Inbound::Valid(decoded) => {
                        problems.push(format!("decodes to another value: {decoded:?}"))
                    }
                    Inbound::Invalid(_, reason) => problems.push(format!("refused: {reason}")),
                }
            }
            need_diag = split_frame(frame).ok().map(|(_, p)| p.to_vec());
        }
        Expect::Reply { reply, frame } => {
            if doc.hex.as_ref() != Some(frame) {
                problems.push("hex differs from the encoding".into());
            } else {
                let mut io = Cursor::new(frame.clone());
                match block_on(KelipsCodec::default().read_response(&PROTOCOL, &mut io)) {
                    Ok(decoded) if decoded == *reply => {}
                    other => problems.push(format!("decodes to {other:?}")),
                }
            }
            need_diag = split_frame(frame).ok().map(|(_, p)| p.to_vec());
        }
        Expect::Bytes { bytes, cbor } => {
            if doc.hex.as_ref() != Some(bytes) {
                problems.push("hex differs".into());
            }
            if *cbor {
                need_diag = Some(bytes.clone());
            }
        }
        Expect::Frame { frame, reads_back } => {
            if doc.hex.as_ref() != Some(frame) {
                problems.push("hex differs from the encoding".into());
            } else if let Err(e) = reads_back(frame) {
                problems.push(e);
            }
            need_diag = split_frame(frame)
                .ok()
                .filter(|(_, p)| parse_cbor(p).is_ok())
                .map(|(_, p)| p.to_vec());
        }
        Expect::Json { text, reads_back } => match &doc.json {
            None => problems.push("no ```json block".into()),
            Some(shown) if shown != text => problems.push("json differs".into()),
            Some(shown) => {
                if let Err(e) = reads_back(shown) {
                    problems.push(e);
                }
            }
        },
        Expect::Facts(pairs) => match &doc.kv {
            None => problems.push("no ```kv block".into()),
            Some(written) => {
                let keys = |p: &[(String, String)]| p.iter().map(|(k, _)| k.clone()).collect();
                let (want, have): (Vec<String>, Vec<String>) = (keys(pairs), keys(written));
                if want != have {
                    problems.push(format!("keys {have:?}, expected {want:?}"));
                }
                for ((key, value), (_, shown)) in pairs.iter().zip(written) {
                    let matches = match shown.strip_suffix('…') {
                        Some(prefix) => value.starts_with(prefix),
                        None => shown == value,
                    };
                    if !matches {
                        problems.push(format!("{key} = {shown}, but the code says {value}"));
                    }
                }
            }
        },
    }
    if !matches!(expect, Expect::Facts(_)) && doc.kv.is_some() {
        problems.push("unexpected ```kv block".into());
    }
    if !matches!(expect, Expect::Json { .. }) && doc.json.is_some() {
        problems.push("unexpected ```json block".into());
    }
    if matches!(expect, Expect::Json { .. }) && doc.hex.is_some() {
        problems.push("unexpected ```hex block".into());
    }
    match (need_diag, &doc.diag) {
        (Some(bytes), Some(shown)) => match parse_cbor(&bytes) {
            Ok(item) if pretty(&item, 0, 0) == *shown => {}
            Ok(_) => problems.push("cbor-diag differs".into()),
            Err(e) => problems.push(format!("not canonical CBOR: {e}")),
        },
        (Some(_), None) => problems.push("no ```cbor-diag block".into()),
        (None, Some(_)) => problems.push("unexpected ```cbor-diag block".into()),
        (None, None) => {}
    }
    problems
}

#[test]
fn every_vector_of_the_document_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
    let expected = expected();
    if std::env::var_os(PRINT_ENV).is_some() {
        for (name, expect) in &expected {
            println!("{}", render(name, expect));
        }
    }
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let written = parse_doc(&text);
    let mut names = BTreeSet::new();
    for (name, _) in &expected {
        assert!(
            names.insert(*name),
            "vector {name} defined twice in the test"
        );
    }
    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    for doc in &written {
        if !seen.insert(doc.name.clone()) {
            failures.push(format!(
                "line {}: vector {} appears twice",
                doc.line, doc.name
            ));
            continue;
        }
        let Some((name, expect)) = expected.iter().find(|(n, _)| *n == doc.name) else {
            failures.push(format!(
                "line {}: vector {} is unknown to the test",
                doc.line, doc.name
            ));
            continue;
        };
        let problems = check(doc, expect);
        if !problems.is_empty() {
            failures.push(format!(
                "line {}: vector {name}: {}\nthe code says:\n{}",
                doc.line,
                problems.join("; "),
                render(name, expect)
            ));
        }
    }
    for (name, expect) in &expected {
        if !seen.contains(*name) {
            failures.push(format!(
                "vector {name} is missing from the document; the code says:\n{}",
                render(name, expect)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) in docs/PROTOCOL.md (regenerate with {PRINT_ENV}=1):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_test_sha1_is_sha1() {
    assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    assert_eq!(
        hex(&sha1(b"abc")),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    let long = vec![b'a'; 1_000];
    assert_eq!(
        hex(&sha1(&long)),
        "291e9a6c66994949b57ba5e650361e98fc36b1ba"
    );
}

#[test]
fn the_test_diagnostic_notation_refuses_non_canonical_cbor() {
    assert!(parse_cbor(&[0x18, 0x05]).is_err(), "5 in two bytes");
    assert!(parse_cbor(&[0x9f, 0xff]).is_err(), "indefinite array");
    assert!(parse_cbor(&[0x01, 0x02]).is_err(), "trailing bytes");
    assert_eq!(
        pretty(&parse_cbor(&[0x82, 0x01, 0x20]).unwrap(), 0, 0),
        "[1, -1]"
    );
}

// ---- helpers: hex, SHA-1, big-endian modulo, CBOR diagnostic notation --------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd number of digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| format!("{e} at {i}")))
        .collect()
}

/// SHA-1 (FIPS 180-4), written out so the test does not trust the code's hash crate.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 80];
        for (word, bytes) in w.iter_mut().zip(block.chunks(4)) {
            *word = u32::from_be_bytes(bytes.try_into().expect("4 bytes"));
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(value);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// A big-endian unsigned integer modulo `k`.
fn be_mod(bytes: &[u8], k: u32) -> u32 {
    let k = u128::from(k);
    let rem = bytes
        .iter()
        .fold(0u128, |rem, &b| ((rem << 8) | u128::from(b)) % k);
    rem as u32
}

/// The CBOR items the protocol uses.
#[derive(Debug)]
enum Cbor {
    Uint(u64),
    Neg(u64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Cbor>),
    Map(Vec<(Cbor, Cbor)>),
    Simple(&'static str),
}

/// Parses one CBOR item, refusing anything but the canonical form the protocol uses: shortest
/// heads, definite lengths, no tags or floats, no trailing bytes.
fn parse_cbor(bytes: &[u8]) -> Result<Cbor, String> {
    let mut pos = 0;
    let item = parse_item(bytes, &mut pos)?;
    if pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - pos));
    }
    Ok(item)
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let slice = bytes
        .get(*pos..*pos + n)
        .ok_or_else(|| format!("truncated at {}", *pos))?;
    *pos += n;
    Ok(slice)
}

fn parse_item(bytes: &[u8], pos: &mut usize) -> Result<Cbor, String> {
    let at = *pos;
    let initial = take(bytes, pos, 1)?[0];
    let (major, info) = (initial >> 5, initial & 0x1f);
    if major == 7 {
        return match info {
            20 => Ok(Cbor::Simple("false")),
            21 => Ok(Cbor::Simple("true")),
            22 => Ok(Cbor::Simple("null")),
            _ => Err(format!("simple value or float {info} at {at}")),
        };
    }
    let (value, shortest) = match info {
        0..=23 => (u64::from(info), true),
        24 => {
            let v = u64::from(take(bytes, pos, 1)?[0]);
            (v, v >= 24)
        }
        25 => {
            let v = u64::from(u16::from_be_bytes(take(bytes, pos, 2)?.try_into().unwrap()));
            (v, v > 0xff)
        }
        26 => {
            let v = u64::from(u32::from_be_bytes(take(bytes, pos, 4)?.try_into().unwrap()));
            (v, v > 0xffff)
        }
        27 => {
            let v = u64::from_be_bytes(take(bytes, pos, 8)?.try_into().unwrap());
            (v, v > 0xffff_ffff)
        }
        31 => return Err(format!("indefinite length at {at}")),
        _ => return Err(format!("reserved additional information at {at}")),
    };
    if !shortest {
        return Err(format!("head not in its shortest form at {at}"));
    }
    let len = |v: u64| usize::try_from(v).map_err(|e| e.to_string());
    match major {
        0 => Ok(Cbor::Uint(value)),
        1 => Ok(Cbor::Neg(value)),
        2 => Ok(Cbor::Bytes(take(bytes, pos, len(value)?)?.to_vec())),
        3 => String::from_utf8(take(bytes, pos, len(value)?)?.to_vec())
            .map(Cbor::Text)
            .map_err(|e| format!("text at {at}: {e}")),
        4 => (0..value)
            .map(|_| parse_item(bytes, pos))
            .collect::<Result<_, _>>()
            .map(Cbor::Array),
        5 => (0..value)
            .map(|_| Ok((parse_item(bytes, pos)?, parse_item(bytes, pos)?)))
            .collect::<Result<_, String>>()
            .map(Cbor::Map),
        _ => Err(format!("tag at {at}")),
    }
}

/// Lines of diagnostic notation at most this wide, when an item allows.
const WIDTH: usize = 96;

fn compact(item: &Cbor) -> String {
    match item {
        Cbor::Uint(v) => v.to_string(),
        Cbor::Neg(v) => format!("-{}", u128::from(*v) + 1),
        Cbor::Bytes(b) => format!("h'{}'", hex(b)),
        Cbor::Text(t) => format!("{t:?}"),
        Cbor::Simple(s) => s.to_string(),
        Cbor::Array(items) => {
            let inner: Vec<String> = items.iter().map(compact).collect();
            format!("[{}]", inner.join(", "))
        }
        Cbor::Map(pairs) => {
            let inner: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}: {}", compact(k), compact(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Diagnostic notation: compact when it fits in [`WIDTH`] from column `used`, else one element
/// per line, indented by two.
fn pretty(item: &Cbor, indent: usize, used: usize) -> String {
    let flat = compact(item);
    if used + flat.len() <= WIDTH {
        return flat;
    }
    let pad = " ".repeat(indent + 2);
    let lines: Vec<String> = match item {
        // A long array of numbers: as many per line as fit.
        Cbor::Array(items) if items.iter().all(|i| matches!(i, Cbor::Uint(_))) => {
            let mut lines: Vec<String> = Vec::new();
            for item in items.iter().map(compact) {
                match lines.last_mut() {
                    Some(line) if line.len() + 2 + item.len() < WIDTH => {
                        line.push_str(", ");
                        line.push_str(&item);
                    }
                    _ => lines.push(format!("{pad}{item}")),
                }
            }
            return format!("[\n{}\n{}]", lines.join(",\n"), " ".repeat(indent));
        }
        Cbor::Array(items) => items
            .iter()
            .map(|i| format!("{pad}{}", pretty(i, indent + 2, indent + 2)))
            .collect(),
        Cbor::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| {
                let key = compact(k);
                let used = indent + 2 + key.len() + 2;
                format!("{pad}{key}: {}", pretty(v, indent + 2, used))
            })
            .collect(),
        _ => return flat,
    };
    let (open, close) = if matches!(item, Cbor::Array(_)) {
        ("[", "]")
    } else {
        ("{", "}")
    };
    format!(
        "{open}\n{}\n{}{close}",
        lines.join(",\n"),
        " ".repeat(indent)
    )
}
