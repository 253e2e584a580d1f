//! Traces through the controller: live (a real iluvatar_controller and two sim workers on
//! loopback; `cargo build --workspace` builds the binaries), and simulated (a cluster of
//! in-process workers behind the controller's balancer, under virtual time).

mod common;
use common::*;

use clap::Parser;
use iluvatar_load_gen::commands::replay::{TraceArgs, run_trace};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SEED: u64 = 7;

/// A process started with a JSON config, stopped with SIGTERM on drop.
struct Proc {
    child: Child,
    ready: Value,
    log: PathBuf,
}

impl Proc {
    fn start(binary: &str, dir: &Path, config: Value) -> Proc {
        let path = dir.join(format!("{binary}.json"));
        std::fs::write(&path, config.to_string()).unwrap();
        let log = dir.join(format!("{binary}.log"));
        let mut child = Command::new(bin(binary))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("no ready line in 20 s");
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("bad ready line {line:?}; log: {:?}", std::fs::read_to_string(&log)));
        Proc { child, ready, log }
    }

    fn grpc_port(&self) -> u16 {
        self.ready["grpc"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signals our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

const META: &str = "func_name,cold_dur_ms,warm_dur_ms,mem_mb\nhello,60,5,128\nslow,120,30,256\n";
const TRACE: &str = "func_name,invoke_time_ms\nhello,0\nslow,0\nhello,300\nslow,400\nhello,600\nhello,650\nslow,800\n";

#[test]
fn a_trace_runs_through_a_live_controller_over_two_workers() {
    let dir = temp_dir("live");
    let controller = Proc::start(
        "iluvatar_controller",
        &dir,
        serde_json::json!({
            "state_dir": dir.join("controller"),
            "grpc": {"address": "127.0.0.1", "port": 0},
            "http": {"enabled": true, "address": "127.0.0.1", "port": 0},
            "balancer": {"type": "round_robin"},
            "health": {"interval_ms": 100, "timeout_ms": 500},
            "log_level": "warn",
        }),
    );
    let port = controller.grpc_port();
    let http = controller.ready["http"].as_str().unwrap().to_string();
    let workers: Vec<Proc> = ["w1", "w2"]
        .iter()
        .map(|name| {
            let wdir = dir.join(name);
            std::fs::create_dir_all(&wdir).unwrap();
            Proc::start(
                "iluvatar_worker",
                &wdir,
                serde_json::json!({
                    "name": name,
                    "isolation": {"backends": [{"type": "sim"}]},
                    "grpc": {"address": "127.0.0.1", "port": 0},
                    "http": {"enabled": false},
                    "state_dir": wdir.join("state"),
                    "log_level": "warn",
                    "controller": {"address": "127.0.0.1", "port": port, "advertise_host": "127.0.0.1", "retry_ms": 100},
                }),
            )
        })
        .collect();
    let (trace, meta, out) = (dir.join("trace.csv"), dir.join("meta.csv"), dir.join("out"));
    std::fs::write(&trace, TRACE).unwrap();
    std::fs::write(&meta, META).unwrap();
    let port_s = port.to_string();
    let o = load_gen(&[
        "trace",
        "--target",
        "controller",
        "--host",
        "127.0.0.1",
        "--port",
        &port_s,
        "--controller-http",
        &http,
        "--min-workers",
        "2",
        "--wait-workers-s",
        "20",
        "--isolation",
        "sim",
        "--input",
        s(&trace),
        "--metadata",
        s(&meta),
        "--out",
        s(&out),
    ]);
    let logs = || {
        let mut all = format!("controller: {:?}", std::fs::read_to_string(&controller.log));
        for w in &workers {
            all += &format!("\nworker: {:?}", std::fs::read_to_string(&w.log));
        }
        all
    };
    assert!(o.status.success(), "{}", logs());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("invocations per worker: w1 ") && stdout.contains("controller overhead"), "{stdout}");

    let rows = read_csv(&out.join("invocations.csv"));
    assert_eq!(rows.len(), 7);
    for r in &rows {
        assert_eq!(r["success"], "true", "{r:?}");
        let controller_ms: f64 = r["controller_ms"].parse().unwrap();
        let rpc_ms: f64 = r["worker_rpc_ms"].parse().unwrap();
        let latency: f64 = r["client_latency_ms"].parse().unwrap();
        assert!(controller_ms >= 0.0 && rpc_ms > 0.0 && controller_ms + rpc_ms <= latency + 0.01, "{r:?}");
    }
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *per_worker.entry(r["worker"].clone()).or_default() += 1;
    }
    let names: Vec<&str> = per_worker.keys().map(String::as_str).collect();
    assert_eq!(names, ["w1", "w2"], "round robin uses both workers: {per_worker:?}");
    // Round robin alternates: 7 invocations split 4/3.
    assert!(per_worker.values().all(|&n| n == 3 || n == 4), "{per_worker:?}");

    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["invocations"], 7);
    assert_eq!(summary["succeeded"], 7);
    for (name, n) in &per_worker {
        assert_eq!(summary["workers"][name]["invocations"], *n as u64, "{}", summary["workers"]);
    }
    assert!(summary["controller_overhead_ms"]["count"] == 7, "{}", summary["controller_overhead_ms"]);
    assert_eq!(summary["target"]["target"], "controller");
    drop(workers);
    drop(controller);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn live_controller_flags_are_checked() {
    let dir = temp_dir("flags");
    let (trace, meta) = (dir.join("trace.csv"), dir.join("meta.csv"));
    std::fs::write(&trace, TRACE).unwrap();
    std::fs::write(&meta, META).unwrap();
    let o = load_gen(&["trace", "--workers", "2", "--isolation", "sim", "--input", s(&trace), "--metadata", s(&meta)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--setup simulation"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Parser)]
struct TraceCli {
    #[command(flatten)]
    args: TraceArgs,
}

/// A sparse trace: every function once a second, one at a time: 200 ms apart, and a cold
/// start takes 100 ms, so no invocation overlaps another.
fn sparse_trace(dir: &Path) {
    let mut meta = String::from("func_name,cold_dur_ms,warm_dur_ms,mem_mb\n");
    let names = ["fa", "fb", "fc", "fd"];
    for n in names {
        meta.push_str(&format!("{n},100,10,128\n"));
    }
    let mut trace = String::from("func_name,invoke_time_ms\n");
    for k in 0..20 {
        for (j, n) in names.iter().enumerate() {
            trace.push_str(&format!("{n},{}\n", k * 1000 + j * 200));
        }
    }
    std::fs::write(dir.join("metadata.csv"), meta).unwrap();
    std::fs::write(dir.join("trace.csv"), trace).unwrap();
}

/// `trace --setup simulation --controller-config ... --workers N` as the binary runs it.
fn simulate_cluster(dir: &Path, balancer: &str, workers: usize, out: &Path, seed: u64) {
    let controller = dir.join(format!("controller-{balancer}.json"));
    std::fs::write(&controller, serde_json::json!({"balancer": {"type": balancer}}).to_string()).unwrap();
    let worker = dir.join("worker.json");
    std::fs::write(&worker, r#"{"invoker": {"concurrency": 2}, "limits": {"max_cpus": 2}}"#).unwrap();
    let (seed, workers) = (seed.to_string(), workers.to_string());
    let (trace, metadata) = (dir.join("trace.csv"), dir.join("metadata.csv"));
    let argv = [
        "trace",
        "--setup",
        "simulation",
        "--quiet",
        "--controller-config",
        s(&controller),
        "--workers",
        &workers,
        "--worker-config",
        s(&worker),
        "--input",
        s(&trace),
        "--metadata",
        s(&metadata),
        "--out",
        s(out),
        "--seed",
        &seed,
    ];
    let args = TraceCli::try_parse_from(argv).unwrap().args;
    let rt = iluvatar_load_gen::simulation::worker::runtime().unwrap();
    rt.block_on(run_trace(args)).unwrap_or_else(|e| panic!("seed {seed}: simulation failed: {e:#}"));
}

/// The workers each function ran on.
fn placement(rows: &[HashMap<String, String>]) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rows {
        m.entry(r["function"].clone()).or_default().insert(r["worker"].clone());
    }
    m
}

#[test]
fn a_simulated_cluster_is_deterministic_and_balances_like_the_controller() {
    let dir = temp_dir("sim");
    sparse_trace(&dir);
    let (a, b) = (dir.join("rr-a"), dir.join("rr-b"));
    simulate_cluster(&dir, "round_robin", 3, &a, SEED);
    simulate_cluster(&dir, "round_robin", 3, &b, SEED);
    for f in ["invocations.csv", "summary.json", "latency_cdf.svg", "overhead_over_time.svg"] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "seed {SEED}: {f} differs between two runs"
        );
    }
    let rows = read_csv(&a.join("invocations.csv"));
    assert_eq!(rows.len(), 80);
    assert!(rows.iter().all(|r| r["success"] == "true" && r["controller_ms"].is_empty()), "seed {SEED}");
    // Round robin: every worker gets a third of the invocations, and functions move.
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *per_worker.entry(r["worker"].clone()).or_default() += 1;
    }
    let names: Vec<&str> = per_worker.keys().map(String::as_str).collect();
    assert_eq!(names, ["worker-0", "worker-1", "worker-2"], "seed {SEED}");
    assert!(per_worker.values().all(|&n| (26..=27).contains(&n)), "seed {SEED}: {per_worker:?}");
    assert!(placement(&rows).values().all(|w| w.len() > 1), "seed {SEED}: {:?}", placement(&rows));
    let summary: Value = serde_json::from_slice(&std::fs::read(a.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["workers"]["worker-1"]["invocations"], per_worker["worker-1"] as u64);
    assert_eq!(summary["target"]["balancer"]["type"], "round_robin");
    let rr_cold = summary["cold"].as_u64().unwrap();

    // CH-BL at low load: each function stays on its home worker, so it is cold once.
    let ch = dir.join("ch");
    simulate_cluster(&dir, "ch_bl", 3, &ch, SEED);
    let rows = read_csv(&ch.join("invocations.csv"));
    let placed = placement(&rows);
    assert!(placed.values().all(|w| w.len() == 1), "seed {SEED}: {placed:?}");
    let cold = rows.iter().filter(|r| r["container_state"] == "cold").count();
    assert_eq!(cold, 4, "seed {SEED}: one cold start per function");
    assert!(rr_cold > 4, "seed {SEED}: round robin cold-starts each function on several workers ({rr_cold})");

    // Another seed is another run of the same balancer (the same placement for CH-BL,
    // which hashes names), and still complete.
    let other = dir.join("ch-other");
    simulate_cluster(&dir, "ch_bl", 3, &other, SEED + 1);
    assert_eq!(placement(&read_csv(&other.join("invocations.csv"))), placed, "seed {}", SEED + 1);
    let _ = std::fs::remove_dir_all(&dir);
}
