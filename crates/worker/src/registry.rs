//! The function registry: an in-memory map for lookups on the invocation path, backed by an
//! embedded store (redb) that is written before a registration is acknowledged and read back
//! at start, so that a restarted worker still knows every function. A simulated worker's
//! registry is the map alone ([`Registry::in_memory`]): it has no restart to survive, and a
//! simulated cluster of a thousand workers would otherwise write every registration to a
//! thousand files; the workers of one simulation share the specs themselves
//! ([`SharedSpecs`]), so that each function is held once, not once per worker.

use iluvatar_core::FunctionSpec;
use iluvatar_service::store::{JsonStore, StoreError, Table};
use redb::TableDefinition;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

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

/// Where registrations are kept beside the map.
enum Backing {
    /// Written durably before a registration is acknowledged, read back at start.
    Durable(JsonStore),
    /// Nowhere: gone with the process (simulation); specs equal to one in the shared set
    /// are that one.
    Memory(Option<Arc<SharedSpecs>>),
}

/// Specs shared by the in-memory registries of one simulation's workers, by fqdn.
#[derive(Default)]
pub struct SharedSpecs(Mutex<HashMap<Arc<str>, Arc<FunctionSpec>>>);

impl SharedSpecs {
    /// The shared copy of `spec` (and of its fqdn), added if none is equal to it.
    fn intern(&self, fqdn: String, spec: FunctionSpec) -> (Arc<str>, Arc<FunctionSpec>) {
        let mut specs = self.0.lock().unwrap();
        if let Some((k, v)) = specs.get_key_value(fqdn.as_str())
            && **v == spec
        {
            return (k.clone(), v.clone());
        }
        let (k, v): (Arc<str>, _) = (fqdn.into(), Arc::new(spec));
        specs.insert(k.clone(), v.clone());
        (k, v)
    }
}

pub struct Registry {
    backing: Backing,
    functions: RwLock<HashMap<Arc<str>, Arc<FunctionSpec>>>,
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
            db.read_all::<FunctionSpec>(FUNCTIONS)?.into_iter().map(|(k, spec)| (k.into(), Arc::new(spec))).collect();
        Ok(Registry { backing: Backing::Durable(db), functions: RwLock::new(functions), write: Default::default() })
    }

    /// A registry in memory only, empty: a simulated worker's, which is never restarted.
    /// A live worker must use [`Registry::open`], which keeps registrations across restarts.
    /// With `shared`, specs equal to one another worker holds are that one.
    pub fn in_memory(shared: Option<Arc<SharedSpecs>>) -> Self {
        Registry { backing: Backing::Memory(shared), functions: Default::default(), write: Default::default() }
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
        check(self.get(&fqdn).as_ref(), &fqdn, spec).map(|_| ())
    }

    /// Stores a validated spec (durably, unless in memory), then makes it visible.
    pub async fn register(&self, spec: FunctionSpec) -> Result<Registered, RegistryError> {
        let fqdn = spec.fqdn().0;
        let Backing::Durable(db) = &self.backing else {
            // In memory the check and the write are one step under the map's lock: nothing
            // awaits, so a simulated registration takes no turn of the scheduler either.
            let mut functions = self.functions.write().unwrap();
            if let Some(old) = check(functions.get(fqdn.as_str()), &fqdn, &spec)? {
                return Ok(old);
            }
            let (key, spec) = match &self.backing {
                Backing::Memory(Some(shared)) => shared.intern(fqdn, spec),
                _ => (fqdn.into(), Arc::new(spec)),
            };
            functions.insert(key, spec);
            return Ok(Registered::New);
        };
        let _guard = self.write.lock().await;
        if let Some(old) = check(self.get(&fqdn).as_ref(), &fqdn, &spec)? {
            return Ok(old);
        }
        db.put(FUNCTIONS, fqdn.clone(), &spec).await?;
        self.functions.write().unwrap().insert(fqdn.into(), Arc::new(spec));
        Ok(Registered::New)
    }
}

/// `Unchanged` if `old` is `spec`, a conflict if it differs, `None` if there is none.
fn check(
    old: Option<&Arc<FunctionSpec>>,
    fqdn: &str,
    spec: &FunctionSpec,
) -> Result<Option<Registered>, RegistryError> {
    match old {
        None => Ok(None),
        Some(old) if **old == *spec => Ok(Some(Registered::Unchanged)),
        Some(old) => Err(RegistryError::Conflict { fqdn: fqdn.to_string(), differences: differences(old, spec) }),
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
    async fn in_memory_registries_write_nothing_and_share_equal_specs() {
        let shared = Arc::new(SharedSpecs::default());
        let (a, b) = (Registry::in_memory(Some(shared.clone())), Registry::in_memory(Some(shared.clone())));
        assert_eq!(a.register(spec(128)).await.unwrap(), Registered::New);
        assert_eq!(b.register(spec(128)).await.unwrap(), Registered::New, "each worker has its own registrations");
        assert_eq!(b.register(spec(128)).await.unwrap(), Registered::Unchanged);
        assert!(Arc::ptr_eq(&a.get("f-1").unwrap(), &b.get("f-1").unwrap()), "one spec held for both");
        let e = a.register(spec(256)).await.unwrap_err().to_string();
        assert!(e.contains("memory_mb: registered 128, asked 256"), "{e}");
        // Another spec under the same fqdn on a third worker is its own.
        let c = Registry::in_memory(Some(shared));
        assert_eq!(c.register(spec(256)).await.unwrap(), Registered::New);
        assert_eq!((a.get("f-1").unwrap().memory_mb, c.get("f-1").unwrap().memory_mb), (128, 256));
        let alone = Registry::in_memory(None);
        assert_eq!(alone.register(spec(64)).await.unwrap(), Registered::New);
        assert_eq!(alone.list().len(), 1);
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
