//! The node's ed25519 identity, kept in `DATA_DIR/identity.key` (libp2p protobuf encoding,
//! mode 0600) so that a node keeps its PeerId across restarts.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use libp2p::identity::Keypair;

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "identity.key";

/// Loads the key in `dir`, or creates one (mode 0600) if there is none.
pub fn load_or_create(dir: &Path) -> anyhow::Result<Keypair> {
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} is readable by others (mode {:o}); it should be 0600",
                    path.display(),
                    mode & 0o777
                );
            }
            Keypair::from_protobuf_encoding(&bytes)
                .with_context(|| format!("{} is not a libp2p key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            write_key(&path, &keypair)?;
            Ok(keypair)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `keypair` to `path` with mode 0600; refuses to overwrite.
pub fn write_key(path: &Path, keypair: &Keypair) -> anyhow::Result<()> {
    let bytes = keypair.to_protobuf_encoding()?;
    if path.exists() {
        bail!("{} exists; not overwriting a key", path.display());
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    Ok(())
}
