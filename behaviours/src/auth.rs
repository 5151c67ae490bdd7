//! Who may write a name: signed versions, owners and grants.
//!
//! In a network with signed writes (the real node's default) every version of a name — a put
//! or a tombstone — carries a [`WriteAuth`]: the name's owner key, the writer's key when it is
//! not the owner, the writer's ed25519 signature over the version ([`version_message`]), and,
//! for a writer other than the owner, the owner's [`Grant`] of a name prefix to the writer
//! ([`grant_message`]). The check needs nothing but the tuple ([`verify`]); the one rule that
//! needs state is [`admits`]: the first version a node learns fixes the name's owner, and a
//! newer version with another owner is dropped.
//!
//! The holder set and its epoch are not signed: they change without the writer (repair,
//! hand-off) and say only where the bytes are; a reader checks the bytes against the signed
//! BLAKE3 hash.
//!
//! Keys are raw 32-byte ed25519 public keys, signatures 64 bytes, as in RFC 8032 (the keys
//! libp2p's ed25519 PeerIds are made of). The signed messages are byte strings with a domain
//! prefix, so that no signature made here is valid for anything else.

use std::sync::Arc;

use libp2p::identity::ed25519;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::limits::MAX_NAME_BYTES;
use crate::tuple::FileTuple;

/// Domain prefix of a signed version.
pub const VERSION_DOMAIN: &[u8] = b"quickstore/version/1\0";
/// Domain prefix of a signed grant.
pub const GRANT_DOMAIN: &[u8] = b"quickstore/grant/1\0";
/// Names under this prefix are the network's own records (grant lists); listings leave them
/// out unless asked.
pub const RESERVED_ROOT: &str = ".quickstore/";
/// Names under this prefix are grant lists: `.quickstore/grants/<owner hex>/<grantee hex>`.
/// Only the key named by `<owner hex>` may own such a name.
pub const GRANTS_PREFIX: &str = ".quickstore/grants/";

/// A raw ed25519 public key.
pub type KeyBytes = [u8; 32];

/// The owner's delegation of every name starting with `prefix` to `grantee`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// The name prefix granted (0 to [`MAX_NAME_BYTES`] bytes; empty grants every name).
    #[serde(rename = "p")]
    pub prefix: String,
    /// The key the names are granted to.
    #[serde(rename = "t", with = "serde_bytes")]
    pub grantee: KeyBytes,
    /// The owner's signature over [`grant_message`].
    #[serde(rename = "s", with = "serde_bytes")]
    pub signature: [u8; 64],
}

/// The authority of one version: who owns the name, who wrote it, and the proof.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WriteAuth {
    /// The name's owner (fixed by its first version).
    #[serde(rename = "o", with = "serde_bytes")]
    pub owner: KeyBytes,
    /// The writer, when not the owner. Omitted on the wire when the owner wrote.
    #[serde(
        rename = "w",
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_bytes"
    )]
    pub writer: Option<KeyBytes>,
    /// The writer's signature over [`version_message`].
    #[serde(rename = "s", with = "serde_bytes")]
    pub signature: [u8; 64],
    /// The owner's grant to the writer, when not the owner. Omitted when the owner wrote.
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

impl WriteAuth {
    /// The key that signed the version.
    pub fn writer(&self) -> &KeyBytes {
        self.writer.as_ref().unwrap_or(&self.owner)
    }
}

/// What [`version_message`] signs, besides the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedVersion<'a> {
    /// The name.
    pub name: &'a str,
    /// Lamport counter.
    pub lamport: u64,
    /// BLAKE3 hash of the bytes (zeros for a tombstone).
    pub blake3: &'a [u8; 32],
    /// Size in bytes (0 for a tombstone).
    pub size: u64,
    /// A tombstone.
    pub deleted: bool,
}

impl<'a, I> From<&'a FileTuple<I>> for SignedVersion<'a> {
    fn from(tuple: &'a FileTuple<I>) -> Self {
        SignedVersion {
            name: &tuple.name,
            lamport: tuple.version.lamport,
            blake3: &tuple.version.blake3,
            size: tuple.size,
            deleted: tuple.deleted,
        }
    }
}

/// The bytes a writer signs: [`VERSION_DOMAIN`], the name's length (u32, big-endian) and
/// bytes, the Lamport counter (u64 BE), the BLAKE3 hash (32 bytes), the size (u64 BE), the
/// tombstone flag (one byte, 0 or 1) and the owner key (32 bytes).
pub fn version_message(version: SignedVersion<'_>, owner: &KeyBytes) -> Vec<u8> {
    let mut m = Vec::with_capacity(VERSION_DOMAIN.len() + 4 + version.name.len() + 81);
    m.extend_from_slice(VERSION_DOMAIN);
    m.extend_from_slice(&(version.name.len() as u32).to_be_bytes());
    m.extend_from_slice(version.name.as_bytes());
    m.extend_from_slice(&version.lamport.to_be_bytes());
    m.extend_from_slice(version.blake3);
    m.extend_from_slice(&version.size.to_be_bytes());
    m.push(u8::from(version.deleted));
    m.extend_from_slice(owner);
    m
}

/// The bytes an owner signs to grant: [`GRANT_DOMAIN`], the owner key, the grantee key, the
/// prefix's length (u32 BE) and bytes.
pub fn grant_message(owner: &KeyBytes, grantee: &KeyBytes, prefix: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(GRANT_DOMAIN.len() + 68 + prefix.len());
    m.extend_from_slice(GRANT_DOMAIN);
    m.extend_from_slice(owner);
    m.extend_from_slice(grantee);
    m.extend_from_slice(&(prefix.len() as u32).to_be_bytes());
    m.extend_from_slice(prefix.as_bytes());
    m
}

/// Signs `version` as `writer`, for the name's `owner` (the writer itself, or an owner that
/// granted it `grant`).
pub fn sign_version(
    writer: &ed25519::Keypair,
    version: SignedVersion<'_>,
    owner: &KeyBytes,
    grant: Option<Grant>,
) -> WriteAuth {
    let me = writer.public().to_bytes();
    let signature = to_signature(&writer.sign(&version_message(version, owner)));
    WriteAuth {
        owner: *owner,
        writer: (me != *owner).then_some(me),
        signature,
        grant: if me == *owner { None } else { grant },
    }
}

/// Signs a grant of `prefix` to `grantee` as `owner`.
pub fn sign_grant(owner: &ed25519::Keypair, grantee: &KeyBytes, prefix: &str) -> Grant {
    let message = grant_message(&owner.public().to_bytes(), grantee, prefix);
    Grant {
        prefix: prefix.to_string(),
        grantee: *grantee,
        signature: to_signature(&owner.sign(&message)),
    }
}

fn to_signature(bytes: &[u8]) -> [u8; 64] {
    let mut signature = [0; 64];
    signature.copy_from_slice(&bytes[..64]);
    signature
}

/// Why a version's authority was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// An unsigned version of a name whose held version is signed.
    #[error("the version is not signed, and the name's held version is")]
    Unsigned,
    /// A key is not a valid ed25519 point.
    #[error("a key in the version's signature is not an ed25519 key")]
    BadKey,
    /// The writer's signature does not match the version.
    #[error("the version's signature does not verify")]
    BadSignature,
    /// A writer other than the owner without a grant covering the name.
    #[error("the writer holds no grant from the name's owner covering {0:?}")]
    NotGranted(String),
    /// The owner's grant does not verify.
    #[error("the grant's signature does not verify")]
    BadGrant,
    /// A newer version under another owner than the name's.
    #[error("{name:?} is owned by {owner}; the version is signed for {claimed}")]
    NotOwner {
        /// The name.
        name: String,
        /// The owner's key, hex.
        owner: String,
        /// The owner the refused version claims, hex.
        claimed: String,
    },
    /// A grant list name owned by another key than the one it names.
    #[error("names under {GRANTS_PREFIX}<key>/ may be written by that key only")]
    ReservedName,
}

fn public(key: &KeyBytes) -> Result<ed25519::PublicKey, AuthError> {
    ed25519::PublicKey::try_from_bytes(key).map_err(|_| AuthError::BadKey)
}

/// Checks that `auth` proves `version`: the writer's signature, and for a writer other than
/// the owner the owner's grant of a prefix of the name. Needs no state.
pub fn verify(version: SignedVersion<'_>, auth: &WriteAuth) -> Result<(), AuthError> {
    if version.name.len() > MAX_NAME_BYTES {
        return Err(AuthError::BadSignature);
    }
    if let Some(rest) = version.name.strip_prefix(GRANTS_PREFIX) {
        let owner_hex = rest.split('/').next().unwrap_or_default();
        if owner_hex != hex(&auth.owner) {
            return Err(AuthError::ReservedName);
        }
    }
    let writer = auth.writer();
    let message = version_message(version, &auth.owner);
    if !public(writer)?.verify(&message, &auth.signature) {
        return Err(AuthError::BadSignature);
    }
    if *writer == auth.owner {
        return Ok(());
    }
    let Some(grant) = &auth.grant else {
        return Err(AuthError::NotGranted(version.name.to_string()));
    };
    if grant.grantee != *writer || !version.name.starts_with(&grant.prefix) {
        return Err(AuthError::NotGranted(version.name.to_string()));
    }
    if !grant_verifies(&auth.owner, grant) {
        return Err(AuthError::BadGrant);
    }
    Ok(())
}

/// Whether `grant` is `owner`'s signed grant (of its prefix, to its grantee).
pub fn grant_verifies(owner: &KeyBytes, grant: &Grant) -> bool {
    let message = grant_message(owner, &grant.grantee, &grant.prefix);
    public(owner).is_ok_and(|key| key.verify(&message, &grant.signature))
}

/// Who may write names in a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WritePolicy {
    /// Every version must be signed by the name's owner or a key it granted a prefix to.
    Signed,
    /// Anyone may write or delete any name; signatures are not checked. (The simulator's and
    /// the sans-I/O core's default.)
    #[default]
    Open,
}

/// Whether a node that holds `current` for a name (or nothing) takes `incoming`: under
/// [`WritePolicy::Signed`], a version whose signed part differs from the held one must carry
/// a valid [`WriteAuth`] for the same owner as the held version. A tuple that only brings
/// holders (the same signed part) is taken without checking a signature again. An unsigned
/// version is taken only where the held version (if any) is unsigned too: names from before
/// signed writes are kept, and the nodes' put and delete paths refuse unsigned writes.
pub fn admits<I: NodeId>(
    policy: WritePolicy,
    current: Option<&Arc<FileTuple<I>>>,
    incoming: &FileTuple<I>,
) -> Result<(), AuthError> {
    if policy == WritePolicy::Open {
        return Ok(());
    }
    if let Some(current) = current {
        let same = current.version == incoming.version
            && current.deleted == incoming.deleted
            && current.size == incoming.size
            && current.auth == incoming.auth;
        if same {
            return Ok(());
        }
        if incoming.rank() < current.rank() {
            // Merging an older version changes nothing; no need to check it.
            return Ok(());
        }
    }
    let Some(auth) = &incoming.auth else {
        // An unsigned version (written before signed writes, or in an open network): taken
        // only where no signed version of the name is held, and it never replaces one. So a
        // node upgraded in place keeps its names, while an owned name stays its owner's.
        return match current {
            Some(current) if current.auth.is_some() => Err(AuthError::Unsigned),
            _ => Ok(()),
        };
    };
    verify(SignedVersion::from(incoming), auth)?;
    if let Some(owner) = current.and_then(|c| c.auth.as_ref()).map(|a| a.owner)
        && owner != auth.owner
    {
        return Err(AuthError::NotOwner {
            name: incoming.name.to_string(),
            owner: hex(&owner),
            claimed: hex(&auth.owner),
        });
    }
    Ok(())
}

/// Lower-case hex of a key.
pub fn hex(key: &KeyBytes) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of the grant list of `owner` for `grantee`.
pub fn grants_name(owner: &KeyBytes, grantee: &KeyBytes) -> String {
    format!("{GRANTS_PREFIX}{}/{}", hex(owner), hex(grantee))
}

#[cfg(test)]
mod tests;
