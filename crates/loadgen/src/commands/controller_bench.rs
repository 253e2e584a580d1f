//! The controller benchmark: the latency the controller adds to an invocation. Starts a
//! controller and a sim worker that registers with it, registers a zero-duration function,
//! and runs closed-loop clients through the controller and, for comparison, straight to
//! the worker. Prints a table and writes JSON.

#![allow(clippy::disallowed_methods)] // client latency is wall-clock time by definition

use crate::results::report::{context, percentiles_us};
use crate::spawn::{SpawnedDaemon, SpawnedWorker, sibling_binary};
use anyhow::bail;
use hdrhistogram::Histogram;
use iluvatar_rpc as rpc;
use iluvatar_rpc::iluvatar_controller_client::IluvatarControllerClient;
use iluvatar_rpc::iluvatar_worker_client::IluvatarWorkerClient;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Closed-loop client counts, one step each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Measured seconds per step (and as much again straight to the worker).
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Unrecorded seconds before each step.
    #[arg(long, default_value_t = 1.0)]
    warmup_s: f64,
    /// The controller binary (default: beside this one).
    #[arg(long)]
    controller_bin: Option<PathBuf>,
    /// The worker binary (default: beside this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Threads of the controller and of the worker; 0 means the number of cores.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "results/controller_bench.json")]
    out: PathBuf,
}

const FUNCTION: &str = "bench-zero";

/// The controller started for the benchmark, in its own directory; stopped (SIGTERM) and
/// its directory removed on drop.
fn request() -> rpc::InvokeRequest {
    rpc::InvokeRequest {
        function_name: FUNCTION.into(),
        function_version: "1".into(),
        json_args: "{}".into(),
        transaction_id: "bench".into(),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let controller_bin = match &args.controller_bin {
        Some(b) => b.clone(),
        None => sibling_binary("iluvatar_controller")?,
    };
    let controller = SpawnedDaemon::start_daemon(
        &controller_bin,
        "controller",
        json!({"http": {"enabled": false}, "log_level": "warn", "threads": args.threads}),
    )?;
    let endpoint = controller.endpoint();
    let worker = SpawnedWorker::start(
        args.worker_bin.clone(),
        json!({"name": "bench-worker", "http": {"enabled": false}, "log_level": "warn", "threads": args.threads,
               "isolation": {"backends": [{"type": "sim"}]},
               "controller": {"address": "127.0.0.1", "port": controller.port, "retry_ms": 50}}),
    )?;
    let worker_endpoint = format!("http://127.0.0.1:{}", worker.port);
    prepare(&endpoint).await?;
    let (warmup, duration) = (Duration::from_secs_f64(args.warmup_s), Duration::from_secs_f64(args.duration_s));
    println!("controller benchmark: warm invokes of a zero-duration sim function, gRPC on loopback");
    println!("added = client latency through the controller - the controller's call to the worker");
    println!(
        "{:>7} {:>9} {:>6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11} {:>11}",
        "clients",
        "requests",
        "errors",
        "invoc/s",
        "added p50",
        "added p99",
        "ctrl p50",
        "ctrl p99",
        "direct p50",
        "via p50"
    );
    let mut steps = Vec::new();
    for &n in &args.clients {
        let via = closed_loop(&endpoint, true, n, warmup, duration).await?;
        let direct = closed_loop(&worker_endpoint, false, n, warmup, duration).await?;
        if via.latency.is_empty() {
            bail!("no successful invocation with {n} clients; first error: {:?}", via.first_error);
        }
        let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let rate = via.latency.len() as f64 / duration.as_secs_f64();
        println!(
            "{:>7} {:>9} {:>6} {:>9.0} {:>8.1}us {:>8.1}us {:>8.1}us {:>8.1}us {:>9.1}us {:>9.1}us",
            n,
            via.latency.len(),
            via.errors,
            rate,
            us(&via.added, 0.5),
            us(&via.added, 0.99),
            us(&via.controller, 0.5),
            us(&via.controller, 0.99),
            us(&direct.latency, 0.5),
            us(&via.latency, 0.5),
        );
        steps.push(json!({
            "clients": n,
            "requests": via.latency.len(),
            "errors": via.errors,
            "first_error": via.first_error,
            "invocations_per_s": rate,
            "added_us": percentiles_us(&via.added),
            "controller_us": percentiles_us(&via.controller),
            "latency_via_controller_us": percentiles_us(&via.latency),
            "latency_direct_us": percentiles_us(&direct.latency),
            "direct_requests": direct.latency.len(),
            "direct_errors": direct.errors,
        }));
    }
    println!("ctrl = controller_us in the result's timings: the controller's own time, request to answer,");
    println!("minus its call to the worker; direct/via = client latency straight to the worker / through it.");
    let mut report = context();
    report["benchmark"] = "controller".into();
    report["threads"] = args.threads.into();
    report["duration_s"] = args.duration_s.into();
    report["warmup_s"] = args.warmup_s.into();
    report["steps"] = steps.into();
    if let Some(d) = args.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", args.out.display());
    drop((worker, controller));
    Ok(())
}

/// Registers the function through the controller and waits until an invocation succeeds
/// (the worker has registered and been synced).
async fn prepare(endpoint: &str) -> anyhow::Result<()> {
    let mut c = IluvatarControllerClient::connect(endpoint.to_string()).await?;
    let r = c.register(crate::commands::control_plane::zero_function(FUNCTION)).await?.into_inner();
    if !r.success {
        bail!("registering {FUNCTION}: {}", r.error);
    }
    let mut last = String::new();
    for _ in 0..200 {
        let r = c.invoke(request()).await?.into_inner();
        if r.success {
            return Ok(());
        }
        last = r.json_result;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no invocation succeeded through the controller within 10 s: {last}")
}

struct Step {
    latency: Histogram<u64>,
    added: Histogram<u64>,
    controller: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Default for Step {
    fn default() -> Self {
        // Nanoseconds up to 100 s, 3 significant digits.
        let h = || Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds");
        Step { latency: h(), added: h(), controller: h(), errors: 0, first_error: None }
    }
}

/// `clients` closed-loop clients, each on its own connection, for warm-up then duration.
async fn closed_loop(
    endpoint: &str,
    via: bool,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Step> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let channel =
            tonic::transport::Endpoint::from_shared(endpoint.to_string())?.tcp_nodelay(true).connect().await?;
        tasks.push(tokio::spawn(client_loop(channel, via, warmup, duration)));
    }
    let mut total = Step::default();
    for t in tasks {
        let s = t.await??;
        total.latency.add(&s.latency)?;
        total.added.add(&s.added)?;
        total.controller.add(&s.controller)?;
        total.errors += s.errors;
        total.first_error = total.first_error.or(s.first_error);
    }
    Ok(total)
}

async fn client_loop(
    channel: tonic::transport::Channel,
    via: bool,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Step> {
    let mut to_controller = IluvatarControllerClient::new(channel.clone());
    let mut to_worker = IluvatarWorkerClient::new(channel);
    let mut step = Step::default();
    let clock = Instant::now();
    loop {
        let at = clock.elapsed();
        if at >= warmup + duration {
            return Ok(step);
        }
        let sw = Instant::now();
        let result = if via { to_controller.invoke(request()).await } else { to_worker.invoke(request()).await };
        let latency = sw.elapsed().as_nanos() as u64;
        if at < warmup {
            continue;
        }
        let r = match result {
            Ok(r) if r.get_ref().success => r.into_inner(),
            Ok(r) => {
                step.errors += 1;
                step.first_error.get_or_insert(r.into_inner().json_result);
                continue;
            }
            Err(s) => {
                step.errors += 1;
                step.first_error.get_or_insert(s.to_string());
                continue;
            }
        };
        step.latency.record(latency)?;
        if via {
            let t = rpc::json_result::parse(&r.json_result).and_then(|v| v.timings).unwrap_or_default();
            let (ctrl, rpc_us) = (t.controller_us.unwrap_or(0.0) as u64, t.worker_rpc_us.unwrap_or(0.0) as u64);
            step.controller.record(ctrl * 1000)?;
            step.added.record(latency.saturating_sub(rpc_us * 1000))?;
        }
    }
}
