//! Test support shared by every integration test of the workspace (`tests/`): find the real
//! binaries, run a worker, a controller or the load generator from the target directory with
//! a config and read its ready line, clients with or without a token, network namespaces,
//! fixture paths, waiting helpers and `/metrics` scraping.
//!
//! Nothing here reads the wall clock: waits are bounded by counting short sleeps.
//!
//! - [`process`]: any daemon of the workspace started with a JSON config ([`Proc`]).
//! - [`worker`]: a worker in its own temp directory on free ports ([`WorkerProcess`]).
//! - [`cluster`]: a controller and workers in network namespaces.
//! - [`http`]: bare HTTP/1.1 exchanges and Prometheus text.
//! - [`requests`]: gRPC requests and polling of the worker API.
//! - [`auth`]: token files and authenticated clients.
//! - [`loadgen`]: running `iluvatar_load_gen` and reading its CSV.
//! - [`fixtures`]: the fixture functions and the shipped ones.
//! - [`readme`]: the README's HTTP examples, run as written.
//! - [`registry`]: a real OCI registry on loopback, and pushes to it.

pub mod auth;
pub mod cluster;
pub mod compliance;
pub mod fixtures;
pub mod http;
pub mod loadgen;
pub mod process;
pub mod readme;
pub mod registry;
pub mod requests;
pub mod worker;

pub use http::{http_exchange, http_get, http_post_json, metric_value};
pub use process::Proc;
pub use requests::*;
pub use worker::{Client, WorkerProcess};

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long a daemon may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a daemon may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Step of every polling loop.
pub const POLL: Duration = Duration::from_millis(20);

/// The number of [`POLL`] steps in `timeout` (at least one).
pub fn steps(timeout: Duration) -> u128 {
    (timeout.as_millis() / POLL.as_millis()).max(1)
}

/// The target profile directory of the running test executable
/// (`target/<profile>/deps/worker-xxxx` → `target/<profile>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("the test executable lives in target/<profile>/deps").to_path_buf()
}

/// A binary of this workspace, built in the same profile as the tests.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    if !path.is_file() {
        panic!(
            "{} not found: the integration tests run the real binaries; run `cargo build --workspace` first \
             (with the same profile as the tests)",
            path.display()
        );
    }
    path
}

/// A fresh directory under the system temp dir, unique per test (pid + counter).
pub fn unique_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(sweep_dead_runs);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("iluvatar-e2e-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Removes the folders earlier test processes made with [`unique_dir`] once they are gone
/// (a test that fails, or a process killed, leaves its folder behind; they added up to
/// gigabytes). A folder whose process still runs (a concurrent test binary) is kept; one
/// that cannot be removed (a mount still busy) is left for a later sweep.
fn sweep_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("iluvatar-e2e-")) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let dead = pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists();
        if let (true, Ok(m)) = (dead, std::fs::symlink_metadata(e.path())) {
            remove_on_one_device(&e.path(), std::os::unix::fs::MetadataExt::dev(&m));
        }
    }
}

/// `rm -r --one-file-system`: never crosses into a mount a dead worker left (a bind mount of
/// a function's folder must not be emptied).
fn remove_on_one_device(path: &Path, dev: u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(path) else { return };
    if m.dev() != dev {
        return;
    }
    if m.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                remove_on_one_device(&e.path(), dev);
            }
        }
        let _ = std::fs::remove_dir(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Overlays `top` on `base`, recursing into objects.
pub fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, top) => *slot = top,
    }
}

/// Replaces the top-level sections of `config` with those of `changes` (no recursion).
pub fn replace_sections(config: &mut Value, changes: Value) {
    for (k, v) in changes.as_object().expect("an object") {
        config[k] = v.clone();
    }
}

/// The last `lines` lines of a file (with its first lines too when it is longer, since a
/// start-up error comes first), or why it could not be read.
pub fn tail(path: &Path, lines: usize) -> String {
    const HEAD: usize = 5;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            if all.len() <= lines + HEAD {
                all.join("\n")
            } else {
                let skipped = all.len() - lines - HEAD;
                format!(
                    "{}\n[... {skipped} lines ...]\n{}",
                    all[..HEAD].join("\n"),
                    all[all.len() - lines..].join("\n")
                )
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Polls `f` until it holds; false after `timeout`.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..steps(timeout) {
        if f() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    f()
}

/// Waits for `child` to exit within `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    for _ in 0..steps(timeout) {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => panic!("waiting for process {}: {e}", child.id()),
        }
    }
    child.try_wait().ok().flatten()
}

/// Runs a command to completion with stdout and stderr captured; kills it and panics if it
/// does not exit within `timeout`.
pub fn output_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
            panic!("{cmd:?} did not exit within {timeout:?}; stderr so far:\n{stderr}");
        }
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// Sends SIGTERM to a process (through `kill`, no libc).
pub fn sigterm(pid: u32) {
    let st = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("running kill");
    assert!(st.success(), "kill -TERM {pid} failed: {st}");
}

/// Runs a command; `Err` with its stderr if it fails.
pub fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr))) }
}
