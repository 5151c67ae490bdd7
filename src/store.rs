//! What a node keeps across restarts, in redb (`DATA_DIR/node.redb`): its incarnation (bumped
//! at every start), the peers it knew (group view and contacts, with their signed address
//! records) for a fast rejoin, and the file tuples it holds. Every call blocks on disk: callers run it with
//! `tokio::task::spawn_blocking`, never on the swarm task.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// PeerId bytes → signed address record (libp2p signed envelope).
const PEERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("peers");

/// File name → the CBOR of a file tuple this node holds.
const TUPLES: TableDefinition<&str, &[u8]> = TableDefinition::new("tuples");

/// File name → the CBOR list of versions this node keeps of it.
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");

/// A remembered peer: PeerId bytes and its signed address record bytes.
pub type RememberedPeer = (Vec<u8>, Vec<u8>);

/// Peers remembered at most.
pub const MAX_REMEMBERED: usize = 512;

/// Errors of the node store.
#[derive(Debug, thiserror::Error)]
#[error("node store: {0}")]
pub struct StoreError(#[from] redb::Error);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        StoreError(e.into())
    }
}
impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        StoreError(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError(e.into())
    }
}

/// The node's database.
pub struct NodeStore {
    db: Database,
}

impl NodeStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = Database::create(dir.join("node.redb"))?;
        Ok(Self { db })
    }

    /// Bumps and returns the incarnation: 1 at the first start, then one more per start.
    pub fn bump_incarnation(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let next = {
            let mut meta = txn.open_table(META)?;
            let current = meta.get("incarnation")?.map(|v| v.value()).unwrap_or(0);
            let next = current + 1;
            meta.insert("incarnation", next)?;
            next
        };
        txn.commit()?;
        Ok(next)
    }

    /// Raises the stored incarnation to `at_least` (the node jumped above a relayed stamp).
    pub fn raise_incarnation(&self, at_least: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let current = meta.get("incarnation")?.map(|v| v.value()).unwrap_or(0);
            if at_least > current {
                meta.insert("incarnation", at_least)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Replaces the remembered peers (at most [`MAX_REMEMBERED`]).
    pub fn save_peers(&self, peers: &[RememberedPeer]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(PEERS)?;
            table.retain(|_, _| false)?;
            for (peer, record) in peers.iter().take(MAX_REMEMBERED) {
                table.insert(peer.as_slice(), record.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The remembered peers: (PeerId bytes, signed record bytes).
    pub fn load_peers(&self) -> Result<Vec<RememberedPeer>, StoreError> {
        let txn = self.db.begin_write()?;
        let peers = {
            let table = txn.open_table(PEERS)?;
            let mut peers = Vec::new();
            for item in table.iter()?.take(MAX_REMEMBERED) {
                let (peer, record) = item?;
                peers.push((peer.value().to_vec(), record.value().to_vec()));
            }
            peers
        };
        txn.commit()?;
        Ok(peers)
    }
}

impl NodeStore {
    /// Replaces the stored tuples: (name, CBOR-encoded tuple).
    pub fn save_tuples(&self, tuples: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.replace_named(TUPLES, tuples)
    }

    /// The stored tuples: (name, CBOR-encoded tuple).
    pub fn load_tuples(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.load_named(TUPLES)
    }

    /// Replaces the kept versions: (name, CBOR list).
    pub fn save_versions(&self, versions: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.replace_named(VERSIONS, versions)
    }

    /// The kept versions: (name, CBOR list).
    pub fn load_versions(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.load_named(VERSIONS)
    }

    fn replace_named(
        &self,
        definition: TableDefinition<&str, &[u8]>,
        rows: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(definition)?;
            table.retain(|_, _| false)?;
            for (name, bytes) in rows {
                table.insert(name.as_str(), bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn load_named(
        &self,
        definition: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_write()?;
        let rows = {
            let table = txn.open_table(definition)?;
            let mut rows = Vec::new();
            for item in table.iter()? {
                let (name, bytes) = item?;
                rows.push((name.value().to_string(), bytes.value().to_vec()));
            }
            rows
        };
        txn.commit()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnation_rises_across_opens_and_peers_round_trip() {
        let dir = std::env::temp_dir().join(format!("qs-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let store = NodeStore::open(&dir).unwrap();
            assert_eq!(store.bump_incarnation().unwrap(), 1);
            store.raise_incarnation(5).unwrap();
            store
                .save_peers(&[(vec![1, 2], vec![3]), (vec![4], vec![])])
                .unwrap();
        }
        let store = NodeStore::open(&dir).unwrap();
        assert_eq!(store.bump_incarnation().unwrap(), 6);
        store
            .save_tuples(&[("a/b".into(), vec![1]), ("c".into(), vec![2, 3])])
            .unwrap();
        assert_eq!(
            store.load_tuples().unwrap(),
            vec![("a/b".to_string(), vec![1]), ("c".to_string(), vec![2, 3])]
        );
        assert_eq!(
            store.load_peers().unwrap(),
            vec![(vec![1, 2], vec![3]), (vec![4], vec![])]
        );
        store.save_versions(&[("v".into(), vec![7])]).unwrap();
        store.save_versions(&[("w".into(), vec![8])]).unwrap();
        assert_eq!(
            store.load_versions().unwrap(),
            vec![("w".to_string(), vec![8])]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
