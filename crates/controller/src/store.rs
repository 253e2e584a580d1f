//! The controller's durable state (redb, `state_dir/controller.redb`): every registration
//! and every worker, written before the RPC answers and read back at start, so that a
//! restarted controller still knows its functions and its workers.

use iluvatar_rpc as rpc;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("functions");
const WORKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("workers");
pub const DB_FILE: &str = "controller.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the controller's store at {path}: {why}")]
    Open { path: String, why: String },
    #[error("the controller's store failed: {0}")]
    Store(String),
    #[error("the controller's store holds an unreadable entry {key:?}: {why}")]
    Corrupt { key: String, why: String },
}

/// Creates `path` readable and writable by its owner only (0600), or narrows an existing
/// file to that: registrations may carry secrets (environment values of code references).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Store(e.to_string())
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

/// What the store held at start.
pub struct Loaded {
    pub functions: Vec<(String, rpc::RegisterRequest)>,
    pub workers: Vec<rpc::RegisterWorkerRequest>,
}

impl Store {
    pub fn open(state_dir: &Path) -> Result<(Store, Loaded), StoreError> {
        let path = state_dir.join(DB_FILE);
        let open_err = |why: String| StoreError::Open { path: path.display().to_string(), why };
        std::fs::create_dir_all(state_dir).map_err(|e| open_err(e.to_string()))?;
        create_private(&path).map_err(|e| open_err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| open_err(e.to_string()))?;
        let txn = db.begin_write().map_err(store_err)?;
        txn.open_table(FUNCTIONS).map_err(store_err)?;
        txn.open_table(WORKERS).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        let store = Store { db: Arc::new(db) };
        let functions = store.read_all(FUNCTIONS)?;
        let workers = store.read_all(WORKERS)?.into_iter().map(|(_, w)| w).collect();
        Ok((store, Loaded { functions, workers }))
    }

    fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let read = self.db.begin_read().map_err(store_err)?;
        let table = read.open_table(table).map_err(store_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(store_err)? {
            let (k, v) = entry.map_err(store_err)?;
            let value = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt { key: k.value().to_string(), why: e.to_string() })?;
            out.push((k.value().to_string(), value));
        }
        Ok(out)
    }

    async fn put(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: String,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let txn = db.begin_write().map_err(store_err)?;
            txn.open_table(table).map_err(store_err)?.insert(key.as_str(), bytes.as_slice()).map_err(store_err)?;
            txn.commit().map_err(store_err)
        })
        .await
        .map_err(store_err)?
    }

    pub async fn put_function(&self, fqdn: &str, req: &rpc::RegisterRequest) -> Result<(), StoreError> {
        self.put(FUNCTIONS, fqdn.to_string(), serde_json::to_vec(req).map_err(store_err)?).await
    }

    pub async fn put_worker(&self, w: &rpc::RegisterWorkerRequest) -> Result<(), StoreError> {
        self.put(WORKERS, w.name.clone(), serde_json::to_vec(w).map_err(store_err)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_store_file_is_the_owners_only() {
        let dir = std::env::temp_dir().join(format!("iluvatar-store-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mode = || std::fs::metadata(dir.join(DB_FILE)).unwrap().permissions().mode() & 0o777;
        drop(Store::open(&dir).unwrap());
        assert_eq!(mode(), 0o600);
        // One written before stores were private is narrowed when opened.
        std::fs::set_permissions(dir.join(DB_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&dir).unwrap());
        assert_eq!(mode(), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
