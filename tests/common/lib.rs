//! Helpers for the end-to-end tests: find the real binaries, run a worker in a private
//! directory on free ports, drive it with the CLI, gRPC or plain HTTP, and say what the
//! worker logged whenever something goes wrong.
//!
//! Nothing here reads the wall clock: waits are bounded by counting short sleeps.

use iluvatar_rpc as rpc;
use iluvatar_rpc::iluvatar_worker_client::IluvatarWorkerClient;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use tonic::transport::Channel;

/// How long a worker may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a worker may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Step of every polling loop.
const POLL: Duration = Duration::from_millis(20);

/// The gRPC client type the tests use.
pub type Client = IluvatarWorkerClient<Channel>;

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
            "{} not found: the end-to-end tests run the real binaries; run `cargo build --workspace` first \
             (with the same profile as the tests)",
            path.display()
        );
    }
    path
}

/// A fresh directory under the system temp dir, unique per test (pid + counter).
pub fn unique_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("iluvatar-e2e-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
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

/// Waits for `child` to exit within `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let steps = (timeout.as_millis() / POLL.as_millis()).max(1);
    for _ in 0..steps {
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

/// A running `iluvatar_worker` in its own temp directory.
pub struct WorkerProcess {
    child: Option<Child>,
    /// The temp dir holding the config, the log and the state dir.
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    /// The worker's stderr (appended to across restarts).
    pub log_path: PathBuf,
    pub grpc_port: u16,
    /// `127.0.0.1:PORT` of the HTTP API.
    pub http_addr: String,
    /// The ready line, parsed.
    pub ready: Value,
    env: Vec<(String, String)>,
}

impl WorkerProcess {
    /// Starts a worker with `extra_config` merged over a private state dir and free ports.
    pub fn start(extra_config: Value) -> Self {
        Self::start_with_env(extra_config, &[])
    }

    /// Like [`start`](Self::start), with extra environment variables for the worker.
    pub fn start_with_env(extra_config: Value, env: &[(&str, &str)]) -> Self {
        let dir = unique_dir("worker");
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
        let config_path = dir.join("worker.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).expect("writing the config");
        let mut w = WorkerProcess {
            child: None,
            log_path: dir.join("worker.log"),
            dir,
            config_path,
            state_dir,
            grpc_port: 0,
            http_addr: String::new(),
            ready: Value::Null,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        w.spawn();
        w
    }

    /// Spawns the binary with the saved config and waits for its ready line.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "a worker is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path.display()));
        let mut cmd = Command::new(bin("iluvatar_worker"));
        cmd.arg("-c").arg(&self.config_path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        // Overrides from the test runner's environment would change what the tests see.
        for (k, _) in std::env::vars() {
            if k.starts_with("ILUVATAR_WORKER__") {
                cmd.env_remove(k);
            }
        }
        // anyhow's backtraces would bury a start-up error under frames.
        cmd.env("RUST_LIB_BACKTRACE", "0");
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start the worker: {e}"));
        // One thread reads the ready line, then keeps draining stdout so the worker never
        // writes into a closed pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let r = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
            let mut rest = String::new();
            while matches!(reader.read_line(&mut rest), Ok(n) if n > 0) {
                rest.clear();
            }
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => self.fail_with(&mut child, &format!("reading the worker's stdout failed: {e}")),
            Err(_) => self.fail_with(&mut child, &format!("no ready line within {READY_TIMEOUT:?}")),
        };
        let ready: Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(e) => self.fail_with(&mut child, &format!("the first stdout line {line:?} is not JSON: {e}")),
        };
        if ready["event"] != "ready" {
            self.fail_with(&mut child, &format!("the first stdout line is not a ready event: {ready}"));
        }
        let port_of = |field: &str| -> Option<u16> { ready[field].as_str()?.rsplit(':').next()?.parse().ok() };
        let (Some(grpc_port), Some(_)) = (port_of("grpc"), port_of("http")) else {
            self.fail_with(&mut child, &format!("the ready line lacks grpc/http addresses: {ready}"))
        };
        self.grpc_port = grpc_port;
        self.http_addr = ready["http"].as_str().unwrap().to_string();
        self.ready = ready;
        self.child = Some(child);
    }

    fn fail_with(&self, child: &mut Child, why: &str) -> ! {
        let exited = match child.try_wait() {
            Ok(Some(status)) => format!(" (it exited with {status})"),
            _ => String::new(),
        };
        let _ = child.kill();
        let _ = child.wait();
        panic!("worker failed to start: {why}{exited}\n{}", self.log_context())
    }

    /// The tail of the worker's stderr, for failure messages.
    pub fn log_context(&self) -> String {
        format!("--- worker log ({}), last lines ---\n{}", self.log_path.display(), tail(&self.log_path, 40))
    }

    /// Panics with `msg` and what the worker logged.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.log_context())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the worker is not running").id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A gRPC client connected to the worker.
    pub async fn client(&self) -> Client {
        let endpoint = format!("http://127.0.0.1:{}", self.grpc_port);
        match IluvatarWorkerClient::connect(endpoint.clone()).await {
            Ok(c) => c
                .max_decoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES),
            Err(e) => self.fail(&format!("cannot connect to {endpoint}: {e}")),
        }
    }

    /// Runs `iluvatar_worker_cli --address 127.0.0.1 --port P ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("iluvatar_worker_cli"));
        cmd.args(["--address", "127.0.0.1", "--port", &self.grpc_port.to_string()]).args(args);
        output_timeout(cmd, Duration::from_secs(30))
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

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        sigterm(self.pid());
    }

    /// Waits for the worker to exit on its own; panics (and kills it) after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the worker is not running");
        match wait_timeout(&mut child, timeout) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!("the worker did not exit within {timeout:?}"))
            }
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.terminate();
        self.wait_exit(STOP_TIMEOUT)
    }

    /// Kills the worker with SIGKILL, as a crash would (no graceful shutdown), and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the worker is not running");
        let _ = child.kill();
        child.wait().unwrap_or_else(|e| panic!("waiting for the killed worker {}: {e}", child.id()))
    }

    /// Starts the worker again once it has exited (after `stop`, `kill` or its own exit),
    /// with the same config and state dir; the ports change.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Stops the worker (expecting a clean exit) and starts it again with the same config
    /// and state dir; the ports change.
    pub fn restart(&mut self) -> ExitStatus {
        let status = self.stop();
        if !status.success() {
            self.fail(&format!("the worker exited with {status} on SIGTERM"));
        }
        self.spawn();
        status
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
        let steps = (timeout.as_millis() / POLL.as_millis()).max(1);
        for _ in 0..steps {
            if metric_value(&self.metrics(), series) == Some(want) {
                return;
            }
            std::thread::sleep(POLL);
        }
        let text = self.metrics();
        self.fail(&format!("{series} did not become {want} within {timeout:?}; /metrics:\n{text}"))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Keep the directory (log, config) of a failed test for inspection.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("worker files kept in {}", self.dir.display());
        }
    }
}

/// The value of a series in Prometheus text (`name` or `name{labels}` as printed).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

/// A bare HTTP/1.1 exchange; returns (status code, body).
fn http_request(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (code, _, body) = http_exchange(addr, method, path, &[], body);
    (code, body)
}

/// A bare HTTP/1.1 exchange with extra request headers; returns (status code, the
/// response's header lines, body).
pub fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: cannot send: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{method} {path}: cannot read the response: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) =
        text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{method} {path}: no header end: {text:?}"));
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line: {head:?}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    (code, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// `GET path` on `addr` (`host:port`); returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None)
}

/// `POST path` with a JSON body; returns (status code, body).
pub fn http_post_json(addr: &str, path: &str, body: &str) -> (u16, String) {
    http_request(addr, "POST", path, Some(body))
}

/// A registration as the CLI would send it, for the sim backend's default isolation.
pub fn register_req(name: &str, version: &str, memory_mb: i64, timings: &str) -> rpc::RegisterRequest {
    rpc::RegisterRequest {
        function_name: name.into(),
        function_version: version.into(),
        image_name: format!("docker.io/example/{name}:latest"),
        memory: memory_mb,
        cpus: 1,
        parallel_invokes: 1,
        transaction_id: format!("e2e-register-{name}"),
        language: rpc::LanguageRuntime::Python3 as i32,
        compute: rpc::compute::CPU,
        isolate: 0,
        container_server: 1,
        resource_timings_json: timings.into(),
        system_function: false,
    }
}

/// `{"cold_dur_ms": cold, "warm_dur_ms": warm}`.
pub fn timings(cold_ms: u64, warm_ms: u64) -> String {
    json!({"cold_dur_ms": cold_ms, "warm_dur_ms": warm_ms}).to_string()
}

pub fn invoke_req(name: &str, version: &str, json_args: &str) -> rpc::InvokeRequest {
    rpc::InvokeRequest {
        function_name: name.into(),
        function_version: version.into(),
        json_args: json_args.into(),
        transaction_id: format!("e2e-invoke-{name}"),
    }
}

pub fn async_req(name: &str, version: &str, json_args: &str) -> rpc::InvokeAsyncRequest {
    rpc::InvokeAsyncRequest {
        function_name: name.into(),
        function_version: version.into(),
        json_args: json_args.into(),
        transaction_id: format!("e2e-async-{name}"),
    }
}

/// `json_result` of an invocation, parsed.
pub fn result_json(r: &rpc::InvokeResponse) -> Value {
    serde_json::from_str(&r.json_result).unwrap_or_else(|e| panic!("json_result is not JSON ({e}): {r:?}"))
}

/// The name of a response's container state.
pub fn state_name(r: &rpc::InvokeResponse) -> &'static str {
    rpc::ContainerState::try_from(r.container_state).map(|s| s.as_str_name()).unwrap_or("UNKNOWN")
}

/// Whether an async check answered "still running".
pub fn is_pending(r: &rpc::InvokeResponse) -> bool {
    serde_json::from_str::<Value>(&r.json_result).ok().is_some_and(|v| v.get("Pending").is_some())
}

/// Polls `invoke_async_check` until the invocation is no longer pending; panics after
/// `timeout`.
pub async fn await_async(c: &mut Client, cookie: &str, timeout: Duration) -> rpc::InvokeResponse {
    let steps = (timeout.as_millis() / POLL.as_millis()).max(1);
    for _ in 0..steps {
        let req = rpc::InvokeAsyncLookupRequest { lookup_cookie: cookie.into(), transaction_id: "e2e-check".into() };
        let r = c.invoke_async_check(req).await.expect("invoke_async_check RPC").into_inner();
        if !is_pending(&r) {
            return r;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("async invocation {cookie} still pending after {timeout:?}")
}

/// Polls `status` until `pred` holds; panics after `timeout`.
pub async fn await_status(
    c: &mut Client,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&rpc::StatusResponse) -> bool,
) -> rpc::StatusResponse {
    let steps = (timeout.as_millis() / POLL.as_millis()).max(1);
    let mut last = None;
    for _ in 0..steps {
        let s = c.status(rpc::StatusRequest::default()).await.expect("status RPC").into_inner();
        if pred(&s) {
            return s;
        }
        last = Some(s);
        tokio::time::sleep(POLL).await;
    }
    panic!("status did not show {what} within {timeout:?}; last: {last:?}")
}
