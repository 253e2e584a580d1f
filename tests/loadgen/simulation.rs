//! Simulation (`--setup simulation`): the real worker code in process under virtual time.
//! Runs the library directly (no binaries needed). Every test prints its seed, and every
//! assertion names it, so a failure can be replayed bit for bit.

use super::in_process::{self, SyntheticArgs, synthetic_workload, write};
use iluvatar_testkit::{s, unique_dir as temp_dir};
use std::path::{Path, PathBuf};

const SEED: u64 = 42;
const FILES: [&str; 5] =
    ["invocations.csv", "summary.json", "latency_cdf.svg", "overhead_over_time.svg", "cold_starts_throughput.svg"];

/// `trace --setup simulation ...` in a virtual-time runtime, as the binary runs it.
fn simulate(dir: &Path, config: &Path, out: &Path, seed: u64) {
    in_process::simulate(dir, config, out, seed, &[]);
}

/// A workload that exercises queueing, eviction, memory waits and keep-alive expiry.
fn workload(dir: &Path, seed: u64) {
    let a = SyntheticArgs {
        functions: 8,
        duration_s: 120.0,
        mean_rate: 4.0,
        rate_sigma: 1.0,
        mean_warm_ms: 30.0,
        warm_sigma: 1.0,
        mean_cold_extra_ms: 200.0,
        cold_sigma: 0.5,
        mem_mb: vec![128, 256, 512],
        timer_fraction: 0.0,
        seed,
        out: dir.to_path_buf(),
        force: false,
    };
    let (meta, mut arrivals) = synthetic_workload(&a).unwrap();
    write(dir, &meta, &mut arrivals).unwrap();
}

fn config(dir: &Path, name: &str, ttl_ms: u64) -> PathBuf {
    let p = dir.join(name);
    let c = serde_json::json!({
        "container_pool": {"memory_mb": 1024, "keep_alive": {"type": "fixed", "ttl_ms": ttl_ms}},
        "invoker": {"concurrency": 3, "memory_wait_ms": 2000},
    });
    std::fs::write(&p, c.to_string()).unwrap();
    p
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn same_inputs_and_seed_give_byte_identical_results() {
    println!("simulation seed {SEED}");
    let dir = temp_dir("det");
    workload(&dir, SEED);
    let cfg = config(&dir, "w.json", 5_000);
    let out = dir.join("out");
    simulate(&dir, &cfg, &out, SEED);
    let first = dir.join("first");
    std::fs::rename(&out, &first).unwrap();
    // The same --out path, so that even the command line in summary.json is the same.
    simulate(&dir, &cfg, &out, SEED);
    for f in FILES {
        assert!(read(&first.join(f)) == read(&out.join(f)), "seed {SEED}: {f} differs between two identical runs");
    }
    let summary: serde_json::Value = serde_json::from_slice(&read(&out.join("summary.json"))).unwrap();
    let cold = summary["cold"].as_u64().unwrap();
    assert!(cold > 0 && summary["warm"].as_u64().unwrap() > 0, "seed {SEED}: both cold and warm starts expected");
    assert_eq!(summary["target"]["setup"], "simulation");

    // Another config changes the outcome (shorter keep-alive: more cold starts).
    let short = config(&dir, "short.json", 200);
    let other = dir.join("other");
    simulate(&dir, &short, &other, SEED);
    assert!(read(&other.join("invocations.csv")) != read(&out.join("invocations.csv")), "seed {SEED}");
    let s2: serde_json::Value = serde_json::from_slice(&read(&other.join("summary.json"))).unwrap();
    assert!(s2["cold"].as_u64().unwrap() > cold, "seed {SEED}: a 200 ms keep-alive should cold-start more");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rate_seed_drives_the_arrivals() {
    println!("simulation seed {SEED}");
    let dir = temp_dir("rate");
    let cfg = config(&dir, "w.json", 5_000);
    let run = |seed: u64, out: &Path| {
        let seed = seed.to_string();
        let argv = [
            "rate",
            "--setup",
            "simulation",
            "--worker-config",
            s(&cfg),
            "--quiet",
            "--function",
            "f:50:5:128",
            "--function",
            "g:80:20:256",
            "--rate",
            "40",
            "--duration-s",
            "20",
            "--seed",
            &seed,
            "--out",
            s(out),
        ];
        in_process::run_rate(&argv, &seed);
        read(&out.join("invocations.csv"))
    };
    let (a, b, c) = (run(SEED, &dir.join("a")), run(SEED, &dir.join("b")), run(SEED + 1, &dir.join("c")));
    assert!(a == b, "seed {SEED}: the same seed gave different rows");
    assert!(a != c, "seeds {SEED} and {}: different seeds gave the same rows", SEED + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn virtual_time_gives_exact_cold_and_warm_latencies() {
    println!("simulation seed {SEED}");
    let dir = temp_dir("exact");
    std::fs::write(dir.join("metadata.csv"), "func_name,cold_dur_ms,warm_dur_ms,mem_mb\nf,300,20,128\n").unwrap();
    let mut trace = String::from("func_name,invoke_time_ms\n");
    for i in 0..50 {
        trace.push_str(&format!("f,{}\n", i * 100));
    }
    std::fs::write(dir.join("trace.csv"), trace).unwrap();
    let cfg = dir.join("w.json");
    std::fs::write(&cfg, r#"{"invoker": {"concurrency": 4}, "isolation": {"backends": [{"type": "runtime"}]}}"#)
        .unwrap();
    let out = dir.join("out");
    simulate(&dir, &cfg, &out, SEED);
    let text = String::from_utf8(read(&out.join("invocations.csv"))).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 50);
    // client_latency_ms is column 6, container_state column 12.
    assert_eq!((rows[0][12], rows[0][6]), ("cold", "300.000"), "seed {SEED}: {:?}", rows[0]);
    for r in &rows[4..] {
        assert_eq!((r[12], r[6]), ("warm", "20.000"), "seed {SEED}: {r:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Metadata with measured samples (as `fidelity calibrate` writes it): every simulated
/// latency is one of the samples, and the seed decides which, reproducibly.
#[test]
fn trace_seed_draws_durations_from_measured_samples() {
    println!("simulation seed {SEED}");
    let dir = temp_dir("samples");
    let meta =
        "func_name,cold_dur_ms,warm_dur_ms,mem_mb,cold_samples_ms,warm_samples_ms\nf,300,20,128,280 320,15 20 25\n";
    std::fs::write(dir.join("metadata.csv"), meta).unwrap();
    let mut trace = String::from("func_name,invoke_time_ms\n");
    for i in 0..60 {
        trace.push_str(&format!("f,{}\n", i * 500));
    }
    std::fs::write(dir.join("trace.csv"), trace).unwrap();
    let cfg = config(&dir, "w.json", 60_000);
    let latencies = |out: &Path| -> Vec<String> {
        let text = String::from_utf8(read(&out.join("invocations.csv"))).unwrap();
        // client_latency_ms is column 6.
        text.lines().skip(1).map(|l| l.split(',').nth(6).unwrap().to_string()).collect()
    };
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    simulate(&dir, &cfg, &a, SEED);
    simulate(&dir, &cfg, &b, SEED);
    simulate(&dir, &cfg, &c, SEED + 1);
    let la = latencies(&a);
    assert!(["280.000", "320.000"].contains(&la[0].as_str()), "seed {SEED}: cold {}", la[0]);
    assert!(la[1..].iter().all(|x| ["15.000", "20.000", "25.000"].contains(&x.as_str())), "seed {SEED}: {la:?}");
    assert!(la[1..].iter().collect::<std::collections::BTreeSet<_>>().len() == 3, "seed {SEED}: {la:?}");
    assert_eq!(la, latencies(&b), "seed {SEED}: the same seed gave other latencies");
    assert_ne!(la, latencies(&c), "seeds {SEED} and {}: different seeds gave the same latencies", SEED + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

fn fidelity(args: &[&str]) {
    in_process::fidelity(args, SEED);
}

/// The fidelity tooling end to end, with a simulation standing in for the live runs (the
/// live path is `scripts/fidelity.sh` on real containers): a resampled calibration trace,
/// metadata calibrated from a run of it (samples, idle times), and a comparison over
/// several simulated runs; a run compared with itself has no error.
#[test]
fn fidelity_calibrates_from_a_run_and_compares() {
    println!("simulation seed {SEED}");
    let dir = temp_dir("fidelity");
    workload(&dir, SEED);
    let cfg = config(&dir, "w.json", 5_000);
    let cal = dir.join("cal");
    let (trace, meta) = (dir.join("trace.csv"), dir.join("metadata.csv"));
    fidelity(&[
        "calibration-trace",
        "--input",
        s(&trace),
        "--metadata",
        s(&meta),
        "--duration-s",
        "60",
        "--out",
        s(&cal),
    ]);
    let cal_text = std::fs::read_to_string(cal.join("trace.csv")).unwrap();
    assert!(cal_text != std::fs::read_to_string(&trace).unwrap(), "seed {SEED}: the calibration trace is resampled");
    let cal_run = cal.join("run");
    simulate(&cal, &cfg, &cal_run, SEED);
    let calibrated = dir.join("calibrated.csv");
    fidelity(&["calibrate", "--run", s(&cal_run), "--metadata", s(&meta), "--out", s(&calibrated)]);
    let m = iluvatar_load_gen::workload::trace::read_metadata(&calibrated).unwrap();
    assert!(m.iter().any(|f| !f.cold_samples_ms.is_empty()), "seed {SEED}: cold samples expected");
    assert!(m.iter().all(|f| f.warm_idle_ms.len() == f.warm_samples_ms.len()), "seed {SEED}: one idle per sample");
    assert!(m.iter().any(|f| f.warm_samples_ms.len() > 10), "seed {SEED}: warm samples expected");

    // The "live" run from the original metadata, two simulated ones from the calibrated.
    let (live, a, b) = (dir.join("live"), dir.join("a"), dir.join("b"));
    simulate(&dir, &cfg, &live, SEED);
    std::fs::copy(&calibrated, &meta).unwrap();
    simulate(&dir, &cfg, &a, SEED);
    simulate(&dir, &cfg, &b, SEED + 1);
    let out = dir.join("f.json");
    fidelity(&["compare", "--live", s(&live), "--sim", s(&a), "--sim", s(&b), "--out", s(&out)]);
    let r: serde_json::Value = serde_json::from_slice(&read(&out)).unwrap();
    assert_eq!(r["cold_total"]["sim_runs"].as_array().unwrap().len(), 2, "seed {SEED}: {r}");
    assert!(r["functions"].as_object().unwrap().len() == 8, "seed {SEED}: a row per function");
    let same = dir.join("same.json");
    fidelity(&["compare", "--live", s(&live), "--sim", s(&live), "--out", s(&same)]);
    let r: serde_json::Value = serde_json::from_slice(&read(&same)).unwrap();
    assert_eq!(r["worst_abs_relative_error"]["p50"], 0.0, "seed {SEED}: {r}");
    assert_eq!(r["cold_total"]["relative_error"], 0.0, "seed {SEED}: {r}");
    let _ = std::fs::remove_dir_all(&dir);
}
