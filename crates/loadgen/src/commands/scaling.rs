//! `scaling`: closed-loop clients stepping from --start to --end, --duration-s each;
//! throughput and latency per step.

use crate::commands::replay::functions_of;
use crate::results::plots::{Chart, Series};
use crate::results::report::{context, percentiles_us};
use crate::sending::closed_loop::run_step;
use crate::sending::connect::{connect, lean};
use crate::sending::target::{Endpoint, FunctionArgs, Setup, requests};
use crate::sending::transport::{Grpc, register_all};
use anyhow::bail;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ScalingArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    #[command(flatten)]
    pub functions: FunctionArgs,
    /// The function's metadata (the first function is used); or use --function.
    #[arg(long, help_heading = "Workload")]
    pub metadata: Option<PathBuf>,
    /// The function as NAME:COLD_MS:WARM_MS:MEM_MB.
    #[arg(long = "function", help_heading = "Workload")]
    pub function: Vec<String>,
    /// Closed-loop clients of the first step.
    #[arg(long, default_value_t = 1, help_heading = "Workload")]
    pub start: usize,
    /// Closed-loop clients of the last step.
    #[arg(long, default_value_t = 8, help_heading = "Workload")]
    pub end: usize,
    /// Clients added from one step to the next.
    #[arg(long, default_value_t = 1, help_heading = "Workload")]
    pub step: usize,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 10.0, help_heading = "Workload")]
    pub duration_s: f64,
    /// Unrecorded seconds before each step.
    #[arg(long, default_value_t = 1.0, help_heading = "Workload")]
    pub warmup_s: f64,
    /// The results folder (new or empty; see --force): scaling.json, throughput.svg and
    /// latency.svg.
    #[arg(long, default_value = "results/scaling", help_heading = "Results")]
    pub out: PathBuf,
    #[arg(long, help = crate::results::out_dir::FORCE_HELP, help_heading = "Results")]
    pub force: bool,
}

pub async fn run(args: ScalingArgs) -> anyhow::Result<()> {
    if args.start == 0 || args.end < args.start || args.step == 0 {
        bail!("--start must be at least 1, --end at least --start, --step at least 1");
    }
    let meta = functions_of(args.metadata.as_deref(), &args.function)?;
    let plans = args.functions.plans(Setup::Live, &meta[..1])?;
    crate::results::out_dir::prepare(&args.out, args.force, &["scaling.json", "throughput.svg", "latency.svg"])?;
    let endpoint = args.endpoint.url();
    let grpc = Grpc::new(connect(&endpoint).await?, lean(&endpoint, 1).await?);
    register_all(&grpc, &plans).await?;
    let request = requests(&plans).remove(0);
    println!(
        "scaling {}: closed-loop clients {}..{} step {}, {} s each",
        meta[0].name, args.start, args.end, args.step, args.duration_s
    );
    println!(
        "{:>7} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "clients", "requests", "errors", "invoc/s", "lat p50ms", "lat p99ms", "ovh p99ms"
    );
    let (mut steps, mut tput, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (warmup, duration) = (Duration::from_secs_f64(args.warmup_s), Duration::from_secs_f64(args.duration_s));
    for n in (args.start..=args.end).step_by(args.step) {
        let mut req = request.clone();
        req.transaction_id = format!("scaling-{n}");
        let r = run_step(&endpoint, n, warmup, duration, req).await?;
        let rate = r.latency.len() as f64 / r.elapsed.as_secs_f64();
        let ms = |p: f64, h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(p) as f64 / 1e6;
        println!(
            "{:>7} {:>9} {:>7} {:>10.0} {:>10.2} {:>10.2} {:>10.2}",
            n,
            r.latency.len(),
            r.errors,
            rate,
            ms(0.5, &r.latency),
            ms(0.99, &r.latency),
            ms(0.99, &r.overhead)
        );
        tput.push((n as f64, rate));
        p50.push((n as f64, ms(0.5, &r.latency)));
        p99.push((n as f64, ms(0.99, &r.latency)));
        steps.push(json!({"clients": n, "requests": r.latency.len(), "errors": r.errors, "first_error": r.first_error,
            "seconds": r.elapsed.as_secs_f64(), "invocations_per_s": rate, "latency_us": percentiles_us(&r.latency),
            "overhead_us": percentiles_us(&r.overhead), "worker_time_us": percentiles_us(&r.worker)}));
    }
    let mut report = context();
    report["kind"] = "scaling".into();
    report["function"] = json!({"name": meta[0].name, "cold_dur_ms": meta[0].cold_dur_ms, "warm_dur_ms": meta[0].warm_dur_ms,
        "mem_mb": meta[0].mem_mb, "isolation": format!("{:?}", args.functions.isolation).to_lowercase()});
    report["steps"] = steps.into();
    std::fs::write(args.out.join("scaling.json"), serde_json::to_vec_pretty(&report)?)?;
    let chart = |title: &str, y: &str, series| {
        Chart {
            title: title.into(),
            x_label: "closed-loop clients".into(),
            y_label: y.into(),
            series,
            ..Default::default()
        }
        .render()
    };
    std::fs::write(
        args.out.join("throughput.svg"),
        chart("Throughput per client count", "invocations/s", vec![Series::line("invocations/s", tput)]),
    )?;
    std::fs::write(
        args.out.join("latency.svg"),
        chart("Client latency per client count", "ms", vec![Series::line("p50", p50), Series::line("p99", p99)]),
    )?;
    println!("wrote {0}/scaling.json, {0}/throughput.svg, {0}/latency.svg", args.out.display());
    Ok(())
}
