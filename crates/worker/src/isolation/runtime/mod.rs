//! The embedded container runtime backend: real containers, created in-process through the
//! `libcontainer` crate (youki), with no daemon. Each container runs the Python agent, which
//! serves the function over a Unix socket in a directory bind-mounted from the worker.
//!
//! Files live under `state_dir/runtime/`: `root/` (libcontainer's state), `bundles/<key>/`
//! (config.json), `sockets/<key>/` (the agent's socket), `logs/<key>.log` (the function's
//! stdout and stderr), `rootfs/` (the shared read-only root skeleton) and `agent/`.

mod agent;
mod cgroup;
mod image;
mod spec;

use super::{BoxFuture, CallRequest, CallResult, Container, CreateRequest, IsolationBackend, IsolationError};
use agent::{AgentConnection, AgentFailure};
use iluvatar_core::FunctionSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The agent, built into the worker so that it is where the worker expects it.
const AGENT_PY: &str = include_str!("../../../../../runtimes/python/agent.py");

/// libcontainer changes the process's working directory while it creates a container, so
/// only one thread may use it at a time.
static LIBCONTAINER: Mutex<()> = Mutex::new(());

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
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { python: "/usr/bin/python3".into(), start_timeout_ms: 10_000, pids_limit: 64, tmp_size_mb: 64 }
    }
}

struct Dirs {
    root: PathBuf,
    bundles: PathBuf,
    sockets: PathBuf,
    logs: PathBuf,
    rootfs: PathBuf,
    agent: PathBuf,
}

/// Where a function's code comes from.
enum Source {
    /// A folder holding main.py, and environment variables for the container.
    Code(PathBuf, Vec<String>),
    Image(image::ImageRef),
}

pub struct RuntimeBackend {
    config: RuntimeConfig,
    dirs: Dirs,
    /// The cgroup parent of this worker's containers, unique per state directory so that
    /// workers sharing a machine never touch each other's containers.
    cgroup_parent: String,
    images: std::sync::Arc<image::ImageStore>,
    clock: std::sync::Arc<dyn iluvatar_core::Clock>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> IsolationError {
    IsolationError::Io(format!("{what} {}: {e}", path.display()))
}

impl RuntimeBackend {
    pub fn new(
        config: RuntimeConfig,
        state_dir: &Path,
        clock: std::sync::Arc<dyn iluvatar_core::Clock>,
    ) -> Result<Self, IsolationError> {
        let base = state_dir.join("runtime");
        let dirs = Dirs {
            root: base.join("root"),
            bundles: base.join("bundles"),
            sockets: base.join("sockets"),
            logs: base.join("logs"),
            rootfs: base.join("rootfs"),
            agent: base.join("agent"),
        };
        for d in [&dirs.root, &dirs.bundles, &dirs.sockets, &dirs.logs, &dirs.rootfs, &dirs.agent] {
            std::fs::create_dir_all(d).map_err(|e| io_err("cannot create", d, e))?;
        }
        for d in spec::ROOT_DIRS {
            let p = dirs.rootfs.join(d);
            std::fs::create_dir_all(&p).map_err(|e| io_err("cannot create", &p, e))?;
        }
        for (link, target) in spec::ROOT_LINKS {
            let p = dirs.rootfs.join(link);
            if std::fs::symlink_metadata(&p).is_err() {
                std::os::unix::fs::symlink(target, &p).map_err(|e| io_err("cannot link", &p, e))?;
            }
        }
        let agent = dirs.agent.join("agent.py");
        std::fs::write(&agent, AGENT_PY).map_err(|e| io_err("cannot write", &agent, e))?;
        if !Path::new(&config.python).exists() {
            return Err(IsolationError::Io(format!("the runtime backend's python {} does not exist", config.python)));
        }
        // Container processes outlive the short-lived process that starts them; as their
        // subreaper the worker can reap them when it removes them.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| IsolationError::Io(format!("cannot become a child subreaper: {e}")))?;
        let cgroup_parent = format!("iluvatar-{:08x}", fnv1a(state_dir.to_string_lossy().as_bytes()) as u32);
        // Written down so that operators and tests can find this worker's cgroups.
        let note = base.join("cgroup_parent");
        std::fs::write(&note, &cgroup_parent).map_err(|e| io_err("cannot write", &note, e))?;
        let images = std::sync::Arc::new(image::ImageStore::new(base.join("images")));
        Ok(RuntimeBackend { config, dirs, cgroup_parent, images, clock })
    }

    /// A short, fixed-length name for a container's files (socket paths are limited to
    /// 108 bytes).
    fn key(container_id: &str) -> String {
        format!("{:016x}", fnv1a(container_id.as_bytes()))
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// What a reference names: `code:/absolute/folder` (holding main.py), or an OCI image
/// (`oci:/layout[:tag]`, `oci-archive:/file.tar[:tag]`).
fn source(spec: &FunctionSpec) -> Result<Source, IsolationError> {
    let bad = |why: String| IsolationError::BadReference { backend: "runtime", reference: spec.image.clone(), why };
    if let Some(r) = image::ImageRef::parse(&spec.image) {
        let r = r.map_err(&bad)?;
        r.check().map_err(&bad)?;
        return Ok(Source::Image(r));
    }
    let Some(rest) = spec.image.strip_prefix("code:") else {
        return Err(bad("expected code:/absolute/folder, oci:/layout[:tag] or oci-archive:/file.tar[:tag]".into()));
    };
    // `code:/folder?NAME=value&OTHER=value` sets environment variables of the container.
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut env = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, _) = pair.split_once('=').ok_or_else(|| bad(format!("{pair:?} is not NAME=value")))?;
        let ok = k.chars().next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !ok || k.starts_with("ILUVATAR_") {
            return Err(bad(format!("{k:?} is not an allowed variable name (A-Z, 0-9, _; not ILUVATAR_*)")));
        }
        env.push(pair.to_string());
    }
    let dir = PathBuf::from(path);
    if !dir.is_absolute() {
        return Err(bad(format!("{path} is not an absolute path")));
    }
    if !dir.is_dir() {
        return Err(bad(format!("folder {path} does not exist")));
    }
    if !dir.join("main.py").is_file() {
        return Err(bad(format!("folder {path} has no main.py")));
    }
    Ok(Source::Code(dir, env))
}

impl IsolationBackend for RuntimeBackend {
    fn name(&self) -> &'static str {
        "runtime"
    }

    fn flag(&self) -> u32 {
        iluvatar_rpc::isolation::RUNTIME
    }

    fn check_reference(&self, spec: &FunctionSpec) -> Result<(), IsolationError> {
        source(spec).map(|_| ())
    }

    fn create<'a>(&'a self, req: CreateRequest<'a>) -> BoxFuture<'a, Result<Box<dyn Container>, IsolationError>> {
        Box::pin(async move {
            let c = self.start_container(req).await?;
            Ok(Box::new(c) as Box<dyn Container>)
        })
    }

    fn remove<'a>(&'a self, container: Box<dyn Container>) -> BoxFuture<'a, Result<(), IsolationError>> {
        let id = container.id().to_string();
        drop(container);
        Box::pin(async move { self.destroy(id).await })
    }

    fn clean_leftovers(&self) -> BoxFuture<'_, Result<usize, IsolationError>> {
        Box::pin(async move {
            let mut removed = 0;
            let ids: Vec<String> = std::fs::read_dir(&self.dirs.root)
                .map_err(|e| io_err("cannot list", &self.dirs.root, e))?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            for id in ids {
                self.destroy(id).await?;
                removed += 1;
            }
            for d in [&self.dirs.bundles, &self.dirs.sockets, &self.dirs.logs] {
                removed += clear_dir(d)?;
            }
            removed += cgroup::remove_leftovers(&self.cgroup_parent);
            Ok(removed)
        })
    }
}

fn clear_dir(d: &Path) -> Result<usize, IsolationError> {
    let mut n = 0;
    for e in std::fs::read_dir(d).map_err(|e| io_err("cannot list", d, e))?.flatten() {
        let p = e.path();
        let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        r.map_err(|e| io_err("cannot remove", &p, e))?;
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

impl RuntimeBackend {
    async fn start_container(&self, req: CreateRequest<'_>) -> Result<RuntimeContainer, IsolationError> {
        let id = req.container_id.to_string();
        let key = Self::key(&id);
        let start_err = |why: String| IsolationError::Start { id: id.clone(), why };
        let source = source(req.spec)?;
        let bundle = self.dirs.bundles.join(&key);
        let sockets = self.dirs.sockets.join(&key);
        let log_path = self.dirs.logs.join(format!("{key}.log"));
        for d in [&bundle, &sockets] {
            std::fs::create_dir_all(d).map_err(|e| io_err("cannot create", d, e))?;
        }
        std::os::unix::fs::chown(&sockets, Some(spec::FUNCTION_UID), Some(spec::FUNCTION_UID))
            .map_err(|e| io_err("cannot chown", &sockets, e))?;
        let cgroup_path = format!("/{}/{key}", self.cgroup_parent);
        let image = match &source {
            Source::Image(r) => {
                let (store, r) = (self.images.clone(), r.clone());
                let image = tokio::task::spawn_blocking(move || store.prepare(&r))
                    .await
                    .map_err(|e| start_err(e.to_string()))?
                    .map_err(|e| start_err(format!("the image cannot be used: {e}")))?;
                Some(image)
            }
            Source::Code(..) => None,
        };
        let (rootfs, binds, args, env, cwd) = match (&source, &image) {
            (Source::Code(code, extra_env), _) => {
                let (binds, args, mut env) = spec::code_function(code, &self.dirs.agent, &sockets, &self.config.python);
                env.extend(extra_env.iter().cloned());
                (self.dirs.rootfs.as_path(), binds, args, env, "/tmp")
            }
            (Source::Image(_), Some(img)) => {
                let mut env = img.env.clone();
                if !env.iter().any(|e| e.starts_with("ILUVATAR_FUNCTION_DIR=")) {
                    env.push(format!("ILUVATAR_FUNCTION_DIR={}", spec::FUNCTION_DIR));
                }
                let binds = vec![(sockets.as_path(), spec::SOCKET_DIR, true)];
                (img.rootfs.as_path(), binds, img.args.clone(), env, img.cwd.as_str())
            }
            (Source::Image(_), None) => unreachable!("images are prepared above"),
        };
        let config = spec::build(&spec::SpecInput {
            rootfs,
            binds,
            args,
            env,
            cwd,
            cgroup_path: &cgroup_path,
            memory_mb: req.spec.memory_mb,
            cpus: req.spec.cpus,
            pids_limit: self.config.pids_limit,
            tmp_size_mb: self.config.tmp_size_mb,
            hostname: &key,
        });
        let config_path = bundle.join("config.json");
        std::fs::write(&config_path, config.to_string()).map_err(|e| io_err("cannot write", &config_path, e))?;
        let log = std::fs::File::create(&log_path).map_err(|e| io_err("cannot create", &log_path, e))?;
        let root = self.dirs.root.clone();
        let (cid, b) = (id.clone(), bundle.clone());
        let t0 = self.clock.now();
        let pid = tokio::task::spawn_blocking(move || launch(&root, &cid, &b, log))
            .await
            .map_err(|e| start_err(e.to_string()))?
            .map_err(&start_err)?;
        let t1 = self.clock.now();
        let socket = sockets.join(spec::SOCKET_NAME);
        let container = RuntimeContainer {
            id: id.clone(),
            pid,
            cgroup_path,
            memory_mb: req.spec.memory_mb,
            log_path: log_path.clone(),
            conn: tokio::sync::Mutex::new(None),
        };
        let deadline = Duration::from_millis(self.config.start_timeout_ms);
        match tokio::time::timeout(deadline, wait_for_agent(&socket, pid)).await {
            Ok(Ok(conn)) => {
                let t2 = self.clock.now();
                tracing::debug!(
                    tid = req.tid,
                    id,
                    launch_us = (t1 - t0).as_micros() as u64,
                    agent_us = (t2 - t1).as_micros() as u64,
                    "container started"
                );
                *container.conn.lock().await = Some(conn);
                Ok(container)
            }
            Ok(Err(why)) => {
                let _ = self.destroy(id.clone()).await;
                Err(start_err(format!("{why}; its output: {}", log_tail(&log_path, 2000))))
            }
            Err(_) => {
                let _ = self.destroy(id.clone()).await;
                Err(start_err(format!(
                    "the agent did not listen within {} ms; its output: {}",
                    deadline.as_millis(),
                    log_tail(&log_path, 2000)
                )))
            }
        }
    }

    /// Kills and deletes a container and removes its files.
    async fn destroy(&self, id: String) -> Result<(), IsolationError> {
        let key = Self::key(&id);
        let root = self.dirs.root.clone();
        tokio::task::spawn_blocking(move || kill_and_delete(&root, &id))
            .await
            .map_err(|e| IsolationError::Io(e.to_string()))??;
        let _ = std::fs::remove_dir_all(self.dirs.bundles.join(&key));
        let _ = std::fs::remove_dir_all(self.dirs.sockets.join(&key));
        let _ = std::fs::remove_file(self.dirs.logs.join(format!("{key}.log")));
        Ok(())
    }
}

/// Creates and starts a container; returns its init process's pid.
fn launch(root: &Path, id: &str, bundle: &Path, log: std::fs::File) -> Result<i32, String> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    let _only_one = LIBCONTAINER.lock().unwrap_or_else(|p| p.into_inner());
    let stderr = log.try_clone().map_err(|e| e.to_string())?;
    let mut c = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| e.to_string())?
        .with_stdout(log)
        .with_stderr(stderr)
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("creating the container failed: {e}"))?;
    c.start().map_err(|e| format!("starting the container failed: {e}"))?;
    c.pid().map(|p| p.as_raw()).ok_or_else(|| "the started container has no process".to_string())
}

fn kill_and_delete(root: &Path, id: &str) -> Result<(), IsolationError> {
    use libcontainer::container::Container as Lc;
    let _only_one = LIBCONTAINER.lock().unwrap_or_else(|p| p.into_inner());
    let dir = root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    let mut c = match Lc::load(dir.clone()) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(IsolationError::Io(format!(
                "container {id} has unreadable state ({e}); its files were removed"
            )));
        }
    };
    let pid = c.pid();
    if c.can_kill() {
        let _ = c.kill(nix::sys::signal::Signal::SIGKILL, true);
    }
    if let Some(pid) = pid {
        // The worker is the subreaper: collect the exit status so no zombie stays.
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    c.delete(true).map_err(|e| IsolationError::Io(format!("deleting container {id}: {e}")))
}

/// Waits until the agent's socket appears and accepts a connection, or the process exits.
async fn wait_for_agent(socket: &Path, pid: i32) -> Result<AgentConnection, String> {
    loop {
        if socket.exists() {
            return AgentConnection::connect(socket).await.map_err(|e| format!("connecting to the agent failed: {e}"));
        }
        if !process_alive(pid) {
            return Err("the agent exited before listening".into());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

struct RuntimeContainer {
    id: String,
    pid: i32,
    cgroup_path: String,
    memory_mb: u64,
    log_path: PathBuf,
    /// None once the connection broke: the container is not used again.
    conn: tokio::sync::Mutex<Option<AgentConnection>>,
}

impl Container for RuntimeContainer {
    fn id(&self) -> &str {
        &self.id
    }

    fn call<'a>(&'a self, req: CallRequest<'a>) -> BoxFuture<'a, Result<CallResult, IsolationError>> {
        Box::pin(async move {
            let mut guard = self.conn.lock().await;
            let conn = guard.as_mut().ok_or_else(|| IsolationError::Broken {
                id: self.id.clone(),
                why: "an earlier call broke the connection to its agent".into(),
            })?;
            match conn.call(req.args, req.tid).await {
                Ok(r) => Ok(r),
                Err(failure) => {
                    *guard = None;
                    Err(self.explain(failure))
                }
            }
        })
    }
}

impl RuntimeContainer {
    /// Turns a failed call into the reason: an OOM kill, the process's death, or a
    /// protocol error.
    fn explain(&self, failure: AgentFailure) -> IsolationError {
        if cgroup::oom_killed(&self.cgroup_path) {
            return IsolationError::OutOfMemory { limit_mb: self.memory_mb };
        }
        let why = match failure {
            AgentFailure::Closed(why) => {
                let state = if process_alive(self.pid) { "its agent is still running" } else { "its agent exited" };
                format!("{why} ({state}); its output: {}", log_tail(&self.log_path, 1000))
            }
            AgentFailure::Protocol(why) => why,
        };
        IsolationError::Broken { id: self.id.clone(), why }
    }
}
