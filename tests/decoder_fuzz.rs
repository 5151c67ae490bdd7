//! Byte-mutation fuzzing of every decoder a peer or a file can reach (issue 16): the Kelips
//! request and reply readers, the file protocols' control and blob messages and trailer, the
//! signature checks of signed writes on what they decode, grant lists, client identity files,
//! the status JSON, signed address records, network key files and `node.json`. The corpus is
//! every hex vector of `docs/PROTOCOL.md` (each a whole frame: length prefix, then CBOR), so
//! each message kind the document describes is mutated; proptest flips, sets, cuts, inserts
//! and splices bytes. Every decoder must answer (a value or an error) without panicking, and
//! a value it accepts must encode again. The case count is fixed, so the run is bounded (a
//! few seconds in CI).

use std::sync::OnceLock;
use std::time::Duration;

use futures::executor::block_on;
use libp2p::identity::Keypair;
use libp2p::request_response::Codec;
use proptest::prelude::*;
use quickstore::files::wire::{
    BlobRequest, BlobResponse, BlobTrailer, FilesRequest, FilesResponse, PieceRequest, read_message,
};
use quickstore::node::NodeFile;
use quickstore::status::Status;
use quickstore_behaviours::AddressRecord;
use quickstore_behaviours::net::protocol::{KelipsCodec, PROTOCOL};
use quickstore_behaviours::net::record::verified_record;

/// Every ```` ```hex ```` block of PROTOCOL.md, as bytes.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let doc = include_str!("../docs/PROTOCOL.md");
        let mut out = Vec::new();
        let mut block: Option<String> = None;
        for line in doc.lines() {
            match (&mut block, line.trim()) {
                (None, "```hex") => block = Some(String::new()),
                (Some(hex), "```") => {
                    let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
                        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                        .collect();
                    out.extend(bytes);
                    block = None;
                }
                (Some(hex), text) => hex.extend(text.chars().filter(|c| c.is_ascii_hexdigit())),
                (None, _) => {}
            }
        }
        assert!(
            out.len() >= 40,
            "PROTOCOL.md has its vectors: {}",
            out.len()
        );
        // A grant list (a file in the network, not a wire message) and a client identity
        // file, which the document has no vectors of.
        let owner = libp2p::identity::ed25519::Keypair::generate();
        let grants = [
            quickstore_behaviours::auth::sign_grant(&owner, &[2; 32], "photos/"),
            quickstore_behaviours::auth::sign_grant(&owner, &[3; 32], ""),
        ];
        out.push(quickstore::files::cli::encode_grant_list(&grants));
        out.push(
            Keypair::from(owner)
                .to_protobuf_encoding()
                .expect("an ed25519 key encodes"),
        );
        out
    })
}

/// One change to a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(from, len, to)| Mutation::Splice(from, len, to)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len().max(1);
        match m {
            Mutation::Flip(at, bits) => {
                if let Some(b) = bytes.get_mut(at % n) {
                    *b ^= bits;
                }
            }
            Mutation::Set(at, byte) => {
                if let Some(b) = bytes.get_mut(at % n) {
                    *b = *byte;
                }
            }
            Mutation::Cut(at) => bytes.truncate(at % n),
            Mutation::Insert(at, more) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, more.iter().copied());
            }
            Mutation::Splice(from, len, to) => {
                let from = from % n;
                let end = (from + len % 64).min(bytes.len());
                let piece: Vec<u8> = bytes.get(from..end).map(<[u8]>::to_vec).unwrap_or_default();
                let to = to % (bytes.len() + 1);
                bytes.splice(to..to, piece);
            }
        }
    }
    bytes
}

/// An input: a corpus entry (or random bytes) with mutations applied.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (0..corpus().len(), prop::collection::vec(mutation(), 0..6))
        .prop_map(|(i, ms)| apply(corpus()[i].clone(), &ms));
    prop_oneof![
        8 => mutated,
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

/// Reads `bytes` as one framed CBOR message of type `T` the way the file protocols do, and
/// re-encodes what it accepts.
fn file_message<T: serde::de::DeserializeOwned + serde::Serialize>(bytes: &[u8]) {
    let mut io = futures::io::Cursor::new(bytes.to_vec());
    let read = runtime().block_on(read_message::<T>(&mut io, 1 << 20, Duration::from_secs(1)));
    if let Ok(value) = read {
        cbor4ii::serde::to_vec(Vec::new(), &value).expect("an accepted message encodes");
    }
}

/// The signature checks (PROTOCOL.md §11.4) on whatever signed tuple, trailer or delete
/// `bytes` decodes to: keys that are no curve points, short grants and any other garbage
/// are refused, never a panic.
fn signatures_checked(bytes: &[u8]) {
    use quickstore_behaviours::auth::{SignedVersion, WritePolicy, admits, verify};
    let mut io = futures::io::Cursor::new(bytes.to_vec());
    let read = runtime().block_on(read_message::<FilesRequest>(
        &mut io,
        1 << 20,
        Duration::from_secs(1),
    ));
    match read {
        Ok(FilesRequest::Commit { tuple }) => {
            let _ = admits(WritePolicy::Signed, None, &tuple);
            let held = std::sync::Arc::new(tuple.clone());
            let _ = admits(WritePolicy::Signed, Some(&held), &tuple);
        }
        Ok(FilesRequest::Delete {
            name,
            signed: Some(signed),
            ..
        }) => {
            let tombstone = SignedVersion {
                name: &name,
                lamport: signed.lamport,
                blake3: &[0; 32],
                size: 0,
                deleted: true,
            };
            let _ = verify(tombstone, &signed.auth);
        }
        _ => {}
    }
    let mut io = futures::io::Cursor::new(bytes.to_vec());
    let trailer = runtime().block_on(read_message::<BlobTrailer>(
        &mut io,
        1 << 20,
        Duration::from_secs(1),
    ));
    if let Ok(BlobTrailer {
        blake3,
        auth: Some(auth),
    }) = trailer
    {
        let version = SignedVersion {
            name: "hello.txt",
            lamport: 1,
            blake3: &blake3,
            size: 6,
            deleted: false,
        };
        let _ = verify(version, &auth);
    }
}

/// Every decoder on `bytes`, framed as they arrive and also as a bare body.
fn decode_everything(bytes: &[u8]) {
    let mut codec = KelipsCodec::default();
    let mut io = futures::io::Cursor::new(bytes.to_vec());
    let _ = block_on(codec.read_request(&PROTOCOL, &mut io));
    let mut io = futures::io::Cursor::new(bytes.to_vec());
    if let Ok(reply) = block_on(codec.read_response(&PROTOCOL, &mut io)) {
        cbor4ii::serde::to_vec(Vec::new(), &reply).expect("an accepted reply encodes");
    }
    file_message::<FilesRequest>(bytes);
    file_message::<FilesResponse>(bytes);
    file_message::<BlobRequest>(bytes);
    file_message::<BlobResponse>(bytes);
    file_message::<BlobTrailer>(bytes);
    file_message::<PieceRequest>(bytes);
    piece_checked(bytes);
    signatures_checked(bytes);
    if let Ok(grants) = quickstore::files::cli::decode_grant_list(bytes) {
        assert_eq!(
            quickstore::files::cli::decode_grant_list(&quickstore::files::cli::encode_grant_list(
                &grants
            ))
            .ok(),
            Some(grants),
            "an accepted grant list encodes again"
        );
    }
    let _ = quickstore::client_identity::decode(std::path::Path::new("client.key"), bytes);
    let _ = serde_json::from_slice::<Status>(bytes);
    let _ = serde_json::from_slice::<NodeFile>(bytes);
    if let Ok(record) = AddressRecord::new(bytes.to_vec()) {
        static PEER: OnceLock<libp2p::PeerId> = OnceLock::new();
        let peer = *PEER.get_or_init(|| Keypair::generate_ed25519().public().to_peer_id());
        let _ = verified_record(peer, &record);
    }
    let text = String::from_utf8_lossy(bytes);
    let _ = text.parse::<libp2p::pnet::PreSharedKey>();
    let _ = text.parse::<libp2p::Multiaddr>();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 20_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_decoder_panics_on_mutated_vectors(bytes in input()) {
        decode_everything(&bytes);
        // Also as a body whose frame says its true length.
        let mut framed = Vec::new();
        quickstore_behaviours::codec::put_varint(bytes.len() as u64, &mut framed);
        framed.extend_from_slice(&bytes);
        decode_everything(&framed);
    }
}

/// Whether `bytes` read as one frame of a `T` of the file protocols.
fn file_frame_reads<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> bool {
    let mut io = futures::io::Cursor::new(bytes.to_vec());
    runtime()
        .block_on(read_message::<T>(&mut io, 1 << 20, Duration::from_secs(1)))
        .is_ok()
}

/// `bytes` as the encoding of a piece of a small blob: refused (never a panic, never written
/// unless they verify) unless they are its true encoding.
fn piece_checked(bytes: &[u8]) {
    use quickstore::files::pieces::verified::{Piece, decode_piece};
    struct Nowhere(usize);
    impl positioned_io::WriteAt for Nowhere {
        fn write_at(&mut self, _pos: u64, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let root = *blake3::hash(&[7u8; 40_000]).as_bytes();
    let piece = Piece {
        start: 16_384,
        end: 32_768,
    };
    let mut written = Nowhere(0);
    if decode_piece(&root, 40_000, piece, bytes, &mut written).is_ok() {
        assert_eq!(written.0 as u64, piece.len(), "a verified piece is whole");
    }
}

#[test]
fn the_corpus_decodes_as_the_document_says() {
    // The unmutated vectors are read by at least one decoder each (else the fuzzing above
    // would only ever test refusals).
    let mut accepted = 0;
    for bytes in corpus() {
        let mut codec = KelipsCodec::default();
        let mut io = futures::io::Cursor::new(bytes.clone());
        let request = block_on(codec.read_request(&PROTOCOL, &mut io));
        let mut io = futures::io::Cursor::new(bytes.clone());
        let reply = block_on(codec.read_response(&PROTOCOL, &mut io));
        let valid_request = matches!(
            request,
            Ok(quickstore_behaviours::net::protocol::Inbound::Valid(_))
        );
        let mut io = futures::io::Cursor::new(bytes.clone());
        let files = runtime()
            .block_on(read_message::<FilesRequest>(
                &mut io,
                1 << 20,
                Duration::from_secs(1),
            ))
            .is_ok()
            || file_frame_reads::<FilesResponse>(bytes)
            || file_frame_reads::<BlobRequest>(bytes)
            || file_frame_reads::<BlobResponse>(bytes)
            || file_frame_reads::<PieceRequest>(bytes);
        if valid_request || reply.is_ok() || files {
            accepted += 1;
        }
    }
    assert!(
        accepted * 2 >= corpus().len(),
        "{accepted} of {}",
        corpus().len()
    );
}
