//! A running `iluvatar_worker` in its own temp directory on free ports (sim backend unless the
//! test says otherwise), driven by gRPC, the real CLI or plain HTTP.

use crate::http::{http_get, http_post_json, metric_value};
use crate::process::Proc;
use crate::{POLL, merge, output_timeout, steps};
use iluvatar_rpc::iluvatar_worker_client::IluvatarWorkerClient;
use serde_json::{Value, json};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;
use tonic::transport::Channel;

/// The gRPC client type the tests use.
pub type Client = IluvatarWorkerClient<Channel>;

/// A gRPC client of the worker at `endpoint` (`http://host:port`), with the largest messages.
pub async fn connect(endpoint: String) -> Result<Client, tonic::transport::Error> {
    Ok(IluvatarWorkerClient::connect(endpoint)
        .await?
        .max_decoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES))
}

/// A running worker (its [`Proc`] is reachable through `Deref`: `pid`, `kill`, `fail`...).
pub struct WorkerProcess {
    proc: Proc,
    pub state_dir: PathBuf,
    pub grpc_port: u16,
    /// `127.0.0.1:PORT` of the HTTP API.
    pub http_addr: String,
}

impl Deref for WorkerProcess {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl WorkerProcess {
    /// Starts a worker with `extra_config` merged over a private state dir and free ports.
    pub fn start(extra_config: Value) -> Self {
        Self::start_with_env(extra_config, &[])
    }

    /// Like [`start`](Self::start), with extra environment variables for the worker.
    pub fn start_with_env(extra_config: Value, env: &[(&str, &str)]) -> Self {
        let dir = crate::unique_dir("worker");
        let state_dir = dir.join("state");
        let mut config = json!({
            "name": "e2e-worker",
            "state_dir": state_dir.display().to_string(),
            "grpc": {"address": "127.0.0.1", "port": 0},
            "http": {"enabled": true, "address": "127.0.0.1", "port": 0},
            "log_level": "info",
            // Explicit, so that the tests do not depend on which backend is the default.
            "isolation": {"backends": [{"type": "sim"}]},
        });
        merge(&mut config, extra_config);
        let proc = Proc::prepare("iluvatar_worker", "worker", &config, Some(dir)).owning_dir().env(env);
        let mut w = WorkerProcess { proc, state_dir, grpc_port: 0, http_addr: String::new() };
        w.start_again();
        w
    }

    /// Starts the worker again once it has exited (after `stop`, `kill` or its own exit),
    /// with the same config and state dir; the ports change.
    pub fn start_again(&mut self) {
        self.proc.spawn();
        let ready = &self.proc.ready;
        let port_of = |field: &str| -> Option<u16> { ready[field].as_str()?.rsplit(':').next()?.parse().ok() };
        let (Some(grpc_port), Some(_)) = (port_of("grpc"), port_of("http")) else {
            self.proc.fail(&format!("the ready line lacks grpc/http addresses: {ready}"))
        };
        self.grpc_port = grpc_port;
        self.http_addr = ready["http"].as_str().unwrap().to_string();
    }

    /// Stops the worker (expecting a clean exit) and starts it again with the same config
    /// and state dir; the ports change.
    pub fn restart(&mut self) -> ExitStatus {
        let status = self.stop();
        if !status.success() {
            self.fail(&format!("the worker exited with {status} on SIGTERM"));
        }
        self.start_again();
        status
    }

    /// A gRPC client connected to the worker.
    pub async fn client(&self) -> Client {
        let endpoint = format!("http://127.0.0.1:{}", self.grpc_port);
        match connect(endpoint.clone()).await {
            Ok(c) => c,
            Err(e) => self.fail(&format!("cannot connect to {endpoint}: {e}")),
        }
    }

    /// Runs `iluvatar_worker_cli --address 127.0.0.1 --port P ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let port = self.grpc_port.to_string();
        run_cli(None, &[&["--address", "127.0.0.1", "--port", &port], args].concat())
    }

    /// Like [`cli`](Self::cli), from the folder `dir` (for relative paths).
    pub fn cli_in(&self, dir: &std::path::Path, args: &[&str]) -> Output {
        let port = self.grpc_port.to_string();
        run_cli(Some(dir), &[&["--address", "127.0.0.1", "--port", &port], args].concat())
    }

    /// Runs the CLI, expects success, and returns its stdout as JSON.
    pub fn cli_ok(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            self.fail(&format!("cli {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}", out.status));
        }
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| self.fail(&format!("cli {args:?} printed no JSON ({e}):\n{stdout}\nstderr: {stderr}")))
    }

    /// Runs the CLI, expects a non-zero exit, and returns its stderr.
    pub fn cli_err(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() || out.status.code().is_none() {
            self.fail(&format!(
                "cli {args:?} should have failed with an exit code, got {}:\nstdout: {stdout}\nstderr: {stderr}",
                out.status
            ));
        }
        stderr.into_owned()
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(&self.http_addr, path)
    }

    pub fn http_post_json(&self, path: &str, body: &str) -> (u16, String) {
        http_post_json(&self.http_addr, path, body)
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        let (code, body) = self.http_get("/metrics");
        if code != 200 {
            self.fail(&format!("GET /metrics answered {code}: {body}"));
        }
        body
    }

    /// The value of one series of `/metrics` (`name` or `name{labels}`, exactly as printed).
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        metric_value(&text, series).unwrap_or_else(|| self.fail(&format!("no series {series} in /metrics:\n{text}")))
    }

    /// Polls `/metrics` until `series` equals `want`; panics after `timeout`.
    pub fn wait_metric(&self, series: &str, want: f64, timeout: Duration) {
        for _ in 0..steps(timeout) {
            if metric_value(&self.metrics(), series) == Some(want) {
                return;
            }
            std::thread::sleep(POLL);
        }
        let text = self.metrics();
        self.fail(&format!("{series} did not become {want} within {timeout:?}; /metrics:\n{text}"))
    }
}

/// Runs `iluvatar_worker_cli ARGS...` (from `dir` if given) with a 30 s bound (180 s for a
/// registration, which waits for a dependency layer's build or an image's pull), without the
/// environment's `ILUVATAR_TOKEN_FILE`.
pub fn run_cli(dir: Option<&std::path::Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(crate::bin("iluvatar_worker_cli"));
    cmd.args(args).env_remove("ILUVATAR_TOKEN_FILE");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let bound = if args.contains(&"register") { 180 } else { 30 };
    output_timeout(cmd, Duration::from_secs(bound))
}
