use super::*;
use crate::SimId;
use crate::tuple::Version;

/// A fixed key: the seed is 32 bytes of `n`.
pub(crate) fn key(n: u8) -> ed25519::Keypair {
    let mut seed = [n; 32];
    ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes(&mut seed).expect("32 bytes"))
}

fn public(key: &ed25519::Keypair) -> KeyBytes {
    key.public().to_bytes()
}

fn tuple(name: &str, lamport: u64, deleted: bool) -> FileTuple<SimId> {
    FileTuple {
        name: name.into(),
        version: Version {
            lamport,
            blake3: [lamport as u8; 32],
        },
        size: if deleted { 0 } else { 10 + lamport },
        holders: vec![SimId(1)],
        epoch: 0,
        deleted,
        auth: None,
    }
}

fn signed(
    mut t: FileTuple<SimId>,
    writer: &ed25519::Keypair,
    owner: &KeyBytes,
    grant: Option<Grant>,
) -> FileTuple<SimId> {
    t.auth = Some(Arc::new(sign_version(
        writer,
        SignedVersion::from(&t),
        owner,
        grant,
    )));
    t
}

fn own(t: FileTuple<SimId>, writer: &ed25519::Keypair) -> FileTuple<SimId> {
    let owner = public(writer);
    signed(t, writer, &owner, None)
}

#[test]
fn an_owner_signed_version_verifies_and_any_change_to_it_does_not() {
    let a = key(1);
    let t = own(tuple("a/x", 3, false), &a);
    let auth = t.auth.clone().expect("signed");
    assert_eq!(verify(SignedVersion::from(&t), &auth), Ok(()));
    let mut later = t.clone();
    later.version.lamport = 9;
    assert_eq!(
        verify(SignedVersion::from(&later), &auth),
        Err(AuthError::BadSignature)
    );
    let mut bigger = t.clone();
    bigger.size += 1;
    assert_eq!(
        verify(SignedVersion::from(&bigger), &auth),
        Err(AuthError::BadSignature)
    );
    let mut deleted = t.clone();
    deleted.deleted = true;
    assert_eq!(
        verify(SignedVersion::from(&deleted), &auth),
        Err(AuthError::BadSignature)
    );
    let mut renamed = t.clone();
    renamed.name = "a/y".into();
    assert_eq!(
        verify(SignedVersion::from(&renamed), &auth),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn a_version_signed_by_another_key_than_its_owner_needs_a_grant() {
    let (a, b) = (key(1), key(2));
    let t = signed(tuple("a/x", 3, false), &b, &public(&a), None);
    let auth = t.auth.clone().expect("signed");
    assert_eq!(
        verify(SignedVersion::from(&t), &auth),
        Err(AuthError::NotGranted("a/x".into()))
    );
}

#[test]
fn a_grant_of_a_prefix_lets_the_grantee_write_names_under_it_only() {
    let (a, b) = (key(1), key(2));
    let grant = sign_grant(&a, &public(&b), "a/");
    let inside = signed(tuple("a/x", 3, false), &b, &public(&a), Some(grant.clone()));
    assert_eq!(admits(WritePolicy::Signed, None, &inside), Ok(()));
    let outside = signed(tuple("b/x", 3, false), &b, &public(&a), Some(grant.clone()));
    assert_eq!(
        admits(WritePolicy::Signed, None, &outside),
        Err(AuthError::NotGranted("b/x".into()))
    );
    // A grant to someone else is not B's.
    let to_c = sign_grant(&a, &public(&key(3)), "a/");
    let stolen = signed(tuple("a/x", 3, false), &b, &public(&a), Some(to_c));
    assert_eq!(
        admits(WritePolicy::Signed, None, &stolen),
        Err(AuthError::NotGranted("a/x".into()))
    );
    // A grant B signed itself, claiming to be A's, does not verify.
    let forged = Grant {
        signature: sign_grant(&b, &public(&b), "a/").signature,
        ..grant
    };
    let with_forged = signed(tuple("a/x", 3, false), &b, &public(&a), Some(forged));
    assert_eq!(
        admits(WritePolicy::Signed, None, &with_forged),
        Err(AuthError::BadGrant)
    );
}

#[test]
fn the_first_version_fixes_the_owner() {
    let (a, b) = (key(1), key(2));
    let first = Arc::new(own(tuple("a/x", 1, false), &a));
    let by_b = own(tuple("a/x", 2, false), &b);
    assert!(matches!(
        admits(WritePolicy::Signed, Some(&first), &by_b),
        Err(AuthError::NotOwner { .. })
    ));
    let tombstone_by_b = own(tuple("a/x", 2, true), &b);
    assert!(matches!(
        admits(WritePolicy::Signed, Some(&first), &tombstone_by_b),
        Err(AuthError::NotOwner { .. })
    ));
    let by_a = own(tuple("a/x", 2, false), &a);
    assert_eq!(admits(WritePolicy::Signed, Some(&first), &by_a), Ok(()));
    let tombstone_by_a = own(tuple("a/x", 2, true), &a);
    assert_eq!(
        admits(WritePolicy::Signed, Some(&first), &tombstone_by_a),
        Ok(())
    );
}

#[test]
fn an_unsigned_version_never_replaces_a_signed_one_and_a_signed_one_claims_an_unsigned_name() {
    let a = key(1);
    let legacy = tuple("a/x", 1, false);
    // A name from before signed writes is kept.
    assert_eq!(admits(WritePolicy::Signed, None, &legacy), Ok(()));
    let held_legacy = Arc::new(legacy);
    assert_eq!(
        admits(
            WritePolicy::Signed,
            Some(&held_legacy),
            &tuple("a/x", 2, false)
        ),
        Ok(())
    );
    let claimed = own(tuple("a/x", 2, false), &a);
    assert_eq!(
        admits(WritePolicy::Signed, Some(&held_legacy), &claimed),
        Ok(())
    );
    // Once signed, an unsigned version of it is refused, newer or a tombstone.
    let held = Arc::new(claimed);
    for unsigned in [tuple("a/x", 3, false), tuple("a/x", 3, true)] {
        assert_eq!(
            admits(WritePolicy::Signed, Some(&held), &unsigned),
            Err(AuthError::Unsigned)
        );
        assert_eq!(admits(WritePolicy::Open, Some(&held), &unsigned), Ok(()));
    }
}

#[test]
fn new_holders_of_a_held_version_need_no_new_signature_and_older_versions_are_not_checked() {
    let a = key(1);
    let held = Arc::new(own(tuple("a/x", 2, false), &a));
    let mut more = FileTuple::clone(&held);
    more.holders.push(SimId(2));
    more.epoch = 1;
    assert_eq!(admits(WritePolicy::Signed, Some(&held), &more), Ok(()));
    let older = tuple("a/x", 1, false);
    assert_eq!(admits(WritePolicy::Signed, Some(&held), &older), Ok(()));
}

#[test]
fn a_replayed_signature_on_a_newer_counter_is_refused() {
    let a = key(1);
    let held = Arc::new(own(tuple("a/x", 5, true), &a));
    let old = own(tuple("a/x", 4, false), &a);
    let mut replayed = old.clone();
    replayed.version.lamport = 6;
    assert_eq!(
        admits(WritePolicy::Signed, Some(&held), &replayed),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn grant_lists_are_under_the_reserved_root() {
    assert!(GRANTS_PREFIX.starts_with(RESERVED_ROOT));
}

#[test]
fn grant_list_names_belong_to_the_key_they_name() {
    let (a, b) = (key(1), key(2));
    let name = grants_name(&public(&a), &public(&b));
    assert_eq!(
        admits(WritePolicy::Signed, None, &own(tuple(&name, 1, false), &a)),
        Ok(())
    );
    assert_eq!(
        admits(WritePolicy::Signed, None, &own(tuple(&name, 1, false), &b)),
        Err(AuthError::ReservedName)
    );
}

#[test]
fn a_key_that_is_not_a_curve_point_is_refused() {
    let a = key(1);
    let mut t = own(tuple("a/x", 1, false), &a);
    let mut auth = WriteAuth::clone(t.auth.as_deref().expect("signed"));
    // y = 2 is not the y coordinate of any point of edwards25519.
    auth.owner = [0; 32];
    auth.owner[0] = 2;
    t.auth = Some(Arc::new(auth));
    assert!(matches!(
        admits(WritePolicy::Signed, None, &t),
        Err(AuthError::BadKey | AuthError::BadSignature)
    ));
}
