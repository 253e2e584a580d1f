//! The function registry: an in-memory map for lookups on the invocation path, backed by an
//! embedded store (redb) that is written before a registration is acknowledged and read back
//! at start, so that a restarted worker still knows every function.

use iluvatar_core::FunctionSpec;
use iluvatar_service::store::{JsonStore, StoreError, Table};
use redb::TableDefinition;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

const FUNCTIONS: Table = TableDefinition::new("functions");
pub const DB_FILE: &str = "registry.redb";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Opening, reading or writing the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "function {fqdn} is already registered with different fields ({differences}); register a new version instead"
    )]
    Conflict { fqdn: String, differences: String },
}

/// Whether a registration added a function or repeated an identical one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    New,
    Unchanged,
}

pub struct Registry {
    db: JsonStore,
    functions: RwLock<HashMap<String, Arc<FunctionSpec>>>,
    /// Serialises check-then-write so two registrations of one fqdn cannot both pass.
    write: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Opens (or creates) the store in `state_dir` and loads every function.
    pub fn open(state_dir: &Path) -> Result<Self, RegistryError> {
        // Registrations may carry secrets (environment values of code references): the
        // store's file is its owner's only.
        let db = JsonStore::open(state_dir, DB_FILE, "the registry", &[FUNCTIONS])?;
        let functions: HashMap<_, _> =
            db.read_all::<FunctionSpec>(FUNCTIONS)?.into_iter().map(|(k, spec)| (k, Arc::new(spec))).collect();
        Ok(Registry { db, functions: RwLock::new(functions), write: Default::default() })
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

    /// Refuses a spec whose fqdn is registered with another spec (as `register` would).
    pub fn check(&self, spec: &FunctionSpec) -> Result<(), RegistryError> {
        let fqdn = spec.fqdn().0;
        match self.get(&fqdn) {
            Some(old) if *old != *spec => Err(RegistryError::Conflict { fqdn, differences: differences(&old, spec) }),
            _ => Ok(()),
        }
    }

    /// Stores a validated spec durably, then makes it visible.
    pub async fn register(&self, spec: FunctionSpec) -> Result<Registered, RegistryError> {
        let _guard = self.write.lock().await;
        let fqdn = spec.fqdn().0;
        self.check(&spec)?;
        if self.get(&fqdn).is_some() {
            return Ok(Registered::Unchanged);
        }
        self.db.put(FUNCTIONS, fqdn.clone(), &spec).await?;
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
        drop(redb::Database::create(dir.join(DB_FILE)).unwrap());
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
