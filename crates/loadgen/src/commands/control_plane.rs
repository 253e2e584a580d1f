//! The control-plane benchmark: the floor every real backend adds to.

use crate::results::report::{context, cpu_seconds, percentiles_us};
use crate::sending::closed_loop::run_step;
use crate::spawn::SpawnedWorker;
use anyhow::{Context, bail};
use iluvatar_rpc as rpc;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Worker address; without --port a worker is started for the run.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port of a running worker (with the sim backend). Unset: start one.
    #[arg(long)]
    port: Option<u16>,
    /// The worker binary to start (default: beside this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Threads of the started worker; 0 means the number of cores.
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
    /// Closed-loop client counts, one step each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Unrecorded seconds before each step.
    #[arg(long, default_value_t = 1.0)]
    warmup_s: f64,
    /// Keep every CPU from halting while measuring: a spinning thread of the lowest
    /// priority per CPU (see `sending::awake`); its CPU time is left out of the load
    /// generator's.
    #[arg(long)]
    keep_cpus_awake: bool,
    /// Where to write the JSON report.
    #[arg(long, default_value = "results/control_plane.json")]
    out: PathBuf,
}

const FUNCTION: &str = "cp-zero";

pub async fn run(args: Args) -> anyhow::Result<()> {
    let spawned = match args.port {
        Some(_) => None,
        None => Some(SpawnedWorker::start(
            args.worker_bin.clone(),
            json!({
                "http": {"enabled": false},
                "log_level": "warn",
                "isolation": {"backends": [{"type": "sim"}]},
                "threads": args.worker_threads,
            }),
        )?),
    };
    let port = args.port.or(spawned.as_ref().map(|s| s.port)).context("no port")?;
    let endpoint = format!("http://{}:{port}", args.host);
    prepare(&endpoint).await?;
    let awake = if args.keep_cpus_awake { Some(crate::sending::awake::KeepAwake::start()?) } else { None };
    let spun = || awake.as_ref().map(|a| a.cpu_seconds()).unwrap_or(0.0);
    let request = rpc::InvokeRequest {
        function_name: FUNCTION.into(),
        function_version: "1".into(),
        json_args: "{}".into(),
        transaction_id: "bench".into(),
    };
    let (warmup, duration) = (Duration::from_secs_f64(args.warmup_s), Duration::from_secs_f64(args.duration_s));
    println!("control-plane benchmark: warm invokes of a zero-duration sim function, gRPC on loopback");
    println!(
        "{:>7} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "clients",
        "requests",
        "errors",
        "invoc/s",
        "ovh p50",
        "ovh p99",
        "ovh p999",
        "wkr p50",
        "gen cpu/k",
        "wkr cpu/k"
    );
    let mut steps = Vec::new();
    for &clients in &args.clients {
        let gen_cpu0 = cpu_seconds(std::process::id()) - spun();
        let wkr_cpu0 = spawned.as_ref().map(|s| cpu_seconds(s.pid()));
        let r = run_step(&endpoint, clients, warmup, duration, request.clone()).await?;
        let gen_cpu = cpu_seconds(std::process::id()) - spun() - gen_cpu0;
        let wkr_cpu = wkr_cpu0.map(|c0| cpu_seconds(spawned.as_ref().unwrap().pid()) - c0);
        let n = r.latency.len();
        if n == 0 {
            bail!("no successful invocation with {clients} clients; first error: {:?}", r.first_error);
        }
        let rate = n as f64 / r.elapsed.as_secs_f64();
        // CPU includes the warm-up, so it is per invocation over warm-up plus measurement.
        let total_invocations = rate * (args.warmup_s + r.elapsed.as_secs_f64());
        let per_k = |cpu: f64| cpu * 1000.0 / total_invocations * 1000.0;
        let us = |p: f64, h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "{:>7} {:>9} {:>7} {:>10.0} {:>7.1}us {:>7.1}us {:>7.1}us {:>7.1}us {:>8.1}ms {:>8}",
            clients,
            n,
            r.errors,
            rate,
            us(0.5, &r.overhead),
            us(0.99, &r.overhead),
            us(0.999, &r.overhead),
            us(0.5, &r.worker),
            per_k(gen_cpu),
            wkr_cpu.map(|c| format!("{:.1}ms", per_k(c))).unwrap_or_else(|| "-".into()),
        );
        steps.push(json!({
            "clients": clients,
            "requests": n,
            "errors": r.errors,
            "first_error": r.first_error,
            "seconds": r.elapsed.as_secs_f64(),
            "invocations_per_s": rate,
            "latency_us": percentiles_us(&r.latency),
            "overhead_us": percentiles_us(&r.overhead),
            "worker_time_us": percentiles_us(&r.worker),
            "loadgen_cpu_ms_per_1000": per_k(gen_cpu),
            "worker_cpu_ms_per_1000": wkr_cpu.map(per_k),
        }));
    }
    println!("ovh = client latency - in-function time (zero here); wkr = the worker's own time per invocation;");
    println!("cpu/k = CPU milliseconds per 1,000 invocations of the load generator and of the worker.");
    let mut report = context();
    report["benchmark"] = "control_plane".into();
    report["function"] = json!({"backend": "sim", "cold_dur_ms": 0, "warm_dur_ms": 0});
    report["warmup_s"] = args.warmup_s.into();
    report["keep_cpus_awake"] = args.keep_cpus_awake.into();
    report["steps"] = steps.into();
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// The registration of `name`, version 1: a sim function that takes no time, cold or warm.
pub fn zero_function(name: &str) -> rpc::RegisterRequest {
    rpc::RegisterRequest {
        function_name: name.into(),
        function_version: "1".into(),
        image_name: "sim".into(),
        memory: 16,
        cpus: 1,
        isolate: rpc::isolation::SIM,
        resource_timings_json: r#"{"cold_dur_ms": 0, "warm_dur_ms": 0}"#.into(),
        ..Default::default()
    }
}

/// Registers the zero-duration function and makes one container warm.
async fn prepare(endpoint: &str) -> anyhow::Result<()> {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())?
        .connect()
        .await
        .context("connecting to the worker")?;
    let mut c = rpc::auth::worker_client(channel, crate::sending::connect::auth());
    let r = c.register(zero_function(FUNCTION)).await?.into_inner();
    if !r.success {
        bail!("registering {FUNCTION}: {}", r.error);
    }
    let r = c
        .invoke(rpc::InvokeRequest {
            function_name: FUNCTION.into(),
            function_version: "1".into(),
            json_args: "{}".into(),
            transaction_id: "bench-warmup".into(),
        })
        .await?
        .into_inner();
    if !r.success {
        bail!("first invocation of {FUNCTION} failed: {}", r.json_result);
    }
    Ok(())
}
