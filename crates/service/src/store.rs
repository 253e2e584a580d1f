//! A daemon's durable state: an embedded store (redb) of JSON values by string key, in a
//! file only its owner may read (registrations may carry secrets). Written before an RPC
//! answers, read back whole at start.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;

/// A table of JSON values by string key.
pub type Table = TableDefinition<'static, &'static str, &'static [u8]>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open {what} at {path}: {why}")]
    Open { what: &'static str, path: String, why: String },
    #[error("{what} failed: {why}")]
    Store { what: &'static str, why: String },
    #[error("{what} holds an unreadable entry {key:?}: {why}")]
    Corrupt { what: &'static str, key: String, why: String },
}

/// An open store; `what` names it in errors ("the registry").
#[derive(Clone)]
pub struct JsonStore {
    db: Arc<Database>,
    what: &'static str,
}

impl JsonStore {
    /// Opens (or creates) `state_dir/file` with every table of `tables`, narrowing the file
    /// to mode 0600.
    pub fn open(state_dir: &Path, file: &str, what: &'static str, tables: &[Table]) -> Result<Self, StoreError> {
        let path = state_dir.join(file);
        let open_err = |why: String| StoreError::Open { what, path: path.display().to_string(), why };
        std::fs::create_dir_all(state_dir).map_err(|e| open_err(e.to_string()))?;
        create_private(&path).map_err(|e| open_err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| open_err(e.to_string()))?;
        let store = JsonStore { db: Arc::new(db), what };
        let txn = store.db.begin_write().map_err(store.err())?;
        for table in tables {
            txn.open_table(*table).map_err(store.err())?;
        }
        txn.commit().map_err(store.err())?;
        Ok(store)
    }

    fn err<E: std::fmt::Display>(&self) -> impl Fn(E) -> StoreError + use<E> {
        let what = self.what;
        move |e| StoreError::Store { what, why: e.to_string() }
    }

    /// Every entry of `table`, by key.
    pub fn read_all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        let read = self.db.begin_read().map_err(self.err())?;
        let table = read.open_table(table).map_err(self.err())?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(self.err())? {
            let (k, v) = entry.map_err(self.err())?;
            let value = serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                what: self.what,
                key: k.value().to_string(),
                why: e.to_string(),
            })?;
            out.push((k.value().to_string(), value));
        }
        Ok(out)
    }

    /// Writes `value` under `key` durably (off the async threads).
    pub async fn put(&self, table: Table, key: String, value: &impl Serialize) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(self.err())?;
        let (db, what) = (self.db.clone(), self.what);
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let err = |e: &dyn std::fmt::Display| StoreError::Store { what, why: e.to_string() };
            let txn = db.begin_write().map_err(|e| err(&e))?;
            txn.open_table(table).map_err(|e| err(&e))?.insert(key.as_str(), bytes.as_slice()).map_err(|e| err(&e))?;
            txn.commit().map_err(|e| err(&e))
        })
        .await
        .map_err(self.err())?
    }

    /// Removes `key` durably (off the async threads); false if it was not there.
    pub async fn remove(&self, table: Table, key: String) -> Result<bool, StoreError> {
        let (db, what) = (self.db.clone(), self.what);
        tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            let err = |e: &dyn std::fmt::Display| StoreError::Store { what, why: e.to_string() };
            let txn = db.begin_write().map_err(|e| err(&e))?;
            let removed =
                txn.open_table(table).map_err(|e| err(&e))?.remove(key.as_str()).map_err(|e| err(&e))?.is_some();
            txn.commit().map_err(|e| err(&e))?;
            Ok(removed)
        })
        .await
        .map_err(self.err())?
    }
}

/// Creates `path` readable and writable by its owner only (0600), or narrows an existing
/// file to that.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const T: Table = TableDefinition::new("t");

    #[tokio::test]
    async fn values_survive_reopen_in_a_private_file() {
        let dir = std::env::temp_dir().join(format!("iluvatar-service-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mode = || std::fs::metadata(dir.join("s.redb")).unwrap().permissions().mode() & 0o777;
        {
            let s = JsonStore::open(&dir, "s.redb", "the test store", &[T]).unwrap();
            assert!(s.read_all::<u32>(T).unwrap().is_empty());
            s.put(T, "b".into(), &2u32).await.unwrap();
            s.put(T, "a".into(), &1u32).await.unwrap();
        }
        assert_eq!(mode(), 0o600);
        std::fs::set_permissions(dir.join("s.redb"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = JsonStore::open(&dir, "s.redb", "the test store", &[T]).unwrap();
        assert_eq!(mode(), 0o600, "an older, wider file is narrowed");
        assert_eq!(s.read_all::<u32>(T).unwrap(), vec![("a".to_string(), 1), ("b".to_string(), 2)]);
        assert!(s.remove(T, "b".into()).await.unwrap());
        assert!(!s.remove(T, "b".into()).await.unwrap(), "already gone");
        drop(s);
        let s = JsonStore::open(&dir, "s.redb", "the test store", &[T]).unwrap();
        assert_eq!(s.read_all::<u32>(T).unwrap(), vec![("a".to_string(), 1)], "a removal is durable");
        s.put(T, "b".into(), &2u32).await.unwrap();
        let e = s.read_all::<String>(T).unwrap_err().to_string();
        assert!(e.starts_with("the test store holds an unreadable entry \"a\""), "{e}");
        drop(s);
        let e = JsonStore::open(&dir.join("s.redb"), "x", "the test store", &[T]).err().unwrap().to_string();
        assert!(e.starts_with("cannot open the test store at"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
