//! The container launcher: every libcontainer call (create, start, kill, delete) runs in a
//! separate single-threaded process, the worker binary re-executed with [`LAUNCHER_ARG`].
//!
//! Why: libcontainer creates a container with a raw `clone`, which (unlike glibc's `fork`)
//! does not take malloc's locks first. Cloned from the multi-threaded worker, the child can
//! block for ever on a lock another thread held at that instant, and the worker with it. A
//! process with one thread has no other thread to hold a lock. The launcher is started with
//! `exec` (`std::process::Command`, safe from a threaded process), so it begins with one
//! thread and never starts another.
//!
//! The worker drives launchers over a Unix socket (the launcher's stdin at exec, moved to a
//! close-on-exec descriptor so containers never inherit it), one JSON request per line, one
//! answer per line. Every request has a deadline; a launcher that dies or misses it is
//! killed and replaced, and only the request it was serving fails. A container's init is
//! the launcher's child (libcontainer clones it with `CLONE_PARENT`) and the launcher reaps
//! it on delete; if the launcher dies first, the init is re-parented to the worker (a child
//! subreaper), which reaps it.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex as SyncMutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The first argument that makes the worker binary a launcher.
pub const LAUNCHER_ARG: &str = "__iluvatar_launcher";

/// Largest request or answer line.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Request {
    /// Creates and starts a container from its bundle; answers its init process's pid.
    Create { root: PathBuf, id: String, bundle: PathBuf, log: PathBuf, loopback: bool },
    /// Kills every process of a container, waits (bounded) for its init to die and reaps it,
    /// deletes it; answers the init's pid only if the worker must reap it (not this
    /// launcher's child).
    Delete { root: PathBuf, id: String },
    /// Answers at once: the launcher is alive.
    Ping,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Answer {
    #[serde(default)]
    pid: Option<i32>,
    #[serde(default)]
    error: Option<String>,
}

/// If this process was started as a launcher, serves until the worker closes the socket
/// and exits; otherwise returns at once. Call it first thing in `main`, before any thread
/// (or tokio runtime) exists.
pub fn serve_if_asked() {
    if std::env::args_os().nth(1).is_some_and(|a| a == LAUNCHER_ARG) {
        let code = match serve() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("iluvatar launcher: {e}");
                1
            }
        };
        std::process::exit(code);
    }
}

fn serve() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // The socket came as stdin. Move it to a close-on-exec descriptor and put /dev/null in
    // its place, so that no container process can inherit or read it.
    let sock = nix::fcntl::fcntl(0, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(std::io::Error::from)?;
    // SAFETY: `sock` was just returned by F_DUPFD_CLOEXEC and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2(null.as_raw_fd(), 0).map_err(std::io::Error::from)?;
    let stream = std::os::unix::net::UnixStream::from(sock);
    // Wake up now and then while idle to reap children that exited meanwhile.
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = Vec::with_capacity(1024);
    loop {
        let n = match (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut line) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                reap_children();
                continue; // What was read of a line stays in `line`.
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 && line.is_empty() {
            return Ok(()); // The worker went away.
        }
        if line.last() != Some(&b'\n') && line.len() < MAX_LINE && n > 0 {
            continue; // The rest of the line is still coming.
        }
        let answer = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => handle(req),
            Err(e) => Answer { pid: None, error: Some(format!("unreadable request ({e})")) },
        };
        line.clear();
        reap_children();
        let mut out = serde_json::to_vec(&answer).unwrap_or_else(|_| b"{}".to_vec());
        out.push(b'\n');
        writer.write_all(&out)?;
        if n == 0 {
            return Ok(()); // A last line without its newline, then the end.
        }
    }
}

fn handle(req: Request) -> Answer {
    let result = match req {
        Request::Create { root, id, bundle, log, loopback } => create(&root, &id, &bundle, &log, loopback),
        Request::Delete { root, id } => delete(&root, &id),
        Request::Ping => Ok(None),
    };
    match result {
        Ok(pid) => Answer { pid, error: None },
        Err(error) => Answer { pid: None, error: Some(error) },
    }
}

/// Creates and starts a container; brings its loopback up if asked.
fn create(root: &Path, id: &str, bundle: &Path, log: &Path, loopback: bool) -> Result<Option<i32>, String> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    let log = std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let stderr = log.try_clone().map_err(|e| e.to_string())?;
    let filters = seccomp_filters(bundle)?;
    let mut c = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_executor(Confined { filters })
        .with_root_path(root)
        .map_err(|e| e.to_string())?
        .with_stdout(log)
        .with_stderr(stderr)
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("creating the container failed: {e}"))?;
    let pid = c.pid().map(|p| p.as_raw()).ok_or_else(|| "the created container has no process".to_string())?;
    // Before the start: the workload finds loopback up from its first instruction (a
    // server binding 127.0.0.1 would fail on a loopback still down).
    if loopback {
        loopback_up(pid)?;
    }
    c.start().map_err(|e| format!("starting the container failed: {e}"))?;
    Ok(Some(pid))
}

/// The compiled seccomp filters of a bundle's profile (`linux.seccomp` of its config.json),
/// compiled once per distinct profile in this launcher's life.
fn seccomp_filters(bundle: &Path) -> Result<Option<Arc<Vec<seccompiler::BpfProgram>>>, String> {
    type Compiled = Vec<(String, Arc<Vec<seccompiler::BpfProgram>>)>;
    static COMPILED: std::sync::Mutex<Compiled> = std::sync::Mutex::new(Vec::new());
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let profile = &config["linux"]["seccomp"];
    if profile.is_null() {
        return Ok(None);
    }
    let key = profile.to_string();
    let mut compiled = COMPILED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, f)) = compiled.iter().find(|(k, _)| *k == key) {
        return Ok(Some(f.clone()));
    }
    let filters = Arc::new(super::seccomp::compile(profile).map_err(|e| format!("the seccomp profile: {e}"))?);
    compiled.push((key, filters.clone()));
    Ok(Some(filters))
}

/// Executes the container's process as libcontainer's default executor does, after
/// installing the seccomp filters: the last step of the container's init, when its
/// capabilities are dropped and `no_new_privs` is set.
#[derive(Clone)]
struct Confined {
    filters: Option<Arc<Vec<seccompiler::BpfProgram>>>,
}

impl libcontainer::workload::Executor for Confined {
    fn exec(&self, spec: &libcontainer::oci_spec::runtime::Spec) -> Result<(), libcontainer::workload::ExecutorError> {
        if let Some(filters) = &self.filters {
            super::seccomp::install(filters).map_err(libcontainer::workload::ExecutorError::Other)?;
        }
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

/// Brings the loopback interface of a container's network namespace up: the network a
/// function that asks for one gets (there is no route off the machine), and the one a
/// function server is reached on. This (single-threaded) launcher joins the namespace for
/// the two ioctls and returns to its own; if it cannot return it exits, and the worker
/// starts another launcher.
fn loopback_up(pid: i32) -> Result<(), String> {
    use nix::sched::{CloneFlags, setns};
    let open = |p: String| std::fs::File::open(&p).map_err(|e| format!("cannot open {p}: {e}"));
    let own = open("/proc/self/ns/net".into())?;
    let theirs = open(format!("/proc/{pid}/ns/net"))?;
    setns(&theirs, CloneFlags::CLONE_NEWNET).map_err(|e| format!("cannot join the container's network: {e}"))?;
    let up = interface_up("lo");
    if let Err(e) = setns(&own, CloneFlags::CLONE_NEWNET) {
        eprintln!("iluvatar launcher: cannot return to its own network namespace ({e}); exiting");
        std::process::exit(1);
    }
    up.map_err(|e| format!("bringing loopback up failed: {e}"))
}

/// Sets `IFF_UP` on an interface of this process's network namespace.
fn interface_up(name: &str) -> std::io::Result<()> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let sock = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
    // SAFETY: ifreq is plain data (all zeros is a valid value).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write only the ifreq passed, which lives
    // across both calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How long a killed container's init may take to die before the delete goes on anyway.
const DEATH_WAIT: Duration = Duration::from_secs(2);

fn delete(root: &Path, id: &str) -> Result<Option<i32>, String> {
    use libcontainer::container::Container as Lc;
    let dir = root.join(id);
    if !dir.exists() {
        return Ok(None);
    }
    let mut c = match Lc::load(dir.clone()) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("container {id} has unreadable state ({e}); its files were removed"));
        }
    };
    let pid = c.pid().map(|p| p.as_raw());
    if c.can_kill() {
        let _ = c.kill(nix::sys::signal::Signal::SIGKILL, true);
    }
    let reaped = pid.is_some_and(reap_or_wait);
    c.delete(true).map_err(|e| e.to_string())?;
    // A pid reaped here is no one else's to reap; one that is not this launcher's child
    // (its launcher died and it was re-parented to the worker) is the worker's.
    Ok(if reaped { None } else { pid })
}

/// Reaps every child of this launcher that has exited: the inits of containers deleted by
/// the other launcher, or that died on their own. Safe between requests only: then no
/// libcontainer wait is pending in this (single-threaded) process.
fn reap_children() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Waits (up to [`DEATH_WAIT`]) for a killed container's init to die, and reaps it if it is
/// this launcher's child, as it is when this launcher created it: libcontainer clones the
/// init with `CLONE_PARENT`, making it a sibling of its intermediate process. Returns
/// whether it was reaped here.
fn reap_or_wait(pid: i32) -> bool {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let step = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => return true,
            // Not this launcher's child: enough that it is dead (a zombie the worker reaps).
            Err(_) if !super::container::process_alive(pid) => return false,
            Err(_) => {}
        }
        if waited >= DEATH_WAIT {
            return false;
        }
        std::thread::sleep(step);
        waited += step;
    }
}

/// Why a request got no pid.
#[derive(Debug, thiserror::Error)]
pub(super) enum LaunchError {
    /// The launcher answered: libcontainer refused or failed the request. The text comes
    /// from the launcher process, over its socket.
    #[error("{0}")]
    Refused(String),
    /// Creating is refused once the worker shuts down (deletes still run).
    #[error("the worker is shutting down: no container is created")]
    Closing,
    /// The request could not be written.
    #[error("{0}")]
    Encode(serde_json::Error),
    /// No launcher could be started; the request did not run.
    #[error("{what}: {source}")]
    Spawn { what: String, source: std::io::Error },
    /// The launcher died or missed its deadline; the request may not have run at all.
    #[error("the container launcher (pid {pid}) failed while serving this request: {fault}; it was replaced")]
    Failed { pid: i32, fault: Fault },
}

impl LaunchError {
    /// Whether the request may simply not have run, and can be sent again (to a new
    /// launcher).
    pub fn may_retry(&self) -> bool {
        matches!(self, LaunchError::Failed { .. } | LaunchError::Spawn { .. })
    }
}

/// What went wrong with a launcher serving a request.
#[derive(Debug, thiserror::Error)]
pub(super) enum Fault {
    #[error("sending failed: {0}")]
    Send(std::io::Error),
    #[error("reading failed: {0}")]
    Read(std::io::Error),
    #[error("it closed the connection")]
    Closed,
    #[error("unreadable answer ({0})")]
    Unreadable(serde_json::Error),
    #[error("it died")]
    Died,
    #[error("it did not answer within {0:?}")]
    Timeout(Duration),
}

/// The worker's side: a few launcher processes, each serving one request at a time.
pub(super) struct Launchers {
    program: PathBuf,
    slots: Vec<tokio::sync::Mutex<Option<Running>>>,
    next: AtomicUsize,
    /// Pids of the launchers started and not yet found dead (one killed while idle is found
    /// when its slot is next used), never reaped by the zombie sweep.
    pids: std::sync::Arc<SyncMutex<Vec<i32>>>,
    /// Where the pids are written, one per line, for operators and tests.
    pid_file: PathBuf,
    pub restarts: AtomicU64,
    /// Set at shutdown: no more containers are created (deletes still run).
    closed: std::sync::atomic::AtomicBool,
}

struct Running {
    /// Set while a request is out: a request dropped midway leaves it set, and its answer
    /// may still come, so the launcher is replaced rather than reused out of step.
    busy: bool,
    child: std::process::Child,
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Launchers {
    /// `count` launchers of `program` (the worker binary), started when first needed.
    pub fn new(program: PathBuf, count: usize, pid_file: PathBuf) -> Self {
        Launchers {
            program,
            slots: (0..count.max(1)).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            pids: Default::default(),
            pid_file,
            restarts: AtomicU64::new(0),
            closed: Default::default(),
        }
    }

    /// Sends `req` to a free launcher (or waits for one) and returns the pid it answers.
    /// A launcher that dies or does not answer within `deadline` is killed and replaced.
    pub async fn request(&self, req: &Request, deadline: Duration) -> Result<Option<i32>, LaunchError> {
        if matches!(req, Request::Create { .. }) && self.closed.load(Ordering::SeqCst) {
            return Err(LaunchError::Closing);
        }
        let mut line = serde_json::to_vec(req).map_err(LaunchError::Encode)?;
        line.push(b'\n');
        let mut slot = match self.slots.iter().find_map(|s| s.try_lock().ok()) {
            Some(s) => s,
            None => self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()].lock().await,
        };
        // Out of step (a request dropped midway), or dead while idle: replace it.
        if let Some(stale) = slot.take_if(|r| r.busy || !super::container::process_alive(r.child.id() as i32)) {
            self.bury(stale);
        }
        if slot.is_none() {
            *slot = Some(self.spawn()?);
        }
        let running = slot.as_mut().expect("started above");
        let pid = running.child.id() as i32;
        running.busy = true;
        let exchange = async {
            running.writer.write_all(&line).await.map_err(Fault::Send)?;
            let mut answer = Vec::with_capacity(256);
            let n = (&mut running.reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut answer)
                .await
                .map_err(Fault::Read)?;
            if n == 0 || answer.last() != Some(&b'\n') {
                return Err(Fault::Closed);
            }
            running.busy = false;
            serde_json::from_slice::<Answer>(&answer).map_err(Fault::Unreadable)
        };
        // A launcher killed mid-create may leave a child holding its socket open, so its
        // death is watched for directly, not only as the socket's end.
        let died = async {
            while super::container::process_alive(pid) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let answer = tokio::select! {
            a = tokio::time::timeout(deadline, exchange) => a,
            _ = died => Ok(Err(Fault::Died)),
        };
        let fault = match answer {
            Ok(Ok(Answer { error: Some(e), .. })) => return Err(LaunchError::Refused(e)),
            Ok(Ok(Answer { pid, error: None })) => return Ok(pid),
            Ok(Err(fault)) => fault,
            Err(_) => Fault::Timeout(deadline),
        };
        // This launcher is dead or wedged: kill it; the next request starts a new one.
        let dead = slot.take().expect("running above");
        self.bury(dead);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(launcher = pid, why = %fault, "a container launcher failed; it will be replaced");
        Err(LaunchError::Failed { pid, fault })
    }

    fn spawn(&self) -> Result<Running, LaunchError> {
        use std::os::fd::OwnedFd;
        let failed = |what: String| move |source| LaunchError::Spawn { what, source };
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(failed("cannot make the launcher's socket".into()))?;
        let child = std::process::Command::new(&self.program)
            .arg(LAUNCHER_ARG)
            .stdin(std::process::Stdio::from(OwnedFd::from(theirs)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(failed(format!("cannot start the container launcher {}", self.program.display())))?;
        ours.set_nonblocking(true).map_err(failed("cannot set up the launcher's socket".into()))?;
        let stream =
            tokio::net::UnixStream::from_std(ours).map_err(failed("cannot set up the launcher's socket".into()))?;
        let (r, w) = stream.into_split();
        let mut pids = self.pids.lock().unwrap();
        pids.push(child.id() as i32);
        self.write_pids(&pids);
        Ok(Running { busy: false, child, reader: BufReader::new(r), writer: w })
    }

    /// Kills a launcher and forgets it at once (nothing here can be cut short by a dropped
    /// caller); a task reaps it, then what it left: a container's intermediate process cloned
    /// mid-create, and the inits it created, are re-parented to the worker.
    fn bury(&self, mut dead: Running) {
        let pid = dead.child.id() as i32;
        let _ = dead.child.kill();
        {
            let mut pids = self.pids.lock().unwrap();
            pids.retain(|p| *p != pid);
            self.write_pids(&pids);
        }
        let alive = self.pids.clone();
        tokio::spawn(async move {
            for _ in 0..2000 {
                match dead.child.try_wait() {
                    Ok(None) => tokio::time::sleep(Duration::from_millis(1)).await,
                    _ => break,
                }
            }
            let keep = alive.lock().unwrap().clone();
            reap_zombies(&keep);
        });
    }

    /// Whether `pid` is one of the launchers alive.
    pub fn is_launcher(&self, pid: i32) -> bool {
        self.pids.lock().unwrap().contains(&pid)
    }

    /// Refuses to create containers from now on; deletes still run.
    pub fn refuse_creates(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn write_pids(&self, pids: &[i32]) {
        let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
        let _ = std::fs::write(&self.pid_file, text);
    }

    /// Stops every launcher (they exit when their socket closes).
    pub async fn close(&self) {
        self.refuse_creates();
        for s in &self.slots {
            if let Some(r) = s.lock().await.take() {
                self.bury(r);
            }
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Reaps a container's init process (a child of the worker, its subreaper), waiting a
/// bounded time for it to exit; a process not (or no longer) the worker's child is ignored.
pub(super) async fn reap(pid: i32) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let pid = nix::unistd::Pid::from_raw(pid);
    for _ in 0..2000 {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => tokio::time::sleep(Duration::from_millis(1)).await,
            _ => return,
        }
    }
    tracing::warn!(pid = pid.as_raw(), "a killed container process did not exit within 2 s; it stays a zombie");
}

/// Reaps every zombie child of the worker except `keep` (launchers, whose `Child` reaps
/// them). Its only other children are dependency downloads (`deps/build.rs`), which report
/// their outcome through a file, so none of them loses an exit status it needs here.
pub(super) fn reap_zombies(keep: &[i32]) {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if keep.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let mut fields = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace()).into_iter().flatten();
        let (state, ppid) = (fields.next(), fields.next().and_then(|p| p.parse::<i32>().ok()));
        if state == Some("Z") && ppid == Some(me) {
            let _ =
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
    }
}
