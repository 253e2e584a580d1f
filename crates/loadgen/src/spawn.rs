//! Starting a worker or controller process for a benchmark, from the binary beside this one.

use anyhow::{Context, bail};
use iluvatar_service::spawn;
use std::path::{Path, PathBuf};
use std::process::Child;

/// A daemon (worker or controller) started for a benchmark, stopped (SIGTERM) and its files
/// removed when dropped.
pub struct SpawnedDaemon {
    pub child: Child,
    pub port: u16,
    /// Its HTTP address (`host:port`) if it serves HTTP, from its ready line.
    pub http: Option<String>,
    pub dir: PathBuf,
}

/// The worker a benchmark starts.
pub type SpawnedWorker = SpawnedDaemon;

/// The path of a sibling binary (the same target directory as this executable).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.parent().context("executable has no directory")?.join(name);
    if !path.exists() {
        bail!("{} not found; build it with `cargo build --release --workspace`", path.display());
    }
    Ok(path)
}

impl SpawnedDaemon {
    /// Starts `iluvatar_worker` with `config` (JSON) merged over a private state directory
    /// and a free port, and waits for its ready line.
    pub fn start(bin: Option<PathBuf>, config: serde_json::Value) -> anyhow::Result<Self> {
        let bin = match bin {
            Some(b) => b,
            None => sibling_binary("iluvatar_worker")?,
        };
        Self::start_daemon(&bin, "worker", config)
    }

    /// Starts the daemon `bin` with `config` merged over a private state directory
    /// (`iluvatar-bench-<pid>-<tag>`) and a free gRPC port on loopback, and waits for its
    /// ready line.
    pub fn start_daemon(bin: &Path, tag: &str, mut config: serde_json::Value) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("iluvatar-bench-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        config["state_dir"] = dir.join("state").display().to_string().into();
        config["grpc"] = serde_json::json!({"address": "127.0.0.1", "port": 0});
        let (child, ready) = spawn::start_with_config(bin, &config, &dir, tag)?;
        let port = spawn::grpc_port(&ready).context("ready line has no gRPC port")?;
        let http = ready["http"].as_str().map(String::from);
        Ok(SpawnedDaemon { child, port, http, dir })
    }

    /// Its gRPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SpawnedDaemon {
    fn drop(&mut self) {
        spawn::terminate(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
