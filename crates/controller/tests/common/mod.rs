//! Helpers for the controller's end-to-end tests: a controller and worker processes (the
//! real binaries), each worker on its own address — in a network namespace the test creates
//! (veth pair, private /30), or on a loopback address 127.0.0.N where namespaces cannot be
//! made. Nothing here reads the wall clock: waits count short sleeps.

#![allow(dead_code)]

use iluvatar_rpc as rpc;
use iluvatar_rpc::iluvatar_controller_client::IluvatarControllerClient;
use iluvatar_rpc::iluvatar_worker_client::IluvatarWorkerClient;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::Channel;

pub const POLL: Duration = Duration::from_millis(50);
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn next() -> usize {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// `target/<profile>`: the test executable lives in `target/<profile>/deps`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let path = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").join(name);
    assert!(path.is_file(), "{} not found: run `cargo build --workspace` first", path.display());
    path
}

pub fn unique_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iluvatar-ctl-e2e-{}-{}-{tag}", std::process::id(), next()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr))) }
}

/// Where a worker lives: its own network namespace, or a loopback address.
pub struct Place {
    /// The namespace, if any (the worker runs under `ip netns exec`).
    pub netns: Option<String>,
    /// The worker's own address.
    pub addr: String,
    /// The controller's address as seen from the worker.
    pub controller_addr: String,
}

impl Place {
    /// A namespace with a veth pair to the host, or 127.0.0.(2 + k) if that fails.
    pub fn new(k: usize) -> Place {
        match Self::netns() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("network namespaces unavailable ({e}); using loopback addresses");
                Place { netns: None, addr: format!("127.0.0.{}", 2 + k), controller_addr: "127.0.0.1".into() }
            }
        }
    }

    fn netns() -> Result<Place, String> {
        if std::env::var("ILUVATAR_TEST_NO_NETNS").is_ok() {
            return Err("ILUVATAR_TEST_NO_NETNS is set".into());
        }
        let n = (std::process::id() as usize * 7 + next()) % 16000;
        let ns = format!("ilu-ctl-{n}");
        let (host_if, ns_if) = (format!("ivh{n}"), format!("ivn{n}"));
        let (a, b) = (n / 64, (n % 64) * 4);
        let (host_ip, ns_ip) =
            (format!("10.{}.{a}.{}", 200 + a / 256, b + 1), format!("10.{}.{a}.{}", 200 + a / 256, b + 2));
        let place = Place { netns: Some(ns.clone()), addr: ns_ip.clone(), controller_addr: host_ip.clone() };
        let _ = sh(&["ip", "netns", "del", &ns]);
        sh(&["ip", "netns", "add", &ns])?;
        // From here on, dropping `place` removes the namespace (and the veth pair with it).
        sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
        sh(&["ip", "link", "set", &ns_if, "netns", &ns])?;
        sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        sh(&["ip", "link", "set", &host_if, "up"])?;
        sh(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", &ns_if, "up"])?;
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        Ok(place)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(ns) = &self.netns {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

/// A process started with a JSON config, read up to its ready line.
pub struct Proc {
    child: Option<Child>,
    pub dir: PathBuf,
    pub name: String,
    config_path: PathBuf,
    log: PathBuf,
    binary: String,
    netns: Option<String>,
    pub ready: Value,
}

impl Proc {
    fn start(binary: &str, name: &str, config: Value, netns: Option<String>) -> Proc {
        let dir = unique_dir(name);
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let mut p = Proc {
            child: None,
            log: dir.join("log"),
            dir,
            name: name.into(),
            config_path,
            binary: binary.into(),
            netns,
            ready: Value::Null,
        };
        p.spawn();
        p
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin(&self.binary));
                c
            }
            None => Command::new(bin(&self.binary)),
        };
        cmd.arg("-c").arg(&self.config_path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        for (k, _) in std::env::vars() {
            if k.starts_with("ILUVATAR_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("spawn");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(r.read_line(&mut line).map(|_| line));
            let mut rest = String::new();
            while matches!(r.read_line(&mut rest), Ok(n) if n > 0) {
                rest.clear();
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(l)) => l,
            other => {
                let _ = child.kill();
                panic!("{} did not print its ready line ({other:?}):\n{}", self.name, self.log_text());
            }
        };
        self.ready = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{line:?}: {e}\n{}", self.log_text()));
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn grpc(&self) -> String {
        self.ready["grpc"].as_str().expect("grpc in the ready line").to_string()
    }

    pub fn port(&self) -> u16 {
        self.grpc().rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let mut c = self.child.take().expect("running");
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGTERM and wait (at most 15 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        sh(&["kill", "-TERM", &c.id().to_string()]).unwrap();
        for _ in 0..300 {
            if let Ok(Some(s)) = c.try_wait() {
                return s;
            }
            std::thread::sleep(POLL);
        }
        let _ = c.kill();
        panic!("{} did not stop within 15 s:\n{}", self.name, self.log_text());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} log ({}) ---\n{}", self.name, self.log.display(), self.log_text());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Controller {
    pub proc: Proc,
    /// The token `http_get` sends (for a controller configured with `auth.token_file`).
    pub token: Option<String>,
}

impl Controller {
    /// A controller on 0.0.0.0 (reachable from every namespace) with a fast health check.
    pub fn start(balancer: Value) -> Controller {
        let state = unique_dir("controller-state");
        Self::start_in(balancer, &state)
    }

    pub fn start_in(balancer: Value, state: &Path) -> Controller {
        Self::start_with(json!({"balancer": balancer}), state)
    }

    /// A controller whose config is the tests' default with the top-level sections of
    /// `changes` replaced (e.g. `{"health": {...}, "grpc": {"address": "0.0.0.0", "port": P}}`).
    /// It serves on 0.0.0.0 without a token, so the default says `auth.insecure`.
    pub fn start_with(changes: Value, state: &Path) -> Controller {
        let mut config = json!({
            "auth": {"insecure": true},
            "state_dir": state, "grpc": {"address": "0.0.0.0", "port": 0},
            "http": {"enabled": true, "address": "127.0.0.1", "port": 0},
            "balancer": {"type": "round_robin"}, "health": {"interval_ms": 200, "timeout_ms": 300},
            "forward": {"connect_timeout_ms": 300, "invoke_timeout_ms": 10000, "control_timeout_ms": 2000},
        });
        for (k, v) in changes.as_object().expect("an object") {
            config[k] = v.clone();
        }
        Controller { proc: Proc::start("iluvatar_controller", "controller", config, None), token: None }
    }

    /// The worker named `name` as `GET /workers` lists it.
    pub fn worker(&self, name: &str) -> Option<Value> {
        let body = self.http_get("/workers");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
        v["workers"].as_array().unwrap().iter().find(|w| w["name"] == name).cloned()
    }

    /// Waits (at most `polls` x POLL) until the worker named `name` is listed with `healthy`.
    pub fn wait_worker(&self, name: &str, healthy: bool, polls: usize) -> Value {
        for _ in 0..polls {
            if let Some(w) = self.worker(name).filter(|w| w["healthy"] == healthy) {
                return w;
            }
            std::thread::sleep(POLL);
        }
        panic!("worker {name} not healthy={healthy} within {polls} polls: {}", self.http_get("/workers"));
    }

    pub async fn client(&self) -> IluvatarControllerClient<Channel> {
        IluvatarControllerClient::connect(format!("http://127.0.0.1:{}", self.proc.port()))
            .await
            .expect("connect")
            .max_decoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES)
    }

    pub fn http_get(&self, path: &str) -> String {
        let addr = self.proc.ready["http"].as_str().expect("http");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let authorization = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{authorization}Connection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(out)
    }

    pub fn healthy_workers(&self) -> usize {
        let body = self.http_get("/workers");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
        v["workers"].as_array().unwrap().iter().filter(|w| w["healthy"] == true).count()
    }

    /// Waits until `n` workers are in service.
    pub fn wait_healthy(&self, n: usize) {
        for _ in 0..400 {
            if self.healthy_workers() == n {
                return;
            }
            std::thread::sleep(POLL);
        }
        panic!("{n} workers not in service within 20 s: {}\n{}", self.http_get("/workers"), self.proc.log_text());
    }

    /// Runs `iluvatar_worker_cli --controller --address 127.0.0.1 --port P ARGS`: stdout JSON.
    pub fn cli(&self, args: &[&str]) -> Value {
        let out = Command::new(bin("iluvatar_worker_cli"))
            .args(["--controller", "--address", "127.0.0.1", "--port", &self.proc.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

pub struct Worker {
    pub proc: Proc,
    pub place: Place,
}

impl Worker {
    /// A sim worker named `name` in its own place, registering with `controller` (and
    /// again every 200 ms, its heartbeat).
    pub fn start(name: &str, k: usize, controller: &Controller) -> Worker {
        Self::start_with(name, k, controller, json!({}))
    }

    /// Like [`start`](Self::start), with the top-level sections of `changes` replaced. Its
    /// address may not be loopback (a namespace's), so the default says `auth.insecure`.
    pub fn start_with(name: &str, k: usize, controller: &Controller, changes: Value) -> Worker {
        let place = Place::new(k);
        let mut config = json!({
            "auth": {"insecure": true},
            "name": name, "state_dir": unique_dir("worker-state"),
            "grpc": {"address": place.addr, "port": 0}, "http": {"enabled": false},
            "isolation": {"backends": [{"type": "sim"}]}, "invoker": {"concurrency": 4},
            "controller": {"address": place.controller_addr, "port": controller.proc.port(), "retry_ms": 100,
                "heartbeat_ms": 200},
        });
        for (key, v) in changes.as_object().expect("an object") {
            config[key] = v.clone();
        }
        let proc = Proc::start("iluvatar_worker", name, config, place.netns.clone());
        Worker { proc, place }
    }

    /// A client straight to the worker.
    pub async fn client(&self) -> IluvatarWorkerClient<Channel> {
        IluvatarWorkerClient::connect(format!("http://{}", self.proc.grpc()))
            .await
            .expect("connect")
            .max_decoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES)
    }

    pub async fn functions(&self) -> Vec<String> {
        let mut c = self.client().await;
        let r = c.list_registered_funcs(rpc::ListFunctionRequest::default()).await.unwrap().into_inner();
        r.functions.into_iter().map(|f| format!("{}-{}", f.function_name, f.function_version)).collect()
    }

    /// Waits until the worker's registry has `fqdn`.
    pub async fn wait_function(&self, fqdn: &str) {
        for _ in 0..200 {
            if self.functions().await.iter().any(|f| f == fqdn) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("{} never got {fqdn}", self.proc.name);
    }
}

/// A sim function that takes `warm_ms` per warm invocation.
pub fn function(name: &str, warm_ms: u64) -> rpc::RegisterRequest {
    rpc::RegisterRequest {
        function_name: name.into(),
        function_version: "1".into(),
        image_name: "sim".into(),
        memory: 16,
        cpus: 1,
        isolate: rpc::isolation::SIM,
        resource_timings_json: format!(r#"{{"cold_dur_ms": {warm_ms}, "warm_dur_ms": {warm_ms}}}"#),
        ..Default::default()
    }
}

pub fn invoke_req(name: &str) -> rpc::InvokeRequest {
    rpc::InvokeRequest {
        function_name: name.into(),
        function_version: "1".into(),
        json_args: "{}".into(),
        transaction_id: "t".into(),
    }
}

/// Which worker ran an invocation, or the error kind and message.
pub fn outcome(r: &rpc::InvokeResponse) -> Result<String, (String, String)> {
    let v: Value = serde_json::from_str(&r.json_result).unwrap_or_else(|e| panic!("{}: {e}", r.json_result));
    if r.success {
        assert!(v["timings"]["controller_us"].is_u64(), "no controller_us: {v}");
        Ok(v["worker"].as_str().expect("worker").to_string())
    } else {
        Err((v["kind"].as_str().unwrap_or("").to_string(), v["Error"].as_str().unwrap_or("").to_string()))
    }
}

/// A "worker" that accepts TCP connections and never answers: a listener on 127.0.0.1
/// whose thread accepts and holds every socket, for as long as the test process runs.
pub fn silent_listener() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    port
}

pub fn worker_info(name: &str, host: &str, port: u16) -> rpc::RegisterWorkerRequest {
    rpc::RegisterWorkerRequest {
        name: name.into(),
        host: host.into(),
        port: port as u32,
        memory: 1024,
        cpus: 1,
        isolation: rpc::isolation::SIM,
        ..Default::default()
    }
}
