//! The CLI's persistent writer identity: an ed25519 key that signs every version the client
//! writes (put, rm, grant). Kept in `~/.config/quickstore/client.key` (libp2p protobuf
//! encoding, mode 0600) unless `--identity FILE` names another; made on first use.
//!
//! It is not the node's identity (`DATA_DIR/identity.key`) nor the client peer's (a fresh
//! key each run): a person keeps it to keep owning their names.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};
use quickstore_behaviours::auth::KeyBytes;

/// The default identity file: `~/.config/quickstore/client.key` (the platform's config
/// directory).
pub fn default_path() -> anyhow::Result<PathBuf> {
    dirs::config_dir()
        .map(|dir| dir.join("quickstore").join("client.key"))
        .ok_or_else(|| anyhow!("no config directory (HOME unset?); pass --identity FILE"))
}

/// Loads the identity at `path` (or the default one), making it (mode 0600) if there is
/// none. Two processes making it at once end with the same key.
pub fn load_or_create(path: Option<&Path>) -> anyhow::Result<ed25519::Keypair> {
    let path = match path {
        Some(path) => path.to_path_buf(),
        None => default_path()?,
    };
    match std::fs::read(&path) {
        Ok(bytes) => decode(&path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(e) => Err(e).with_context(|| format!("cannot read identity {}", path.display())),
    }
}

/// Reads an identity file's bytes (`path` names it in the error).
pub fn decode(path: &Path, bytes: &[u8]) -> anyhow::Result<ed25519::Keypair> {
    Keypair::from_protobuf_encoding(bytes)
        .ok()
        .and_then(|k| k.try_into_ed25519().ok())
        .ok_or_else(|| anyhow!("{} is not an ed25519 libp2p key", path.display()))
}

/// Writes a new key to a temporary file and links it into place: the name appears whole or
/// not at all, and a key another process linked first is kept and read.
fn create(path: &Path) -> anyhow::Result<ed25519::Keypair> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let keypair = ed25519::Keypair::generate();
    let bytes = Keypair::from(keypair.clone()).to_protobuf_encoding()?;
    let temp = dir.join(format!(".client.key.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            tracing::info!("made a new client identity in {}", path.display());
            Ok(keypair)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            decode(path, &std::fs::read(path)?)
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// The PeerId of an identity.
pub fn peer_id(key: &ed25519::Keypair) -> PeerId {
    PeerId::from_public_key(&PublicKey::from(key.public()))
}

/// The PeerId of a raw ed25519 key.
pub fn peer_id_of(key: &KeyBytes) -> Option<PeerId> {
    let public = ed25519::PublicKey::try_from_bytes(key).ok()?;
    Some(PeerId::from_public_key(&PublicKey::from(public)))
}

/// The raw ed25519 key inside a PeerId (ed25519 PeerIds embed their key).
pub fn key_of(peer: &PeerId) -> anyhow::Result<KeyBytes> {
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        bail!("{peer} does not embed its key (not an ed25519 PeerId)");
    }
    let public = PublicKey::try_decode_protobuf(multihash.digest())
        .with_context(|| format!("{peer} does not embed a valid key"))?;
    let ed = public
        .try_into_ed25519()
        .map_err(|_| anyhow!("{peer} is not an ed25519 PeerId"))?;
    Ok(ed.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("client.key");
        let made = load_or_create(Some(&path)).expect("made");
        let read = load_or_create(Some(&path)).expect("read");
        assert_eq!(made.public(), read.public());
        let mode = std::fs::metadata(&path).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_peer_id_gives_back_its_key() {
        let key = ed25519::Keypair::generate();
        let peer = peer_id(&key);
        assert_eq!(key_of(&peer).expect("key"), key.public().to_bytes());
        assert_eq!(peer_id_of(&key.public().to_bytes()), Some(peer));
        assert!(key_of(&PeerId::random()).is_err());
    }

    #[test]
    fn a_file_that_is_not_a_key_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("client.key");
        std::fs::write(&path, b"not a key").expect("write");
        let e = load_or_create(Some(&path)).expect_err("refused");
        assert!(
            e.to_string().contains("is not an ed25519 libp2p key"),
            "{e}"
        );
    }
}
