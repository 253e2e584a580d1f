//! Helpers of the runtime-backend tests: a worker that always cleans up its containers,
//! registration of code folders, and what the host sees of a worker's containers (its
//! cgroups, their processes).

use iluvatar_rpc as rpc;
pub use iluvatar_testkit::eventually;
pub use iluvatar_testkit::fixtures::{fixture, shipped};
use iluvatar_testkit::{POLL, WorkerProcess, merge, wait_timeout};
use serde_json::{Value, json};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A registration of a code folder on the runtime backend, as gRPC sends it.
pub fn code_req(name: &str, image_name: &str, memory_mb: i64) -> rpc::RegisterRequest {
    rpc::RegisterRequest {
        image_name: image_name.into(),
        isolate: rpc::isolation::RUNTIME,
        ..iluvatar_testkit::register_req(name, "1", memory_mb, "")
    }
}

/// A worker on the runtime backend. Whatever happens to the test, its containers do not
/// outlive it: dropping it stops the worker (SIGTERM, SIGKILL after 5 s) and then runs
/// `iluvatar_worker clean` on its config, which also removes the worker's cgroup parents.
///
/// The worker's graceful shutdown waits for its gRPC clients to close their connections:
/// drop the test's clients first, and drive them from a multi-threaded runtime so that a
/// panicking test (which drops this while its runtime is blocked) does not hold it up.
pub struct RuntimeWorker(pub WorkerProcess);

impl Deref for RuntimeWorker {
    type Target = WorkerProcess;
    fn deref(&self) -> &WorkerProcess {
        &self.0
    }
}

impl DerefMut for RuntimeWorker {
    fn deref_mut(&mut self) -> &mut WorkerProcess {
        &mut self.0
    }
}

impl Drop for RuntimeWorker {
    fn drop(&mut self) {
        // No panics in here: this also runs while a failed test unwinds.
        if self.0.is_running() {
            let _ = Command::new("kill").arg("-TERM").arg(self.0.pid().to_string()).status();
            for _ in 0..(5_000 / POLL.as_millis()) {
                if !self.0.is_running() {
                    break;
                }
                std::thread::sleep(POLL);
            }
            if self.0.is_running() {
                let _ = self.0.kill();
            }
        }
        let _ = self.clean();
    }
}

impl RuntimeWorker {
    /// A worker offering only the runtime backend, with `extra` merged over its config.
    /// Without standby containers, so that the containers these tests count are the pool's
    /// (tests/runtime/standby.rs covers standby containers).
    pub fn start(extra: Value) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// Like [`start`](Self::start), with extra environment variables for the worker.
    pub fn start_with_env(extra: Value, env: &[(&str, &str)]) -> Self {
        let uid = proc_status(std::process::id(), "Uid").unwrap_or_default();
        assert!(
            uid.split_whitespace().next() == Some("0"),
            "the runtime backend's tests create containers: run them as root, as CI does (Uid: {uid})"
        );
        let mut config = json!({"isolation": {"backends": [{"type": "runtime", "standby": 0}]}});
        merge(&mut config, extra);
        let w = RuntimeWorker(WorkerProcess::start_with_env(config, env));
        assert_eq!(w.ready["backends"], json!(["runtime"]), "{}", w.ready);
        w
    }

    /// Runs `iluvatar_worker -c CONFIG clean`; returns its exit success and stdout.
    pub fn clean(&self) -> Option<(bool, String)> {
        let mut child = Command::new(iluvatar_testkit::target_dir().join("iluvatar_worker"))
            .arg("-c")
            .arg(&self.config_path)
            .arg("clean")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let status = wait_timeout(&mut child, Duration::from_secs(30)).or_else(|| {
            let _ = child.kill();
            None
        })?;
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
        if !status.success() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take()?, &mut err);
            out.push_str(&err);
        }
        Some((status.success(), out))
    }

    /// Registers a code folder through the CLI, on the runtime backend.
    pub fn register(&self, name: &str, code: &Path, memory_mb: u32) -> Value {
        let code = code.display().to_string();
        let memory = memory_mb.to_string();
        let r = self.cli_ok(&[
            "register",
            "--name",
            name,
            "--version",
            "1",
            "--code",
            &code,
            "--memory",
            &memory,
            "--cpu",
            "1",
            "--isolation",
            "runtime",
        ]);
        assert_eq!(r, json!({"success": true, "fqdn": format!("{name}-1")}), "registering {name}");
        r
    }

    /// Invokes through the CLI and expects success; returns its report.
    pub fn invoke_ok(&self, name: &str, json_args: &str) -> Value {
        let r = self.cli_ok(&["invoke", "--name", name, "--version", "1", "-j", json_args]);
        assert_eq!(r["success"], true, "{r}");
        r
    }

    /// Invokes through the CLI and expects a failure; returns the report it printed.
    pub fn invoke_err(&self, name: &str, json_args: &str) -> Value {
        let err = self.cli_err(&["invoke", "--name", name, "--version", "1", "-j", json_args]);
        let report = err
            .split_once("invocation failed: ")
            .and_then(|(_, json)| serde_json::from_str::<Value>(json.trim()).ok())
            .unwrap_or_else(|| self.fail(&format!("invoking {name} {json_args}: no failure report in:\n{err}")));
        assert_eq!(report["success"], false, "{report}");
        report
    }

    /// The name of this worker's cgroup parent, as it wrote it down.
    pub fn cgroup_parent(&self) -> String {
        let note = self.state_dir.join("runtime").join("cgroup_parent");
        let name = std::fs::read_to_string(&note).unwrap_or_else(|e| self.fail(&format!("{}: {e}", note.display())));
        let name = name.trim().to_string();
        assert!(name.starts_with("iluvatar-") && !name.contains('/'), "odd cgroup parent {name:?}");
        name
    }

    /// Every cgroup directory of this worker's containers, in every hierarchy.
    pub fn container_cgroups(&self) -> Vec<PathBuf> {
        parent_dirs(&self.cgroup_parent()).iter().flat_map(|p| subdirs(p)).collect()
    }

    /// The container cgroups in one hierarchy: the memory controller's on cgroup v1, the
    /// unified tree on v2.
    pub fn containers(&self) -> Vec<PathBuf> {
        subdirs(&controller_dir("memory").join(self.cgroup_parent()))
    }

    /// The processes in this worker's containers, as the host numbers them.
    pub fn container_pids(&self) -> Vec<u32> {
        self.containers().iter().flat_map(|c| procs(c)).collect()
    }

    /// Waits until the worker runs exactly `n` containers; returns their cgroups.
    pub fn await_containers(&self, n: usize, timeout: Duration) -> Vec<PathBuf> {
        for _ in 0..(timeout.as_millis() / POLL.as_millis()) {
            let c = self.containers();
            if c.len() == n {
                return c;
            }
            std::thread::sleep(POLL);
        }
        let c = self.containers();
        if c.len() != n {
            self.fail(&format!("expected {n} containers within {timeout:?}, found {c:?}"));
        }
        c
    }

    /// Mount points on the host under the worker's directory.
    pub fn host_mounts_under_dir(&self) -> Vec<String> {
        let dir = self.dir.display().to_string();
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("reading /proc/self/mountinfo");
        info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&dir)).map(String::from).collect()
    }

    /// Entries of `state_dir/runtime/<sub>`.
    pub fn runtime_entries(&self, sub: &str) -> Vec<String> {
        let d = self.state_dir.join("runtime").join(sub);
        let mut v: Vec<String> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| self.fail(&format!("{}: {e}", d.display())))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Whether cgroup v2 alone is mounted (no per-controller hierarchies).
pub fn cgroup_v2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// Where a controller's hierarchy is: its own on v1, the unified one on v2.
pub fn controller_dir(controller: &str) -> PathBuf {
    if cgroup_v2() { PathBuf::from(CGROUP_ROOT) } else { Path::new(CGROUP_ROOT).join(controller) }
}

/// `<root>/<parent>` and `<root>/*/<parent>` that exist.
pub fn parent_dirs(parent: &str) -> Vec<PathBuf> {
    let mut dirs = vec![Path::new(CGROUP_ROOT).join(parent)];
    if let Ok(rd) = std::fs::read_dir(CGROUP_ROOT) {
        dirs.extend(rd.flatten().map(|e| e.path().join(parent)));
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

pub fn subdirs(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    v.sort();
    v
}

/// The pids in a cgroup.
pub fn procs(cgroup: &Path) -> Vec<u32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

/// A process's command line, arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| b.split(|c| *c == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A field of `/proc/PID/status`.
pub fn proc_status(pid: u32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// A cgroup file, trimmed.
pub fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

/// Live processes anywhere on the host that are in a cgroup under `parent`.
pub fn processes_under(parent: &str) -> Vec<(u32, String)> {
    let needle = format!(":/{parent}/");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let cgroups = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if cgroups.lines().any(|l| l.contains(&needle)) && alive(pid) {
            found.push((pid, cmdline(pid)));
        }
    }
    found
}

/// Asserts that nothing of the worker's containers is left on the host.
pub fn assert_nothing_left(w: &RuntimeWorker, pids: &[u32], when: &str) {
    for pid in pids {
        assert!(!alive(*pid), "{when}: container process {pid} ({}) is still running", cmdline(*pid));
    }
    let stray = processes_under(&w.cgroup_parent());
    assert!(stray.is_empty(), "{when}: processes left in the worker's cgroups: {stray:?}");
    assert_eq!(w.container_cgroups(), Vec::<PathBuf>::new(), "{when}: container cgroups left");
    assert_eq!(w.host_mounts_under_dir(), Vec::<String>::new(), "{when}: mounts left on the host");
    for sub in ["root", "bundles", "sockets", "logs"] {
        assert_eq!(w.runtime_entries(sub), Vec::<String>::new(), "{when}: state_dir/runtime/{sub} is not empty");
    }
}
