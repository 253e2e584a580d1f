//! `sim-bench`: how fast the simulation runs. Generates a synthetic workload (by default
//! about 1.3 million invocations of 50 functions over 1,000 virtual seconds), replays it in
//! simulation exactly as `trace --setup simulation` does (trace files read, rows streamed
//! to invocations.csv, summary and plots written) on one worker, or on clusters of
//! `--workers` simulated workers behind the controller's balancer, `--runs` times each;
//! prints simulated invocations per wall-clock second and the peak memory (VmHWM) of each
//! run and whether the runs' results were byte-identical; writes sim_bench.json.

#![allow(clippy::disallowed_methods)] // the wall-clock time of the simulation is the figure

use crate::commands::replay::{TraceArgs, run_trace};
use crate::sending::target::{Setup, TargetArgs};
use crate::workload::generate::{SyntheticArgs, synthetic_workload, write};
use anyhow::Context;
use clap::Parser;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// How many functions.
    #[arg(long, default_value_t = 50)]
    pub functions: usize,
    /// Virtual seconds of load.
    #[arg(long, default_value_t = 1000.0)]
    pub duration_s: f64,
    /// Mean invocations per second of one function (log-normal over functions).
    #[arg(long, default_value_t = 20.0)]
    pub mean_rate: f64,
    /// Sigma of the functions' rates (2 gives the Azure dataset's heavy skew: a few hot
    /// functions, many rare ones).
    #[arg(long, default_value_t = 1.0)]
    pub rate_sigma: f64,
    /// The fraction of functions on timers rather than Poisson arrivals.
    #[arg(long, default_value_t = 0.0)]
    pub timer_fraction: f64,
    /// Mean warm duration (ms) over the functions.
    #[arg(long, default_value_t = 2.0)]
    pub mean_warm_ms: f64,
    /// Sigma of the warm durations (log-normal over functions).
    #[arg(long, default_value_t = 0.5)]
    pub warm_sigma: f64,
    /// Mean start-up cost (ms) a cold start adds.
    #[arg(long, default_value_t = 50.0)]
    pub mean_cold_extra_ms: f64,
    /// The simulated worker's config; default: 64 GB pool and 128 concurrent invocations for
    /// one worker, 32 GB, 32 and 32 cpus for each worker of a cluster.
    #[arg(long)]
    pub worker_config: Option<PathBuf>,
    /// Simulated clusters to run, by number of workers (e.g. 10,50,200), each behind
    /// --balancer; none: one worker without a controller.
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<usize>,
    /// The clusters' balancer (a controller config's `balancer.type`).
    #[arg(long, default_value = "ch_bl")]
    pub balancer: String,
    /// The clusters' controller overhead (as for `trace --controller-overhead`).
    #[arg(long)]
    pub controller_overhead: Option<PathBuf>,
    /// Runs of each setup (the same trace and seed: their results must be byte-identical).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// The seed of the workload and the simulation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Holds workload/ (trace and metadata), run/ (the last run's results: invocations.csv,
    /// summary.json, the plots) and sim_bench.json (a new or empty folder; see --force).
    #[arg(long, default_value = "results/sim_bench")]
    pub out: PathBuf,
    #[arg(long, help = crate::results::out_dir::FORCE_HELP)]
    pub force: bool,
}

/// Target options of a quiet simulation, every other option at its default.
pub fn simulation_target() -> anyhow::Result<TargetArgs> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        target: TargetArgs,
    }
    let mut t = Wrap::try_parse_from(["target", "--quiet"])?.target;
    t.setup = Setup::Simulation;
    Ok(t)
}

/// Peak resident memory of this process (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// CPU time (user and system, all threads) this process has used so far, in seconds: on a
/// shared machine, wall time depends on the other load and this does not.
pub fn cpu_s() -> f64 {
    // SAFETY: rusage is plain data (all zeros is a valid value), and getrusage only writes
    // the struct it is given.
    let (u, rc) = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        let rc = libc::getrusage(libc::RUSAGE_SELF, &mut u);
        (u, rc)
    };
    if rc != 0 {
        return 0.0;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// The machine's load averages (1, 5, 15 minutes) now: what else was running.
fn loadavg() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).filter_map(|v| v.parse::<f64>().ok()).collect::<Vec<_>>().into()
}

/// Starts a new peak: VmHWM becomes the memory resident now (Linux: clear_refs 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A file's FNV-1a 64-bit hash, as 16 hex digits: tells byte-identical results apart.
fn fnv64(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(format!("{h:016x}"));
        }
        for b in &buf[..n] {
            h = (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Writes the default worker config (and the controller config of a cluster) into `out`.
fn configs(a: &Args, cluster: bool) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let worker = match &a.worker_config {
        Some(p) => p.clone(),
        None => {
            let (p, c) = if cluster {
                let c = json!({"container_pool": {"memory_mb": 32768}, "invoker": {"concurrency": 32},
                    "limits": {"max_cpus": 32}});
                (a.out.join("cluster_worker.json"), c)
            } else {
                (
                    a.out.join("worker.json"),
                    json!({"container_pool": {"memory_mb": 65536}, "invoker": {"concurrency": 128}}),
                )
            };
            std::fs::write(&p, c.to_string())?;
            p
        }
    };
    let controller = cluster
        .then(|| -> anyhow::Result<PathBuf> {
            let p = a.out.join("controller.json");
            std::fs::write(&p, json!({"balancer": {"type": a.balancer}}).to_string())?;
            Ok(p)
        })
        .transpose()?;
    Ok((worker, controller))
}

/// One timed run of the trace in `dir` on `workers` simulated workers (none: one worker).
async fn run_once(a: &Args, dir: &Path, workers: Option<usize>, n: usize) -> anyhow::Result<Value> {
    let (worker_config, controller_config) = configs(a, workers.is_some())?;
    let mut target = simulation_target()?;
    target.worker_config = Some(worker_config.clone());
    target.workers = workers;
    target.controller_config = controller_config;
    target.controller_overhead = a.controller_overhead.clone().filter(|_| workers.is_some());
    let out = a.out.join("run");
    let trace = TraceArgs {
        target,
        input: dir.join("trace.csv"),
        metadata: dir.join("metadata.csv"),
        out: out.clone(),
        // Every run writes into the same folder, which this command owns.
        force: true,
        seed: a.seed,
    };
    reset_peak_rss();
    let before_mb = peak_rss_mb();
    let load_before = loadavg();
    let (t0, cpu0) = (Instant::now(), cpu_s());
    run_trace(trace).await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_s() - cpu0;
    let peak = peak_rss_mb();
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json"))?)?;
    let rate = n as f64 / wall;
    let on = workers.map(|w| format!("{w} workers behind {}", a.balancer)).unwrap_or_else(|| "one worker".into());
    println!(
        "{on}: {n} invocations in {wall:.2} s wall ({cpu:.2} s CPU, all threads): {rate:.0} invocations/s; peak memory (VmHWM) {peak:.0} MB (before the run {before_mb:.0} MB)"
    );
    Ok(json!({
        "wall_s": wall,
        "cpu_s": cpu,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "invocations_per_s": rate,
        "peak_rss_mb": peak,
        "rss_before_mb": before_mb,
        "invocations_csv_fnv64": fnv64(&out.join("invocations.csv"))?,
        "summary_json_fnv64": fnv64(&out.join("summary.json"))?,
        "cold": summary["cold"],
        "failed": summary["failed"],
        "controller_overhead_ms": summary["controller_overhead_ms"],
        "worker_config": worker_config.display().to_string(),
    }))
}

/// The runs of one setup, and how they compare.
fn step(workers: Option<usize>, runs: Vec<Value>) -> Value {
    let walls: Vec<f64> = runs.iter().filter_map(|r| r["wall_s"].as_f64()).collect();
    let cpus: Vec<f64> = runs.iter().filter_map(|r| r["cpu_s"].as_f64()).collect();
    let same = |k: &str| runs.windows(2).all(|w| w[0][k] == w[1][k]);
    let identical = same("invocations_csv_fnv64") && same("summary_json_fnv64");
    json!({
        "workers": workers,
        "runs": runs,
        "wall_s_min": walls.iter().copied().fold(f64::INFINITY, f64::min),
        "wall_s_max": walls.iter().copied().fold(0.0, f64::max),
        "cpu_s_min": cpus.iter().copied().fold(f64::INFINITY, f64::min),
        "cpu_s_max": cpus.iter().copied().fold(0.0, f64::max),
        "byte_identical_runs": identical,
    })
}

/// Runs in the simulation runtime (see main.rs): it is the same path as `trace`.
pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.runs == 0 || a.workers.contains(&0) {
        anyhow::bail!("--runs and every --workers count must be at least 1");
    }
    let ours = ["workload", "worker.json", "cluster_worker.json", "controller.json", "run", "sim_bench.json"];
    crate::results::out_dir::prepare(&a.out, a.force, &ours)?;
    let dir = a.out.join("workload");
    let synth = SyntheticArgs {
        functions: a.functions,
        duration_s: a.duration_s,
        mean_rate: a.mean_rate,
        rate_sigma: a.rate_sigma,
        mean_warm_ms: a.mean_warm_ms,
        warm_sigma: a.warm_sigma,
        mean_cold_extra_ms: a.mean_cold_extra_ms,
        cold_sigma: 0.5,
        mem_mb: vec![128, 256, 512],
        timer_fraction: a.timer_fraction,
        seed: a.seed,
        out: dir.clone(),
        force: false,
    };
    let t0 = Instant::now();
    let (meta, mut arrivals) = synthetic_workload(&synth)?;
    write(&dir, &meta, &mut arrivals)?;
    let generate_s = t0.elapsed().as_secs_f64();
    let n = arrivals.len();
    drop(arrivals);
    let setups: Vec<Option<usize>> =
        if a.workers.is_empty() { vec![None] } else { a.workers.iter().map(|&w| Some(w)).collect() };
    let mut steps = Vec::new();
    for workers in setups {
        let mut runs = Vec::new();
        for _ in 0..a.runs {
            runs.push(run_once(&a, &dir, workers, n).await?);
        }
        let s = step(workers, runs);
        if a.runs > 1 {
            let same = if s["byte_identical_runs"] == true { "byte-identical" } else { "DIFFERENT" };
            let (lo, hi) = (s["wall_s_min"].as_f64().unwrap_or(0.0), s["wall_s_max"].as_f64().unwrap_or(0.0));
            let (clo, chi) = (s["cpu_s_min"].as_f64().unwrap_or(0.0), s["cpu_s_max"].as_f64().unwrap_or(0.0));
            println!("  {} runs: {lo:.2}-{hi:.2} s wall, {clo:.2}-{chi:.2} s CPU; results {same}", a.runs);
        }
        steps.push(s);
    }
    let mut report = crate::results::report::context();
    report["benchmark"] = "simulation".into();
    report["invocations"] = n.into();
    report["functions"] = a.functions.into();
    report["virtual_s"] = a.duration_s.into();
    report["workload"] = json!({"mean_rate": a.mean_rate, "rate_sigma": a.rate_sigma,
        "timer_fraction": a.timer_fraction, "mean_warm_ms": a.mean_warm_ms, "warm_sigma": a.warm_sigma,
        "mean_cold_extra_ms": a.mean_cold_extra_ms, "seed": a.seed, "generate_s": generate_s});
    report["balancer"] = a.balancer.clone().into();
    report["controller_overhead"] = json!(a.controller_overhead);
    report["steps"] = steps.into();
    // The figures of a single setup's first run at the top, as before.
    let first = report["steps"][0]["runs"][0].clone();
    for k in ["wall_s", "cpu_s", "invocations_per_s", "peak_rss_mb"] {
        report[k] = first[k].clone();
    }
    std::fs::write(a.out.join("sim_bench.json"), serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", a.out.join("sim_bench.json").display());
    Ok(())
}
