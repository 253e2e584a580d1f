//! Starting a worker process for a benchmark, from the binary beside this one.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct SpawnedWorker {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

/// The path of a sibling binary (the same target directory as this executable).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.parent().context("executable has no directory")?.join(name);
    if !path.exists() {
        bail!("{} not found; build it with `cargo build --release --workspace`", path.display());
    }
    Ok(path)
}

impl SpawnedWorker {
    /// Starts `iluvatar_worker` with `config` (JSON) merged over a private state directory
    /// and a free port, and waits for its ready line.
    pub fn start(bin: Option<PathBuf>, mut config: serde_json::Value) -> anyhow::Result<Self> {
        let bin = match bin {
            Some(b) => b,
            None => sibling_binary("iluvatar_worker")?,
        };
        let dir = std::env::temp_dir().join(format!("iluvatar-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        config["state_dir"] = dir.join("state").display().to_string().into();
        config["grpc"] = serde_json::json!({"address": "127.0.0.1", "port": 0});
        let path = dir.join("worker.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let log = std::fs::File::create(dir.join("worker.log"))?;
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("worker stdout")?).read_line(&mut line)?;
        let ready: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("worker did not start; see {}", dir.join("worker.log").display()))?;
        let port = ready["grpc"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .context("ready line has no gRPC port")?;
        Ok(SpawnedWorker { child, port, dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SpawnedWorker {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).stderr(Stdio::null()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
