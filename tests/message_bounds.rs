//! Worst-case messages — the largest group the configuration allows, 1024-byte names, maximum
//! ids and address records, full rations — encoded with the real codec stay under the wire
//! bound, and the codec refuses anything larger.

use std::sync::Arc;

use proptest::prelude::*;
use quickstore_behaviours::codec::{self, CodecError, encoded_len};
use quickstore_behaviours::digest::{DigestItem, HeartbeatDigest};
use quickstore_behaviours::limits::*;
use quickstore_behaviours::message::*;
use quickstore_behaviours::tuple::{FileTuple, Version};
use quickstore_behaviours::{AddressRecord, Beat, Entry, NetworkId, NodeId};
use serde::{Deserialize, Serialize};

/// An id as large as the wire allows.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct WideId(#[serde(with = "serde_bytes")] Vec<u8>);

impl NodeId for WideId {
    fn to_bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

fn id(seed: u32, len: usize) -> WideId {
    let mut bytes = seed.to_be_bytes().to_vec();
    bytes.resize(len, 0xff);
    WideId(bytes)
}

fn entry(seed: u32, id_len: usize, record_len: usize) -> Entry<WideId> {
    Entry {
        id: id(seed, id_len),
        incarnation: u64::MAX,
        heartbeat: u64::MAX,
        address: AddressRecord::new(vec![0xab; record_len]).expect("within the bound"),
        free_space: u64::MAX,
    }
}

fn tuple(seed: u32, name_len: usize, holders: usize) -> Arc<FileTuple<WideId>> {
    let mut name = format!("{seed}-");
    while name.len() < name_len {
        name.push('é');
    }
    while name.len() > name_len {
        name.pop();
    }
    Arc::new(FileTuple {
        name: name.into(),
        version: Version {
            lamport: u64::MAX,
            blake3: [0xcd; 32],
        },
        size: u64::MAX,
        holders: (0..holders as u32).map(|h| id(h, MAX_ID_BYTES)).collect(),
        epoch: 0,
        deleted: false,
        auth: None,
    })
}

fn digest(members: usize) -> HeartbeatDigest {
    let items = (0..members as u32)
        .map(|short| DigestItem {
            short,
            beat: Beat::new(u64::MAX, u64::MAX),
        })
        .collect();
    HeartbeatDigest::from_sorted(items).expect("sorted")
}

fn envelope(message: Message<WideId>) -> Envelope<WideId> {
    Envelope {
        network: NetworkId::new("a network name that is long enough", 1024),
        message,
        // The largest structure note (groups that size themselves), so the bound holds there.
        structure: Some(quickstore_behaviours::message::StructureNote {
            epoch: u32::MAX,
            level: u8::MAX,
            estimate: u64::MAX,
        }),
    }
}

/// Every message kind at the given scale (1.0 = the limits).
fn messages(id_len: usize, record_len: usize, name_len: usize, scale: f64) -> Vec<Message<WideId>> {
    let n = |limit: usize| ((limit as f64 * scale).ceil() as usize).clamp(1, limit);
    let entries = |count: usize| -> Vec<Entry<WideId>> {
        (0..count as u32)
            .map(|i| entry(i, id_len, record_len))
            .collect()
    };
    let tuples = |count: usize| -> Vec<Arc<FileTuple<WideId>>> {
        (0..count as u32)
            .map(|i| tuple(i, name_len, n(MAX_HOLDERS)))
            .collect()
    };
    vec![
        Message::Group(Arc::new(GroupGossip {
            digest: digest(n(MAX_DIGEST_ITEMS)),
            entries: entries(n(MAX_RATION_ENTRIES)),
            news: vec![u64::MAX; n(MAX_RATION_TUPLES)],
        })),
        Message::Want(Want {
            shorts: vec![u32::MAX; n(MAX_WANTED)],
        }),
        Message::Entries(Entries {
            entries: entries(n(MAX_REPLY_ENTRIES)),
        }),
        Message::Hello(Hello {
            kind: HelloKind::Join,
            sender: entry(0, id_len, record_len),
            group_entries: entries(n(MAX_RATION_ENTRIES)),
            contacts: entries(n(MAX_RATION_ENTRIES)),
            wanted_groups: vec![u32::MAX; 4],
            ask: vec![u32::MAX; n(MAX_CONTACTS_PER_GROUP)],
        }),
        Message::HelloReply(HelloReply {
            sender: entry(0, id_len, record_len),
            entries: entries(n(MAX_REPLY_ENTRIES)),
            vouched: digest(n(MAX_CONTACTS_PER_GROUP)),
        }),
        Message::ViewRequest(ViewRequest {
            sender: entry(0, id_len, record_len),
        }),
        Message::ViewReply(ViewReply {
            entries: entries(n(MAX_REPLY_ENTRIES)),
        }),
        Message::TuplePull(TuplePull {
            fingerprints: vec![u64::MAX; n(MAX_SYNC_TUPLES)],
        }),
        Message::SyncRequest(SyncRequest {
            buckets: vec![u64::MAX; SYNC_BUCKETS],
        }),
        Message::SyncReply(SyncReply {
            differing: (0..SYNC_BUCKETS as u8).collect(),
            tuples: tuples(n(MAX_SYNC_TUPLES)),
            complete: false,
        }),
        Message::SyncPush(SyncPush {
            tuples: tuples(n(MAX_SYNC_TUPLES)),
        }),
        Message::Lookup(LookupRequest {
            query: u64::MAX,
            name: tuple(0, name_len, 1).name.to_string(),
            proxy: true,
        }),
        Message::LookupReply(LookupReply {
            query: u64::MAX,
            tuple: Some(tuple(0, name_len, n(MAX_HOLDERS))),
            holders: entries(n(MAX_HOLDERS)),
            next: Some(entry(0, id_len, record_len)),
        }),
    ]
}

#[test]
fn the_largest_messages_fit_the_bound_and_round_trip() {
    let mut largest = 0;
    for message in messages(MAX_ID_BYTES, MAX_ADDRESS_RECORD_BYTES, MAX_NAME_BYTES, 1.0) {
        let envelope = envelope(message);
        let bytes = codec::encode(&envelope)
            .unwrap_or_else(|e| panic!("{} does not fit: {e}", envelope.message.kind()));
        assert_eq!(bytes.len(), encoded_len(&envelope));
        largest = largest.max(bytes.len());
        let back: Envelope<WideId> = codec::decode(&bytes).expect("decodes");
        assert_eq!(back, envelope);
    }
    // The bound is not slack for nothing: the largest message uses over half of it.
    assert!(largest > MAX_MESSAGE_BYTES / 2, "largest {largest}");
}

#[test]
fn the_codec_refuses_oversized_and_undecodable_bytes() {
    let too_big = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        codec::decode::<WideId>(&too_big),
        Err(CodecError::TooLarge(_))
    ));
    assert!(matches!(
        codec::decode::<WideId>(&[0xff, 0x00, 0x13]),
        Err(CodecError::Malformed(_))
    ));
    // A digest over the member bound is refused while decoding.
    let mut huge = Vec::new();
    for short in 0..=MAX_DIGEST_ITEMS as u32 {
        huge.extend_from_slice(&short.to_be_bytes());
        huge.extend_from_slice(&[0, 0]);
    }
    let bytes = cbor4ii::serde::to_vec(Vec::new(), &serde_bytes::Bytes::new(&huge)).unwrap();
    assert!(cbor4ii::serde::from_slice::<HeartbeatDigest>(&bytes).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any mix of sizes within the limits fits.
    #[test]
    fn messages_within_the_limits_fit(
        id_len in 1usize..=MAX_ID_BYTES,
        record_len in 0usize..=MAX_ADDRESS_RECORD_BYTES,
        name_len in 1usize..=MAX_NAME_BYTES,
        scale in 0.0f64..=1.0,
    ) {
        for message in messages(id_len, record_len, name_len, scale) {
            let envelope = envelope(message);
            let len = encoded_len(&envelope);
            prop_assert!(len <= MAX_MESSAGE_BYTES, "{} is {len} bytes", envelope.message.kind());
        }
    }
}
