//! The soak test: a live worker on real containers under a long mix of cold starts, warm
//! calls and faulty functions (raising, out of memory, past the invocation timeout). It
//! prints the calls answered and lost, the worker's memory and descriptors over time, and
//! what is left on the host (containers, cgroups, mounts, processes) after it stops.

#![allow(clippy::disallowed_methods)] // a soak is timed in wall-clock time by definition

use crate::spawn::SpawnedWorker;
use anyhow::Context;
use iluvatar_rpc as rpc;
use iluvatar_rpc::iluvatar_worker_client::IluvatarWorkerClient;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(clap::Args)]
pub struct Args {
    /// Length of the soak.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Minutes of warm-up before the memory baseline is taken.
    #[arg(long, default_value_t = 2.0)]
    warmup_minutes: f64,
    /// Functions (copies of `synthetic`); a few are hot, the rest are cold-start fodder.
    #[arg(long, default_value_t = 40)]
    functions: usize,
    /// Closed-loop clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// The worker's memory pool (each function takes 64 MB): small enough to evict.
    #[arg(long, default_value_t = 768)]
    memory_mb: u64,
    /// Percent of calls that ask for a fault (raise, out of memory, past the timeout).
    #[arg(long, default_value_t = 5)]
    fault_percent: u64,
    /// The function's code folder.
    #[arg(long, default_value = "functions/synthetic")]
    code: PathBuf,
    /// The worker binary to start (default: beside this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// The report (JSON), replaced if it exists.
    #[arg(long, default_value = "results/soak.json")]
    out: PathBuf,
}

/// What a call asks for, by a draw in 0..100.
fn call_for(draw: u64, x: u64, args: &Args) -> (String, &'static str) {
    let hot = 4.min(args.functions);
    let f = if draw.is_multiple_of(4) { hot + (x as usize % (args.functions - hot).max(1)) } else { x as usize % hot };
    let body = if draw < args.fault_percent {
        match x % 3 {
            0 => r#"{"fail": true}"#,
            1 => r#"{"memory_mb": 200}"#,
            _ => r#"{"sleep_ms": 3000}"#,
        }
    } else {
        r#"{"compute_ms": 2}"#
    };
    (format!("soak{}", f.min(args.functions - 1)), body)
}

/// Outcome kind → count; `lost` counts calls with no answer (transport error, or none
/// within a minute).
type Tally = BTreeMap<String, u64>;

async fn client_loop(mut c: IluvatarWorkerClient<Channel>, seed: u64, args: Arc<Args>, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::new();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (name, body) = call_for(x % 100, x >> 8, &args);
        let req = rpc::InvokeRequest {
            function_name: name,
            function_version: "1".into(),
            json_args: body.into(),
            transaction_id: format!("soak-{x:x}"),
        };
        let kind = match tokio::time::timeout(Duration::from_secs(60), c.invoke(req)).await {
            Ok(Ok(r)) if r.get_ref().success => "ok".to_string(),
            Ok(Ok(r)) => rpc::json_result::parse(&r.get_ref().json_result)
                .and_then(|v| v.kind)
                .unwrap_or_else(|| "unreadable".into()),
            Ok(Err(_)) | Err(_) => "lost".to_string(),
        };
        *tally.entry(kind).or_default() += 1;
    }
    tally
}

/// Zombie children of the worker and of its container launchers (whose pids it writes to
/// `state_dir/runtime/launcher.pids`): each would hold a pid and a cgroup for ever.
fn zombies(pid: u32, state_dir: &Path) -> usize {
    let pids = std::fs::read_to_string(state_dir.join("runtime").join("launcher.pids")).unwrap_or_default();
    let mut parents: Vec<u32> = pids.lines().filter_map(|l| l.trim().parse().ok()).collect();
    parents.push(pid);
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let mut f = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace()).into_iter().flatten();
            f.next() == Some("Z") && f.next().and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| parents.contains(&p))
        })
        .count()
}

/// One reading of the worker process: resident memory (kB), open descriptors, threads, and
/// zombie children of it and its launchers.
fn sample(pid: u32, state_dir: &Path) -> Value {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| -> u64 {
        status.lines().find_map(|l| l.strip_prefix(k)?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    json!({"rss_kb": field("VmRSS:"), "fds": fds, "threads": field("Threads:"), "zombies": zombies(pid, state_dir)})
}

/// What a stopped worker left on the host, under its state dir and cgroup parent.
fn leftovers(state_dir: &Path) -> Value {
    let runtime = state_dir.join("runtime");
    let count = |d: &str| std::fs::read_dir(runtime.join(d)).map(|r| r.count()).unwrap_or(0);
    let parent = std::fs::read_to_string(runtime.join("cgroup_parent")).unwrap_or_default().trim().to_string();
    let mut cgroups = 0;
    if !parent.is_empty() {
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        roots.extend(std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten().map(|e| e.path()));
        for r in roots {
            cgroups += std::fs::read_dir(r.join(&parent))
                .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
                .unwrap_or(0);
        }
    }
    let dir = state_dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .count();
    let needle = format!(":/{parent}/");
    let processes = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            !parent.is_empty()
                && std::fs::read_to_string(e.path().join("cgroup"))
                    .is_ok_and(|c| c.lines().any(|l| l.contains(&needle)))
        })
        .count();
    json!({
        "containers": count("root"),
        "bundles": count("bundles"),
        "sockets": count("sockets"),
        "cgroups": cgroups,
        "mounts": mounts,
        "processes": processes,
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let code = std::fs::canonicalize(&args.code).with_context(|| format!("{} not found", args.code.display()))?;
    anyhow::ensure!(args.functions >= 2, "--functions must be at least 2");
    let config = json!({
        "http": {"enabled": false},
        "log_level": "warn",
        "isolation": {"backends": [{"type": "runtime", "standby": 2}]},
        "container_pool": {"memory_mb": args.memory_mb, "keep_alive": {"type": "fixed", "ttl_ms": 5000}},
        "invoker": {"invocation_timeout_ms": 2000, "memory_wait_ms": 5000},
        "shutdown": {"grace_ms": 3000},
    });
    let mut worker = SpawnedWorker::start(args.worker_bin.clone(), config)?;
    let pid = worker.pid();
    let state_dir = worker.dir.join("state");
    let endpoint = format!("http://127.0.0.1:{}", worker.port);
    let c = IluvatarWorkerClient::new(Channel::from_shared(endpoint)?.connect().await?);
    let image = format!("code:{}", code.display());
    for i in 0..args.functions {
        crate::commands::worker_bench::register_runtime(&mut c.clone(), &format!("soak{i}"), "1", &image, 64).await?;
    }
    let args = Arc::new(args);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..args.clients)
        .map(|i| tokio::spawn(client_loop(c.clone(), i as u64 + 1, args.clone(), stop.clone())))
        .collect();
    let start = Instant::now();
    let length = Duration::from_secs_f64(args.minutes * 60.0);
    let warmup = Duration::from_secs_f64(args.warmup_minutes * 60.0).min(length);
    let mut samples = vec![json!({"s": 0, "worker": sample(pid, &state_dir)})];
    let mut baseline = None;
    while start.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(10).min(length.saturating_sub(start.elapsed()))).await;
        let s = sample(pid, &state_dir);
        if baseline.is_none() && start.elapsed() >= warmup {
            baseline = Some(s.clone());
        }
        eprintln!("soak {:>6.0} s: worker {s}", start.elapsed().as_secs_f64());
        samples.push(json!({"s": start.elapsed().as_secs(), "worker": s}));
    }
    let end = sample(pid, &state_dir);
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::new();
    for t in clients {
        for (k, n) in t.await? {
            *tally.entry(k).or_default() += n;
        }
    }
    drop(c);
    // Stop the worker (SIGTERM) and look at what it left.
    let t0 = Instant::now();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let status = worker.child.wait()?;
    let stop_s = t0.elapsed().as_secs_f64();
    let left = leftovers(&state_dir);
    let baseline = baseline.unwrap_or_else(|| samples[0]["worker"].clone());
    let rss = |v: &Value| v["rss_kb"].as_f64().unwrap_or(0.0);
    let growth = if rss(&baseline) > 0.0 { (rss(&end) - rss(&baseline)) * 100.0 / rss(&baseline) } else { 0.0 };
    let sent: u64 = tally.values().sum();
    let lost = tally.get("lost").copied().unwrap_or(0);
    let report = json!({
        "minutes": args.minutes,
        "sent": sent,
        "answered": sent - lost,
        "lost": lost,
        "outcomes": tally,
        "worker_at_start": samples[0]["worker"],
        "worker_after_warmup": baseline,
        "worker_at_end": end,
        "rss_growth_after_warmup_pct": growth,
        "stop_s": stop_s,
        "stopped_cleanly": status.success(),
        "left_after_stop": left,
        "samples": samples,
        "context": crate::results::report::context(),
    });
    println!(
        "soak {:.1} min: {sent} calls, {} answered, {lost} lost; outcomes {}",
        args.minutes,
        sent - lost,
        serde_json::to_string(&report["outcomes"])?
    );
    println!(
        "worker RSS {} kB at start, {} kB after warm-up, {} kB at end ({growth:+.1}%); fds {} -> {} -> {}",
        rss(&samples[0]["worker"]),
        rss(&baseline),
        rss(&end),
        samples[0]["worker"]["fds"],
        baseline["fds"],
        end["fds"]
    );
    let most_zombies = samples.iter().filter_map(|s| s["worker"]["zombies"].as_u64()).max().unwrap_or(0);
    println!(
        "zombie children of the worker and its launchers: at most {most_zombies} in a sample, {} at the end",
        end["zombies"]
    );
    println!("stopped in {stop_s:.2} s ({status}); left after stop: {left}");
    if let Some(d) = args.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
