//! `compare`: one trace replayed under several named worker configs, in simulation (the
//! same runs as `trace --setup simulation`) or live (a worker started per config), and one
//! side-by-side table: invocations, errors, cold starts, latency p50/p99, and the memory the
//! pool held and held idle over the run (MB·s, from the worker's metrics counters; "n/a"
//! where the worker does not export them). Writes OUT/NAME/ (each run's usual results),
//! OUT/compare.csv, OUT/compare.json and OUT/compare.svg.

use crate::sending::connect::http_get;
use crate::sending::target::{Isolation, Setup};
use crate::simulation::run::SimRun;
use crate::spawn::SpawnedWorker;
use crate::workload::trace::{read_metadata, read_trace, used_only};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The worker's counter of memory held by containers (busy or idle), MB·s.
pub const HELD: &str = "iluvatar_pool_memory_held_mb_seconds";
/// The worker's counter of memory held by idle containers, MB·s.
pub const IDLE: &str = "iluvatar_pool_memory_idle_mb_seconds";

#[derive(clap::Args)]
pub struct Args {
    /// The trace: func_name,invoke_time_ms (sorted by time, 0-based).
    #[arg(long, help_heading = "Workload")]
    pub input: PathBuf,
    /// The functions, as for `trace`.
    #[arg(long, help_heading = "Workload")]
    pub metadata: PathBuf,
    /// A named worker config, NAME=FILE (JSON or TOML, as the worker reads it); repeat it,
    /// one per column of the comparison.
    #[arg(long = "config", required = true, help_heading = "Configs")]
    pub configs: Vec<String>,
    /// Simulation (the default: the worker's code on virtual time), or live: a worker
    /// started per config (from the binary beside this one, or --worker-bin) with the
    /// config file as it is, a private state directory and free ports.
    #[arg(long, value_enum, default_value = "simulation", help_heading = "Configs")]
    pub setup: Setup,
    /// Live: the backend functions are registered with (the config must offer it).
    #[arg(long, value_enum, default_value = "sim", help_heading = "Configs")]
    pub isolation: Isolation,
    /// Live: the worker binary.
    #[arg(long, help_heading = "Configs")]
    pub worker_bin: Option<PathBuf>,
    /// Containers to prewarm per function before the load starts (the metadata's
    /// `prewarms` first).
    #[arg(long, default_value_t = 0, help_heading = "Workload")]
    pub prewarm: u32,
    /// The simulations' seed: the same inputs and seed give the same results.
    #[arg(long, default_value_t = 1, help_heading = "Workload")]
    pub seed: u64,
    /// Seconds from the start left out of each run's summary (as `trace --warmup-s`).
    #[arg(long, default_value_t = 0.0, help_heading = "Results")]
    pub warmup_s: f64,
    /// The results folder (new or empty; see --force): NAME/ per config, compare.csv,
    /// compare.json and compare.svg.
    #[arg(long, default_value = "results/compare", help_heading = "Results")]
    pub out: PathBuf,
    #[arg(long, help = crate::results::out_dir::FORCE_HELP, help_heading = "Results")]
    pub force: bool,
}

/// One config's line of the table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Row {
    pub config: String,
    pub file: String,
    pub invocations: u64,
    pub errors: u64,
    pub cold_starts: u64,
    /// Cold starts per answered invocation, in percent.
    pub cold_start_pct: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub memory_held_mb_s: Option<f64>,
    pub memory_idle_mb_s: Option<f64>,
}

const HEADER: [&str; 9] = [
    "config",
    "invocations",
    "errors",
    "cold_starts",
    "cold_start_pct",
    "latency_p50_ms",
    "latency_p99_ms",
    "memory_held_mb_s",
    "memory_idle_mb_s",
];

/// A series' value in Prometheus text: the sum over its label sets (and over the workers,
/// whose texts may be concatenated); `None` if no line has it.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let rest = if rest.starts_with('{') {
            match rest.find('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            }
        } else {
            rest
        };
        if !rest.starts_with(' ') {
            continue; // a longer name with this one as its prefix
        }
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

impl Row {
    /// The line of `config` from its run's summary and its worker's metrics text.
    pub fn of(config: &str, file: &Path, summary: &Value, metrics: &str) -> Row {
        let int = |k: &str| summary[k].as_u64().unwrap_or(0);
        let (invocations, errors) = (int("invocations"), int("failed"));
        Row {
            config: config.into(),
            file: file.display().to_string(),
            invocations,
            errors,
            cold_starts: int("cold"),
            cold_start_pct: summary["cold_start_rate"].as_f64().unwrap_or(0.0) * 100.0,
            latency_p50_ms: summary["client_latency_ms"]["p50"].as_f64(),
            latency_p99_ms: summary["client_latency_ms"]["p99"].as_f64(),
            memory_held_mb_s: metric_sum(metrics, HELD),
            memory_idle_mb_s: metric_sum(metrics, IDLE),
        }
    }

    fn fields(&self) -> Vec<String> {
        let opt = |v: Option<f64>, digits: usize| v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "n/a".into());
        vec![
            self.config.clone(),
            self.invocations.to_string(),
            self.errors.to_string(),
            self.cold_starts.to_string(),
            format!("{:.2}", self.cold_start_pct),
            opt(self.latency_p50_ms, 3),
            opt(self.latency_p99_ms, 3),
            opt(self.memory_held_mb_s, 1),
            opt(self.memory_idle_mb_s, 1),
        ]
    }
}

/// The table as CSV (header and a line per config; "n/a" for a missing metric).
pub fn csv(rows: &[Row]) -> String {
    let mut s = crate::workload::csv::record(&HEADER);
    for r in rows {
        s.push_str(&crate::workload::csv::record(&r.fields()));
    }
    s
}

/// The table aligned for a terminal.
pub fn text_table(rows: &[Row]) -> String {
    let lines: Vec<Vec<String>> =
        std::iter::once(HEADER.iter().map(|h| h.to_string()).collect()).chain(rows.iter().map(Row::fields)).collect();
    let widths: Vec<usize> =
        (0..HEADER.len()).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (v, w))| if c == 0 { format!("{v:<w$}") } else { format!("{v:>w$}") })
            .collect();
        s.push_str(cells.join("  ").trim_end());
        s.push('\n');
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Grouped bars, one panel per measure (cold-start %, latency p99, memory held and idle
/// where known), a bar per config in each.
pub fn svg(rows: &[Row]) -> String {
    type Measure = (&'static str, fn(&Row) -> Option<f64>);
    let measures: [Measure; 4] = [
        ("cold starts (%)", |r| Some(r.cold_start_pct)),
        ("latency p99 (ms)", |r| r.latency_p99_ms),
        ("memory held (MB·s)", |r| r.memory_held_mb_s),
        ("memory idle (MB·s)", |r| r.memory_idle_mb_s),
    ];
    const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
    let (pw, ph, top, left) = (260.0, 260.0, 50.0, 20.0);
    let width = left + pw * measures.len() as f64 + 20.0;
    let height = top + ph + 60.0 + 18.0 * rows.len() as f64;
    let title = format!("the same trace under {} configs", rows.len());
    let mut s = crate::results::chart::open_svg(width, height, width / 2.0, &title);
    for (m, (title, get)) in measures.iter().enumerate() {
        let x0 = left + pw * m as f64 + 30.0;
        let (inner, base) = (pw - 50.0, top + ph);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + inner / 2.0,
            top - 8.0,
            esc(title)
        );
        let _ = writeln!(s, r#"<line x1="{x0}" y1="{base}" x2="{}" y2="{base}" stroke="black"/>"#, x0 + inner);
        let max = rows.iter().filter_map(get).fold(0.0f64, f64::max);
        let max = if max > 0.0 { max * 1.1 } else { 1.0 };
        let bar = inner / rows.len().max(1) as f64;
        for (i, r) in rows.iter().enumerate() {
            let x = x0 + bar * i as f64 + bar * 0.1;
            let color = COLORS[i % COLORS.len()];
            match get(r) {
                Some(v) => {
                    let h = (v / max * (ph - 20.0)).max(0.0);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{color}"><title>{}: {v:.3}</title></rect>"#,
                        base - h,
                        bar * 0.8,
                        esc(&r.config)
                    );
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                        x + bar * 0.4,
                        base - h - 3.0,
                        label(v)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="{color}">n/a</text>"#,
                        x + bar * 0.4,
                        base - 3.0
                    );
                }
            }
        }
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + ph + 30.0 + 18.0 * i as f64;
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(s, r#"<rect x="{}" y="{}" width="12" height="12" fill="{color}"/>"#, left + 30.0, y - 10.0);
        let _ = writeln!(s, r#"<text x="{}" y="{y}">{}</text>"#, left + 48.0, esc(&r.config));
    }
    s.push_str("</svg>\n");
    s
}

fn label(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// `NAME=FILE` pairs; names are unique and usable as directory names.
/// A config's name is a folder name in the results: letters, digits, '-', '_', '.', not
/// starting with '.'.
fn config_name_ok(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    !name.is_empty() && !name.starts_with('.') && name.chars().all(ok)
}

pub fn parse_configs(specs: &[String]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for spec in specs {
        let (name, file) = spec.split_once('=').with_context(|| format!("--config {spec:?}: expected NAME=FILE"))?;
        if !config_name_ok(name) {
            bail!("--config {spec:?}: the name must be letters, digits, '-', '_' or '.'");
        }
        if file.is_empty() {
            bail!("--config {spec:?}: expected NAME=FILE");
        }
        if out.iter().any(|(n, _)| n == name) {
            bail!("--config: the name {name:?} is given twice");
        }
        out.push((name.to_string(), PathBuf::from(file)));
    }
    Ok(out)
}

/// Runs every config, one after another, and writes the table; a synchronous command
/// (each simulation builds its own virtual-time runtime; live runs share a real one).
pub fn run(a: Args) -> anyhow::Result<Vec<Row>> {
    let configs = parse_configs(&a.configs)?;
    let meta = read_metadata(&a.metadata)?;
    let mut arrivals = read_trace(&a.input, &meta)?;
    let meta = used_only(meta, &mut arrivals);
    let arrivals = Arc::new(arrivals);
    if !(a.warmup_s >= 0.0 && a.warmup_s.is_finite()) {
        bail!("--warmup-s must be a number of seconds >= 0");
    }
    // With --force, this run's files go, and the folders of an earlier comparison's configs.
    let earlier: Vec<String> = std::fs::read(a.out.join("compare.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["configs"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["config"].as_str().map(String::from))
        .filter(|n| config_name_ok(n))
        .collect();
    let mut ours: Vec<&str> = vec!["compare.csv", "compare.json", "compare.svg"];
    ours.extend(configs.iter().map(|(n, _)| n.as_str()));
    ours.extend(earlier.iter().map(String::as_str));
    crate::results::out_dir::prepare(&a.out, a.force, &ours)?;
    let mut rows = Vec::new();
    match a.setup {
        Setup::Simulation => {
            // Every config is checked before any runs: a typo fails at once.
            let loaded = configs
                .iter()
                .map(|(n, f)| {
                    crate::simulation::worker::worker_config(Some(f), &[]).with_context(|| format!("config {n}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut target = crate::simulation::sim_bench::simulation_target()?;
            target.functions.prewarm = a.prewarm;
            let plans = target.plans(&meta)?;
            for ((name, file), config) in configs.iter().zip(loaded) {
                println!("compare: simulating {} invocations under {name} ({})", arrivals.len(), file.display());
                let run = SimRun { config, seed: a.seed, version: "1".into(), warmup_s: a.warmup_s, cluster: None };
                let info = json!({"kind": "compare", "input": a.input, "metadata": a.metadata, "config": name,
                    "config_file": file});
                let rt = crate::simulation::worker::runtime().context("building a simulation runtime")?;
                let (summary, metrics) = rt
                    .block_on(run.execute_with_metrics(&plans, &meta, arrivals.clone(), &a.out.join(name), info))
                    .with_context(|| format!("config {name} (seed {})", a.seed))?;
                rows.push(Row::of(name, file, &summary, &metrics));
            }
        }
        Setup::Live => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            for (name, file) in &configs {
                let row =
                    rt.block_on(live(&a, name, file, &meta, &arrivals)).with_context(|| format!("config {name}"))?;
                rows.push(row);
            }
        }
    }
    write_table(&a, &rows)?;
    Ok(rows)
}

/// One live run: a worker started with `file`, the trace replayed against it as `trace`
/// replays, its /metrics read before it stops.
async fn live(
    a: &Args,
    name: &str,
    file: &Path,
    meta: &[crate::workload::trace::FunctionMeta],
    arrivals: &Arc<Vec<crate::workload::trace::Arrival>>,
) -> anyhow::Result<Row> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read config file {}", file.display()))?;
    let toml = file.extension().is_some_and(|e| e == "toml");
    let mut config = iluvatar_core::layered::parse(&text, toml)
        .map_err(|m| anyhow::anyhow!("config file {} is not valid: {m}", file.display()))?;
    config["http"] = json!({"enabled": true, "address": "127.0.0.1", "port": 0});
    let worker = SpawnedWorker::start(a.worker_bin.clone(), config)?;
    println!("compare: replaying {} invocations live under {name} (worker {})", arrivals.len(), worker.endpoint());
    let mut target = crate::sending::target::TargetArgs { setup: Setup::Live, ..quiet_target()? };
    target.functions.isolation = a.isolation;
    target.endpoint.port = worker.port;
    target.functions.prewarm = a.prewarm;
    target.warmup_s = a.warmup_s;
    let info =
        json!({"kind": "compare", "input": a.input, "metadata": a.metadata, "config": name, "config_file": file});
    let summary =
        crate::commands::replay::execute(&target, a.seed, meta.to_vec(), arrivals.to_vec(), &a.out.join(name), info)
            .await?;
    let http = worker.http.clone().context("the worker serves no HTTP: cannot read its /metrics")?;
    let metrics = tokio::time::timeout(std::time::Duration::from_secs(10), http_get(&http, "/metrics"))
        .await
        .context("GET /metrics timed out")??;
    drop(worker);
    Ok(Row::of(name, file, &summary, &metrics))
}

fn quiet_target() -> anyhow::Result<crate::sending::target::TargetArgs> {
    crate::simulation::sim_bench::simulation_target()
}

fn write_table(a: &Args, rows: &[Row]) -> anyhow::Result<()> {
    let out = &a.out;
    std::fs::write(out.join("compare.csv"), csv(rows))?;
    let mut report = crate::results::report::context();
    report["setup"] = match a.setup {
        Setup::Simulation => "simulation",
        Setup::Live => "live",
    }
    .into();
    report["input"] = a.input.display().to_string().into();
    report["metadata"] = a.metadata.display().to_string().into();
    report["seed"] = a.seed.into();
    report["prewarm"] = a.prewarm.into();
    report["configs"] = serde_json::to_value(rows)?;
    std::fs::write(out.join("compare.json"), serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(out.join("compare.svg"), svg(rows))?;
    print!("{}", text_table(rows));
    println!("wrote {0}/compare.csv, {0}/compare.json, {0}/compare.svg and {0}/NAME/ per config", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# HELP iluvatar_pool_memory_held_mb_seconds Memory held.\n\
        # TYPE iluvatar_pool_memory_held_mb_seconds counter\n\
        iluvatar_pool_memory_held_mb_seconds 1234.5\n\
        # TYPE iluvatar_pool_memory_idle_mb_seconds counter\n\
        iluvatar_pool_memory_idle_mb_seconds{pool=\"a\"} 100\n\
        iluvatar_pool_memory_idle_mb_seconds{pool=\"b\"} 50.5\n\
        iluvatar_pool_memory_idle_mb_seconds_extra 7\n";

    #[test]
    fn reads_the_counters_summing_labels_and_workers() {
        assert_eq!(metric_sum(METRICS, HELD), Some(1234.5));
        assert_eq!(metric_sum(METRICS, IDLE), Some(150.5));
        let two = format!("{METRICS}\n{METRICS}");
        assert_eq!(metric_sum(&two, HELD), Some(2469.0));
        assert_eq!(metric_sum("iluvatar_queue_len 3\n", HELD), None);
    }

    fn summary() -> Value {
        json!({"invocations": 10, "failed": 1, "cold": 3, "cold_start_rate": 3.0 / 9.0,
            "client_latency_ms": {"p50": 2.5, "p99": 40.0}})
    }

    #[test]
    fn a_row_without_the_counters_says_n_a() {
        let without = Row::of("small", Path::new("s.toml"), &summary(), "iluvatar_queue_len 0\n");
        assert_eq!(without.memory_held_mb_s, None);
        let with = Row::of("big", Path::new("b.toml"), &summary(), METRICS);
        assert_eq!(with.memory_idle_mb_s, Some(150.5));
        assert_eq!((with.cold_starts, with.errors, with.invocations), (3, 1, 10));
        assert!((with.cold_start_pct - 33.333).abs() < 0.01);
        let table = csv(&[without.clone(), with.clone()]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], HEADER.join(","));
        assert_eq!(lines[1], "small,10,1,3,33.33,2.500,40.000,n/a,n/a");
        assert_eq!(lines[2], "big,10,1,3,33.33,2.500,40.000,1234.5,150.5");
        assert!(text_table(&[without.clone(), with.clone()]).lines().nth(1).unwrap().ends_with("n/a"));
        let svg = svg(&[without, with]);
        assert!(svg.starts_with("<svg") && svg.contains("n/a") && svg.contains(">big<"));
    }

    #[test]
    fn configs_are_named_once() {
        let c = parse_configs(&["a=x.toml".into(), "b-2=y.json".into()]).unwrap();
        assert_eq!(c[1], ("b-2".to_string(), PathBuf::from("y.json")));
        assert!(parse_configs(&["a=x".into(), "a=y".into()]).is_err());
        assert!(parse_configs(&["x.toml".into()]).is_err());
        assert!(parse_configs(&["../a=x".into()]).is_err());
    }
}
