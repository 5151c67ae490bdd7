//! Merging whole entries and file tuples: commutative, associative, idempotent, and never
//! backwards, so gossip in any order, repeated or not, converges.

use std::cmp::Ordering;

use proptest::prelude::*;
use quickstore_behaviours::limits::MAX_HOLDERS;
use quickstore_behaviours::tuple::{FileTuple, Version};
use quickstore_behaviours::{AddressRecord, Entry};

fn entry() -> impl Strategy<Value = Entry<u32>> {
    (
        0u64..4,
        0u64..6,
        proptest::collection::vec(any::<u8>(), 0..4),
        0u64..3,
    )
        .prop_map(|(incarnation, heartbeat, address, free_space)| Entry {
            id: 7,
            incarnation,
            heartbeat,
            address: AddressRecord::new(address).expect("short record"),
            free_space,
        })
}

fn tuple() -> impl Strategy<Value = FileTuple<u32>> {
    (
        0u64..3,
        0u8..3,
        0u64..3,
        proptest::collection::btree_set(0u32..12, 1..6),
        0u32..3,
        proptest::bool::ANY,
    )
        .prop_map(|(lamport, hash, size, holders, epoch, deleted)| FileTuple {
            name: "a/name".into(),
            version: Version {
                lamport,
                blake3: [hash; 32],
            },
            size,
            holders: holders.into_iter().collect(),
            epoch,
            deleted,
            auth: None,
        })
}

fn merged_entry(a: &Entry<u32>, b: &Entry<u32>) -> Entry<u32> {
    let mut out = a.clone();
    out.merge(b);
    out
}

fn merged_tuple(a: &FileTuple<u32>, b: &FileTuple<u32>) -> FileTuple<u32> {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #[test]
    fn entry_merge_is_a_semilattice(a in entry(), b in entry(), c in entry()) {
        // Commutative and idempotent.
        prop_assert_eq!(merged_entry(&a, &b), merged_entry(&b, &a));
        prop_assert_eq!(merged_entry(&a, &a), a.clone());
        // Associative.
        prop_assert_eq!(
            merged_entry(&merged_entry(&a, &b), &c),
            merged_entry(&a, &merged_entry(&b, &c))
        );
        // Never backwards: the result is at least as new as either side, stamp included.
        let m = merged_entry(&a, &b);
        prop_assert_ne!(m.newness(&a), Ordering::Less);
        prop_assert_ne!(m.newness(&b), Ordering::Less);
        prop_assert!(m.beat() >= a.beat() && m.beat() >= b.beat());
        // The flag says whether anything changed.
        let mut x = a.clone();
        prop_assert_eq!(x.merge(&b), x != a);
    }

    #[test]
    fn tuple_merge_is_a_semilattice(a in tuple(), b in tuple(), c in tuple()) {
        prop_assert_eq!(merged_tuple(&a, &b), merged_tuple(&b, &a));
        prop_assert_eq!(merged_tuple(&a, &a), a.clone());
        prop_assert_eq!(
            merged_tuple(&merged_tuple(&a, &b), &c),
            merged_tuple(&a, &merged_tuple(&b, &c))
        );
        let m = merged_tuple(&a, &b);
        prop_assert!(m.rank() >= a.rank() && m.rank() >= b.rank());
        // Equal ranks (version, holder-set epoch, tombstone) keep the holders of both sides
        // (the smallest, up to the bound); a higher epoch replaces the set.
        if a.rank() == b.rank() {
            let mut union: Vec<u32> = a.holders.iter().chain(&b.holders).copied().collect();
            union.sort_unstable();
            union.dedup();
            union.truncate(MAX_HOLDERS);
            prop_assert_eq!(&m.holders, &union);
        }
        prop_assert!(m.holders.windows(2).all(|w| w[0] < w[1]));
        let mut x = a.clone();
        prop_assert_eq!(x.merge(&b), x != a);
        // The copy-free test the tuple store runs first agrees with merging.
        prop_assert_eq!(a.merge_changes(&b), merged_tuple(&a, &b) != a);
    }

    #[test]
    fn is_normal_agrees_with_normalize(
        holders in proptest::collection::vec(0u32..12, 0..MAX_HOLDERS + 3),
        name in "[a-z\\x00]{0,3}",
    ) {
        let tuple = FileTuple {
            name: name.as_str().into(),
            version: Version { lamport: 1, blake3: [0; 32] },
            size: 0,
            holders,
            epoch: 0,
            deleted: false,
            auth: None,
        };
        let normal = tuple.clone().normalize().is_ok_and(|n| n == tuple);
        prop_assert_eq!(tuple.is_normal(), normal);
    }
}
