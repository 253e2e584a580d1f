//! A controller and worker processes (the real binaries), each worker on its own address: in
//! a network namespace made for it (veth pair, private /30), or on a loopback address
//! 127.0.0.N where namespaces cannot be made (or `ILUVATAR_TEST_NO_NETNS` is set).

use crate::http::http_exchange;
use crate::{Proc, bin, output_timeout, replace_sections, sh, unique_dir};
use iluvatar_rpc as rpc;
use iluvatar_rpc::iluvatar_controller_client::IluvatarControllerClient;
use iluvatar_rpc::iluvatar_worker_client::IluvatarWorkerClient;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::Channel;

/// Step of the polling loops of the cluster tests (their poll counts are in these steps).
pub const POLL: Duration = Duration::from_millis(50);

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
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        if std::env::var("ILUVATAR_TEST_NO_NETNS").is_ok() {
            return Err("ILUVATAR_TEST_NO_NETNS is set".into());
        }
        let n = (std::process::id() as usize * 7 + COUNTER.fetch_add(1, Ordering::SeqCst)) % 16000;
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

/// A running `iluvatar_controller`.
pub struct Controller {
    pub proc: Proc,
    /// The token `http_get` sends (for a controller configured with `auth.token_file`).
    pub token: Option<String>,
}

impl Controller {
    /// A controller on 0.0.0.0 (reachable from every namespace) with a fast health check.
    /// Its state is in its own folder, removed with it.
    pub fn start(balancer: Value) -> Controller {
        let dir = unique_dir("controller");
        Self::launch(json!({"balancer": balancer}), &dir.join("state"), Some(dir))
    }

    pub fn start_in(balancer: Value, state: &Path) -> Controller {
        Self::start_with(json!({"balancer": balancer}), state)
    }

    /// A controller whose config is the tests' default with the top-level sections of
    /// `changes` replaced (e.g. `{"health": {...}, "grpc": {"address": "0.0.0.0", "port": P}}`).
    /// It serves on 0.0.0.0 without a token, so the default says `auth.insecure`.
    pub fn start_with(changes: Value, state: &Path) -> Controller {
        Self::launch(changes, state, None)
    }

    /// Starts the controller with its files in `dir` (removed with it) or a folder of its own.
    fn launch(changes: Value, state: &Path, dir: Option<std::path::PathBuf>) -> Controller {
        let mut config = json!({
            "auth": {"insecure": true},
            "state_dir": state, "grpc": {"address": "0.0.0.0", "port": 0},
            "http": {"enabled": true, "address": "127.0.0.1", "port": 0},
            "balancer": {"type": "round_robin"}, "health": {"interval_ms": 200, "timeout_ms": 300},
            "forward": {"connect_timeout_ms": 300, "invoke_timeout_ms": 10000, "control_timeout_ms": 2000},
        });
        replace_sections(&mut config, changes);
        let owned = dir.is_some();
        let mut proc = Proc::prepare("iluvatar_controller", "controller", &config, dir);
        if owned {
            proc = proc.owning_dir();
        }
        Controller { proc: proc.started(), token: None }
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

    /// `GET path` on the HTTP API (with the token, if any); the body.
    pub fn http_get(&self, path: &str) -> String {
        let addr = self.proc.addr("http");
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        http_exchange(&addr, "GET", path, &headers, None).2
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
        let mut cmd = Command::new(bin("iluvatar_worker_cli"));
        cmd.args(["--controller", "--address", "127.0.0.1", "--port", &self.proc.port().to_string()]).args(args);
        let out = output_timeout(cmd, Duration::from_secs(30));
        assert!(out.status.success(), "cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A sim worker of a cluster, in its own [`Place`].
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
        Self::start_configured(name, k, controller, |config| replace_sections(config, changes))
    }

    /// Like [`start`](Self::start), registering with the controller once, without a heartbeat.
    pub fn start_without_heartbeat(name: &str, k: usize, controller: &Controller) -> Worker {
        Self::start_configured(name, k, controller, |config| config["controller"]["heartbeat_ms"] = 0.into())
    }

    /// A sim worker whose default config `change` edits before it starts.
    fn start_configured(name: &str, k: usize, controller: &Controller, change: impl FnOnce(&mut Value)) -> Worker {
        let place = Place::new(k);
        // Its state in its own folder, removed with it.
        let dir = unique_dir(name);
        let mut config = json!({
            "auth": {"insecure": true},
            "name": name, "state_dir": dir.join("state"),
            "grpc": {"address": place.addr, "port": 0}, "http": {"enabled": false},
            "isolation": {"backends": [{"type": "sim"}]}, "invoker": {"concurrency": 4},
            "controller": {"address": place.controller_addr, "port": controller.proc.port(), "retry_ms": 100,
                "heartbeat_ms": 200},
        });
        change(&mut config);
        let proc = Proc::prepare("iluvatar_worker", name, &config, Some(dir)).owning_dir().netns(place.netns.clone());
        let proc = proc.started();
        Worker { proc, place }
    }

    /// A client straight to the worker.
    pub async fn client(&self) -> IluvatarWorkerClient<Channel> {
        crate::worker::connect(format!("http://{}", self.proc.grpc())).await.expect("connect")
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

/// An invocation of version 1 of `name` with no arguments.
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

/// A worker's registration with a controller, as the worker sends it.
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
