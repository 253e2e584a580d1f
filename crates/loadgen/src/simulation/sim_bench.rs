//! `sim-bench`: how fast the simulation runs. Generates a synthetic workload (by default
//! about 1.3 million invocations of 50 functions over 1,000 virtual seconds), replays it in
//! simulation exactly as `trace --setup simulation` does (trace files read, rows streamed
//! to invocations.csv, summary and plots written), and prints simulated invocations per
//! wall-clock second and the peak memory (VmHWM); writes sim_bench.json.

#![allow(clippy::disallowed_methods)] // the wall-clock time of the simulation is the figure

use crate::commands::replay::{TraceArgs, run_trace};
use crate::sending::target::{Setup, TargetArgs};
use crate::workload::generate::{SyntheticArgs, synthetic_workload, write};
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// How many functions.
    #[arg(long, default_value_t = 50)]
    pub functions: usize,
    /// Virtual seconds of load.
    #[arg(long, default_value_t = 1000.0)]
    pub duration_s: f64,
    /// Mean invocations per second of one function (log-normal over functions, sigma 1).
    #[arg(long, default_value_t = 20.0)]
    pub mean_rate: f64,
    /// Mean warm duration (ms) over the functions.
    #[arg(long, default_value_t = 2.0)]
    pub mean_warm_ms: f64,
    /// Mean start-up cost (ms) a cold start adds.
    #[arg(long, default_value_t = 50.0)]
    pub mean_cold_extra_ms: f64,
    /// The simulated worker's config; default: 64 GB pool, 128 concurrent invocations.
    #[arg(long)]
    pub worker_config: Option<PathBuf>,
    /// The seed of the workload and the simulation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Holds workload/ (trace and metadata), invocations.csv, summary.json, the plots and
    /// sim_bench.json (a new or empty folder; see --force).
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

/// Runs in the simulation runtime (see main.rs): it is the same path as `trace`.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let mut ours = vec!["workload", "worker.json", "sim_bench.json"];
    ours.extend(crate::results::out_dir::RUN_FILES);
    crate::results::out_dir::prepare(&a.out, a.force, &ours)?;
    let dir = a.out.join("workload");
    let synth = SyntheticArgs {
        functions: a.functions,
        duration_s: a.duration_s,
        mean_rate: a.mean_rate,
        rate_sigma: 1.0,
        mean_warm_ms: a.mean_warm_ms,
        warm_sigma: 0.5,
        mean_cold_extra_ms: a.mean_cold_extra_ms,
        cold_sigma: 0.5,
        mem_mb: vec![128, 256, 512],
        timer_fraction: 0.0,
        seed: a.seed,
        out: dir.clone(),
        force: false,
    };
    let (meta, mut arrivals) = synthetic_workload(&synth)?;
    write(&dir, &meta, &mut arrivals)?;
    let n = arrivals.len();
    drop(arrivals);
    let config = match &a.worker_config {
        Some(p) => p.clone(),
        None => {
            let p = a.out.join("worker.json");
            let c = json!({"container_pool": {"memory_mb": 65536}, "invoker": {"concurrency": 128}});
            std::fs::write(&p, c.to_string())?;
            p
        }
    };
    let mut target = simulation_target()?;
    target.worker_config = Some(config.clone());
    let trace = TraceArgs {
        target,
        input: dir.join("trace.csv"),
        metadata: dir.join("metadata.csv"),
        out: a.out.clone(),
        // The folder was prepared above and holds the workload.
        force: true,
        seed: a.seed,
    };
    let before_mb = peak_rss_mb();
    let t0 = Instant::now();
    run_trace(trace).await?;
    let wall = t0.elapsed().as_secs_f64();
    let peak = peak_rss_mb();
    let rate = n as f64 / wall;
    println!(
        "simulated {n} invocations of {} functions ({:.0} virtual s) in {wall:.2} s wall: {rate:.0} invocations/s; peak memory (VmHWM) {peak:.0} MB (before the run {before_mb:.0} MB)",
        a.functions, a.duration_s
    );
    let mut report = crate::results::report::context();
    report["invocations"] = n.into();
    report["functions"] = a.functions.into();
    report["virtual_s"] = a.duration_s.into();
    report["wall_s"] = wall.into();
    report["invocations_per_s"] = rate.into();
    report["peak_rss_mb"] = peak.into();
    report["worker_config"] = config.display().to_string().into();
    std::fs::write(a.out.join("sim_bench.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(())
}
