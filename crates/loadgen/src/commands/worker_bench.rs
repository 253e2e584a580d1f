//! The worker benchmark on a real backend: cold starts, warm overhead with closed-loop
//! clients, open-loop overhead at a fixed rate, and the memory of an idle warm container.

#![allow(clippy::disallowed_methods)] // client latency is wall-clock time by definition

use crate::results::report::{context, percentiles_us};
use crate::sending::closed_loop::{histogram, run_step};
use crate::spawn::SpawnedWorker;
use anyhow::{Context, bail};
use iluvatar_rpc as rpc;
use iluvatar_rpc::iluvatar_worker_client::IluvatarWorkerClient;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(clap::Args)]
pub struct Args {
    /// The function's code folder (holding main.py).
    #[arg(long, default_value = "functions/hello")]
    code: PathBuf,
    /// An image to register instead of --code: a registry reference (pulled at the first
    /// registration; later ones find its blobs in the store), `oci:` or `oci-archive:`, e.g.
    /// built by `scripts/build-python-image.py --server http` (a function server of the
    /// reference platform's protocol).
    #[arg(long)]
    image: Option<String>,
    /// The registration's container_server with --image: which server the image runs when
    /// its entrypoint is not the agent.
    #[arg(long, default_value = "http", value_parser = ["http", "unix"])]
    container_server: String,
    /// Arguments of each invocation, as a JSON object.
    #[arg(long, default_value = r#"{"name": "bench"}"#)]
    json_args: String,
    /// Cold starts to measure (each the first call of a freshly registered version).
    #[arg(long, default_value_t = 200)]
    cold_starts: usize,
    /// Pause between cold starts (lets the worker restore its standby containers, as a
    /// workload that is not only cold starts would).
    #[arg(long, default_value_t = 100)]
    cold_gap_ms: u64,
    /// Closed-loop client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    clients: Vec<usize>,
    /// Measured seconds per closed-loop step.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Open-loop rate (invocations/s); 0 skips it.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Open-loop seconds.
    #[arg(long, default_value_t = 10.0)]
    rate_duration_s: f64,
    /// The worker binary to start (default: beside this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Standby containers the worker keeps for cold starts (0 = every cold start starts a
    /// container).
    #[arg(long, default_value_t = 2)]
    standby: usize,
    /// Threads of the started worker; 0 means the number of cores.
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
    /// The containers' seccomp profile: default, unconfined, or a profile file (to measure
    /// what the filter costs).
    #[arg(long, default_value = "default")]
    seccomp: String,
    /// Whether containers run in a user namespace (to measure what it costs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    user_namespace: bool,
    /// Keep every CPU from halting while measuring warm calls: a spinning thread of the
    /// lowest priority per CPU (see `sending::awake`).
    #[arg(long)]
    keep_cpus_awake: bool,
    /// The report (JSON), replaced if it exists.
    #[arg(long, default_value = "results/worker_bench.json")]
    out: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let server = rpc::container_server::parse(&args.container_server).unwrap_or_default();
    let image = match &args.image {
        Some(image) => image.clone(),
        None => {
            let code =
                std::fs::canonicalize(&args.code).with_context(|| format!("{} not found", args.code.display()))?;
            format!("code:{}", code.display())
        }
    };
    let config = json!({
        "http": {"enabled": false},
        "log_level": "warn",
        "isolation": {"backends": [{"type": "runtime", "standby": args.standby, "seccomp": args.seccomp,
            "user_namespace": args.user_namespace}]},
        "container_pool": {"memory_mb": 8192},
        "threads": args.worker_threads,
    });
    let worker = SpawnedWorker::start(args.worker_bin.clone(), config)?;
    let endpoint = format!("http://127.0.0.1:{}", worker.port);
    let mut c = IluvatarWorkerClient::new(Channel::from_shared(endpoint.clone())?.connect().await?);
    let mut report = context();
    report["benchmark"] = "worker_runtime".into();
    report["function"] = json!({"image": image, "container_server": server, "args": args.json_args});
    report["seccomp"] = json!(args.seccomp);
    report["user_namespace"] = json!(args.user_namespace);
    // A code function always runs our agent; an image says what it runs (its entrypoint).
    let serves = match &args.image {
        Some(_) => format!(" (container_server {}, if its entrypoint is not our agent)", args.container_server),
        None => String::new(),
    };
    println!("worker benchmark, runtime backend, function {image}{serves}");

    report["cold_start"] = cold_starts(&mut c, &image, server, &args).await?;
    let request = rpc::InvokeRequest {
        function_name: "bench".into(),
        function_version: "warm".into(),
        json_args: args.json_args.clone(),
        transaction_id: "bench".into(),
    };
    register_served(&mut c, "bench", "warm", &image, 128, server).await?;
    let first = c.invoke(request.clone()).await?.into_inner();
    if !first.success {
        bail!("the warm-up invocation failed: {}", first.json_result);
    }
    report["idle_container_memory"] = idle_memory(worker.pid());
    report["keep_cpus_awake"] = args.keep_cpus_awake.into();
    let _awake = if args.keep_cpus_awake { Some(crate::sending::awake::KeepAwake::start()?) } else { None };
    println!("idle warm container: {}", report["idle_container_memory"]);

    println!(
        "{:>7} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9}",
        "clients", "requests", "errors", "invoc/s", "ovh p50", "ovh p99", "lat p99"
    );
    let mut steps = Vec::new();
    let duration = Duration::from_secs_f64(args.duration_s);
    for &n in &args.clients {
        let r = run_step(&endpoint, n, Duration::from_secs(1), duration, request.clone()).await?;
        let rate = r.latency.len() as f64 / r.elapsed.as_secs_f64();
        let us = |p: f64, h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "{:>7} {:>9} {:>7} {:>10.0} {:>7.1}us {:>7.1}us {:>7.1}us",
            n,
            r.latency.len(),
            r.errors,
            rate,
            us(0.5, &r.overhead),
            us(0.99, &r.overhead),
            us(0.99, &r.latency)
        );
        steps.push(json!({"clients": n, "requests": r.latency.len(), "errors": r.errors, "first_error": r.first_error,
            "invocations_per_s": rate, "latency_us": percentiles_us(&r.latency),
            "overhead_us": percentiles_us(&r.overhead), "worker_time_us": percentiles_us(&r.worker)}));
    }
    report["closed_loop"] = steps.into();

    if args.rate > 0.0 {
        let d = Duration::from_secs_f64(args.rate_duration_s);
        let r = crate::sending::open_loop::run(&endpoint, args.rate, d, 4, request.clone()).await?;
        let us = |p: f64, h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "open loop {:.0}/s: {} sent, {} errors, overhead p50 {:.1}us p99 {:.1}us, send lateness p99 {:.1}us",
            args.rate,
            r.sent,
            r.errors,
            us(0.5, &r.overhead),
            us(0.99, &r.overhead),
            us(0.99, &r.lateness)
        );
        report["open_loop"] = json!({"rate": args.rate, "seconds": args.rate_duration_s, "sent": r.sent,
            "errors": r.errors, "first_error": r.first_error, "latency_us": percentiles_us(&r.latency),
            "overhead_us": percentiles_us(&r.overhead), "send_lateness_us": percentiles_us(&r.lateness)});
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Registers the code folder or image `image` as `name`-`version` on the runtime backend.
pub(crate) async fn register_runtime(
    c: &mut IluvatarWorkerClient<Channel>,
    name: &str,
    version: &str,
    image: &str,
    memory_mb: i64,
) -> anyhow::Result<()> {
    register_served(c, name, version, image, memory_mb, rpc::container_server::HTTP).await
}

/// [`register_runtime`] with the registration's `container_server`.
async fn register_served(
    c: &mut IluvatarWorkerClient<Channel>,
    name: &str,
    version: &str,
    image: &str,
    memory_mb: i64,
    container_server: u32,
) -> anyhow::Result<()> {
    let r = c
        .register(rpc::RegisterRequest {
            function_name: name.into(),
            function_version: version.into(),
            image_name: image.into(),
            memory: memory_mb,
            cpus: 1,
            isolate: rpc::isolation::RUNTIME,
            language: rpc::LanguageRuntime::Python3 as i32,
            container_server,
            ..Default::default()
        })
        .await?
        .into_inner();
    if !r.success {
        bail!("registering {name}-{version}: {}", r.error);
    }
    Ok(())
}

/// Registers a fresh version and times its first invocation, `n` times; the containers
/// are removed between runs so memory stays free.
async fn cold_starts(
    c: &mut IluvatarWorkerClient<Channel>,
    image: &str,
    server: u32,
    args: &Args,
) -> anyhow::Result<Value> {
    let (mut lat, mut worker_cold, mut registration) = (histogram(), histogram(), histogram());
    let (mut failed, mut not_cold, mut first_error, mut first_registration_us) = (0, 0, None, 0.0);
    for i in 0..args.cold_starts {
        let version = format!("cold{i}");
        // The first registration of an image pulls and unpacks it; later ones find it ready.
        let t0 = Instant::now();
        register_served(c, "bench", &version, image, 128, server).await?;
        let ns = t0.elapsed().as_nanos() as u64;
        if i == 0 {
            first_registration_us = ns as f64 / 1000.0;
        } else {
            registration.saturating_record(ns);
        }
        let req = rpc::InvokeRequest {
            function_name: "bench".into(),
            function_version: version,
            json_args: args.json_args.clone(),
            transaction_id: format!("cold-{i}"),
        };
        let t0 = Instant::now();
        let r = c.invoke(req).await?.into_inner();
        let ns = t0.elapsed().as_nanos() as u64;
        if !r.success {
            failed += 1;
            first_error.get_or_insert(r.json_result);
        } else if r.container_state != rpc::ContainerState::Cold as i32 {
            not_cold += 1;
        } else {
            lat.saturating_record(ns);
            let v = rpc::json_result::parse(&r.json_result);
            let cold_us = v.and_then(|v| v.timings?.cold_start_us).unwrap_or(0.0) as u64;
            worker_cold.saturating_record(cold_us * 1000);
        }
        c.clean(rpc::CleanRequest::default()).await?;
        tokio::time::sleep(Duration::from_millis(args.cold_gap_ms)).await;
    }
    let q = |p: f64| lat.value_at_quantile(p) as f64 / 1e6;
    println!(
        "cold start (registration done -> first result): {} ok, {} failed: p50 {:.1} ms, p99 {:.1} ms (container start p50 {:.1} ms)",
        lat.len(),
        failed,
        q(0.5),
        q(0.99),
        worker_cold.value_at_quantile(0.5) as f64 / 1e6
    );
    let r = |p: f64| registration.value_at_quantile(p) as f64 / 1e6;
    println!(
        "registration: first {:.1} ms, later ones p50 {:.1} ms, p99 {:.1} ms",
        first_registration_us / 1000.0,
        r(0.5),
        r(0.99)
    );
    Ok(
        json!({"attempts": args.cold_starts, "gap_ms": args.cold_gap_ms, "ok": lat.len(), "failed": failed, "not_cold": not_cold,
        "first_error": first_error, "latency_us": percentiles_us(&lat), "container_start_us": percentiles_us(&worker_cold),
        "first_registration_us": first_registration_us, "registration_us": percentiles_us(&registration)}),
    )
}

/// RSS of the worker's container processes (its children) and their cgroups' usage.
fn idle_memory(worker_pid: u32) -> Value {
    let mut rss_kb = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        if field("PPid:").and_then(|p| p.parse::<u32>().ok()) == Some(worker_pid)
            && let Some(kb) = field("VmRSS:").and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            rss_kb.push(kb);
        }
    }
    json!({"containers": rss_kb.len(), "agent_rss_kb": rss_kb})
}
