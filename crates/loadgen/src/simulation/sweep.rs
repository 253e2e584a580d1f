//! `sweep`: one simulation per point of a parameter grid, run in parallel (one thread per
//! core, each with its own virtual-time runtime), and one table with a row per point.

use crate::simulation::run::SimRun;
use crate::workload::trace::used_only;
use crate::workload::trace::{read_metadata, read_trace};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(clap::Args)]
pub struct Args {
    /// The trace: func_name,invoke_time_ms (sorted by time, 0-based).
    #[arg(long, help_heading = "Workload")]
    pub input: PathBuf,
    /// The functions, as for `trace`.
    #[arg(long, help_heading = "Workload")]
    pub metadata: PathBuf,
    /// The base worker config (JSON or TOML); each point overrides some of its fields. It
    /// (or the grid) must set invoker.concurrency.
    #[arg(long, help_heading = "Grid")]
    pub worker_config: Option<PathBuf>,
    /// The grid: `key=v1,v2;key2=v3,...` with keys as config paths
    /// (`container_pool.memory_mb=1024,2048;container_pool.keep_alive.ttl_ms=60000,600000;invoker.queue.type=fcfs`).
    /// Every combination is one point.
    #[arg(long, help_heading = "Grid")]
    pub grid: String,
    /// The simulations' seed: the same inputs and seed give the same results.
    #[arg(long, default_value_t = 1, help_heading = "Workload")]
    pub seed: u64,
    /// Containers to prewarm per function before the load starts (the metadata's
    /// `prewarms` first).
    #[arg(long, default_value_t = 0, help_heading = "Workload")]
    pub prewarm: u32,
    /// Simulations run at once; 0 means the number of cores.
    #[arg(long, default_value_t = 0, help_heading = "Grid")]
    pub jobs: usize,
    /// Seconds from the start left out of each point's summary (as `trace --warmup-s`).
    #[arg(long, default_value_t = 0.0, help_heading = "Results")]
    pub warmup_s: f64,
    /// The results folder (new or empty; see --force): sweep.csv and, per point,
    /// points/NNN/ (the results of a trace run).
    #[arg(long, default_value = "results/sweep", help_heading = "Results")]
    pub out: PathBuf,
    #[arg(long, help = crate::results::out_dir::FORCE_HELP, help_heading = "Results")]
    pub force: bool,
}

/// The grid's points: for each, the (key, value) pairs it sets.
pub fn points(grid: &str) -> anyhow::Result<Vec<Vec<(String, String)>>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for axis in grid.split(';').map(str::trim).filter(|a| !a.is_empty()) {
        let (key, values) = axis.split_once('=').with_context(|| format!("--grid {axis:?}: expected KEY=V1,V2,..."))?;
        let values: Vec<&str> = values.split(',').map(str::trim).filter(|v| !v.is_empty()).collect();
        if key.trim().is_empty() || values.is_empty() {
            bail!("--grid {axis:?}: expected KEY=V1,V2,...");
        }
        out = out
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut p = p.clone();
                    p.push((key.trim().to_string(), v.to_string()));
                    p
                })
            })
            .collect();
    }
    if out[0].is_empty() {
        bail!("--grid names no parameter");
    }
    Ok(out)
}

const COLUMNS: [&str; 14] = [
    "invocations",
    "failed",
    "cold",
    "cold_start_rate",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p99_ms",
    "overhead_p50_ms",
    "overhead_p99_ms",
    "queue_p99_ms",
    "cold_start_p50_ms",
    "from_schedule_p99_ms",
    "completion_rate_per_s",
    "errors_by_kind",
];

fn row_values(s: &Value) -> Vec<String> {
    let num = |v: &Value| v.as_f64().map(|x| format!("{x:.3}")).unwrap_or_default();
    let int = |v: &Value| v.as_u64().map(|x| x.to_string()).unwrap_or_default();
    let errors = s["errors_by_kind"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    vec![
        int(&s["invocations"]),
        int(&s["failed"]),
        int(&s["cold"]),
        num(&s["cold_start_rate"]),
        num(&s["client_latency_ms"]["mean"]),
        num(&s["client_latency_ms"]["p50"]),
        num(&s["client_latency_ms"]["p99"]),
        num(&s["overhead_ms"]["p50"]),
        num(&s["overhead_ms"]["p99"]),
        num(&s["queue_ms"]["p99"]),
        num(&s["cold_start_ms"]["p50"]),
        num(&s["latency_from_schedule_ms"]["p99"]),
        num(&s["completion_rate_per_s"]),
        errors,
    ]
}

/// Runs every point; a synchronous command (each thread has its own runtime).
pub fn run(a: Args) -> anyhow::Result<()> {
    let points = points(&a.grid)?;
    let meta = read_metadata(&a.metadata)?;
    let mut arrivals = read_trace(&a.input, &meta)?;
    let meta = used_only(meta, &mut arrivals);
    let arrivals = Arc::new(arrivals);
    // Every point's config is checked before any runs: a typo fails at once.
    let configs = points
        .iter()
        .map(|p| {
            crate::simulation::worker::worker_config(a.worker_config.as_deref(), p)
                .with_context(|| format!("grid point {p:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !(a.warmup_s >= 0.0 && a.warmup_s.is_finite()) {
        bail!("--warmup-s must be a number of seconds >= 0");
    }
    let mut target = crate::simulation::sim_bench::simulation_target()?;
    target.functions.prewarm = a.prewarm;
    let plans = target.plans(&meta)?;
    // No point of an earlier sweep stays beside this one's.
    crate::results::out_dir::prepare(&a.out, a.force, &["sweep.csv", "points"])?;
    let jobs = match a.jobs {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    }
    .min(points.len());
    println!("sweep: {} points × {} invocations, {jobs} at once", points.len(), arrivals.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<Value>>>> = Mutex::new((0..points.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= points.len() {
                        return;
                    }
                    let out = a.out.join("points").join(format!("{i:03}"));
                    let run = SimRun {
                        config: configs[i].clone(),
                        seed: a.seed,
                        version: "1".into(),
                        warmup_s: a.warmup_s,
                        cluster: None,
                    };
                    let info = json!({"kind": "sweep", "input": a.input, "metadata": a.metadata, "point": i,
                        "set": points[i].iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()});
                    let r = crate::simulation::worker::runtime()
                        .context("building a simulation runtime")
                        .and_then(|rt| rt.block_on(run.execute(&plans, &meta, arrivals.clone(), &out, info)));
                    let line = match &r {
                        Ok(s) => format!("point {i:03} done: {} invocations, {} cold", s["invocations"], s["cold"]),
                        Err(e) => format!("point {i:03} failed (seed {}): {e:#}", a.seed),
                    };
                    println!("{line}");
                    results.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    let keys: Vec<&str> = points[0].iter().map(|(k, _)| k.as_str()).collect();
    let mut table = String::from("point,");
    table.push_str(&keys.join(","));
    table.push(',');
    table.push_str(&COLUMNS.join(","));
    table.push('\n');
    let mut failed = 0;
    for (i, r) in results.into_inner().unwrap().into_iter().enumerate() {
        let mut fields = vec![format!("{i:03}")];
        fields.extend(points[i].iter().map(|(_, v)| v.clone()));
        match r.expect("every point ran") {
            Ok(s) => fields.extend(row_values(&s)),
            Err(e) => {
                failed += 1;
                fields.extend((0..COLUMNS.len() - 1).map(|_| String::new()));
                fields.push(format!("failed: {e:#}"));
            }
        }
        table.push_str(&crate::workload::csv::record(&fields));
    }
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("sweep.csv"), &table)?;
    print!("{table}");
    println!("wrote {}/sweep.csv", a.out.display());
    if failed > 0 {
        bail!("{failed} of {} points failed (seed {})", points.len(), a.seed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn grid_is_the_cartesian_product() {
        let p = super::points("a=1,2; b=x,y,z ;c=k").unwrap();
        assert_eq!(p.len(), 6);
        assert_eq!(p[0], vec![("a".into(), "1".into()), ("b".into(), "x".into()), ("c".into(), "k".into())]);
        assert_eq!(p[5][0].1, "2");
        assert!(super::points("a").is_err());
        assert!(super::points("").is_err());
    }
}
