//! One container's life: its files, its launch (by a launcher process), the wait for its
//! agent or function server, its calls, and its removal.

use super::launcher::{Request, reap};
use super::netns::Netns;
use super::served::{self, Conn, Speaks};
use super::{RuntimeBackend, Source, cgroup, log_tail, roots, spec};
use crate::isolation::agent::{AgentConnection, AgentFailure};
use crate::isolation::server::ServerKind;
use crate::isolation::{BoxFuture, CallRequest, CallResult, Container, CreateRequest, IsolationError};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::Instrument;

/// Size of the tmpfs holding a container's socket: room for the socket, nothing to fill.
const SOCKET_TMPFS: &str = "size=64k,nr_inodes=16,mode=0755";

/// The files of one container, named by its key.
pub(super) struct Files {
    pub bundle: PathBuf,
    pub sockets: PathBuf,
    pub log: PathBuf,
    /// Where a standby container's function folder is mounted.
    pub slot: PathBuf,
    /// Where a standby container's dependency layer is mounted.
    pub deps_slot: PathBuf,
    /// Where a started container's code folder is staged (mounted from its handle).
    pub code: PathBuf,
}

impl RuntimeBackend {
    pub(super) fn files(&self, key: &str) -> Files {
        Files {
            bundle: self.dirs.bundles.join(key),
            sockets: self.dirs.sockets.join(key),
            log: self.dirs.logs.join(format!("{key}.log")),
            slot: self.dirs.slots.join(key),
            deps_slot: self.dirs.slots.join(format!("{key}-deps")),
            code: self.dirs.staging.join(format!("{key}-code")),
        }
    }

    pub(super) fn cgroup_path(&self, key: &str) -> String {
        format!("/{}/{key}", self.cgroup_parent)
    }

    /// Starts a container for `req` (with the dependency layer at `deps`, if any); on any
    /// failure, whatever was made is removed.
    pub(super) async fn start_container(
        &self,
        req: CreateRequest<'_>,
        source: &Source,
        deps: Option<&Path>,
    ) -> Result<RuntimeContainer, IsolationError> {
        let id = req.container_id.to_string();
        let key = Self::key(&id);
        let files = self.files(&key);
        let started = async {
            self.prepare_dirs(&files)?;
            let (config, speaks) = self.config_for(&req, source, deps, &key, &files).await?;
            let loopback = matches!(source, Source::Code { network: true, .. });
            self.boot(&id, &files, config, req.spec.memory_mb, speaks, loopback).await
        };
        match started.await {
            Ok(c) => Ok(c),
            Err(e) => {
                let _ = self.destroy(id).await;
                Err(e)
            }
        }
    }

    /// The bundle and the socket directory: a tiny tmpfs of its own, so that the function can
    /// neither fill the host's disk through it nor leave anything behind.
    pub(super) fn prepare_dirs(&self, files: &Files) -> Result<(), IsolationError> {
        for d in [&files.bundle, &files.sockets] {
            std::fs::create_dir_all(d).map_err(IsolationError::io("cannot create", d))?;
        }
        let opts = format!("{SOCKET_TMPFS},uid={0},gid={0}", spec::host_id(self.userns_base()));
        nix::mount::mount(
            Some("tmpfs"),
            &files.sockets,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
            Some(opts.as_str()),
        )
        .map_err(|source| IsolationError::Sys {
            what: format!("cannot mount the socket tmpfs at {}", files.sockets.display()),
            source,
        })
    }

    /// The OCI config of a function's container (a code folder or an unpacked image), and
    /// what its process speaks.
    async fn config_for(
        &self,
        req: &CreateRequest<'_>,
        source: &Source,
        deps: Option<&Path>,
        key: &str,
        files: &Files,
    ) -> Result<(serde_json::Value, Speaks), IsolationError> {
        let start_err = |why: String| IsolationError::Start { id: req.container_id.to_string(), why };
        let image = match source {
            Source::Image { image: r, .. } => {
                let (store, r) = (self.images.clone(), r.clone());
                let id = req.container_id.to_string();
                let image = tokio::task::spawn_blocking(move || store.prepare(&r, Some(&id)))
                    .await
                    .map_err(|e| start_err(e.to_string()))?
                    .map_err(|e| start_err(format!("the image cannot be used: {e}")))?;
                Some(image)
            }
            Source::Code { .. } => None,
        };
        let mut speaks = Speaks::Agent;
        let (rootfs, binds, args, env, cwd) = match (source, &image) {
            (Source::Code { dir: code, env: extra_env, .. }, _) => {
                // libcontainer resolves a bind's source by its path (canonicalize, then
                // open_tree): the container binds the staged mount of the handle, never
                // the registered path.
                stage_code(code, &files.code).map_err(|e| start_err(e.to_string()))?;
                let (binds, args, mut env) =
                    spec::code_function(&files.code, deps, &self.dirs.agent, &files.sockets, &self.config.python);
                env.extend(extra_env.iter().cloned());
                (self.dirs.rootfs.as_path(), binds, args, env, "/tmp")
            }
            (Source::Image { .. }, Some(img)) => {
                let mut env = img.env.clone();
                if !env.iter().any(|e| e.starts_with("ILUVATAR_FUNCTION_DIR=")) {
                    env.push(format!("ILUVATAR_FUNCTION_DIR={}", spec::FUNCTION_DIR));
                }
                speaks = Speaks::image(&img.args, req.spec.container_server);
                if let Speaks::Server(_) = speaks {
                    // The platform's settings win over the image's own of the same name.
                    let ours = Speaks::server_env(&format!("{}/{}", spec::SOCKET_DIR, spec::SERVER_SOCKET_NAME));
                    let name = |kv: &String| kv.split('=').next().unwrap_or_default().to_string();
                    env.retain(|kv| !ours.iter().any(|o| name(o) == name(kv)));
                    env.extend(ours);
                }
                let binds = vec![(files.sockets.as_path(), spec::SOCKET_DIR, true)];
                (img.rootfs.as_path(), binds, img.args.clone(), env, img.cwd.as_str())
            }
            (Source::Image { .. }, None) => unreachable!("images are prepared above"),
        };
        let (memory_mb, cpus) = (req.spec.memory_mb, req.spec.cpus);
        Ok((self.spec(key, spec::Workload { rootfs, binds, args, env, cwd, memory_mb, cpus }), speaks))
    }

    /// The OCI config of a workload in the container named by `key`, with this backend's
    /// cgroup, limits, seccomp profile and user namespace.
    pub(super) fn spec(&self, key: &str, workload: spec::Workload<'_>) -> serde_json::Value {
        spec::build(&spec::SpecInput {
            workload,
            cgroup_path: &self.cgroup_path(key),
            pids_limit: self.config.pids_limit,
            tmp_size_mb: self.config.tmp_size_mb,
            log_limit_mb: self.config.log_limit_mb,
            hostname: key,
            seccomp: self.seccomp.as_ref(),
            userns_base: self.userns_base(),
        })
    }

    /// Writes the bundle, has a launcher create and start the container (and bring its
    /// loopback up if asked, or if it runs an HTTP server), and waits for its agent or
    /// server: all within `start_timeout_ms`.
    pub(super) async fn boot(
        &self,
        id: &str,
        files: &Files,
        config: serde_json::Value,
        memory_mb: u64,
        speaks: Speaks,
        loopback: bool,
    ) -> Result<RuntimeContainer, IsolationError> {
        let start_err = |why: String| IsolationError::Start { id: id.to_string(), why };
        let path = files.bundle.join("config.json");
        std::fs::write(&path, config.to_string()).map_err(IsolationError::io("cannot write", &path))?;
        let req = Request::Create {
            root: self.dirs.root.clone(),
            id: id.to_string(),
            bundle: files.bundle.clone(),
            log: files.log.clone(),
            loopback: loopback || speaks == Speaks::Server(ServerKind::Http),
        };
        let timeout = Duration::from_millis(self.config.start_timeout_ms);
        let t0 = self.clock.now();
        let pid = self.launchers.request(&req, timeout).await.map_err(|e| start_err(e.to_string()))?;
        let pid = pid.ok_or_else(|| start_err("the launcher answered no process".into()))?;
        let t1 = self.clock.now();
        let deadline = timeout.saturating_sub(t1 - t0);
        let conn = match tokio::time::timeout(deadline, self.wait_for(speaks, files, pid)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(why)) => return Err(start_err(format!("{why}; its output: {}", log_tail(&files.log, 2000)))),
            Err(_) => {
                let out = log_tail(&files.log, 2000);
                let what = match speaks {
                    Speaks::Agent => "the agent did not listen".to_string(),
                    Speaks::Server(ServerKind::Http) => format!(
                        "no function server answered GET / on 127.0.0.1:{} (the image's entrypoint does not name \
                         Ilúvatar's agent, {}, so it must run a server of the reference protocol)",
                        crate::isolation::server::HTTP_PORT,
                        served::AGENT_IN_IMAGE
                    ),
                    Speaks::Server(ServerKind::UnixSocket) => format!(
                        "no function server answered its status check on the socket {}/{} (container_server \
                         UnixSocket)",
                        spec::SOCKET_DIR,
                        spec::SERVER_SOCKET_NAME
                    ),
                };
                return Err(start_err(format!("{what} within the start timeout of {timeout:?}; its output: {out}")));
            }
        };
        let t2 = self.clock.now();
        let (launch_us, agent_us) = ((t1 - t0).as_micros() as u64, (t2 - t1).as_micros() as u64);
        tracing::debug!(launch_us, agent_us, "container started");
        let key = Self::key(id);
        Ok(RuntimeContainer {
            id: id.to_string(),
            pid,
            cgroup_path: self.cgroup_path(&key),
            memory_mb,
            log_path: files.log.clone(),
            speaks,
            conn: tokio::sync::Mutex::new(Some(conn)),
        })
    }

    /// Waits for what the container runs to answer (the caller bounds the wait).
    async fn wait_for(&self, speaks: Speaks, files: &Files, pid: i32) -> Result<Conn, String> {
        match speaks {
            Speaks::Agent => {
                let socket = files.sockets.join(spec::SOCKET_NAME);
                wait_for_agent(&socket, pid).await.map(Conn::Agent).map_err(|e| e.to_string())
            }
            Speaks::Server(ServerKind::Http) => {
                let netns = Netns::of_process(pid).map_err(|e| format!("cannot open the container's network: {e}"))?;
                let clock = self.clock.clone();
                served::wait_for_http(self.sockets.clone(), netns, pid, clock).await.map_err(|e| e.to_string())
            }
            Speaks::Server(ServerKind::UnixSocket) => {
                let socket = files.sockets.join(spec::SERVER_SOCKET_NAME);
                served::wait_for_socket(&socket, pid, self.clock.clone()).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Kills and deletes a container (through a launcher), reaps its process and removes
    /// its files. Files are removed even when the delete failed, so that nothing mounted
    /// stays; the error is still reported.
    pub(super) async fn destroy(&self, id: String) -> Result<(), IsolationError> {
        let files = self.files(&Self::key(&id));
        let id_of_image = id.clone();
        let req = Request::Delete { root: self.dirs.root.clone(), id: id.clone() };
        let limit = Duration::from_millis(self.config.start_timeout_ms);
        let mut deleted = self.launchers.request(&req, limit).await;
        if deleted.as_ref().is_err_and(|e| e.may_retry()) {
            // The launcher died under this request: a delete can be repeated, by a new one.
            deleted = self.launchers.request(&req, limit).await;
        }
        // The launcher reaps the inits it created; one re-parented to the worker (its launcher
        // died) is reaped here.
        if let Ok(Some(pid)) = deleted
            && !self.launchers.is_launcher(pid)
        {
            reap(pid).await;
        }
        remove_files(&files);
        // Its dependency layer and image root, if any, go when nothing else uses them.
        self.deps.release(&id);
        let images = self.images.clone();
        let _ = tokio::task::spawn_blocking(move || images.release(&id_of_image)).await;
        deleted
            .map(|_| ())
            .map_err(|why| IsolationError::Launcher { what: format!("deleting container {id}"), source: Box::new(why) })
    }
}

/// Mounts the folder a handle holds at `stage`, read-only: the kernel follows the handle's
/// `/proc/self/fd` link to the opened folder itself, whatever its path names now.
fn stage_code(code: &roots::Handle, stage: &Path) -> Result<(), IsolationError> {
    use nix::mount::{MsFlags, mount};
    fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> IsolationError {
        move |source| IsolationError::Sys { what: what.into(), source }
    }
    std::fs::create_dir_all(stage).map_err(IsolationError::io("creating", stage))?;
    let source = code.proc_path();
    mount(Some(&source), stage, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(sys("binding the function's folder"))?;
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(None::<&str>, stage, None::<&str>, ro, None::<&str>).map_err(sys("making it read-only"))
}

/// Removes a container's files; its socket, slot and code directories are mount points
/// (a staged code folder is only ever unmounted and removed empty, never recursed into).
pub(super) fn remove_files(files: &Files) {
    for m in [&files.sockets, &files.slot, &files.deps_slot, &files.code] {
        let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(&files.bundle);
    let _ = std::fs::remove_dir_all(&files.sockets);
    let _ = std::fs::remove_dir(&files.slot);
    let _ = std::fs::remove_dir(&files.deps_slot);
    let _ = std::fs::remove_dir(&files.code);
    let _ = std::fs::remove_file(&files.log);
}

/// Why a started container's agent could not be reached.
#[derive(Debug, thiserror::Error)]
enum NotListening {
    #[error("connecting to the agent failed: {0}")]
    Connect(std::io::Error),
    #[error("the socket's peer is process {peer:?}, not the container's agent ({pid})")]
    WrongPeer { peer: Option<i32>, pid: i32 },
    #[error("the agent exited before listening")]
    Exited,
}

/// Waits until the agent's socket appears and accepts a connection, or the process exits.
/// A function cannot redirect the worker to another socket of the host: a link at the path is
/// never followed, and the peer of the connection must be the container's own process (which
/// also covers a link swapped in between the check and the connect).
async fn wait_for_agent(socket: &Path, pid: i32) -> Result<AgentConnection, NotListening> {
    loop {
        // Only a socket itself, never a link a function planted to point elsewhere.
        let is_socket = std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket());
        if is_socket {
            let conn = AgentConnection::connect(socket).await.map_err(NotListening::Connect)?;
            return match conn.peer_pid() {
                Some(p) if p == pid => Ok(conn),
                peer => Err(NotListening::WrongPeer { peer, pid }),
            };
        }
        if !process_alive(pid) {
            return Err(NotListening::Exited);
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

pub(super) fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

pub(super) struct RuntimeContainer {
    pub id: String,
    pub pid: i32,
    pub cgroup_path: String,
    pub memory_mb: u64,
    pub log_path: PathBuf,
    pub speaks: Speaks,
    /// None once the connection broke: the container is not used again.
    pub conn: tokio::sync::Mutex<Option<Conn>>,
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
                why: format!("an earlier call broke the connection to its {}", self.speaks.process()),
            })?;
            match conn.call(req.args, req.tid).instrument(tracing::debug_span!("agent")).await {
                Ok(r) => Ok(r),
                Err(failure) => {
                    *guard = None;
                    Err(self.explain(failure).await)
                }
            }
        })
    }
}

impl RuntimeContainer {
    /// Turns a failed call into the reason: an OOM kill, the process's death, or a
    /// protocol error.
    async fn explain(&self, failure: AgentFailure) -> IsolationError {
        let why = match failure {
            AgentFailure::Closed(why) => {
                // The socket closes as the process dies: give the kernel a moment to finish.
                for _ in 0..20 {
                    if !process_alive(self.pid) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if cgroup::oom_killed(&self.cgroup_path) {
                    return IsolationError::OutOfMemory { limit_mb: self.memory_mb };
                }
                let (process, state) =
                    (self.speaks.process(), if process_alive(self.pid) { "is still running" } else { "exited" });
                format!("{why} (its {process} {state}); its output: {}", log_tail(&self.log_path, 1000))
            }
            AgentFailure::Protocol(why) => why.to_string(),
        };
        IsolationError::Broken { id: self.id.clone(), why }
    }
}
