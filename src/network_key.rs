//! Private networks: a pre-shared key (libp2p's `pnet`, the key file format of IPFS private
//! swarms) that every node and client of the network holds. Connections are encrypted with
//! it before anything else is said, so a peer without the key (or with another one) cannot
//! connect at all. It covers TCP only: a private node runs no QUIC.
//!
//! File format (as go-libp2p and Kubo's `swarm.key`):
//!
//! ```text
//! /key/swarm/psk/1.0.0/
//! /base16/
//! <64 hex digits>
//! ```

use std::io::Write;
use std::path::Path;

use libp2p::pnet::PreSharedKey;

/// Largest key file read, in bytes (the format takes 100).
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why a network key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum NetworkKeyError {
    /// The file cannot be read.
    #[error("cannot read the network key {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not a key file.
    #[error(
        "{path} is not a network key ({why}): make one with `quickstore keygen --network FILE`"
    )]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The file cannot be written (or exists already).
    #[error("cannot write the network key {path}: {cause}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
}

/// Reads the network key at `path`.
pub fn load(path: &Path) -> Result<PreSharedKey, NetworkKeyError> {
    let shown = path.display().to_string();
    let read = |cause| NetworkKeyError::Read {
        path: shown.clone(),
        cause,
    };
    let length = std::fs::metadata(path).map_err(read)?.len();
    if length > MAX_KEY_FILE_BYTES {
        return Err(NetworkKeyError::Format {
            path: shown,
            why: format!("{length} bytes, a key file has about 100"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    text.parse()
        .map_err(|e: libp2p::pnet::KeyParseError| NetworkKeyError::Format {
            path: shown,
            why: e.to_string(),
        })
}

/// Makes a new random key and writes it to `path` (readable by its owner only); an existing
/// file is never overwritten.
pub fn generate(path: &Path) -> Result<PreSharedKey, NetworkKeyError> {
    let key = PreSharedKey::new(rand::random());
    let write = |cause| NetworkKeyError::Write {
        path: path.display().to_string(),
        cause,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(write)?;
    file.write_all(key.to_key_file().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write)?;
    Ok(key)
}

/// Reads the key at `path` when one is given.
pub fn load_optional(path: Option<&Path>) -> Result<Option<PreSharedKey>, NetworkKeyError> {
    path.map(load).transpose()
}

/// Whether a connection error reads like a failed private-network handshake: with pnet,
/// a peer without the key or with another one garbles the protocol negotiation that follows
/// (it fails, or hangs until the upgrade or the caller times out). Only a hint: a timeout
/// has other causes.
pub fn looks_like_key_mismatch(error: &str) -> bool {
    [
        "Multistream select failed",
        "negotiate transport protocol",
        "Timeout has been reached",
        "no connection within",
    ]
    .iter()
    .any(|sign| error.contains(sign))
}

/// What to tell someone whose connection failed a handshake, given whether this side runs a
/// private network.
pub fn mismatch_hint(private: bool) -> &'static str {
    if private {
        "the peer has no network key or another one than this side's --network-key"
    } else {
        "the peer may run a private network: pass its key with --network-key FILE"
    }
}

/// What a client tells its user when a node could not be reached this way: a full node
/// (at `node.max_connections`) looks the same from outside as a key mismatch.
pub fn client_hint(private: bool) -> String {
    format!(
        "the node may be at its connection limit, or {}",
        mismatch_hint(private)
    )
}

/// Peers (or addresses) whose failed handshakes were logged, so that a peer retrying every
/// few seconds is logged once: at most [`Self::BOUND`] are remembered, then the oldest go.
#[derive(Debug, Default)]
pub struct HandshakeFailures {
    logged: std::collections::VecDeque<String>,
}

impl HandshakeFailures {
    /// Remembered at most.
    pub const BOUND: usize = 1024;

    /// Whether `who`'s failure is the first one seen (to be logged at warning level).
    pub fn first(&mut self, who: String) -> bool {
        if self.logged.contains(&who) {
            return false;
        }
        if self.logged.len() == Self::BOUND {
            self.logged.pop_front();
        }
        self.logged.push_back(who);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_loads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("swarm.key");
        let made = generate(&path).expect("generated");
        assert_eq!(load(&path).expect("loaded"), made);
        assert!(matches!(
            generate(&path),
            Err(NetworkKeyError::Write { .. })
        ));
        assert_eq!(load(&path).expect("still the first"), made);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_peer_retrying_is_logged_once_and_the_memory_is_bounded() {
        let mut seen = HandshakeFailures::default();
        assert!(seen.first("127.0.0.1".into()));
        assert!(!seen.first("127.0.0.1".into()));
        for i in 0..2 * HandshakeFailures::BOUND {
            seen.first(format!("peer {i}"));
        }
        assert_eq!(seen.logged.len(), HandshakeFailures::BOUND);
        assert!(seen.first("127.0.0.1".into()), "forgotten after the bound");
    }

    #[test]
    fn bad_key_files_are_refused_with_the_path_and_the_fix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "/key/swarm/psk/1.0.0/\n/base16/\nabc\n").expect("write");
        let e = load(&path).expect_err("short key").to_string();
        assert!(e.contains("bad.key") && e.contains("keygen"), "{e}");
        let missing = load(&dir.path().join("none.key")).expect_err("missing");
        assert!(matches!(missing, NetworkKeyError::Read { .. }));
        std::fs::write(&path, vec![b'a'; 10_000]).expect("write");
        assert!(matches!(load(&path), Err(NetworkKeyError::Format { .. })));
    }
}
