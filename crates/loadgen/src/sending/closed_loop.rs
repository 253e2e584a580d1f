//! Closed-loop clients: each sends its next invocation as soon as the last one answered.

#![allow(clippy::disallowed_methods)] // client latency is wall-clock time by definition

use crate::sending::lean::LeanClient;
use hdrhistogram::Histogram;
use iluvatar_rpc as rpc;
use std::time::{Duration, Instant};

/// What the clients of one step measured, in nanoseconds.
pub struct StepResult {
    pub clients: usize,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
    pub overhead: Histogram<u64>,
    /// The worker's own time per invocation (queue to result), from the result's timings.
    pub worker: Histogram<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// One closed-loop client: calls until `stop`, recording from `record_from`.
async fn client_loop(
    client: &LeanClient,
    req: &rpc::InvokeRequest,
    record_from: Instant,
    stop: Instant,
) -> ClientResult {
    let (mut lat, mut ovh, mut wrk) = (histogram(), histogram(), histogram());
    let (mut errors, mut first_error) = (0u64, None);
    loop {
        let t0 = Instant::now();
        if t0 >= stop {
            break;
        }
        let r = client.invoke(req).await;
        let ns = t0.elapsed().as_nanos() as u64;
        if t0 < record_from {
            continue;
        }
        match r {
            Ok(resp) if resp.success => {
                let (fn_us, worker_us) = reported_us(&resp.json_result).unwrap_or((0, 0));
                lat.saturating_record(ns);
                ovh.saturating_record(ns.saturating_sub(fn_us * 1_000));
                wrk.saturating_record(worker_us * 1_000);
            }
            Ok(resp) => {
                errors += 1;
                first_error.get_or_insert(resp.json_result);
            }
            Err(status) => {
                errors += 1;
                first_error.get_or_insert(status.to_string());
            }
        }
    }
    (lat, ovh, wrk, errors, first_error)
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

/// The in-function and worker times reported in an invocation's result, in microseconds.
pub fn reported_us(json_result: &str) -> Option<(u64, u64)> {
    rpc::json_result::parse(json_result)?.function_and_total_us()
}

/// What one client measured: latency, overhead and worker histograms, errors, the first.
type ClientResult = (Histogram<u64>, Histogram<u64>, Histogram<u64>, u64, Option<String>);

/// Runs `clients` closed-loop clients for `duration` after `warmup` (not recorded). Each
/// client has its own connection ([`LeanClient`]); the clients are spread over as many
/// threads as there are cores (at most one per client), each thread a current-thread
/// runtime: a client's call, its connection's task and the answer's wake-up stay on one
/// thread, so the client adds no hand-off between threads to what it measures.
pub async fn run_step(
    endpoint: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    request: rpc::InvokeRequest,
) -> anyhow::Result<StepResult> {
    let start = Instant::now();
    let record_from = start + warmup;
    let stop = record_from + duration;
    let auth = crate::sending::connect::auth();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let groups = clients.min(cores).max(1);
    let mut threads = Vec::new();
    for g in 0..groups {
        // Clients g, g + groups, g + 2 * groups, ... run on thread g.
        let mine = (g..clients).step_by(groups).count();
        let (target, req, auth) = (endpoint.to_string(), request.clone(), auth.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new().name(format!("clients-{g}")).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let mut connected = Vec::new();
                for _ in 0..mine {
                    match LeanClient::connect(&target, &auth).await {
                        Ok(c) => connected.push(c),
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{e:#}")));
                            anyhow::bail!("clients of thread {g} could not connect to {target}");
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let loops: Vec<_> = connected
                    .into_iter()
                    .map(|client| {
                        let req = req.clone();
                        tokio::spawn(async move { client_loop(&client, &req, record_from, stop).await })
                    })
                    .collect();
                let mut results = Vec::new();
                for l in loops {
                    results.push(l.await?);
                }
                anyhow::Ok(results)
            })
        })?;
        // A refused connection fails the step here, before any load.
        ready_rx.await?.map_err(|e| anyhow::anyhow!("connecting to {endpoint}: {e}"))?;
        threads.push(thread);
    }
    let results = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        for t in threads {
            all.extend(t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??);
        }
        anyhow::Ok::<Vec<ClientResult>>(all)
    })
    .await??;
    let mut result = StepResult {
        clients,
        elapsed: duration,
        latency: histogram(),
        overhead: histogram(),
        worker: histogram(),
        errors: 0,
        first_error: None,
    };
    for (lat, ovh, wrk, errors, first_error) in results {
        result.latency.add(&lat)?;
        result.overhead.add(&ovh)?;
        result.worker.add(&wrk)?;
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    result.elapsed = Instant::now().saturating_duration_since(record_from).min(duration + Duration::from_secs(60));
    Ok(result)
}
