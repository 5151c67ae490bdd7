//! Signing what the client writes: the owner a version is signed for, the grant that lets a
//! writer other than the owner write a name, and the grant lists (`quickstore grant`).
//!
//! An owner's grants to one key are one small file in the network, named
//! `.quickstore/grants/<owner key hex>/<grantee key hex>`: a CBOR array of signed
//! [`Grant`]s, at most [`MAX_GRANTS`]. Only the owner can write that name (the nodes check
//! it), and anyone can read it; a writer attaches the grant covering the name to its
//! signature, so that every node checks the version without looking anything up.

use anyhow::{anyhow, bail};
use quickstore_behaviours::auth::{
    Grant, KeyBytes, SignedVersion, WriteAuth, grant_verifies, grants_name, sign_version,
};

use super::get::fetch_small;
use super::report::shown;
use super::session::Session;

/// Grants one grant list holds at most.
pub const MAX_GRANTS: usize = 64;
/// Largest grant list read, in bytes (64 grants of 1 KiB prefixes fit).
pub const MAX_GRANTS_BYTES: u64 = 128 * 1024;

/// Whom a version is signed for: the name's owner, and the owner's grant when the
/// session's identity is not the owner.
#[derive(Debug, Clone)]
pub(super) struct Authority {
    owner: KeyBytes,
    grant: Option<Grant>,
}

impl Authority {
    /// Signs `version` with the session's identity.
    pub(super) fn sign(
        &self,
        session: &Session,
        version: SignedVersion<'_>,
    ) -> anyhow::Result<WriteAuth> {
        let key = session.identity()?;
        Ok(sign_version(key, version, &self.owner, self.grant.clone()))
    }
}

/// The authority to write `name`, whose newest version is owned by `owner` (none: a new
/// name, which the session's identity will own); a clear error when the identity is not the
/// owner and holds no grant covering the name.
pub(super) async fn authority(
    session: &Session,
    name: &str,
    owner: Option<KeyBytes>,
) -> anyhow::Result<Authority> {
    let key = session.identity()?;
    let me = key.public().to_bytes();
    let owner = owner.unwrap_or(me);
    if owner == me {
        return Ok(Authority { owner, grant: None });
    }
    let grants = read_grants(session, &owner, &me).await?;
    let Some(grant) = covering(&grants, name) else {
        let owner_id = super::report::key_shown(&owner);
        let my_id = crate::client_identity::peer_id(key);
        bail!(
            "refused: {} is owned by {owner_id}, and this identity ({my_id}) holds no grant \
             covering it; its owner can allow it with `quickstore grant PREFIX {my_id}`",
            shown(name)
        );
    };
    Ok(Authority {
        owner,
        grant: Some(grant),
    })
}

/// The grants `owner` signed for `grantee` (those that verify), from the network.
pub(super) async fn read_grants(
    session: &Session,
    owner: &KeyBytes,
    grantee: &KeyBytes,
) -> anyhow::Result<Vec<Grant>> {
    let name = grants_name(owner, grantee);
    let Some(bytes) = fetch_small(session, &name, MAX_GRANTS_BYTES).await? else {
        return Ok(Vec::new());
    };
    let grants = decode(&bytes).map_err(|e| anyhow!("grant list {name:?} is unreadable: {e}"))?;
    Ok(grants
        .into_iter()
        .filter(|g| g.grantee == *grantee && grant_verifies(owner, g))
        .collect())
}

/// The grant with the longest prefix of `name`.
pub fn covering(grants: &[Grant], name: &str) -> Option<Grant> {
    grants
        .iter()
        .filter(|g| name.starts_with(&g.prefix))
        .max_by_key(|g| g.prefix.len())
        .cloned()
}

/// A grant list's bytes: a CBOR array of grants.
pub fn encode(grants: &[Grant]) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), &grants).unwrap_or_default()
}

/// Reads a grant list; more than [`MAX_GRANTS`] is refused.
pub fn decode(bytes: &[u8]) -> anyhow::Result<Vec<Grant>> {
    let grants: Vec<Grant> = cbor4ii::serde::from_slice(bytes)?;
    if grants.len() > MAX_GRANTS {
        bail!("{} grants, more than {MAX_GRANTS}", grants.len());
    }
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::ed25519;
    use quickstore_behaviours::auth::sign_grant;

    #[test]
    fn the_longest_granted_prefix_covers_a_name() {
        let owner = ed25519::Keypair::generate();
        let to = ed25519::Keypair::generate().public().to_bytes();
        let grants = vec![
            sign_grant(&owner, &to, "a/"),
            sign_grant(&owner, &to, "a/b/"),
            sign_grant(&owner, &to, "c"),
        ];
        assert_eq!(
            covering(&grants, "a/b/x").map(|g| g.prefix),
            Some("a/b/".into())
        );
        assert_eq!(
            covering(&grants, "a/x").map(|g| g.prefix),
            Some("a/".into())
        );
        assert_eq!(covering(&grants, "b/x"), None);
        assert_eq!(decode(&encode(&grants)).expect("decodes"), grants);
    }

    #[test]
    fn an_oversized_grant_list_is_refused() {
        let owner = ed25519::Keypair::generate();
        let to = [7; 32];
        let grants: Vec<Grant> = (0..=MAX_GRANTS)
            .map(|i| sign_grant(&owner, &to, &format!("p{i}/")))
            .collect();
        assert!(decode(&encode(&grants)).is_err());
        assert!(decode(b"\xff\x00").is_err());
    }
}
