//! The embedded container runtime backend: real containers, created in-process through the
//! `libcontainer` crate (youki), with no daemon. Each container runs the Python agent, which
//! serves the function over a Unix socket in a directory bind-mounted from the worker.
//!
//! Files live under `state_dir/runtime/`: `root/` (libcontainer's state), `bundles/<key>/`
//! (config.json), `sockets/<key>/` (the agent's socket, a tiny tmpfs), `logs/<key>.log` (the
//! function's stdout and stderr), `slots/<key>/` (where a standby container's function is
//! mounted), `rootfs/` (the shared read-only root skeleton), `agent/`, `images/` and `deps/`
//! (dependency layers, see [`deps`]); images pulled from registries are kept in
//! `state_dir/pulled/` (see `image::pull`).

mod cgroup;
mod container;
pub mod deps;
pub use crate::isolation::image::{ImageLimits, RegistryConfig};
pub mod launcher;
mod netns;
pub mod roots;
mod seccomp;
mod served;
mod source;
mod spec;
mod standby;

use super::naming::fnv1a;
use super::{
    BackendContext, BackendFactory, BoxFuture, Container, CreateRequest, IsolationBackend, IsolationError, image,
};
use iluvatar_core::FunctionSpec;
use serde::{Deserialize, Serialize};
use source::Source;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// The agent, built into the worker so that it is where the worker expects it.
const AGENT_PY: &str = include_str!("../../../../../runtimes/python/agent.py");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The Python interpreter inside the container (the host's /usr is mounted).
    pub python: String,
    /// How long a container may take from creation to its agent listening.
    pub start_timeout_ms: u64,
    /// Most processes (and threads) a container may hold.
    pub pids_limit: i64,
    /// Size of the container's private /tmp.
    pub tmp_size_mb: u64,
    /// Largest file a container may write, its stdout/stderr log included (RLIMIT_FSIZE).
    pub log_limit_mb: u64,
    /// Containers kept started with the agent waiting, for code functions: a cold start then
    /// only mounts the function's folder, sets its limits and imports it. 0 disables.
    pub standby: usize,
    /// Memory limit of a standby container until it is given a function.
    pub standby_memory_mb: u64,
    /// Launcher processes creating and removing containers (each one at a time).
    pub launchers: usize,
    /// The seccomp profile of every container: `default` (see ARCHITECTURE.md: namespace
    /// creation, mounts, keyrings, bpf, perf events, ptrace, userfaultfd, io_uring, modules
    /// and kexec denied), `unconfined`, or the absolute path of a profile in the OCI format.
    pub seccomp: String,
    /// Runs each container in a user namespace: its uids and gids 0..65536 are the host's
    /// `user_namespace_base..+65536`, so that the function's user is nobody the host knows.
    pub user_namespace: bool,
    pub user_namespace_base: u32,
    /// Caps on OCI images: layer and image sizes, entries, unpack time.
    pub images: image::ImageLimits,
    /// How registries are reached: plain-HTTP registries beyond loopback, the pull timeout.
    pub registry: image::RegistryConfig,
    /// Folders under which `code:` folders and local image paths (`oci:`, `oci-archive:`)
    /// must lie, compared on canonical paths. Empty: any folder but the refused ones (the
    /// state dir, /proc, /sys, /dev and their parents), allowed only while the worker listens
    /// on loopback.
    pub code_roots: Vec<PathBuf>,
    /// How dependency layers (a code folder's requirements.txt) are built.
    pub deps: deps::DepsConfig,
}

impl BackendFactory for RuntimeConfig {
    fn build(&self, ctx: &BackendContext) -> Result<Arc<dyn IsolationBackend>, IsolationError> {
        self.check_host()?;
        Ok(RuntimeBackend::new(self.clone(), &ctx.state_dir, ctx.env.clock.clone(), ctx.beyond_loopback)?)
    }

    /// Real containers need root: mounts, cgroups, namespaces and the launchers' clones.
    fn check_host(&self) -> Result<(), IsolationError> {
        let uid = nix::unistd::geteuid();
        if uid.is_root() {
            return Ok(());
        }
        Err(IsolationError::Config(Box::from(format!(
            "the runtime backend creates real containers and needs root, but this worker runs as uid {uid}: \
             start it as root, or offer only simulated containers (isolation.backends = [{{type = \"sim\"}}])"
        ))))
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            python: "/usr/bin/python3".into(),
            start_timeout_ms: 10_000,
            pids_limit: 64,
            tmp_size_mb: 64,
            log_limit_mb: 64,
            standby: 2,
            standby_memory_mb: 64,
            launchers: 2,
            seccomp: "default".into(),
            user_namespace: true,
            user_namespace_base: 1_000_000,
            images: Default::default(),
            registry: Default::default(),
            code_roots: Vec::new(),
            deps: Default::default(),
        }
    }
}

struct Dirs {
    root: PathBuf,
    bundles: PathBuf,
    sockets: PathBuf,
    logs: PathBuf,
    rootfs: PathBuf,
    agent: PathBuf,
    slots: PathBuf,
    staging: PathBuf,
}

pub struct RuntimeBackend {
    config: RuntimeConfig,
    dirs: Dirs,
    /// The cgroup parent of this worker's containers, unique per state directory so that
    /// workers sharing a machine never touch each other's containers.
    cgroup_parent: String,
    images: std::sync::Arc<image::ImageStore>,
    /// Pulls registry images into `state_dir/pulled/`, shared by every function.
    puller: std::sync::Arc<image::Puller>,
    clock: std::sync::Arc<dyn iluvatar_core::Clock>,
    standby: standby::StandbyPool,
    /// The processes that create and remove containers: libcontainer is never called in
    /// the (multi-threaded) worker.
    launchers: launcher::Launchers,
    /// Makes the sockets that reach function servers inside containers' namespaces.
    sockets: Arc<netns::SocketMaker>,
    /// The seccomp profile written into every container's config.json (none: unconfined).
    seccomp: Option<serde_json::Value>,
    /// This backend, for the tasks it spawns.
    me: std::sync::Weak<RuntimeBackend>,
    /// What registrations may name.
    roots: roots::Roots,
    /// The folder or image file of each registration, opened and checked when it was
    /// registered (or reloaded at start), and used only through the handle.
    handles: Mutex<source::Handles>,
    /// Dependency layers: built, building, and who uses them.
    deps: deps::Layers,
}

impl RuntimeBackend {
    pub fn new(
        config: RuntimeConfig,
        state_dir: &Path,
        clock: std::sync::Arc<dyn iluvatar_core::Clock>,
        beyond_loopback: bool,
    ) -> Result<std::sync::Arc<Self>, IsolationError> {
        let base = state_dir.join("runtime");
        let dirs = Dirs {
            root: base.join("root"),
            bundles: base.join("bundles"),
            sockets: base.join("sockets"),
            logs: base.join("logs"),
            rootfs: base.join("rootfs"),
            agent: base.join("agent"),
            slots: base.join("slots"),
            staging: base.join("staging"),
        };
        let all = [&dirs.root, &dirs.bundles, &dirs.sockets, &dirs.logs, &dirs.rootfs, &dirs.agent, &dirs.slots];
        for d in all.into_iter().chain([&dirs.staging]) {
            std::fs::create_dir_all(d).map_err(IsolationError::io("cannot create", d))?;
        }
        for d in spec::ROOT_DIRS {
            let p = dirs.rootfs.join(d);
            std::fs::create_dir_all(&p).map_err(IsolationError::io("cannot create", &p))?;
        }
        for (link, target) in spec::ROOT_LINKS {
            let p = dirs.rootfs.join(link);
            if std::fs::symlink_metadata(&p).is_err() {
                std::os::unix::fs::symlink(target, &p).map_err(IsolationError::io("cannot link", &p))?;
            }
        }
        let seccomp = seccomp::load(&config.seccomp).map_err(|e| IsolationError::Config(e.into()))?;
        if config.user_namespace {
            let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
            if max.trim() == "0" {
                return Err(IsolationError::Config(
                    "user_namespace = true, but this kernel allows no user namespaces \
                     (/proc/sys/user/max_user_namespaces is 0): raise it or set user_namespace = false"
                        .into(),
                ));
            }
            // Below 65536 the range would hold the host's own users (0 would be root).
            let base = config.user_namespace_base;
            if base < 65536 || base.checked_add(65536).is_none() {
                return Err(IsolationError::Config(Box::from(format!(
                    "user_namespace_base {base} must be at least 65536 (the host's own ids lie below) \
                     and leave room for 65536 ids"
                ))));
            }
        }
        let roots = roots::Roots::new(&config.code_roots, state_dir, beyond_loopback)
            .map_err(|e| IsolationError::Config(e.into()))?;
        for (name, text) in [("agent.py", AGENT_PY), (deps::PIP_STEP, deps::PIP_STEP_PY)] {
            let file = dirs.agent.join(name);
            std::fs::write(&file, text).map_err(IsolationError::io("cannot write", &file))?;
        }
        if !Path::new(&config.python).exists() {
            return Err(IsolationError::Config(Box::from(format!(
                "the runtime backend's python {} does not exist",
                config.python
            ))));
        }
        // Container processes outlive the short-lived process that starts them; as their
        // subreaper the worker can reap them when it removes them.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|source| IsolationError::Sys { what: "cannot become a child subreaper".into(), source })?;
        let cgroup_parent = format!("iluvatar-{:08x}", fnv1a(state_dir.to_string_lossy().as_bytes()) as u32);
        // Written down so that operators and tests can find this worker's cgroups.
        let note = base.join("cgroup_parent");
        std::fs::write(&note, &cgroup_parent).map_err(IsolationError::io("cannot write", &note))?;
        let images = image::ImageStore::new(base.join("images"), config.images.clone(), clock.clone())
            .map_err(|e| IsolationError::Config(e.into()))?;
        let images = std::sync::Arc::new(images);
        let puller =
            image::Puller::new(state_dir.join("pulled"), config.registry.clone(), config.images.clone(), clock.clone())
                .map_err(|e| IsolationError::Config(e.into()))?;
        let userns_base = config.user_namespace.then_some(config.user_namespace_base);
        let deps = deps::Layers::new(&base, &config.deps, spec::host_id(userns_base))?;
        if config.standby > 0 {
            standby::share_slots(&dirs.slots)?;
        }
        // This very binary, even if the file was replaced or removed since it started.
        let program = PathBuf::from("/proc/self/exe");
        let launchers = launcher::Launchers::new(program, config.launchers, base.join("launcher.pids"));
        Ok(std::sync::Arc::new_cyclic(|me| RuntimeBackend {
            config,
            dirs,
            cgroup_parent,
            images,
            puller: std::sync::Arc::new(puller),
            clock,
            standby: Default::default(),
            launchers,
            sockets: Default::default(),
            seccomp,
            me: me.clone(),
            roots,
            handles: Default::default(),
            deps,
        }))
    }

    fn userns_base(&self) -> Option<u32> {
        self.config.user_namespace.then_some(self.config.user_namespace_base)
    }

    /// A short, fixed-length name for a container's files (socket paths are limited to
    /// 108 bytes).
    fn key(container_id: &str) -> String {
        format!("{:016x}", fnv1a(container_id.as_bytes()))
    }
}

impl IsolationBackend for RuntimeBackend {
    fn flag(&self) -> u32 {
        iluvatar_rpc::isolation::RUNTIME
    }

    fn runs_images(&self) -> bool {
        true
    }

    fn check_reference(&self, spec: &FunctionSpec) -> Result<(), IsolationError> {
        self.check_source(spec)
    }

    fn prepare<'a>(&'a self, spec: &'a FunctionSpec) -> BoxFuture<'a, Result<Option<String>, IsolationError>> {
        Box::pin(async move {
            match self.prepare_source(spec).await? {
                Some(done) => Ok(Some(done)),
                // A code folder: its requirements.txt, if any, installed.
                None => self.prepare_deps(spec).await,
            }
        })
    }

    fn registered(&self, spec: &FunctionSpec) -> Result<(), IsolationError> {
        self.register_source(spec)?;
        self.note_deps(spec)
    }

    fn create<'a>(&'a self, req: CreateRequest<'a>) -> BoxFuture<'a, Result<Box<dyn Container>, IsolationError>> {
        Box::pin(async move {
            let source = self.source(req.spec)?;
            let layer = self.layer_for_start(req.spec, req.container_id).await?;
            let deps = layer.as_ref().map(|l| l.path.as_path());
            let standby = match &*source {
                Source::Code { dir, env, network: false } => {
                    let code = dir.proc_path();
                    let given = self.take_standby(&req, &code, env, deps);
                    given.instrument(tracing::debug_span!("standby")).await?
                }
                _ => None,
            };
            let c = match standby {
                Some(c) => c,
                None => self.start_container(req, &source, deps).instrument(tracing::debug_span!("start")).await?,
            };
            if let Some(pin) = layer {
                self.deps.attach(pin, &c.id);
            }
            Ok(Box::new(c) as Box<dyn Container>)
        })
    }

    fn start(&self) {
        self.refill_standby();
    }

    fn remove<'a>(&'a self, container: Box<dyn Container>) -> BoxFuture<'a, Result<(), IsolationError>> {
        let id = container.id().to_string();
        drop(container);
        Box::pin(async move { self.destroy(id).await })
    }

    fn clean_leftovers(&self) -> BoxFuture<'_, Result<usize, IsolationError>> {
        Box::pin(async move {
            // A process that did not call `launcher::serve_if_asked` first cannot launch.
            let ping = self.launchers.request(&launcher::Request::Ping, Duration::from_secs(10)).await;
            ping.map_err(|why| IsolationError::NoLauncher(Box::new(why)))?;
            let mut removed = 0;
            let ids: Vec<String> = std::fs::read_dir(&self.dirs.root)
                .map_err(IsolationError::io("cannot list", &self.dirs.root))?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            // A container caught mid-create by a crash has no readable state: its files go
            // all the same, and its processes with the cgroups below. One failed delete
            // does not stop the worker from starting.
            for id in ids {
                if let Err(e) = self.destroy(id.clone()).await {
                    tracing::warn!(container = %id, error = %e, "removing a leftover container failed; its files were removed");
                }
                removed += 1;
            }
            // Socket and slot directories are mount points: unmount before removing.
            for d in [&self.dirs.sockets, &self.dirs.slots, &self.dirs.staging] {
                for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                    let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                }
            }
            for d in [&self.dirs.bundles, &self.dirs.sockets, &self.dirs.logs, &self.dirs.slots] {
                removed += clear_dir(d)?;
            }
            // Staged code folders are mounts of a function's own folder: never recursed into.
            for e in std::fs::read_dir(&self.dirs.staging).into_iter().flatten().flatten() {
                if std::fs::remove_dir(e.path()).is_ok() {
                    removed += 1;
                }
            }
            removed += cgroup::remove_leftovers(&self.cgroup_parent);
            // Unfinished builds, and layers no registered function uses (registrations were
            // loaded before this runs).
            removed += self.deps.remove_leftovers().await;
            removed += self.deps.remove_unused().await;
            Ok(removed)
        })
    }

    fn remove_unused(&self) -> BoxFuture<'_, usize> {
        Box::pin(self.deps.remove_unused())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // The pool's containers are gone by now; then the standby ones, then the parent
        // cgroups, the last trace.
        Box::pin(async move {
            // No container is created from now on: a cold start still under way fails.
            self.launchers.refuse_creates();
            // A standby container being started now is destroyed by its refill task once
            // started (bounded by the start timeout): wait for that, or its files stay.
            let limit = Duration::from_millis(self.config.start_timeout_ms) + Duration::from_secs(2);
            for id in self.standby.close(limit).await {
                let _ = self.destroy(id).await;
            }
            // Whatever is left (a cold start that finished after the pool closed): removed
            // as an earlier run's leftovers would be, cgroups included.
            // Its last step removes this worker's cgroups; done here only if it did not finish.
            let sweep = tokio::time::timeout(Duration::from_secs(15), self.clean_leftovers()).await;
            match &sweep {
                Ok(Ok(n)) if *n > 0 => tracing::info!(removed = n, "removed what was left at close"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "removing what was left at close failed"),
                Err(_) => tracing::warn!("removing what was left at close took over 15 s"),
            }
            if !matches!(sweep, Ok(Ok(_))) {
                cgroup::remove_leftovers(&self.cgroup_parent);
            }
            let _ = nix::mount::umount2(&self.dirs.slots, nix::mount::MntFlags::MNT_DETACH);
            self.launchers.close().await;
            launcher::reap_zombies(&[]);
        })
    }
}

fn clear_dir(d: &Path) -> Result<usize, IsolationError> {
    let mut n = 0;
    for e in std::fs::read_dir(d).map_err(IsolationError::io("cannot list", d))?.flatten() {
        let p = e.path();
        let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        r.map_err(IsolationError::io("cannot remove", &p))?;
        n += 1;
    }
    Ok(n)
}

/// The last `max` bytes of a log file, for error messages.
fn log_tail(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}
