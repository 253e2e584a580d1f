//! Any daemon of the workspace (`iluvatar_worker`, `iluvatar_controller`) started from the
//! target directory with a JSON config, read up to its ready line, and stopped, killed or
//! started again. The one place that spawns a daemon and reads its ready line.

use crate::{READY_TIMEOUT, STOP_TIMEOUT, bin, sigterm, tail, unique_dir, wait_timeout};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A daemon process with its config file and log (its stderr, appended to across restarts)
/// in a directory. Dropping it kills the process; the directory goes too unless the test
/// panicked (then its log is printed and the files kept) or the test owns the directory.
pub struct Proc {
    child: Option<Child>,
    /// A name for messages and file names (`<name>.json`, `<name>.log`).
    pub name: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// The ready line of the last start, parsed.
    pub ready: Value,
    binary: String,
    netns: Option<String>,
    env: Vec<(String, String)>,
    owns_dir: bool,
}

impl Proc {
    /// Writes `config` to a fresh directory and starts `binary` on it (under `ip netns exec`
    /// when `netns` is given); panics with its log if it prints no ready line.
    pub fn start(binary: &str, name: &str, config: &Value, netns: Option<String>) -> Proc {
        Self::prepare(binary, name, config, None).netns(netns).started()
    }

    /// Like [`start`](Self::start), with the files in `dir`, which the test owns (it stays).
    pub fn start_in(binary: &str, name: &str, config: &Value, dir: PathBuf) -> Proc {
        Self::prepare(binary, name, config, Some(dir)).started()
    }

    /// Writes the config without starting anything: chain [`netns`](Self::netns),
    /// [`env`](Self::env), then [`started`](Self::started).
    pub fn prepare(binary: &str, name: &str, config: &Value, dir: Option<PathBuf>) -> Proc {
        let owns_dir = dir.is_none();
        let dir = dir.unwrap_or_else(|| unique_dir(name));
        let config_path = dir.join(format!("{name}.json"));
        std::fs::write(&config_path, serde_json::to_vec_pretty(config).expect("a JSON config"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
        Proc {
            child: None,
            name: name.into(),
            log_path: dir.join(format!("{name}.log")),
            dir,
            config_path,
            ready: Value::Null,
            binary: binary.into(),
            netns: None,
            env: Vec::new(),
            owns_dir,
        }
    }

    /// Removes the directory on drop although the caller made it (for its paths in the config).
    pub fn owning_dir(mut self) -> Proc {
        self.owns_dir = true;
        self
    }

    /// Runs the process in this network namespace.
    pub fn netns(mut self, netns: Option<String>) -> Proc {
        self.netns = netns;
        self
    }

    /// Extra environment variables for the process.
    pub fn env(mut self, env: &[(&str, &str)]) -> Proc {
        self.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Starts the process and waits for its ready line.
    pub fn started(mut self) -> Proc {
        self.spawn();
        self
    }

    /// Spawns the binary with the saved config and waits for its ready line (again after
    /// `stop`, `kill` or its own exit: same config and directory, new ports).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path.display()));
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin(&self.binary));
                c
            }
            None => Command::new(bin(&self.binary)),
        };
        cmd.arg("-c").arg(&self.config_path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        // Overrides from the test runner's environment would change what the tests see.
        for (k, _) in std::env::vars() {
            if k.starts_with("ILUVATAR_") {
                cmd.env_remove(k);
            }
        }
        // anyhow's backtraces would bury a start-up error under frames.
        cmd.env("RUST_LIB_BACKTRACE", "0");
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        match iluvatar_service::spawn::read_ready_line(&mut child, READY_TIMEOUT) {
            Ok(ready) => self.ready = ready,
            Err(e) => self.fail_with(&mut child, &e.to_string()),
        }
        self.child = Some(child);
    }

    fn fail_with(&self, child: &mut Child, why: &str) -> ! {
        let exited = match child.try_wait() {
            Ok(Some(status)) => format!(" (it exited with {status})"),
            _ => String::new(),
        };
        let _ = child.kill();
        let _ = child.wait();
        panic!("{} failed to start: {why}{exited}\n{}", self.name, self.log_context())
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The tail of the log, for failure messages.
    pub fn log_context(&self) -> String {
        format!("--- {} log ({}), last lines ---\n{}", self.name, self.log_path.display(), tail(&self.log_path, 40))
    }

    /// Panics with `msg` and what the process logged.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.log_context())
    }

    /// An address of the ready line (`grpc`, `http`) as `host:port`.
    pub fn addr(&self, field: &str) -> String {
        match self.ready[field].as_str() {
            Some(a) => a.to_string(),
            None => self.fail(&format!("no {field} address in the ready line: {}", self.ready)),
        }
    }

    /// The gRPC address, `host:port`.
    pub fn grpc(&self) -> String {
        self.addr("grpc")
    }

    /// The gRPC port.
    pub fn port(&self) -> u16 {
        let a = self.grpc();
        a.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| self.fail(&format!("bad address {a}")))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap_or_else(|| panic!("{} is not running", self.name)).id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        sigterm(self.pid());
    }

    /// Waits for the process to exit on its own; panics (and kills it) after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap_or_else(|| panic!("{} is not running", self.name));
        match wait_timeout(&mut child, timeout) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!("{} did not exit within {timeout:?}", self.name))
            }
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.terminate();
        self.wait_exit(STOP_TIMEOUT)
    }

    /// Kills the process with SIGKILL, as a crash would (no graceful shutdown), and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap_or_else(|| panic!("{} is not running", self.name));
        let _ = child.kill();
        child.wait().unwrap_or_else(|e| panic!("waiting for the killed {} {}: {e}", self.name, child.id()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // Keep the files of a failed test for inspection, and show the log.
            eprintln!("{}\n{} files kept in {}", self.log_context(), self.name, self.dir.display());
        } else if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
