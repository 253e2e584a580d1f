//! The controller's durable state (redb, `state_dir/controller.redb`): every registration
//! and every worker, written before the RPC answers and read back at start, so that a
//! restarted controller still knows its functions and its workers.

use iluvatar_rpc as rpc;
use iluvatar_service::store::{JsonStore, Table};
use redb::TableDefinition;
use std::path::Path;

pub use iluvatar_service::store::StoreError;

const FUNCTIONS: Table = TableDefinition::new("functions");
const WORKERS: Table = TableDefinition::new("workers");
pub const DB_FILE: &str = "controller.redb";

#[derive(Clone)]
pub struct Store {
    db: JsonStore,
}

/// What the store held at start.
pub struct Loaded {
    pub functions: Vec<(String, rpc::RegisterRequest)>,
    pub workers: Vec<rpc::RegisterWorkerRequest>,
}

impl Store {
    pub fn open(state_dir: &Path) -> Result<(Store, Loaded), StoreError> {
        let db = JsonStore::open(state_dir, DB_FILE, "the controller's store", &[FUNCTIONS, WORKERS])?;
        let functions = db.read_all(FUNCTIONS)?;
        let workers = db.read_all::<rpc::RegisterWorkerRequest>(WORKERS)?.into_iter().map(|(_, w)| w).collect();
        Ok((Store { db }, Loaded { functions, workers }))
    }

    pub async fn put_function(&self, fqdn: &str, req: &rpc::RegisterRequest) -> Result<(), StoreError> {
        self.db.put(FUNCTIONS, fqdn.to_string(), req).await
    }

    pub async fn put_worker(&self, w: &rpc::RegisterWorkerRequest) -> Result<(), StoreError> {
        self.db.put(WORKERS, w.name.clone(), w).await
    }

    /// Forgets a worker; false if the store did not hold it.
    pub async fn remove_worker(&self, name: &str) -> Result<bool, StoreError> {
        self.db.remove(WORKERS, name.to_string()).await
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
