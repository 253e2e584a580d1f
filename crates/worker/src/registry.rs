//! The function registry: an in-memory map for lookups on the invocation path, backed by an
//! embedded store (redb) that is written before a registration is acknowledged and read back
//! at start, so that a restarted worker still knows every function.

use iluvatar_core::FunctionSpec;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("functions");
pub const DB_FILE: &str = "registry.redb";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot open the registry at {path}: {why}")]
    Open { path: String, why: String },
    #[error("the registry store failed: {0}")]
    Store(String),
    #[error("the registry holds an unreadable entry {key:?}: {why}")]
    Corrupt { key: String, why: String },
    #[error(
        "function {fqdn} is already registered with different fields ({differences}); register a new version instead"
    )]
    Conflict { fqdn: String, differences: String },
}

/// Creates `path` readable and writable by its owner only (0600), or narrows an existing
/// file to that: registrations may carry secrets (environment values of code references).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn store_err(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Store(e.to_string())
}

/// Whether a registration added a function or repeated an identical one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    New,
    Unchanged,
}

pub struct Registry {
    db: Arc<Database>,
    functions: RwLock<HashMap<String, Arc<FunctionSpec>>>,
    /// Serialises check-then-write so two registrations of one fqdn cannot both pass.
    write: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Opens (or creates) the store in `state_dir` and loads every function.
    pub fn open(state_dir: &Path) -> Result<Self, RegistryError> {
        let path = state_dir.join(DB_FILE);
        let open_err = |why: String| RegistryError::Open { path: path.display().to_string(), why };
        std::fs::create_dir_all(state_dir).map_err(|e| open_err(e.to_string()))?;
        create_private(&path).map_err(|e| open_err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| open_err(e.to_string()))?;
        let txn = db.begin_write().map_err(store_err)?;
        txn.open_table(FUNCTIONS).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        let mut functions = HashMap::new();
        let read = db.begin_read().map_err(store_err)?;
        let table = read.open_table(FUNCTIONS).map_err(store_err)?;
        for entry in table.iter().map_err(store_err)? {
            let (k, v) = entry.map_err(store_err)?;
            let spec: FunctionSpec = serde_json::from_slice(v.value())
                .map_err(|e| RegistryError::Corrupt { key: k.value().to_string(), why: e.to_string() })?;
            functions.insert(k.value().to_string(), Arc::new(spec));
        }
        Ok(Registry { db: Arc::new(db), functions: RwLock::new(functions), write: Default::default() })
    }

    pub fn get(&self, fqdn: &str) -> Option<Arc<FunctionSpec>> {
        self.functions.read().unwrap().get(fqdn).cloned()
    }

    pub fn len(&self) -> usize {
        self.functions.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every function, ordered by fqdn.
    pub fn list(&self) -> Vec<Arc<FunctionSpec>> {
        let mut all: Vec<_> = self.functions.read().unwrap().values().cloned().collect();
        all.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        all
    }

    /// Stores a validated spec durably, then makes it visible.
    pub async fn register(&self, spec: FunctionSpec) -> Result<Registered, RegistryError> {
        let _guard = self.write.lock().await;
        let fqdn = spec.fqdn().0;
        if let Some(old) = self.get(&fqdn) {
            if *old == spec {
                return Ok(Registered::Unchanged);
            }
            return Err(RegistryError::Conflict { fqdn, differences: differences(&old, &spec) });
        }
        let bytes = serde_json::to_vec(&spec).map_err(store_err)?;
        let db = self.db.clone();
        let key = fqdn.clone();
        tokio::task::spawn_blocking(move || -> Result<(), RegistryError> {
            let txn = db.begin_write().map_err(store_err)?;
            txn.open_table(FUNCTIONS).map_err(store_err)?.insert(key.as_str(), bytes.as_slice()).map_err(store_err)?;
            txn.commit().map_err(store_err)
        })
        .await
        .map_err(store_err)??;
        self.functions.write().unwrap().insert(fqdn, Arc::new(spec));
        Ok(Registered::New)
    }
}

/// Names the fields where two specs differ, with both values.
fn differences(old: &FunctionSpec, new: &FunctionSpec) -> String {
    let (a, b) = (serde_json::to_value(old).unwrap_or_default(), serde_json::to_value(new).unwrap_or_default());
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return String::new() };
    // A reference's environment values are never shown, not even to say they differ.
    let shown = |k: &str, v: &serde_json::Value| match (k, v.as_str()) {
        ("image", Some(r)) => serde_json::Value::String(iluvatar_core::shown_reference(r)),
        _ => v.clone(),
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| {
            let asked = b.get(k).map(|w| shown(k, w)).unwrap_or_default();
            format!("{k}: registered {}, asked {asked}", shown(k, v))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use iluvatar_core::Language;

    fn spec(memory_mb: u64) -> FunctionSpec {
        FunctionSpec {
            name: "f".into(),
            version: "1".into(),
            image: "img".into(),
            memory_mb,
            cpus: 1,
            parallel_invokes: 1,
            language: Language::Python3,
            compute: 1,
            isolation: 32,
            container_server: 1,
            resource_timings_json: String::new(),
            system_function: false,
        }
    }

    #[tokio::test]
    async fn registrations_survive_reopen_and_conflicts_are_named() {
        let dir = std::env::temp_dir().join(format!("iluvatar-registry-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let r = Registry::open(&dir).unwrap();
            assert_eq!(r.register(spec(128)).await.unwrap(), Registered::New);
            assert_eq!(r.register(spec(128)).await.unwrap(), Registered::Unchanged);
            let e = r.register(spec(256)).await.unwrap_err().to_string();
            assert!(e.contains("memory_mb: registered 128, asked 256"), "{e}");
        }
        let r = Registry::open(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(DB_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the registry file is the owner's only");
        assert_eq!(r.len(), 1);
        assert_eq!(r.get("f-1").unwrap().memory_mb, 128);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn conflicts_never_show_environment_values_and_old_files_are_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("iluvatar-registry-env-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A registry written before files were private: opening it narrows it.
        drop(Database::create(dir.join(DB_FILE)).unwrap());
        std::fs::set_permissions(dir.join(DB_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let r = Registry::open(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(DB_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let with = |image: &str| FunctionSpec { image: image.into(), ..spec(128) };
        r.register(with("code:/f?API_KEY=first-secret")).await.unwrap();
        let e = r.register(with("code:/f?API_KEY=second-secret")).await.unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
        assert!(e.contains("API_KEY=<hidden>"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
