//! Dependency layers: the requirements.txt of a code folder installed once into a read-only
//! folder, `state_dir/runtime/deps/layers/<key>`, keyed by the requirements (normalised) and
//! the containers' Python, shared by every function with the same requirements and bind-mounted
//! read-only into their containers at /iluvatar/deps (the agent puts it on `sys.path`).
//!
//! A registration waits for its layer's build; builds of one key run once, whoever asks
//! (registrations, or the cold start of a stored function whose layer is gone); a build keeps
//! running when the client that asked goes away. How a layer is built is in `build.rs`.
//! Layers no registered function, no container and no build uses are removed at start, by
//! `iluvatar_worker clean` and by the `clean` call.

mod build;
pub mod requirements;

pub(super) use build::{PIP_STEP, PIP_STEP_PY};

use super::source::bad_reference;
use super::{RuntimeBackend, Source, roots};
use crate::isolation::IsolationError;
use iluvatar_core::FunctionSpec;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::watch;

/// Builds waiting or running at once at most (distinct requirements); more are refused.
const MAX_BUILDS: usize = 32;

/// How the runtime backend builds dependency layers (`deps` in its config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DepsConfig {
    /// How long the download of the wheels (pip download, on the host) may take.
    pub download_timeout_ms: u64,
    /// How long the install (pip install, in a container without network) may take.
    pub install_timeout_ms: u64,
    /// Largest total size of the downloaded wheels.
    pub max_download_mb: u64,
    /// Largest installed layer (also the largest file the install may write).
    pub max_layer_mb: u64,
    /// Memory limit of the install container.
    pub install_memory_mb: u64,
    /// Builds running at once (others wait their turn).
    pub concurrent_builds: usize,
    /// pip's download cache, written by the unprivileged download user; empty:
    /// `state_dir/runtime/deps/cache`.
    pub cache_dir: PathBuf,
}

impl Default for DepsConfig {
    fn default() -> Self {
        DepsConfig {
            download_timeout_ms: 300_000,
            install_timeout_ms: 300_000,
            max_download_mb: 1024,
            max_layer_mb: 2048,
            install_memory_mb: 1024,
            concurrent_builds: 1,
            cache_dir: PathBuf::new(),
        }
    }
}

/// A folder's requirements, normalised, and the key of the layer they make.
#[derive(Debug)]
pub(super) struct Wanted {
    pub key: String,
    pub requirements: Vec<String>,
}

impl Wanted {
    fn short(&self) -> &str {
        &self.key[..12]
    }
}

/// What a registered function's folder asks for (a function absent from the map: nothing).
#[derive(Clone)]
enum Needs {
    Layer(Arc<Wanted>),
    /// Its requirements.txt could not be read or is refused: its cold starts fail with this.
    Invalid(String),
}

/// The outcome of a build, shared by everyone waiting for it.
type Outcome = Option<Result<(), Arc<str>>>;

#[derive(Default)]
struct State {
    /// By (fqdn, reference), as the registrations.
    by_function: HashMap<(String, String), Needs>,
    /// Builds waiting or running, by key.
    building: HashMap<String, watch::Receiver<Outcome>>,
    /// The layer (key) of each container that has one, by container id.
    in_use: HashMap<String, String>,
    /// Layers about to be mounted into a container being made, with their counts.
    pinned: HashMap<String, usize>,
}

/// The layers' folders and what uses them.
pub(super) struct Layers {
    config: DepsConfig,
    /// `deps/layers/<key>`: finished layers only (a build renames its result in).
    layers: PathBuf,
    /// `deps/build/<key>`: builds under way.
    builds: PathBuf,
    /// `deps/trash`: layers being removed.
    trash: PathBuf,
    cache: PathBuf,
    state: Mutex<State>,
    permits: tokio::sync::Semaphore,
    /// The containers' Python, as part of every key (`cpython-311 linux-x86_64`).
    python_tag: OnceLock<Result<String, String>>,
    /// Numbers the install containers.
    next: std::sync::atomic::AtomicU64,
}

impl Layers {
    /// Creates the folders under `runtime_dir/deps`; the download cache is given to `uid`.
    pub fn new(runtime_dir: &Path, config: &DepsConfig, uid: u32) -> Result<Self, IsolationError> {
        let root = runtime_dir.join("deps");
        let cache = if config.cache_dir.as_os_str().is_empty() { root.join("cache") } else { config.cache_dir.clone() };
        let layers = Layers {
            config: config.clone(),
            layers: root.join("layers"),
            builds: root.join("build"),
            trash: root.join("trash"),
            cache,
            state: Default::default(),
            permits: tokio::sync::Semaphore::new(config.concurrent_builds.max(1)),
            python_tag: OnceLock::new(),
            next: Default::default(),
        };
        for d in [&root, &layers.layers, &layers.builds, &layers.trash, &layers.cache] {
            std::fs::create_dir_all(d).map_err(IsolationError::io("cannot create", d))?;
        }
        // Searchable by the download user and by user-namespaced containers (their binds
        // are made by root, but the download runs as the unprivileged user on the host).
        for d in [&root, &layers.layers, &layers.builds] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .map_err(IsolationError::io("cannot set the mode of", d))?;
        }
        std::os::unix::fs::chown(&layers.cache, Some(uid), Some(uid))
            .map_err(IsolationError::io("cannot give the download cache to the build user", &layers.cache))?;
        std::fs::set_permissions(&layers.cache, std::fs::Permissions::from_mode(0o700))
            .map_err(IsolationError::io("cannot set the mode of", &layers.cache))?;
        Ok(layers)
    }

    pub fn layer_path(&self, key: &str) -> PathBuf {
        self.layers.join(key)
    }

    /// Records what a function's folder asks for (`None`: nothing).
    fn set(&self, spec: &FunctionSpec, needs: Option<Needs>) {
        let id = (spec.fqdn().0, spec.image.clone());
        let mut st = self.state.lock().unwrap();
        match needs {
            Some(n) => st.by_function.insert(id, n),
            None => st.by_function.remove(&id),
        };
    }

    fn needs(&self, spec: &FunctionSpec) -> Option<Needs> {
        self.state.lock().unwrap().by_function.get(&(spec.fqdn().0, spec.image.clone())).cloned()
    }

    /// A container made with a pinned layer now uses it, until [`release`](Self::release).
    pub fn attach(&self, pin: LayerPin<'_>, container: &str) {
        let mut st = self.state.lock().unwrap();
        st.in_use.insert(container.to_string(), pin.key.clone());
        drop(st);
        drop(pin);
    }

    /// A container is gone: its layer may be removed once nothing else uses it.
    pub fn release(&self, container: &str) {
        self.state.lock().unwrap().in_use.remove(container);
    }

    /// Removes the layers that no registered function, container or build uses. Each is
    /// first renamed into the trash under the lock (so that nobody pins it meanwhile), then
    /// deleted outside it.
    pub async fn remove_unused(&self) -> usize {
        let mut doomed = Vec::new();
        {
            let st = self.state.lock().unwrap();
            let mut keep: HashSet<&str> = st.in_use.values().map(String::as_str).collect();
            keep.extend(st.pinned.keys().map(String::as_str));
            keep.extend(st.building.keys().map(String::as_str));
            keep.extend(st.by_function.values().filter_map(|n| match n {
                Needs::Layer(w) => Some(w.key.as_str()),
                Needs::Invalid(_) => None,
            }));
            for e in std::fs::read_dir(&self.layers).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if keep.contains(name.as_str()) {
                    continue;
                }
                let to = self.trash.join(format!("{name}-{}", crate::env::os_random_id()));
                match std::fs::rename(e.path(), &to) {
                    Ok(()) => doomed.push((name, to)),
                    Err(e) => tracing::warn!(layer = name, error = %e, "cannot remove an unused dependency layer"),
                }
            }
        }
        let n = doomed.len();
        for (name, _) in &doomed {
            tracing::info!(layer = name, "removed an unused dependency layer");
        }
        let trash: Vec<PathBuf> = doomed.into_iter().map(|(_, p)| p).collect();
        let _ = tokio::task::spawn_blocking(move || trash.iter().for_each(|p| remove_tree(p))).await;
        n
    }

    /// Removes builds and trash an earlier run left behind (nothing builds yet).
    pub async fn remove_leftovers(&self) -> usize {
        let dirs = [self.builds.clone(), self.trash.clone()];
        let left = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for d in &dirs {
                for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                    remove_tree(&e.path());
                    n += 1;
                }
            }
            n
        });
        left.await.unwrap_or(0)
    }
}

/// Removes a file or a folder tree (never following a link).
fn remove_tree(p: &Path) {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => Ok(()),
    };
    if let Err(e) = r {
        tracing::warn!(path = %p.display(), error = %e, "cannot remove");
    }
}

/// A layer held for a container being made: it cannot be removed until the pin is dropped
/// or attached to the container.
pub(super) struct LayerPin<'a> {
    layers: &'a Layers,
    key: String,
    pub path: PathBuf,
}

impl Drop for LayerPin<'_> {
    fn drop(&mut self) {
        let mut st = self.layers.state.lock().unwrap();
        if let Some(n) = st.pinned.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                st.pinned.remove(&self.key);
            }
        }
    }
}

/// The key of a layer: the requirements and the Python that installs and runs them.
fn layer_key(python_tag: &str, requirements: &[String]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"iluvatar-deps-1\n");
    h.update(python_tag.as_bytes());
    for r in requirements {
        h.update(b"\n");
        h.update(r.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache tag and platform of a Python (`cpython-311 linux-x86_64`): the wheels it takes.
fn python_tag(python: &str) -> Result<String, String> {
    let script = "import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())";
    let out = std::process::Command::new(python)
        .args(["-I", "-c", script])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || text.is_empty() {
        return Err(format!("{python} could not tell its version: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(text)
}

impl RuntimeBackend {
    fn python_tag(&self) -> Result<&str, String> {
        self.deps.python_tag.get_or_init(|| python_tag(&self.config.python)).as_deref().map_err(Clone::clone)
    }

    /// Reads a code folder's requirements.txt through its handle: `None` without one (or
    /// with no requirement in it). A link, a non-regular file or a refused line is an error.
    fn read_wanted(&self, dir: &roots::Handle) -> Result<Option<Arc<Wanted>>, String> {
        let path = dir.proc_path().join("requirements.txt");
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err("requirements.txt is a symbolic link: it must be a regular file".into());
            }
            Err(e) => return Err(format!("requirements.txt cannot be read: {e}")),
        };
        let meta = file.metadata().map_err(|e| format!("requirements.txt cannot be read: {e}"))?;
        if !meta.is_file() {
            return Err("requirements.txt is not a regular file".into());
        }
        let mut bytes = Vec::new();
        file.take(requirements::MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("requirements.txt cannot be read: {e}"))?;
        let reqs = requirements::parse(&bytes).map_err(|e| e.to_string())?;
        if reqs.is_empty() {
            return Ok(None);
        }
        let tag = self.python_tag()?;
        Ok(Some(Arc::new(Wanted { key: layer_key(tag, &reqs), requirements: reqs })))
    }

    /// At registration, before it is stored: builds the layer a code folder's
    /// requirements.txt asks for (or finds it built) and waits for it. Answers what it did,
    /// for the log.
    pub(super) async fn prepare_deps(&self, spec: &FunctionSpec) -> Result<Option<String>, IsolationError> {
        let Some(dir) = self.open_code_dir(spec)? else { return Ok(None) };
        let wanted = self.read_wanted(&dir).map_err(|why| bad_reference(spec, why))?;
        let Some(w) = wanted else {
            self.deps.set(spec, None);
            return Ok(None);
        };
        let start = self.clock.now();
        self.ensure_layer(&w).await.map_err(|why| IsolationError::Dependencies {
            reference: iluvatar_core::shown_reference(&spec.image),
            why,
        })?;
        let took = self.clock.now().saturating_sub(start).as_millis();
        self.deps.set(spec, Some(Needs::Layer(w.clone())));
        Ok(Some(format!("dependency layer {} ready in {took} ms", w.short())))
    }

    /// Once a registration is stored (or reloaded at start): what its folder asks for now,
    /// kept for its cold starts. A layer that is missing is built at the first cold start.
    pub(super) fn note_deps(&self, spec: &FunctionSpec) -> Result<(), IsolationError> {
        let source = self.source(spec)?;
        let Source::Code { dir, .. } = &*source else { return Ok(()) };
        match self.read_wanted(dir) {
            Ok(w) => {
                self.deps.set(spec, w.map(Needs::Layer));
                Ok(())
            }
            Err(why) => {
                self.deps.set(spec, Some(Needs::Invalid(why.clone())));
                Err(bad_reference(spec, why))
            }
        }
    }

    /// The layer a cold start mounts, pinned until the container is made (`None`: the
    /// function has no requirements). A missing layer is built first.
    pub(super) async fn layer_for_start(
        &self,
        spec: &FunctionSpec,
        id: &str,
    ) -> Result<Option<LayerPin<'_>>, IsolationError> {
        let start_err = |why: String| IsolationError::Start { id: id.to_string(), why };
        let w = match self.deps.needs(spec) {
            None => return Ok(None),
            Some(Needs::Invalid(why)) => return Err(start_err(why)),
            Some(Needs::Layer(w)) => w,
        };
        // A `clean` may remove the layer between its build and the pin: try again then.
        for _ in 0..3 {
            self.ensure_layer(&w)
                .await
                .map_err(|why| start_err(format!("its dependency layer cannot be built: {why}")))?;
            let path = self.deps.layer_path(&w.key);
            let mut st = self.deps.state.lock().unwrap();
            if path.is_dir() {
                *st.pinned.entry(w.key.clone()).or_default() += 1;
                return Ok(Some(LayerPin { layers: &self.deps, key: w.key.clone(), path }));
            }
        }
        Err(start_err("its dependency layer was removed while the container started; try again".into()))
    }

    /// Waits until the layer of `w` exists: at once if built, else for the one build of its
    /// key (started here if none runs). The build runs in a task of its own, so a caller
    /// that gives up midway does not stop it.
    async fn ensure_layer(&self, w: &Arc<Wanted>) -> Result<(), String> {
        let mut rx = {
            let mut st = self.deps.state.lock().unwrap();
            if self.deps.layer_path(&w.key).is_dir() {
                return Ok(());
            }
            match st.building.get(&w.key) {
                Some(rx) => rx.clone(),
                None => {
                    if st.building.len() >= MAX_BUILDS {
                        return Err(format!(
                            "{MAX_BUILDS} dependency builds are already waiting or running; try again later"
                        ));
                    }
                    let me = self.me.upgrade().ok_or("the worker is shutting down")?;
                    let (tx, rx) = watch::channel(None);
                    st.building.insert(w.key.clone(), rx.clone());
                    let w = w.clone();
                    let span = tracing::info_span!(parent: None, "deps_build", layer = w.short());
                    let build = async move {
                        let outcome = me.build_layer(&w).await.map_err(Arc::<str>::from);
                        me.deps.state.lock().unwrap().building.remove(&w.key);
                        let _ = tx.send(Some(outcome));
                    };
                    tokio::spawn(tracing::Instrument::instrument(build, span));
                    rx
                }
            }
        };
        let outcome = rx.wait_for(Option::is_some).await.map_err(|_| "the build was abandoned".to_string())?;
        match &*outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(why.to_string()),
            None => unreachable!("waited for an outcome"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_the_requirements_and_the_python() {
        let r = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = layer_key("cpython-311 linux-x86_64", &r(&["numpy==2.2.6"]));
        assert_eq!(a.len(), 64);
        assert_eq!(a, layer_key("cpython-311 linux-x86_64", &r(&["numpy==2.2.6"])));
        assert_ne!(a, layer_key("cpython-312 linux-x86_64", &r(&["numpy==2.2.6"])));
        assert_ne!(a, layer_key("cpython-311 linux-x86_64", &r(&["numpy==2.2.5"])));
    }

    fn spec(name: &str) -> FunctionSpec {
        FunctionSpec {
            name: name.into(),
            version: "1".into(),
            image: format!("code:/f/{name}"),
            memory_mb: 64,
            cpus: 1,
            parallel_invokes: 1,
            language: iluvatar_core::Language::Python3,
            compute: 1,
            isolation: iluvatar_rpc::isolation::RUNTIME,
            container_server: 1,
            resource_timings_json: String::new(),
            system_function: false,
        }
    }

    #[tokio::test]
    async fn only_layers_nothing_uses_are_removed() {
        let dir = std::env::temp_dir().join(format!("iluvatar-deps-unit-{}", crate::env::os_random_id()));
        let layers = Layers::new(&dir, &DepsConfig::default(), nix::unistd::getuid().as_raw()).unwrap();
        for k in ["registered", "running", "starting", "unused"] {
            std::fs::create_dir_all(layers.layer_path(k).join("pkg")).unwrap();
        }
        let wanted = |key: &str| Arc::new(Wanted { key: key.into(), requirements: vec![] });
        layers.set(&spec("f"), Some(Needs::Layer(wanted("registered"))));
        layers.set(&spec("broken"), Some(Needs::Invalid("bad line".into())));
        layers.state.lock().unwrap().in_use.insert("c1".into(), "running".into());
        layers.state.lock().unwrap().pinned.insert("starting".into(), 1);
        let pin = LayerPin { layers: &layers, key: "starting".into(), path: layers.layer_path("starting") };
        let left = |l: &Layers| {
            let mut v: Vec<String> = std::fs::read_dir(&l.layers)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(layers.remove_unused().await, 1);
        assert_eq!(left(&layers), ["registered", "running", "starting"]);
        // The container made with the pinned layer now holds it instead of the pin.
        layers.attach(pin, "c2");
        assert_eq!(layers.remove_unused().await, 0);
        layers.release("c1");
        layers.release("c2");
        layers.set(&spec("f"), None);
        assert_eq!(layers.remove_unused().await, 3);
        assert!(left(&layers).is_empty());
        assert_eq!(std::fs::read_dir(&layers.trash).unwrap().count(), 0, "the trash is emptied");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
