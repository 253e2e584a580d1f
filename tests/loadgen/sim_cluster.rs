//! Simulated clusters at scale and with a simulated controller's overhead: hundreds of
//! workers give byte-identical results on rerun, and a measured controller overhead is
//! drawn for every invocation, added on the virtual clock and reported as controller_ms.

use super::in_process::{self, SyntheticArgs, synthetic_workload, write};
use iluvatar_testkit::loadgen::read_csv;
use iluvatar_testkit::{s, unique_dir as temp_dir};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SEED: u64 = 13;

fn configs(dir: &Path, balancer: &str) -> (PathBuf, PathBuf) {
    let (worker, controller) = (dir.join("worker.json"), dir.join(format!("controller-{balancer}.json")));
    let w = serde_json::json!({"invoker": {"concurrency": 2}, "limits": {"max_cpus": 2},
        "container_pool": {"memory_mb": 2048, "keep_alive": {"type": "hybrid", "fallback_ttl_ms": 20000}}});
    std::fs::write(&worker, w.to_string()).unwrap();
    std::fs::write(&controller, serde_json::json!({"balancer": {"type": balancer}}).to_string()).unwrap();
    (worker, controller)
}

/// `trace --setup simulation` of `dir`'s trace on `workers` workers behind `balancer`, with
/// `extra` arguments; the error if it fails.
fn try_cluster(dir: &Path, balancer: &str, workers: usize, out: &Path, extra: &[&str]) -> Result<(), String> {
    let (worker, controller) = configs(dir, balancer);
    let (trace, metadata, workers) = (dir.join("trace.csv"), dir.join("metadata.csv"), workers.to_string());
    let seed = SEED.to_string();
    let mut argv = vec!["trace", "--setup", "simulation", "--quiet", "--worker-config", s(&worker)];
    argv.extend(["--controller-config", s(&controller), "--workers", &workers, "--seed", &seed]);
    argv.extend(["--input", s(&trace), "--metadata", s(&metadata), "--out", s(out)]);
    argv.extend(extra);
    in_process::try_trace(in_process::trace_args(&argv))
}

fn cluster(dir: &Path, balancer: &str, workers: usize, out: &Path, extra: &[&str]) {
    try_cluster(dir, balancer, workers, out, extra).unwrap_or_else(|e| panic!("seed {SEED}: {e}"));
}

/// An Azure-shaped workload: heavy-skewed rates, a third of the functions on timers.
fn workload(dir: &Path, functions: usize, mean_rate: f64) {
    let a = SyntheticArgs {
        functions,
        duration_s: 120.0,
        mean_rate,
        rate_sigma: 2.0,
        mean_warm_ms: 50.0,
        warm_sigma: 1.0,
        mean_cold_extra_ms: 300.0,
        cold_sigma: 0.5,
        mem_mb: vec![128, 256, 512],
        timer_fraction: 0.33,
        seed: SEED,
        out: dir.to_path_buf(),
        force: false,
    };
    let (meta, mut arrivals) = synthetic_workload(&a).unwrap();
    write(dir, &meta, &mut arrivals).unwrap();
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn summary(out: &Path) -> Value {
    serde_json::from_slice(&read(&out.join("summary.json"))).unwrap()
}

#[test]
fn hundreds_of_simulated_workers_give_byte_identical_results_on_rerun() {
    println!("seed {SEED}");
    let dir = temp_dir("sim-scale");
    workload(&dir, 150, 0.5);
    for (balancer, workers) in [("ch_bl", 300), ("round_robin", 120)] {
        let (a, b) = (dir.join(format!("{balancer}-a")), dir.join(format!("{balancer}-b")));
        cluster(&dir, balancer, workers, &a, &[]);
        cluster(&dir, balancer, workers, &b, &[]);
        for f in ["invocations.csv", "summary.json", "latency_cdf.svg", "cold_starts_throughput.svg"] {
            assert!(read(&a.join(f)) == read(&b.join(f)), "seed {SEED}, {balancer}: {f} differs between two runs");
        }
        let s = summary(&a);
        assert!(s["invocations"].as_u64().unwrap() > 3000, "seed {SEED}: {}", s["invocations"]);
        assert_eq!(s["failed"], 0, "seed {SEED}: {}", s["first_error"]);
        let used = s["workers"].as_object().unwrap().len();
        assert!(used > workers / 4, "seed {SEED}, {balancer}: only {used} of {workers} workers got work");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// client_latency_ms of each row, by transaction id.
fn latencies(rows: &[HashMap<String, String>]) -> HashMap<String, f64> {
    rows.iter().map(|r| (r["transaction_id"].clone(), r["client_latency_ms"].parse().unwrap())).collect()
}

#[test]
fn a_measured_controller_overhead_is_added_on_the_virtual_clock_and_reported() {
    println!("seed {SEED}");
    let dir = temp_dir("sim-overhead");
    workload(&dir, 20, 0.5);
    let plain = dir.join("plain");
    cluster(&dir, "ch_bl", 8, &plain, &[]);
    let base = read_csv(&plain.join("invocations.csv"));
    assert!(base.iter().all(|r| r["controller_ms"].is_empty()), "seed {SEED}: no overhead without a file");

    // 2.5 ms every time: the clock (whole milliseconds) adds 2 or 3, 2.5 on average.
    let samples = dir.join("samples.txt");
    std::fs::write(&samples, "2500\n").unwrap();
    let with = dir.join("with");
    cluster(&dir, "ch_bl", 8, &with, &["--controller-overhead", s(&samples)]);
    let rows = read_csv(&with.join("invocations.csv"));
    assert_eq!(rows.len(), base.len());
    let before = latencies(&base);
    let mut added = Vec::new();
    for r in &rows {
        assert_eq!(r["controller_ms"], "2.500", "seed {SEED}: {r:?}");
        let latency: f64 = r["client_latency_ms"].parse().unwrap();
        let worker_rpc: f64 = r["worker_rpc_ms"].parse().unwrap();
        let delta = latency - worker_rpc;
        assert!(delta == 2.0 || delta == 3.0, "seed {SEED}: latency {latency} = worker {worker_rpc} + {delta}?");
        added.push(latency - before[&r["transaction_id"]]);
    }
    let mean = added.iter().sum::<f64>() / added.len() as f64;
    assert!((mean - 2.5).abs() < 0.3, "seed {SEED}: latency grew by {mean} ms on average, not 2.5");
    let sm = summary(&with);
    assert_eq!(sm["controller_overhead_ms"]["p50"], 2.5, "seed {SEED}: {}", sm["controller_overhead_ms"]);
    assert_eq!(sm["target"]["controller_overhead"]["kind"], "samples");

    // A controller-bench report: its first step's percentiles, reproducibly.
    let report = dir.join("controller_bench.json");
    let step = |p50: u32| serde_json::json!({"controller_us": {"count": 10, "mean": 1.0, "p50": p50, "p99": 4000, "max": 6000}});
    std::fs::write(&report, serde_json::json!({"steps": [step(1000), step(9000)]}).to_string()).unwrap();
    let (a, b) = (dir.join("bench-a"), dir.join("bench-b"));
    cluster(&dir, "ch_bl", 8, &a, &["--controller-overhead", s(&report)]);
    cluster(&dir, "ch_bl", 8, &b, &["--controller-overhead", s(&report)]);
    assert!(read(&a.join("invocations.csv")) == read(&b.join("invocations.csv")), "seed {SEED}: reruns differ");
    let ms: Vec<f64> =
        read_csv(&a.join("invocations.csv")).iter().map(|r| r["controller_ms"].parse().unwrap()).collect();
    assert!(ms.iter().all(|&x| (1.0..=6.0).contains(&x)), "seed {SEED}: outside the report's range: {ms:?}");
    let at_p50 = ms.iter().filter(|&&x| x == 1.0).count() as f64 / ms.len() as f64;
    assert!((0.4..0.6).contains(&at_p50), "seed {SEED}: {at_p50} of draws at the p50 (half lie below it)");
    assert!(ms.iter().any(|&x| x > 3.0), "seed {SEED}: the tail is drawn too");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_controller_overhead_is_refused_by_name() {
    println!("seed {SEED}");
    let dir = temp_dir("sim-overhead-bad");
    workload(&dir, 5, 0.5);
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "40 -3").unwrap();
    let e = try_cluster(&dir, "ch_bl", 2, &dir.join("o"), &["--controller-overhead", s(&bad)]).unwrap_err();
    assert!(e.contains("bad.txt") && e.contains("sample 2 is -3"), "{e}");
    assert!(!dir.join("o/invocations.csv").exists(), "refused before any row is written");
    let e =
        try_cluster(&dir, "ch_bl", 2, &dir.join("o"), &["--controller-overhead", s(&dir.join("none"))]).unwrap_err();
    assert!(e.contains("cannot read controller overhead file") && e.contains("none"), "{e}");
    // Without a simulated cluster there is no controller to take the time.
    let worker = dir.join("worker.json");
    let (trace, metadata, out) = (dir.join("trace.csv"), dir.join("metadata.csv"), dir.join("p"));
    let argv = ["trace", "--setup", "simulation", "--quiet", "--worker-config", s(&worker), "--input", s(&trace)];
    let mut argv = argv.to_vec();
    argv.extend(["--metadata", s(&metadata), "--out", s(&out), "--controller-overhead", s(&bad)]);
    let e = in_process::try_trace(in_process::trace_args(&argv)).unwrap_err();
    assert!(e.contains("needs a simulated cluster"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sim_bench_times_clusters_and_finds_their_reruns_byte_identical() {
    println!("seed {SEED}");
    let dir = temp_dir("sim-bench");
    let argv = ["--functions", "12", "--duration-s", "30", "--mean-rate", "2", "--rate-sigma", "2"];
    let mut argv = argv.to_vec();
    argv.extend(["--timer-fraction", "0.3", "--workers", "3,40", "--runs", "2", "--seed", "13", "--out", s(&dir)]);
    in_process::sim_bench(&argv);
    let r: Value = serde_json::from_slice(&read(&dir.join("sim_bench.json"))).unwrap();
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.iter().map(|s| s["workers"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 40]);
    for s in steps {
        assert_eq!(s["byte_identical_runs"], true, "seed {SEED}: {s}");
        let runs = s["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|x| x["wall_s"].as_f64().unwrap() > 0.0 && x["peak_rss_mb"].as_f64().unwrap() > 0.0));
        // CPU time and the machine's load go with every wall time (a shared machine's wall
        // times say little without them).
        assert!(runs.iter().all(|x| x["cpu_s"].as_f64().unwrap() > 0.0), "{s}");
        assert!(runs.iter().all(|x| x["loadavg_before"].as_array().unwrap().len() == 3), "{s}");
        assert_eq!(runs[0]["failed"], 0, "seed {SEED}: {s}");
    }
    // Different clusters place work differently: their rows differ.
    let hash = |i: usize| steps[i]["runs"][0]["invocations_csv_fnv64"].clone();
    assert_ne!(hash(0), hash(1), "seed {SEED}: 3 and 40 workers gave the same rows");
    assert!(r["invocations"].as_u64().unwrap() > 100);
    let _ = std::fs::remove_dir_all(&dir);
}
