//! `fidelity`: how closely a simulation matches a live run of the same trace.
//!
//! - `calibration-trace` writes a trace that, against a worker whose keep-alive is shorter
//!   than its gaps, gives each function several cold starts and many warm calls;
//! - `calibrate` turns a live run of that trace into metadata whose cold_dur_ms and
//!   warm_dur_ms are the measured p50 client latencies (what the `sim` backend takes);
//! - `compare` prints, per function, cold-start count, mean, p50 and p99 client latency of
//!   a live and a simulated run side by side with their relative errors; writes JSON.
//!
//! `scripts/fidelity.sh` runs the whole experiment.

use crate::csv::Table;
use crate::results::percentiles;
use crate::trace::{Arrival, read_metadata, write_metadata, write_trace};
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

/// A trace of `--rounds` rounds per function, one function after another: each round is
/// one call then `--warm` calls `--gap-ms` apart, then `--pause-ms` of silence (longer than
/// the calibration worker's keep-alive, so that the next round starts cold).
#[derive(clap::Args)]
pub struct CalibrationTraceArgs {
    #[arg(long)]
    pub metadata: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long, default_value_t = 10)]
    pub warm: usize,
    #[arg(long, default_value_t = 200.0)]
    pub gap_ms: f64,
    #[arg(long, default_value_t = 4000.0)]
    pub pause_ms: f64,
    /// Writes trace.csv (and a copy of metadata.csv) here.
    #[arg(long)]
    pub out: PathBuf,
}

/// Metadata with measured durations: cold_dur_ms and warm_dur_ms become the p50 client
/// latency of the function's cold and warm invocations in a live run (`--run`).
#[derive(clap::Args)]
pub struct CalibrateArgs {
    /// A live run's results directory (its invocations.csv).
    #[arg(long)]
    pub run: PathBuf,
    /// The metadata the run was made from.
    #[arg(long)]
    pub metadata: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct CompareArgs {
    /// The live run's results directory.
    #[arg(long)]
    pub live: PathBuf,
    /// The simulated run's results directory.
    #[arg(long)]
    pub sim: PathBuf,
    /// Where to write the comparison (JSON); default: SIM/fidelity.json.
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
    let meta = read_metadata(&a.metadata)?;
    let mut arrivals = Vec::new();
    let mut t = 0.0;
    for f in 0..meta.len() {
        for _ in 0..a.rounds {
            for _ in 0..=a.warm {
                arrivals.push(Arrival { func: f, time_ms: t });
                t += a.gap_ms;
            }
            t += a.pause_ms;
        }
    }
    std::fs::create_dir_all(&a.out)?;
    write_metadata(&a.out.join("metadata.csv"), &meta)?;
    write_trace(&a.out.join("trace.csv"), &meta, &arrivals)?;
    println!("wrote {} invocations over {:.0} s to {}/trace.csv", arrivals.len(), t / 1e3, a.out.display());
    Ok(())
}

/// Per function: client latencies of successful invocations, by container state.
struct Observed {
    cold: Vec<f64>,
    warm: Vec<f64>,
    all: Vec<f64>,
    failed: usize,
}

fn observed(run: &Path) -> anyhow::Result<BTreeMap<String, Observed>> {
    let t = Table::read(&run.join("invocations.csv"))?;
    let (f, lat, state, ok) =
        (t.column("function")?, t.column("client_latency_ms")?, t.column("container_state")?, t.column("success")?);
    let mut out: BTreeMap<String, Observed> = BTreeMap::new();
    for (line, row) in &t.rows {
        let o = out.entry(row[f].clone()).or_insert_with(|| Observed {
            cold: Vec::new(),
            warm: Vec::new(),
            all: Vec::new(),
            failed: 0,
        });
        if row[ok] != "true" {
            o.failed += 1;
            continue;
        }
        let x = t.number(*line, row, lat)?;
        o.all.push(x);
        match row[state].as_str() {
            "cold" => o.cold.push(x),
            "warm" | "prewarm" => o.warm.push(x),
            _ => {}
        }
    }
    Ok(out)
}

fn calibrate(a: CalibrateArgs) -> anyhow::Result<()> {
    let mut meta = read_metadata(&a.metadata)?;
    let seen = observed(&a.run)?;
    let p50 = |xs: &[f64]| percentiles(xs.to_vec())["p50"].as_f64();
    for f in meta.iter_mut() {
        let o = seen.get(&f.name).with_context(|| format!("{} has no invocation in {}", f.name, a.run.display()))?;
        let (Some(cold), Some(warm)) = (p50(&o.cold), p50(&o.warm)) else {
            bail!("{}: the run needs both cold and warm invocations of it", f.name);
        };
        println!(
            "{:<20} cold {:>8.1} ms (metadata {:>8.1}, {} samples)  warm {:>7.1} ms (metadata {:>7.1}, {} samples)",
            f.name,
            cold,
            f.cold_dur_ms,
            o.cold.len(),
            warm,
            f.warm_dur_ms,
            o.warm.len()
        );
        f.warm_dur_ms = warm;
        f.cold_dur_ms = cold.max(warm);
    }
    write_metadata(&a.out, &meta)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

fn rel(sim: f64, live: f64) -> Option<f64> {
    (live != 0.0).then(|| (sim - live) / live)
}

/// Prints the side-by-side table and writes the JSON; returns it.
pub fn compare(a: CompareArgs) -> anyhow::Result<Value> {
    let (live, sim) = (observed(&a.live)?, observed(&a.sim)?);
    let stats = |o: &Observed| {
        let p = percentiles(o.all.clone());
        (
            o.cold.len() as f64,
            p["mean"].as_f64().unwrap_or(0.0),
            p["p50"].as_f64().unwrap_or(0.0),
            p["p99"].as_f64().unwrap_or(0.0),
        )
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
        let Some(s) = sim.get(name) else { continue };
        let (lc, lm, l50, l99) = stats(l);
        let (sc, sm, s50, s99) = stats(s);
        let errs = [rel(sc, lc), rel(sm, lm), rel(s50, l50), rel(s99, l99)];
        println!(
            "{:<14} {:>6}/{:<6} {:>7} {:>9.1}/{:<9.1} {:>7} {:>9.1}/{:<9.1} {:>7} {:>9.1}/{:<9.1} {:>7}",
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
                "sim": {"cold": sc, "mean_ms": sm, "p50_ms": s50, "p99_ms": s99, "failed": s.failed},
                "relative_error": {"cold": errs[0], "mean": errs[1], "p50": errs[2], "p99": errs[3]},
            }),
        );
    }
    let (tl, ts) =
        (live.values().map(|o| o.cold.len()).sum::<usize>(), sim.values().map(|o| o.cold.len()).sum::<usize>());
    println!(
        "all functions: cold starts live {tl}, sim {ts} ({}); worst per-function |error|: cold {:.1}%, p50 {:.1}%",
        pct(rel(ts as f64, tl as f64)),
        worst["cold"].as_f64().unwrap_or(0.0) * 100.0,
        worst["p50"].as_f64().unwrap_or(0.0) * 100.0
    );
    let mut report = crate::report::context();
    report["live"] = a.live.display().to_string().into();
    report["sim"] = a.sim.display().to_string().into();
    report["functions"] = Value::Object(rows);
    report["cold_total"] = json!({"live": tl, "sim": ts, "relative_error": rel(ts as f64, tl as f64)});
    report["worst_abs_relative_error"] = worst;
    let out = a.out.unwrap_or_else(|| a.sim.join("fidelity.json"));
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", out.display());
    Ok(report)
}
