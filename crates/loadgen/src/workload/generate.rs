//! `generate synthetic` and `generate azure`: write a trace and its metadata (the formats
//! `trace` reads) from stated distributions or from the Azure Functions 2019 dataset.

use crate::workload::csv::{InputError, split};
use crate::workload::dist::Draw;
use crate::workload::trace::{Arrival, FunctionMeta, write_metadata, write_trace};
use anyhow::{Context, bail};
use serde_json::json;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum GenerateCommand {
    Synthetic(SyntheticArgs),
    Azure(AzureArgs),
}

/// A synthetic workload: N functions with Poisson arrivals (or timers).
///
/// Each function's rate is drawn log-normal with mean
/// --mean-rate and sigma --rate-sigma; its warm duration log-normal (mean --mean-warm-ms,
/// sigma --warm-sigma); its cold duration is the warm one plus a log-normal start-up cost
/// (mean --mean-cold-extra-ms, sigma --cold-sigma); its memory is picked uniformly from
/// --mem-mb. Sigmas are of the underlying normal distribution. A --timer-fraction of the
/// functions (drawn with the seed) fire on a timer instead, as timer-triggered functions do
/// in the Azure dataset: every 1/rate seconds from a random phase.
#[derive(clap::Args)]
pub struct SyntheticArgs {
    /// How many functions.
    #[arg(long, default_value_t = 10)]
    pub functions: usize,
    /// Seconds of arrivals.
    #[arg(long, default_value_t = 60.0)]
    pub duration_s: f64,
    /// Mean invocations per second of one function.
    #[arg(long, default_value_t = 1.0)]
    pub mean_rate: f64,
    /// Sigma of the functions' rates (log-normal): larger, a few hot functions and many rare.
    #[arg(long, default_value_t = 1.0)]
    pub rate_sigma: f64,
    /// Mean warm duration (ms) over the functions.
    #[arg(long, default_value_t = 100.0)]
    pub mean_warm_ms: f64,
    /// Sigma of the warm durations (log-normal).
    #[arg(long, default_value_t = 1.0)]
    pub warm_sigma: f64,
    /// Mean start-up cost (ms) a cold start adds to the warm duration; 0 for none.
    #[arg(long, default_value_t = 500.0)]
    pub mean_cold_extra_ms: f64,
    /// Sigma of the start-up costs (log-normal).
    #[arg(long, default_value_t = 0.5)]
    pub cold_sigma: f64,
    /// The memory sizes (MB) functions are given, picked uniformly.
    #[arg(long, value_delimiter = ',', default_value = "128,256,512")]
    pub mem_mb: Vec<u64>,
    /// The fraction of functions (0..=1) on a timer rather than Poisson arrivals.
    #[arg(long, default_value_t = 0.0)]
    pub timer_fraction: f64,
    /// The seed of every draw: the same arguments give the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Writes DIR/trace.csv and DIR/metadata.csv (a new or empty folder; see --force).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, help = crate::results::out_dir::FORCE_HELP)]
    pub force: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Spread {
    /// Evenly spaced over the minute.
    Uniform,
    /// A Poisson process conditioned on the minute's count (sorted uniform random times).
    Poisson,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Select {
    /// The functions with the most invocations in the chosen minutes.
    Top,
    /// A seeded random sample of the functions with invocations in the chosen minutes.
    Random,
}

/// Converts the Azure Functions 2019 dataset (day files *.d01.csv …) into a trace and its
/// metadata.
///
/// Mapping: a function is (HashOwner, HashApp, HashFunction). Its invocations in each
/// chosen minute (columns 1..1440 of the invocations file; rows of the same function with
/// different triggers are added) are spread over that minute's 60,000 ms. warm_dur_ms =
/// percentile_Average_50 and cold_dur_ms = max(Maximum, warm_dur_ms) of its durations row
/// (the slowest invocation observed is taken to include a cold start). mem_mb = the
/// AverageAllocatedMb of its app's memory row, rounded up, at least --min-mem-mb (memory is
/// per app in the dataset, so an app's functions share the figure). Functions without a
/// durations row or whose app has no memory row are dropped and counted; so are functions
/// with no invocation in the chosen minutes. Names are the first 12 hex digits of
/// HashFunction (made unique).
#[derive(clap::Args)]
pub struct AzureArgs {
    /// invocations_per_function_md.anon.dNN.csv
    #[arg(long)]
    pub invocations: PathBuf,
    /// function_durations_percentiles.anon.dNN.csv
    #[arg(long)]
    pub durations: PathBuf,
    /// app_memory_percentiles.anon.dNN.csv
    #[arg(long)]
    pub memory: PathBuf,
    /// How many functions to keep.
    #[arg(long, default_value_t = 50)]
    pub functions: usize,
    /// Which functions to keep.
    #[arg(long, value_enum, default_value = "top")]
    pub select: Select,
    /// The first minute (1..1440).
    #[arg(long, default_value_t = 1)]
    pub start_minute: usize,
    /// How many minutes, from --start-minute.
    #[arg(long, default_value_t = 10)]
    pub minutes: usize,
    /// How a minute's invocations are placed in it.
    #[arg(long, value_enum, default_value = "uniform")]
    pub arrivals: Spread,
    /// The least memory (MB) a function is given.
    #[arg(long, default_value_t = 16)]
    pub min_mem_mb: u64,
    /// The seed of --select random and --arrivals poisson.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Writes DIR/trace.csv, DIR/metadata.csv and DIR/generation.json (a new or empty
    /// folder; see --force).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, help = crate::results::out_dir::FORCE_HELP)]
    pub force: bool,
}

pub fn run(cmd: GenerateCommand) -> anyhow::Result<()> {
    match cmd {
        GenerateCommand::Synthetic(a) => synthetic(a),
        GenerateCommand::Azure(a) => azure(a),
    }
}

pub fn write(out: &Path, meta: &[FunctionMeta], arrivals: &mut [Arrival]) -> anyhow::Result<()> {
    arrivals.sort_by(|a, b| a.time_ms.total_cmp(&b.time_ms).then(a.func.cmp(&b.func)));
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_metadata(&out.join("metadata.csv"), meta)?;
    write_trace(&out.join("trace.csv"), meta, arrivals)?;
    println!(
        "wrote {} invocations of {} functions to {}/trace.csv and {}/metadata.csv",
        arrivals.len(),
        meta.len(),
        out.display(),
        out.display()
    );
    Ok(())
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn synthetic(a: SyntheticArgs) -> anyhow::Result<()> {
    let (meta, mut arrivals) = synthetic_workload(&a)?;
    crate::results::out_dir::prepare(&a.out, a.force, &["trace.csv", "metadata.csv"])?;
    write(&a.out, &meta, &mut arrivals)
}

/// The functions and arrivals (not yet sorted) of a synthetic workload.
pub fn synthetic_workload(a: &SyntheticArgs) -> anyhow::Result<(Vec<FunctionMeta>, Vec<Arrival>)> {
    if a.functions == 0 || a.duration_s <= 0.0 || a.mean_rate <= 0.0 || a.mean_warm_ms <= 0.0 || a.mem_mb.is_empty() {
        bail!("--functions, --duration-s, --mean-rate, --mean-warm-ms and --mem-mb must be positive");
    }
    if !(0.0..=1.0).contains(&a.timer_fraction) {
        bail!("--timer-fraction must lie in 0..=1, not {}", a.timer_fraction);
    }
    let mut d = Draw::new(a.seed);
    let mut meta = Vec::new();
    let mut arrivals = Vec::new();
    let width = a.functions.to_string().len();
    for i in 0..a.functions {
        let rate = d.lognormal_mean(a.mean_rate, a.rate_sigma);
        let warm = r3(d.lognormal_mean(a.mean_warm_ms, a.warm_sigma));
        let cold =
            r3(warm
                + if a.mean_cold_extra_ms > 0.0 { d.lognormal_mean(a.mean_cold_extra_ms, a.cold_sigma) } else { 0.0 });
        let mem = a.mem_mb[(d.uniform() * a.mem_mb.len() as f64) as usize % a.mem_mb.len()];
        meta.push(FunctionMeta {
            name: format!("f{i:0width$}"),
            cold_dur_ms: cold,
            warm_dur_ms: warm,
            mem_mb: mem,
            ..Default::default()
        });
        // No draw is spent on the choice when no function is on a timer, so traces
        // generated before the option existed come out the same.
        let timer = a.timer_fraction > 0.0 && d.uniform() < a.timer_fraction;
        if timer {
            let period = 1e3 / rate;
            let mut t = d.uniform() * period;
            while t < a.duration_s * 1e3 {
                arrivals.push(Arrival { func: i, time_ms: r3(t) });
                t += period;
            }
            continue;
        }
        let mut t = d.exponential(rate) * 1e3;
        while t < a.duration_s * 1e3 {
            arrivals.push(Arrival { func: i, time_ms: r3(t) });
            t += d.exponential(rate) * 1e3;
        }
    }
    Ok((meta, arrivals))
}

type Key = (String, String, String);

/// Streams a CSV file's rows (header first), with line numbers; the invocations file is
/// large, so it is never held whole.
fn for_each_row(
    path: &Path,
    mut f: impl FnMut(usize, &[String], &[String]) -> Result<(), InputError>,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut header: Option<Vec<String>> = None;
    let err = |line, reason: String| InputError { file: path.to_path_buf(), line, reason };
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: cannot read", path.display()))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields = split(line).map_err(|r| err(i + 1, r))?;
        match &header {
            None => header = Some(fields.into_iter().map(|h| h.trim().to_string()).collect()),
            Some(h) => {
                if fields.len() != h.len() {
                    Err(err(i + 1, format!("{} fields where the header has {}", fields.len(), h.len())))?;
                }
                f(i + 1, h, &fields)?;
            }
        }
    }
    if header.is_none() {
        Err(err(0, "the file is empty".into()))?;
    }
    Ok(())
}

fn col(path: &Path, h: &[String], name: &str) -> Result<usize, InputError> {
    h.iter().position(|c| c == name).ok_or_else(|| InputError {
        file: path.to_path_buf(),
        line: 1,
        reason: format!("no column {name:?}"),
    })
}

fn number(path: &Path, line: usize, h: &[String], row: &[String], c: usize) -> Result<f64, InputError> {
    let raw = row[c].trim();
    raw.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0).ok_or_else(|| InputError {
        file: path.to_path_buf(),
        line,
        reason: format!("{} is not a number >= 0: {raw:?}", h[c]),
    })
}

pub fn azure(a: AzureArgs) -> anyhow::Result<()> {
    if a.start_minute == 0 || a.minutes == 0 || a.start_minute + a.minutes - 1 > 1440 {
        bail!("--start-minute and --minutes must pick minutes within 1..1440");
    }
    crate::results::out_dir::prepare(&a.out, a.force, &["trace.csv", "metadata.csv", "generation.json"])?;
    // Durations: key -> (warm, cold).
    let mut durations: HashMap<Key, (f64, f64)> = HashMap::new();
    for_each_row(&a.durations, |line, h, row| {
        let p = a.durations.as_path();
        let (o, ap, fu) = (col(p, h, "HashOwner")?, col(p, h, "HashApp")?, col(p, h, "HashFunction")?);
        let (p50, max) = (col(p, h, "percentile_Average_50")?, col(p, h, "Maximum")?);
        let warm = number(p, line, h, row, p50)?;
        let cold = number(p, line, h, row, max)?.max(warm);
        durations.entry((row[o].clone(), row[ap].clone(), row[fu].clone())).or_insert((warm, cold));
        Ok(())
    })?;
    let mut memory: HashMap<(String, String), f64> = HashMap::new();
    for_each_row(&a.memory, |line, h, row| {
        let p = a.memory.as_path();
        let (o, ap, m) = (col(p, h, "HashOwner")?, col(p, h, "HashApp")?, col(p, h, "AverageAllocatedMb")?);
        let mb = number(p, line, h, row, m)?;
        memory.entry((row[o].clone(), row[ap].clone())).or_insert(mb);
        Ok(())
    })?;
    // Invocations per function in the chosen minutes, in first-seen order.
    let mut order: Vec<Key> = Vec::new();
    let mut counts: HashMap<Key, Vec<u64>> = HashMap::new();
    let mut cols: Option<(usize, usize, usize, Vec<usize>)> = None;
    for_each_row(&a.invocations, |line, h, row| {
        let p = a.invocations.as_path();
        if cols.is_none() {
            let minutes: Result<Vec<usize>, InputError> =
                (a.start_minute..a.start_minute + a.minutes).map(|m| col(p, h, &m.to_string())).collect();
            cols = Some((col(p, h, "HashOwner")?, col(p, h, "HashApp")?, col(p, h, "HashFunction")?, minutes?));
        }
        let (o, ap, fu, minutes) = cols.as_ref().expect("set above");
        let key = (row[*o].clone(), row[*ap].clone(), row[*fu].clone());
        let slot = counts.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            vec![0; a.minutes]
        });
        for (c, &ci) in slot.iter_mut().zip(minutes) {
            *c += number(p, line, h, row, ci)? as u64;
        }
        Ok(())
    })?;
    let (mut no_duration, mut no_memory, mut idle) = (0usize, 0usize, 0usize);
    let mut candidates: Vec<(Key, u64)> = Vec::new();
    for key in &order {
        let total: u64 = counts[key].iter().sum();
        if !durations.contains_key(key) {
            no_duration += 1;
        } else if !memory.contains_key(&(key.0.clone(), key.1.clone())) {
            no_memory += 1;
        } else if total == 0 {
            idle += 1;
        } else {
            candidates.push((key.clone(), total));
        }
    }
    let mut d = Draw::new(a.seed);
    match a.select {
        Select::Top => candidates.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0))),
        Select::Random => {
            for i in (1..candidates.len()).rev() {
                let j = (d.uniform() * (i + 1) as f64) as usize;
                candidates.swap(i, j.min(i));
            }
        }
    }
    candidates.truncate(a.functions);
    if candidates.is_empty() {
        bail!(
            "no function is left to keep (dropped: {no_duration} without durations, {no_memory} without memory, {idle} without invocations in the chosen minutes)"
        );
    }
    let mut meta = Vec::new();
    let mut arrivals = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, (key, _)) in candidates.iter().enumerate() {
        let short: String = key.2.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
        let seen = names.entry(short.clone()).or_insert(0);
        *seen += 1;
        let name = if *seen == 1 { short } else { format!("{short}-{seen}") };
        let (warm, cold) = durations[key];
        let mb = memory[&(key.0.clone(), key.1.clone())].ceil().max(a.min_mem_mb as f64) as u64;
        meta.push(FunctionMeta {
            name,
            cold_dur_ms: r3(cold),
            warm_dur_ms: r3(warm),
            mem_mb: mb,
            ..Default::default()
        });
        for (m, &c) in counts[key].iter().enumerate() {
            let base = m as f64 * 60_000.0;
            for k in 0..c {
                let off = match a.arrivals {
                    Spread::Uniform => (k as f64 + 0.5) * 60_000.0 / c as f64,
                    Spread::Poisson => d.uniform() * 60_000.0,
                };
                arrivals.push(Arrival { func: i, time_ms: r3(base + off) });
            }
        }
    }
    write(&a.out, &meta, &mut arrivals)?;
    let report = json!({
        "source": {"invocations": a.invocations, "durations": a.durations, "memory": a.memory},
        "functions_in_invocations_file": order.len(),
        "dropped_no_duration_row": no_duration,
        "dropped_no_memory_row": no_memory,
        "dropped_no_invocations_in_window": idle,
        "kept": meta.len(),
        "invocations": arrivals.len(),
        "start_minute": a.start_minute,
        "minutes": a.minutes,
        "select": match a.select { Select::Top => "top", Select::Random => "random" },
        "arrivals": match a.arrivals { Spread::Uniform => "uniform", Spread::Poisson => "poisson" },
        "seed": a.seed,
        "mapping": "warm_dur_ms = percentile_Average_50; cold_dur_ms = max(Maximum, warm_dur_ms); mem_mb = ceil(app AverageAllocatedMb), at least min_mem_mb",
    });
    std::fs::write(a.out.join("generation.json"), serde_json::to_vec_pretty(&report)?)?;
    println!(
        "functions: {} in the invocations file; dropped {no_duration} without a durations row, {no_memory} without a memory row, {idle} without invocations in minutes {}..{}; kept {}",
        order.len(),
        a.start_minute,
        a.start_minute + a.minutes - 1,
        meta.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(timer_fraction: f64) -> SyntheticArgs {
        SyntheticArgs {
            functions: 20,
            duration_s: 600.0,
            mean_rate: 0.5,
            rate_sigma: 1.0,
            mean_warm_ms: 100.0,
            warm_sigma: 1.0,
            mean_cold_extra_ms: 500.0,
            cold_sigma: 0.5,
            mem_mb: vec![128, 256],
            timer_fraction,
            seed: 7,
            out: PathBuf::new(),
            force: false,
        }
    }

    /// The gaps between one function's arrivals, in order.
    fn gaps(arrivals: &[Arrival], func: usize) -> Vec<f64> {
        let t: Vec<f64> = arrivals.iter().filter(|a| a.func == func).map(|a| a.time_ms).collect();
        t.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn evenly_spaced(g: &[f64]) -> bool {
        g.len() >= 2 && g.iter().all(|x| (x - g[0]).abs() <= 0.002)
    }

    #[test]
    fn timer_functions_fire_at_a_fixed_period_and_the_others_do_not() {
        let (_, none) = synthetic_workload(&args(0.0)).unwrap();
        assert!((0..20).all(|f| !evenly_spaced(&gaps(&none, f))), "no timer wanted, but one function is periodic");
        let (_, all) = synthetic_workload(&args(1.0)).unwrap();
        assert!((0..20).all(|f| gaps(&all, f).len() < 2 || evenly_spaced(&gaps(&all, f))));
        let (_, half) = synthetic_workload(&args(0.5)).unwrap();
        let timers = (0..20).filter(|&f| evenly_spaced(&gaps(&half, f))).count();
        assert!((4..=16).contains(&timers), "{timers} of 20 functions on a timer at fraction 0.5");
    }

    #[test]
    fn a_timer_fraction_outside_zero_to_one_is_refused() {
        let err = synthetic_workload(&args(1.5)).unwrap_err().to_string();
        assert!(err.contains("--timer-fraction"), "{err}");
    }
}
