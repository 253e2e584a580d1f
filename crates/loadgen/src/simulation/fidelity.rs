//! `fidelity`: how closely a simulation matches a live run of the same trace.
//!
//! - `calibration-trace` resamples a trace: Poisson arrivals at each function's rate in it,
//!   with another seed, so that the functions can be measured live under the same kind of
//!   load (the same contention, the same idle gaps) without measuring the trace itself;
//! - `calibrate` turns a live run of that trace into metadata whose cold_samples_ms and
//!   warm_samples_ms are the measured service times (client latency minus queue wait) of
//!   the function's cold and warm invocations (with the idle time before each warm one),
//!   and whose cold_dur_ms/warm_dur_ms are their p50s: the `sim` backend draws each
//!   duration from the samples measured after a similar idle time;
//! - `compare` prints, per function, cold-start count, mean, p50 and p99 client latency of
//!   a live and a simulated run side by side with their relative errors; writes JSON.
//!
//! `scripts/fidelity.sh` runs the whole experiment.

use crate::results::percentiles;
use crate::workload::csv::Table;
use crate::workload::dist::Draw;
use crate::workload::trace::{Arrival, read_metadata, read_trace, write_metadata, write_trace};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum Command {
    CalibrationTrace(CalibrationTraceArgs),
    Calibrate(CalibrateArgs),
    Compare(CompareArgs),
}

/// A trace of `--duration-s` with Poisson arrivals at each function's average rate in
/// `--input` (its invocations over the trace's span), drawn with `--seed`.
#[derive(clap::Args)]
pub struct CalibrationTraceArgs {
    /// The trace to resample.
    #[arg(long)]
    pub input: PathBuf,
    /// Its metadata.
    #[arg(long)]
    pub metadata: PathBuf,
    /// Seconds of the new trace.
    #[arg(long, default_value_t = 120.0)]
    pub duration_s: f64,
    /// Use another seed than the trace's generator did.
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
    /// Writes trace.csv and metadata.csv here (a new or empty folder; see --force).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, help = crate::results::out_dir::FORCE_HELP)]
    pub force: bool,
}

/// Metadata with measured durations from a live run (`--run`) of the functions in
/// `--metadata`: per function, the service time (client latency minus queue wait) of every
/// successful cold and warm invocation, as cold_samples_ms and warm_samples_ms, with the
/// idle time before each warm one (since the function's previous invocation ended) as
/// warm_idle_ms, and their p50s as cold_dur_ms and warm_dur_ms. A function the run has no cold (or warm) invocation
/// of keeps its metadata duration, shifted by the measured difference of the other (a
/// function the run has no invocation of keeps its metadata).
#[derive(clap::Args)]
pub struct CalibrateArgs {
    /// A live run's results directory (its invocations.csv).
    #[arg(long)]
    pub run: PathBuf,
    /// The metadata the run was made from.
    #[arg(long)]
    pub metadata: PathBuf,
    /// The calibrated metadata (CSV).
    #[arg(long)]
    pub out: PathBuf,
}

/// Per function, cold starts and mean/p50/p99 client latency of a live run and of simulated
/// runs of the same trace side by side, with their relative errors; writes JSON.
#[derive(clap::Args)]
pub struct CompareArgs {
    /// The live run's results directory.
    #[arg(long)]
    pub live: PathBuf,
    /// The simulated run's results directory; repeated (runs with other seeds), the
    /// simulated figures are the averages over the runs.
    #[arg(long, required = true)]
    pub sim: Vec<PathBuf>,
    /// Where to write the comparison (JSON); default: fidelity.json in the first --sim.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::CalibrationTrace(a) => calibration_trace(a),
        Command::Calibrate(a) => calibrate(a),
        Command::Compare(a) => compare(a).map(|_| ()),
    }
}

fn calibration_trace(a: CalibrationTraceArgs) -> anyhow::Result<()> {
    if !(a.duration_s > 0.0 && a.duration_s.is_finite()) {
        bail!("--duration-s must be positive");
    }
    let meta = read_metadata(&a.metadata)?;
    let trace = read_trace(&a.input, &meta)?;
    let span_ms = trace.last().map(|x| x.time_ms).unwrap_or(0.0).max(1.0);
    let mut counts = vec![0usize; meta.len()];
    for x in &trace {
        counts[x.func] += 1;
    }
    let mut draw = Draw::new(a.seed);
    let end_ms = a.duration_s * 1e3;
    let mut arrivals = Vec::new();
    for (func, &n) in counts.iter().enumerate() {
        let per_ms = n as f64 / span_ms;
        if per_ms <= 0.0 {
            continue;
        }
        let mut t = draw.exponential(per_ms);
        while t < end_ms {
            arrivals.push(Arrival { func, time_ms: (t * 1e3).round() / 1e3 });
            t += draw.exponential(per_ms);
        }
    }
    arrivals.sort_by(|x, y| x.time_ms.total_cmp(&y.time_ms).then(x.func.cmp(&y.func)));
    crate::results::out_dir::prepare(&a.out, a.force, &["trace.csv", "metadata.csv"])?;
    write_metadata(&a.out.join("metadata.csv"), &meta)?;
    write_trace(&a.out.join("trace.csv"), &meta, &arrivals)?;
    println!(
        "wrote {} invocations over {:.0} s (each function at its rate in {}) to {}/trace.csv",
        arrivals.len(),
        a.duration_s,
        a.input.display(),
        a.out.display()
    );
    Ok(())
}

fn calibrate(a: CalibrateArgs) -> anyhow::Result<()> {
    let mut meta = read_metadata(&a.metadata)?;
    let seen = observed(&a.run, true)?;
    let p50 = |xs: &[f64]| percentiles(xs.to_vec())["p50"].as_f64();
    let r3 = |x: f64| (x * 1e3).round() / 1e3;
    println!("{:<20} {:>28} {:>28}", "function", "cold p50 ms (metadata, n)", "warm p50 ms (metadata, n)");
    for f in meta.iter_mut() {
        let none = Observed::default();
        let o = seen.get(&f.name).unwrap_or(&none);
        let (cold, warm) = match (p50(&o.cold), p50(&o.warm)) {
            (Some(c), Some(w)) => (c, w),
            (Some(c), None) => (c, (f.warm_dur_ms + c - f.cold_dur_ms).max(0.0)),
            (None, Some(w)) => (f.cold_dur_ms + w - f.warm_dur_ms, w),
            (None, None) => {
                println!("{:<20} no successful invocation in {}: metadata kept", f.name, a.run.display());
                continue;
            }
        };
        println!(
            "{:<20} {:>9.1} ({:>9.1}, {:>4}) {:>9.1} ({:>9.1}, {:>4})",
            f.name,
            cold,
            f.cold_dur_ms,
            o.cold.len(),
            warm,
            f.warm_dur_ms,
            o.warm.len()
        );
        f.warm_dur_ms = r3(warm);
        f.cold_dur_ms = r3(cold.max(warm));
        f.cold_samples_ms = o.cold.iter().map(|x| r3(*x)).collect();
        f.warm_samples_ms = o.warm.iter().map(|x| r3(*x)).collect();
        f.warm_idle_ms = o.warm_idle.iter().map(|x| r3(*x)).collect();
    }
    write_metadata(&a.out, &meta).with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

/// Per function: client latencies of successful invocations, by container state.
#[derive(Default)]
struct Observed {
    cold: Vec<f64>,
    warm: Vec<f64>,
    /// Per warm invocation, the time since the function's previous invocation ended.
    warm_idle: Vec<f64>,
    all: Vec<f64>,
    failed: usize,
    /// When the function's latest invocation so far ended (ms from the start).
    last_end: f64,
}

/// With `service`, the time queued in the worker is taken off each latency.
fn observed(run: &Path, service: bool) -> anyhow::Result<BTreeMap<String, Observed>> {
    let t = Table::read(&run.join("invocations.csv"))?;
    let (f, lat, state, ok) =
        (t.column("function")?, t.column("client_latency_ms")?, t.column("container_state")?, t.column("success")?);
    let (queue, sent) = (t.column("queue_ms")?, t.column("sent_ms")?);
    let mut out: BTreeMap<String, Observed> = BTreeMap::new();
    for (line, row) in &t.rows {
        let o = out.entry(row[f].clone()).or_default();
        let (sent, latency) = (t.number(*line, row, sent)?, t.number(*line, row, lat)?);
        let idle = (sent - o.last_end).max(0.0);
        o.last_end = o.last_end.max(sent + latency);
        if row[ok] != "true" {
            o.failed += 1;
            continue;
        }
        let mut x = latency;
        if service {
            x = (x - t.number(*line, row, queue)?).max(0.0);
        }
        o.all.push(x);
        match row[state].as_str() {
            "cold" => o.cold.push(x),
            "warm" | "prewarm" => {
                o.warm.push(x);
                o.warm_idle.push(idle);
            }
            _ => {}
        }
    }
    Ok(out)
}

fn rel(sim: f64, live: f64) -> Option<f64> {
    (live != 0.0).then(|| (sim - live) / live)
}

/// Prints the side-by-side table and writes the JSON; returns it.
pub fn compare(a: CompareArgs) -> anyhow::Result<Value> {
    let live = observed(&a.live, false)?;
    let sims = a.sim.iter().map(|d| observed(d, false)).collect::<anyhow::Result<Vec<_>>>()?;
    let stats = |o: &Observed| {
        let p = percentiles(o.all.clone());
        (
            o.cold.len() as f64,
            p["mean"].as_f64().unwrap_or(0.0),
            p["p50"].as_f64().unwrap_or(0.0),
            p["p99"].as_f64().unwrap_or(0.0),
        )
    };
    // A function's simulated figures: averaged over the runs that have it.
    let sim_stats = |name: &str| -> Option<(f64, f64, f64, f64)> {
        let each: Vec<_> = sims.iter().filter_map(|s| s.get(name)).map(stats).collect();
        let n = each.len() as f64;
        let avg = |f: fn(&(f64, f64, f64, f64)) -> f64| each.iter().map(f).sum::<f64>() / n;
        (!each.is_empty()).then(|| (avg(|x| x.0), avg(|x| x.1), avg(|x| x.2), avg(|x| x.3)))
    };
    let pct = |x: Option<f64>| x.map(|x| format!("{:+.1}%", x * 100.0)).unwrap_or_else(|| "-".into());
    println!(
        "{:<14} {:>13} {:>7} {:>19} {:>7} {:>19} {:>7} {:>19} {:>7}",
        "function",
        "cold live/sim",
        "err",
        "mean ms live/sim",
        "err",
        "p50 ms live/sim",
        "err",
        "p99 ms live/sim",
        "err"
    );
    let mut rows = serde_json::Map::new();
    let mut worst = json!({"cold": 0.0, "p50": 0.0});
    for (name, l) in &live {
        let Some((sc, sm, s50, s99)) = sim_stats(name) else { continue };
        let (lc, lm, l50, l99) = stats(l);
        let errs = [rel(sc, lc), rel(sm, lm), rel(s50, l50), rel(s99, l99)];
        println!(
            "{:<14} {:>6}/{:<6.1} {:>7} {:>9.1}/{:<9.1} {:>7} {:>9.1}/{:<9.1} {:>7} {:>9.1}/{:<9.1} {:>7}",
            name.chars().take(14).collect::<String>(),
            lc,
            sc,
            pct(errs[0]),
            lm,
            sm,
            pct(errs[1]),
            l50,
            s50,
            pct(errs[2]),
            l99,
            s99,
            pct(errs[3])
        );
        for (k, e) in [("cold", errs[0]), ("p50", errs[2])] {
            let e = e.unwrap_or(0.0).abs();
            if e > worst[k].as_f64().unwrap_or(0.0) {
                worst[k] = e.into();
            }
        }
        rows.insert(
            name.clone(),
            json!({
                "live": {"cold": lc, "mean_ms": lm, "p50_ms": l50, "p99_ms": l99, "failed": l.failed},
                "sim": {"cold": sc, "mean_ms": sm, "p50_ms": s50, "p99_ms": s99},
                "relative_error": {"cold": errs[0], "mean": errs[1], "p50": errs[2], "p99": errs[3]},
            }),
        );
    }
    let cold = |o: &BTreeMap<String, Observed>| o.values().map(|o| o.cold.len()).sum::<usize>() as f64;
    let tl = cold(&live);
    let each: Vec<f64> = sims.iter().map(cold).collect();
    let ts = each.iter().sum::<f64>() / each.len() as f64;
    let runs = if sims.len() > 1 { format!(" (mean of {} runs: {each:?})", sims.len()) } else { String::new() };
    println!(
        "all functions: cold starts live {tl}, sim {ts:.1}{runs} ({}); worst per-function |error|: cold {:.1}%, p50 {:.1}%",
        pct(rel(ts, tl)),
        worst["cold"].as_f64().unwrap_or(0.0) * 100.0,
        worst["p50"].as_f64().unwrap_or(0.0) * 100.0
    );
    let mut report = crate::results::report::context();
    report["live"] = a.live.display().to_string().into();
    report["sim"] = json!(a.sim);
    report["functions"] = Value::Object(rows);
    report["cold_total"] = json!({"live": tl, "sim": ts, "sim_runs": each, "relative_error": rel(ts, tl)});
    report["worst_abs_relative_error"] = worst;
    let out = a.out.unwrap_or_else(|| a.sim[0].join("fidelity.json"));
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", out.display());
    Ok(report)
}
