//! Results that read right, through the real `iluvatar_load_gen` binary: the summary's
//! separate columns (overhead, queue wait, cold start), `--warmup-s`, the plots, the refusal
//! of simulations that would depend on this machine's cores, results folders that are new
//! or forced, and the commit the binary was built from.

use iluvatar_testkit::loadgen::*;
use iluvatar_testkit::{bin, s, unique_dir as temp_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEED: &str = "5";

fn summary(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A worker config for simulations: one invocation at a time.
fn one_at_a_time(dir: &Path) -> PathBuf {
    let p = dir.join("worker.json");
    std::fs::write(&p, r#"{"invoker": {"concurrency": 1}, "limits": {"max_cpus": 1}}"#).unwrap();
    p
}

/// `trace --setup simulation` of `dir`'s trace.csv and metadata.csv into `out`.
fn simulate(dir: &Path, config: &Path, out: &Path, extra: &[&str]) -> Output {
    let (trace, meta) = (dir.join("trace.csv"), dir.join("metadata.csv"));
    let mut args = vec!["trace", "--setup", "simulation", "--worker-config", s(config), "--seed", SEED];
    args.extend(["--input", s(&trace), "--metadata", s(&meta), "--out", s(out)]);
    args.extend(extra);
    load_gen(&args)
}

#[test]
fn the_summary_separates_overhead_queue_wait_and_cold_start() {
    println!("simulation seed {SEED}");
    let d = temp_dir("columns");
    std::fs::write(d.join("metadata.csv"), "func_name,cold_dur_ms,warm_dur_ms,mem_mb\nf,300,20,128\n").unwrap();
    // Three at once on one slot: a cold start, then two calls that queue behind it; later,
    // two warm calls that wait for nothing.
    std::fs::write(d.join("trace.csv"), "func_name,invoke_time_ms\nf,0\nf,0\nf,0\nf,2000\nf,2100\n").unwrap();
    let config = one_at_a_time(&d);
    let out = d.join("out");
    let o = simulate(&d, &config, &out, &[]);
    assert!(o.status.success());
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("ovh p99ms") && table.contains("queue p99") && table.contains("cstart p50"), "{table}");
    let sum = summary(&out);
    // The old overhead (latency - in-function) was 320 ms at p99 here: queue wait and cold
    // start. Now those are columns of their own and the overhead is what the platform adds.
    assert!(sum["overhead_ms"]["p99"].as_f64().unwrap() <= 1.0, "seed {SEED}: {}", sum["overhead_ms"]);
    assert!(sum["queue_ms"]["p99"].as_f64().unwrap() >= 300.0, "seed {SEED}: {}", sum["queue_ms"]);
    assert_eq!(sum["queue_ms"]["count"], 5);
    assert_eq!(sum["cold_start_ms"]["count"], 1, "of cold calls only");
    assert_eq!(sum["cold_start_ms"]["p50"], 280.0, "seed {SEED}: 300 ms cold - 20 ms warm");
    assert_eq!(sum["functions"]["f"]["queue_ms"]["max"], sum["queue_ms"]["max"]);
    assert_eq!((sum["warmup_s"].as_f64(), sum["warmup_invocations"].as_u64()), (Some(0.0), Some(0)));
    for r in read_csv(&out.join("invocations.csv")) {
        let x = |k: &str| r[k].parse::<f64>().unwrap_or_else(|_| panic!("{k} in {r:?}"));
        let parts = x("func_duration_ms") + x("queue_ms") + x("cold_start_ms") + x("overhead_ms");
        assert!((x("client_latency_ms") - parts).abs() < 0.01, "latency is the sum of its parts: {r:?}");
    }

    // --warmup-s: the first second (the cold start and its queue) is left out of the
    // summary, the table and the CDF, kept in invocations.csv and shaded in the time plots.
    let warm = d.join("warm");
    let o = simulate(&d, &config, &warm, &["--warmup-s", "1"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("(the first 1 s, 3 invocations, are left out: --warmup-s)"));
    let sum = summary(&warm);
    assert_eq!((sum["invocations"].as_u64(), sum["warmup_invocations"].as_u64()), (Some(2), Some(3)), "{sum}");
    assert_eq!((sum["cold"].as_u64(), sum["queue_ms"]["max"].as_f64()), (Some(0), Some(0.0)), "{sum}");
    assert_eq!(sum["warmup_s"], 1.0);
    assert_eq!(read_csv(&warm.join("invocations.csv")).len(), 5);
    let plot = std::fs::read_to_string(warm.join("overhead_over_time.svg")).unwrap();
    assert!(plot.contains("warm-up (not in the summary)"), "the warm-up is shaded");
    let o = simulate(&d, &config, &d.join("bad"), &["--warmup-s=-1"]);
    assert!(!o.status.success() && stderr(&o).contains("--warmup-s must be a number of seconds >= 0"));
    let _ = std::fs::remove_dir_all(&d);
}

/// The coordinates of every `<polyline>` of `color` in an SVG.
fn polylines<'a>(svg: &'a str, color: &str) -> Vec<&'a str> {
    svg.lines().filter(|l| l.starts_with("<polyline") && l.contains(&format!("stroke=\"{color}\""))).collect()
}

#[test]
fn plots_show_zeros_gaps_p99_and_which_functions() {
    println!("simulation seed {SEED}");
    let d = temp_dir("plots");
    // Ten functions; z takes no time at all (latency exactly 0 in virtual time), so the
    // CDF's log axis needs its zero tick. Nothing is sent between 3 s and 8 s.
    let mut meta = String::from("func_name,cold_dur_ms,warm_dur_ms,mem_mb\nz,0,0,16\n");
    let mut trace = String::from("func_name,invoke_time_ms\n");
    for i in 0..9 {
        meta.push_str(&format!("f{i},{},{},16\n", 50 + i * 10, 1 + i));
    }
    for t in (0..3000).step_by(100).chain((8000..10000).step_by(100)) {
        trace.push_str(&format!("z,{t}\n"));
        for i in 0..9 {
            if (t / 100) % (i + 1) == 0 {
                trace.push_str(&format!("f{i},{t}\n"));
            }
        }
    }
    std::fs::write(d.join("metadata.csv"), meta).unwrap();
    std::fs::write(d.join("trace.csv"), trace).unwrap();
    let config = d.join("worker.json");
    std::fs::write(&config, r#"{"invoker": {"concurrency": 8}}"#).unwrap();
    let out = d.join("out");
    assert!(simulate(&d, &config, &out, &[]).status.success());

    let cdf = std::fs::read_to_string(out.join("latency_cdf.svg")).unwrap();
    assert!(cdf.contains(">top 8 of 10 functions</text>"), "the legend says what it leaves out");
    let x_ticks: Vec<&str> = cdf
        .lines()
        .filter(|l| l.starts_with("<text") && l.contains("text-anchor=\"middle\"") && l.contains("y=\"446.0\""))
        .map(|l| l.rsplit_once("\">").unwrap().1.trim_end_matches("</text>"))
        .collect();
    // Zeros have the first tick; no decade below the data for them (the old axis ran
    // from 1e-9).
    assert_eq!(x_ticks, ["0", "1", "10", "100", "1000"]);

    let ovh = std::fs::read_to_string(out.join("overhead_over_time.svg")).unwrap();
    // Series: p50, p99 (bold), then the maximum as rings over them (not hiding p99).
    let (p50, p99) = (polylines(&ovh, "#1f77b4"), polylines(&ovh, "#d62728"));
    assert!(p50.len() == 2 && p99.len() == 2, "the 5 s without calls is a gap, not a line: {p50:?}");
    assert!(p99.iter().all(|l| l.contains("stroke-width=\"2.5\"")), "{p99:?}");
    let rings: Vec<&str> = ovh.lines().filter(|l| l.starts_with("<circle") && l.contains("#2ca02c")).collect();
    assert!(rings.len() > 40 && rings.iter().all(|l| l.contains("fill=\"none\"")), "{rings:?}");
    assert!(ovh.contains("overhead (ms, log scale)"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn simulations_refuse_what_would_depend_on_this_machine() {
    let d = temp_dir("cores");
    std::fs::write(d.join("metadata.csv"), "func_name,cold_dur_ms,warm_dur_ms,mem_mb\nf,30,2,16\n").unwrap();
    std::fs::write(d.join("trace.csv"), "func_name,invoke_time_ms\nf,0\n").unwrap();
    let (trace, meta) = (d.join("trace.csv"), d.join("metadata.csv"));
    let bare = ["trace", "--setup", "simulation", "--input", s(&trace), "--metadata", s(&meta)];
    let o = load_gen(&[&bare[..], &["--out", s(&d.join("a"))]].concat());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invoker.concurrency is 0 by default (no --worker-config)"), "{}", stderr(&o));
    let zero = d.join("zero.toml");
    std::fs::write(&zero, "[invoker]\nconcurrency = 0\n").unwrap();
    let o = load_gen(&[&bare[..], &["--worker-config", s(&zero), "--out", s(&d.join("b"))]].concat());
    assert!(stderr(&o).contains(&format!("invoker.concurrency is 0 in {}", zero.display())), "{}", stderr(&o));
    // A cluster's balancer weighs loads by cpus.
    let cpus = d.join("cpus.json");
    std::fs::write(&cpus, r#"{"invoker": {"concurrency": 2}}"#).unwrap();
    let o = load_gen(&[&bare[..], &["--worker-config", s(&cpus), "--workers", "2", "--out", s(&d.join("c"))]].concat());
    assert!(stderr(&o).contains("limits.max_cpus is 0 in the worker config"), "{}", stderr(&o));
    // A value of the wrong type names its key and its file.
    let typo = d.join("typo.toml");
    std::fs::write(&typo, "[invoker]\nconcurrency = \"four\"\n").unwrap();
    let o = load_gen(&[&bare[..], &["--worker-config", s(&typo), "--out", s(&d.join("d"))]].concat());
    let want = format!("config file {}: invoker.concurrency: invalid type: string \"four\"", typo.display());
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    // A grid key is named as the grid's, not as an environment variable.
    let o = load_gen(&[
        "sweep",
        "--input",
        s(&trace),
        "--metadata",
        s(&meta),
        "--worker-config",
        s(&cpus),
        "--grid",
        "invoker.concurency=2",
        "--out",
        s(&d.join("e")),
    ]);
    let err = stderr(&o);
    assert!(err.contains("invoker.concurency=2: invoker.concurency: unknown field `concurency`"), "{err}");
    assert!(!err.contains("environment"), "{err}");
    for out in ["a", "b", "c", "d", "e"] {
        assert!(!d.join(out).join("invocations.csv").exists(), "{out}: nothing runs");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn results_go_to_a_new_folder_or_replace_with_force() {
    let d = temp_dir("force");
    std::fs::write(d.join("metadata.csv"), "func_name,cold_dur_ms,warm_dur_ms,mem_mb\nf,30,2,16\n").unwrap();
    std::fs::write(d.join("trace.csv"), "func_name,invoke_time_ms\nf,0\nf,500\n").unwrap();
    let config = one_at_a_time(&d);
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let o = simulate(&d, &config, &out, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not empty (it holds notes.txt)") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("invocations.csv").exists());
    assert!(simulate(&d, &config, &out, &["--force"]).status.success());
    assert_eq!(read_csv(&out.join("invocations.csv")).len(), 2);
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine", "--force keeps what is not ours");

    // A sweep into an earlier sweep's folder: refused, or, forced, no stale point is left.
    let (trace, meta, swept) = (d.join("trace.csv"), d.join("metadata.csv"), d.join("sweep"));
    let sweep = |grid: &str, force: bool| {
        let mut args = vec!["sweep", "--input", s(&trace), "--metadata", s(&meta)];
        args.extend(["--worker-config", s(&config), "--grid", grid, "--jobs", "1", "--out", s(&swept)]);
        if force {
            args.push("--force");
        }
        load_gen(&args)
    };
    let points = || {
        let mut p: Vec<String> = std::fs::read_dir(d.join("sweep/points"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        p.sort();
        p
    };
    assert!(sweep("container_pool.memory_mb=256,512,1024", false).status.success());
    assert_eq!(points(), ["000", "001", "002"]);
    let o = sweep("container_pool.memory_mb=256,512", false);
    assert!(!o.status.success() && stderr(&o).contains("is not empty"), "{}", stderr(&o));
    assert!(sweep("container_pool.memory_mb=256,512", true).status.success());
    assert_eq!(points(), ["000", "001"], "the third point of the earlier sweep is gone");
    let table = std::fs::read_to_string(d.join("sweep/sweep.csv")).unwrap();
    assert_eq!(table.lines().count(), 3, "{table}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn results_name_the_commit_the_binary_was_built_from() {
    let d = temp_dir("commit");
    std::fs::write(d.join("metadata.csv"), "func_name,cold_dur_ms,warm_dur_ms,mem_mb\nf,30,2,16\n").unwrap();
    std::fs::write(d.join("trace.csv"), "func_name,invoke_time_ms\nf,0\n").unwrap();
    let config = one_at_a_time(&d);
    let out = d.join("out");
    // Run from outside any repository: the commit comes from the binary, not from `git`
    // run where the results are written.
    let o = Command::new(bin("iluvatar_load_gen"))
        .current_dir("/")
        .args(["trace", "--setup", "simulation", "--worker-config", s(&config), "--quiet"])
        .args(["--input", s(&d.join("trace.csv")), "--metadata", s(&d.join("metadata.csv")), "--out", s(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = Command::new("git").arg("-C").arg(repo).args(["rev-parse", "HEAD"]).output().ok();
    let want = match head.filter(|h| h.status.success()) {
        Some(h) => String::from_utf8_lossy(&h.stdout).trim().to_string(),
        None => "unknown".into(),
    };
    assert_eq!(summary(&out)["git_commit"], want.as_str(), "built from {want} (rebuild if HEAD moved since)");
    let _ = std::fs::remove_dir_all(&d);
}
