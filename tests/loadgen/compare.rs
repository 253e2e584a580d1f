//! `compare`: one trace under two worker configs that must differ (a pool too small to keep
//! much warm, and a large one), and the table it writes; in simulation (the library in
//! process) and live (the binary, starting a worker per config).

use super::in_process::{self, SyntheticArgs, synthetic_workload, write};
use iluvatar_testkit::loadgen::load_gen;
use iluvatar_testkit::{s, unique_dir as temp_dir};
use serde_json::Value;

const SEED: u64 = 7;

#[test]
fn compare_tabulates_configs_side_by_side() {
    println!("simulation seed {SEED}");
    let dir = temp_dir("compare");
    let a = SyntheticArgs {
        functions: 8,
        duration_s: 60.0,
        mean_rate: 3.0,
        rate_sigma: 1.0,
        mean_warm_ms: 30.0,
        warm_sigma: 1.0,
        mean_cold_extra_ms: 200.0,
        cold_sigma: 0.5,
        mem_mb: vec![128, 256, 512],
        timer_fraction: 0.0,
        seed: SEED,
        out: dir.clone(),
        force: false,
    };
    let (meta, mut arrivals) = synthetic_workload(&a).unwrap();
    write(&dir, &meta, &mut arrivals).unwrap();
    // One config in TOML, one in JSON: both as the worker reads them.
    let tiny = dir.join("tiny.toml");
    std::fs::write(&tiny, "[container_pool]\nmemory_mb = 640\n\n[invoker]\nconcurrency = 4\nmemory_wait_ms = 5000\n")
        .unwrap();
    let large = dir.join("large.json");
    std::fs::write(&large, r#"{"container_pool": {"memory_mb": 65536}, "invoker": {"concurrency": 4}}"#).unwrap();
    let (trace, metadata, out) = (dir.join("trace.csv"), dir.join("metadata.csv"), dir.join("out"));
    let (tiny_arg, large_arg) = (format!("tiny={}", s(&tiny)), format!("large={}", s(&large)));
    let seed = SEED.to_string();
    let argv = [
        "compare",
        "--input",
        s(&trace),
        "--metadata",
        s(&metadata),
        "--config",
        &tiny_arg,
        "--config",
        &large_arg,
        "--out",
        s(&out),
        "--seed",
        &seed,
    ];
    let rows = in_process::compare(&argv, SEED);

    assert_eq!(rows.iter().map(|r| r.config.as_str()).collect::<Vec<_>>(), ["tiny", "large"], "seed {SEED}");
    let n = arrivals.len() as u64;
    assert!(rows.iter().all(|r| r.invocations == n), "seed {SEED}: every config replays the whole trace: {rows:?}");
    assert_eq!(rows[1].errors, 0, "seed {SEED}: {rows:?}");
    assert!(
        rows[0].cold_starts > rows[1].cold_starts && rows[0].cold_start_pct > rows[1].cold_start_pct,
        "seed {SEED}: the tiny pool should cold-start more: {rows:?}"
    );
    assert!(rows.iter().all(|r| r.latency_p99_ms.unwrap() >= r.latency_p50_ms.unwrap()), "seed {SEED}: {rows:?}");

    // The CSV: a header and a line per config, "n/a" where a counter is missing.
    let csv = std::fs::read_to_string(out.join("compare.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("config,invocations,errors,cold_starts,cold_start_pct,latency_p50_ms,latency_p99_ms"));
    assert!(lines[0].ends_with("memory_held_mb_s,memory_idle_mb_s"), "{csv}");
    for (line, row) in lines[1..].iter().zip(&rows) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[0], row.config);
        assert_eq!(f[3].parse::<u64>().unwrap(), row.cold_starts, "{csv}");
        for (cell, value) in [(f[7], row.memory_held_mb_s), (f[8], row.memory_idle_mb_s)] {
            match value {
                None => assert_eq!(cell, "n/a", "{csv}"),
                Some(v) => assert!((cell.parse::<f64>().unwrap() - v).abs() < 0.1, "{csv}"),
            }
        }
        if let (Some(held), Some(idle)) = (row.memory_held_mb_s, row.memory_idle_mb_s) {
            assert!(held >= idle && idle >= 0.0, "seed {SEED}: memory held includes idle: {row:?}");
        }
    }

    // The JSON: the same rows, null for a missing counter; the plot; each run's results.
    let json: Value = serde_json::from_slice(&std::fs::read(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json["setup"], "simulation");
    assert_eq!(json["seed"], SEED);
    let configs = json["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 2);
    assert_eq!(configs[0]["config"], "tiny");
    assert_eq!(configs[0]["cold_starts"], rows[0].cold_starts);
    assert_eq!(configs[1]["memory_held_mb_s"].as_f64(), rows[1].memory_held_mb_s);
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains(">tiny<") && svg.contains(">large<"), "{svg}");
    for name in ["tiny", "large"] {
        let summary: Value =
            serde_json::from_slice(&std::fs::read(out.join(name).join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["target"]["setup"], "simulation");
        assert_eq!(summary["run"]["config"], name, "{summary}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Live: the binary starts a sim-backend worker per config (the one beside it), replays the
/// trace against it and reads its /metrics. Two functions that do not both fit the tiny
/// pool, called in turn: there every call is cold; in the large pool only the first two.
#[test]
fn compare_live_starts_a_worker_per_config() {
    let dir = temp_dir("compare-live");
    let (trace, metadata, out) = (dir.join("trace.csv"), dir.join("metadata.csv"), dir.join("out"));
    std::fs::write(&metadata, "func_name,cold_dur_ms,warm_dur_ms,mem_mb\nhello,60,5,128\nslow,120,30,256\n").unwrap();
    let calls: String = (0..8).map(|i| format!("{},{}\n", ["hello", "slow"][i % 2], i * 300)).collect();
    std::fs::write(&trace, format!("func_name,invoke_time_ms\n{calls}")).unwrap();
    let config = |name: &str, mb: u64| {
        let p = dir.join(format!("{name}.json"));
        let c = serde_json::json!({"log_level": "warn", "container_pool": {"memory_mb": mb},
            "invoker": {"concurrency": 2}, "isolation": {"backends": [{"type": "sim"}]}});
        std::fs::write(&p, c.to_string()).unwrap();
        format!("{name}={}", s(&p))
    };
    let (tiny, large) = (config("tiny", 256), config("large", 4096));
    let argv = [
        "compare",
        "--setup",
        "live",
        "--input",
        s(&trace),
        "--metadata",
        s(&metadata),
        "--config",
        &tiny,
        "--config",
        &large,
        "--out",
        s(&out),
    ];
    let o = load_gen(&argv);
    assert!(o.status.success(), "compare --setup live failed");
    let json: Value = serde_json::from_slice(&std::fs::read(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json["setup"], "live");
    let rows = json["configs"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["invocations"] == 8 && r["errors"] == 0), "{json}");
    assert_eq!(rows[0]["cold_starts"], 8, "{json}");
    assert_eq!(rows[1]["cold_starts"], 2, "{json}");
    let csv = std::fs::read_to_string(out.join("compare.csv")).unwrap();
    assert!(csv.lines().nth(1).unwrap().starts_with("tiny,8,0,8,100.00,"), "{csv}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("memory_held_mb_s") && stdout.contains("large"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
