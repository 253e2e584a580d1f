//! `trace` and `rate`: open-loop runs of timed invocations against a target, with
//! per-invocation results, a summary, plots and a printed table.

use crate::results;
use crate::results::{Recorded, Recorder};
use crate::results::{RunInfo, out_dir, write_results};
use crate::sending::connect::{connect, connect_controller, lean};
use crate::sending::progress::Progress;
use crate::sending::target::{Plan, Setup, TargetArgs, TargetKind, requests};
use crate::sending::transport::{ControllerGrpc, Grpc, Transport, register_all};
use crate::simulation::run::{SimCluster, SimController, SimRun};
use crate::workload::dist::Draw;
use crate::workload::trace::{
    Arrival, FunctionMeta, read_metadata, read_trace, used_only, write_metadata, write_trace,
};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct TraceArgs {
    /// The trace: func_name,invoke_time_ms (sorted by time, 0-based).
    #[arg(long, help_heading = "Workload")]
    pub input: PathBuf,
    /// The functions: func_name,cold_dur_ms,warm_dur_ms,mem_mb, and optionally prewarms,
    /// image_name, mean_iat, cold_samples_ms, warm_samples_ms, warm_idle_ms (other columns
    /// are named in a warning and ignored).
    #[arg(long, help_heading = "Workload")]
    pub metadata: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    /// The simulation's seed: the same inputs and seed give the same results.
    #[arg(long, default_value_t = 1, help_heading = "Simulation (--setup simulation)")]
    pub seed: u64,
    /// The results folder (new or empty; see --force): invocations.csv, summary.json and
    /// three SVG plots.
    #[arg(long, default_value = "results/trace", help_heading = "Results")]
    pub out: PathBuf,
    #[arg(long, help = out_dir::FORCE_HELP, help_heading = "Results")]
    pub force: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrivals {
    /// Exponential gaps (a Poisson process).
    Poisson,
    /// A fixed gap of 1/rate.
    Uniform,
}

#[derive(clap::Args)]
pub struct RateArgs {
    /// The function mix's metadata (as for `trace`); or use --function.
    #[arg(long, help_heading = "Workload")]
    pub metadata: Option<PathBuf>,
    /// A function as NAME:COLD_MS:WARM_MS:MEM_MB (repeatable), instead of --metadata.
    #[arg(long = "function", help_heading = "Workload")]
    pub functions: Vec<String>,
    /// Weights of the mix as NAME=WEIGHT (repeatable); default: every function equally.
    #[arg(long = "mix", help_heading = "Workload")]
    pub mix: Vec<String>,
    /// Invocations per second, over all functions.
    #[arg(long, help_heading = "Workload")]
    pub rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0, help_heading = "Workload")]
    pub duration_s: f64,
    /// How the gaps between arrivals are drawn.
    #[arg(long, value_enum, default_value = "poisson", help_heading = "Workload")]
    pub arrivals: Arrivals,
    /// The seed of the arrivals and the mix (and of the simulation): the same seed gives the
    /// same trace.
    #[arg(long, default_value_t = 1, help_heading = "Workload")]
    pub seed: u64,
    #[command(flatten)]
    pub target: TargetArgs,
    /// The results folder (new or empty; see --force): trace.csv and metadata.csv of the
    /// arrivals drawn, invocations.csv, summary.json and three SVG plots.
    #[arg(long, default_value = "results/rate", help_heading = "Results")]
    pub out: PathBuf,
    #[arg(long, help = out_dir::FORCE_HELP, help_heading = "Results")]
    pub force: bool,
}

pub async fn run_trace(args: TraceArgs) -> anyhow::Result<()> {
    args.target.check_supported()?;
    let meta = read_metadata(&args.metadata)?;
    let arrivals = read_trace(&args.input, &meta)?;
    out_dir::prepare(&args.out, args.force, &out_dir::RUN_FILES)?;
    let info = json!({"kind": "trace", "input": args.input, "metadata": args.metadata});
    execute(&args.target, args.seed, meta, arrivals, &args.out, info).await.map(|_| ())
}

pub async fn run_rate(args: RateArgs) -> anyhow::Result<()> {
    args.target.check_supported()?;
    let meta = functions_of(args.metadata.as_deref(), &args.functions)?;
    let positive = |x: f64| x > 0.0 && x.is_finite();
    if !positive(args.rate) || !positive(args.duration_s) {
        bail!("--rate and --duration-s must be positive");
    }
    let mut weights = vec![if args.mix.is_empty() { 1.0 } else { 0.0 }; meta.len()];
    for m in &args.mix {
        let (name, w) = m.split_once('=').with_context(|| format!("--mix {m:?}: expected NAME=WEIGHT"))?;
        let i = meta.iter().position(|f| f.name == name).with_context(|| format!("--mix: no function {name:?}"))?;
        weights[i] = w.parse::<f64>().ok().filter(|w| *w >= 0.0).with_context(|| format!("--mix {m:?}: bad weight"))?;
    }
    let cumulative: Vec<f64> = weights.iter().scan(0.0, |s, w| Some((*s += w, *s).1)).collect();
    if cumulative.last().copied().unwrap_or(0.0) <= 0.0 {
        bail!("--mix: the weights sum to zero");
    }
    let mut draw = Draw::new(args.seed);
    let (mut t, end) = (0.0, args.duration_s * 1e3);
    let mut arrivals = Vec::new();
    while t < end {
        arrivals.push(Arrival { func: draw.pick(&cumulative), time_ms: t });
        t += match args.arrivals {
            Arrivals::Poisson => draw.exponential(args.rate) * 1e3,
            Arrivals::Uniform => 1e3 / args.rate,
        };
    }
    let ours: Vec<&str> = out_dir::RUN_FILES.iter().copied().chain(["trace.csv", "metadata.csv"]).collect();
    out_dir::prepare(&args.out, args.force, &ours)?;
    write_metadata(&args.out.join("metadata.csv"), &meta)?;
    write_trace(&args.out.join("trace.csv"), &meta, &arrivals)?;
    let info = json!({"kind": "rate", "rate_per_s": args.rate, "duration_s": args.duration_s, "seed": args.seed,
        "arrivals": match args.arrivals { Arrivals::Poisson => "poisson", Arrivals::Uniform => "uniform" }});
    execute(&args.target, args.seed, meta, arrivals, &args.out, info).await.map(|_| ())
}

/// Functions from a metadata file or from NAME:COLD:WARM:MEM specs.
pub fn functions_of(metadata: Option<&Path>, specs: &[String]) -> anyhow::Result<Vec<FunctionMeta>> {
    match (metadata, specs.is_empty()) {
        (Some(p), true) => Ok(read_metadata(p)?),
        (None, false) => {
            let mut text = String::from("func_name,cold_dur_ms,warm_dur_ms,mem_mb\n");
            for s in specs {
                let parts: Vec<&str> = s.split(':').collect();
                if parts.len() != 4 {
                    bail!("--function {s:?}: expected NAME:COLD_MS:WARM_MS:MEM_MB");
                }
                text.push_str(&parts.join(","));
                text.push('\n');
            }
            Ok(crate::workload::trace::parse_metadata(Path::new("--function"), &text)?)
        }
        _ => bail!("give the functions with either --metadata or --function"),
    }
}

/// Registers, prewarms, sends the arrivals open-loop (live, or simulated with `seed`) and
/// writes the results to `out`.
pub async fn execute(
    target: &TargetArgs,
    seed: u64,
    meta: Vec<FunctionMeta>,
    mut arrivals: Vec<Arrival>,
    out: &Path,
    info: Value,
) -> anyhow::Result<Value> {
    let meta = used_only(meta, &mut arrivals);
    let plans = target.plans(&meta)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let span_s = arrivals.last().map(|a| a.time_ms / 1e3).unwrap_or(0.0);
    let (n, f) = (arrivals.len(), meta.len());
    let arrivals = Arc::new(arrivals);
    if target.setup == Setup::Simulation {
        let config = crate::simulation::worker::worker_config(target.worker_config.as_deref(), &[])?;
        let cluster = if target.simulated_cluster() {
            // Simulations read no environment: their inputs are explicit.
            let controller = SimController::load(target.controller_config.as_deref())
                .context("loading the simulated controller's config")?;
            if config.limits.max_cpus == 0 {
                bail!(
                    "limits.max_cpus is 0 in the worker config (on a live worker: the machine's cores); a simulated \
                     cluster's balancer weighs each worker's load by its cpus, so the results would depend on this \
                     machine. Set limits.max_cpus in --worker-config"
                );
            }
            Some(SimCluster {
                controller,
                workers: target.workers.unwrap_or(1),
                controller_overhead: target.controller_overhead.clone(),
            })
        } else {
            None
        };
        if !target.quiet {
            let on = match &cluster {
                Some(c) => format!(" on {} workers behind {}", c.workers, c.controller.balancer.name()),
                None => String::new(),
            };
            println!("simulating {n} invocations of {f} functions over {span_s:.1} s (virtual){on}, seed {seed}");
        }
        let run =
            SimRun { config, seed, version: target.functions.version.clone(), warmup_s: target.warmup_s, cluster };
        let summary = run.execute(&plans, &meta, arrivals, out, info).await?;
        if !target.quiet {
            print_written(out, &summary);
        }
        return Ok(summary);
    }
    let endpoint = target.endpoint();
    let mut target_info = json!({"endpoint": endpoint,
        "isolation": format!("{:?}", target.functions.isolation).to_lowercase(),
        "version": target.functions.version, "prewarmed": crate::sending::target::prewarmed(&plans),
        "connections": target.connections});
    let what = match target.target {
        TargetKind::Worker => "",
        TargetKind::Controller => "the controller at ",
    };
    let live = Live { plans: &plans, meta: &meta, arrivals, out, target, what, span_s };
    let (recorded, run) = match target.target {
        TargetKind::Worker => {
            let n = target.connections;
            live.run(Grpc::new(connect(&endpoint).await?, lean(&endpoint, n).await?)).await?
        }
        TargetKind::Controller => {
            let n = target.connections;
            let controller = ControllerGrpc::new(connect_controller(&endpoint).await?, lean(&endpoint, n).await?);
            let workers = target.wait_for_workers().await?;
            if let Some(w) = &workers
                && !target.quiet
            {
                println!("the controller has {} healthy worker(s): {}", w.len(), w.join(", "));
            }
            target_info["target"] = "controller".into();
            target_info["healthy_workers_at_start"] = json!(workers);
            live.run(controller).await?
        }
    };
    let info = RunInfo {
        wake_lateness_ns: run.wake_lateness_ns,
        realtime: run.realtime,
        warmup_s: target.warmup_s,
        run: info,
        target: target_info,
    };
    let summary = write_results(out, &recorded, &meta, info)?;
    print_written(out, &summary);
    Ok(summary)
}

fn print_written(out: &Path, summary: &Value) {
    results::print_table(summary);
    println!(
        "wrote {0}/invocations.csv, {0}/summary.json, {0}/latency_cdf.svg, {0}/overhead_over_time.svg, {0}/cold_starts_throughput.svg",
        out.display()
    );
}

/// A live run's inputs, whatever the transport.
struct Live<'a> {
    plans: &'a [Plan],
    meta: &'a [FunctionMeta],
    arrivals: Arc<Vec<Arrival>>,
    out: &'a Path,
    target: &'a TargetArgs,
    what: &'static str,
    span_s: f64,
}

impl Live<'_> {
    /// Registers, prewarms and replays the arrivals open-loop through `transport`.
    async fn run<T: Transport>(self, transport: T) -> anyhow::Result<(Recorded, crate::sending::live::Run)> {
        let (t, n, f) = (self.target, self.arrivals.len(), self.meta.len());
        register_all(&transport, self.plans).await?;
        println!(
            "sending {n} invocations of {f} functions over {:.1} s to {}{} ({:?} backend), open loop",
            self.span_s,
            self.what,
            t.endpoint(),
            t.functions.isolation
        );
        let mut recorder = Recorder::create(
            &self.out.join("invocations.csv"),
            self.meta,
            &t.functions.version,
            crate::sending::TID,
            n,
        )?;
        let progress = Progress::new(n as u64, t.quiet);
        let requests = requests(self.plans);
        let run = crate::sending::live::run(
            &transport,
            requests,
            self.arrivals,
            crate::sending::TID.into(),
            progress,
            &mut recorder,
        )
        .await?;
        Ok((recorder.finish()?, run))
    }
}
