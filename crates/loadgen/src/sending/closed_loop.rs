//! Closed-loop clients: each sends its next invocation as soon as the last one answered.

#![allow(clippy::disallowed_methods)] // client latency is wall-clock time by definition

use hdrhistogram::Histogram;
use iluvatar_rpc as rpc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

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

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

/// The in-function and worker times reported in an invocation's result, in microseconds.
pub fn reported_us(json_result: &str) -> Option<(u64, u64)> {
    rpc::json_result::parse(json_result)?.function_and_total_us()
}

/// Runs `clients` closed-loop clients for `duration` after `warmup` (not recorded).
pub async fn run_step(
    endpoint: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    request: rpc::InvokeRequest,
) -> anyhow::Result<StepResult> {
    let mut tasks = Vec::new();
    let start = Instant::now();
    let record_from = start + warmup;
    let stop = record_from + duration;
    for _ in 0..clients {
        let channel = Channel::from_shared(endpoint.to_string())?.tcp_nodelay(true).connect().await?;
        let mut client = rpc::auth::worker_client(channel, crate::sending::connect::auth());
        let req = request.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut ovh, mut wrk) = (histogram(), histogram(), histogram());
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                let t0 = Instant::now();
                if t0 >= stop {
                    break;
                }
                let r = client.invoke(req.clone()).await;
                let ns = t0.elapsed().as_nanos() as u64;
                if t0 < record_from {
                    continue;
                }
                match r {
                    Ok(resp) if resp.get_ref().success => {
                        let (fn_us, worker_us) = reported_us(&resp.get_ref().json_result).unwrap_or((0, 0));
                        lat.saturating_record(ns);
                        ovh.saturating_record(ns.saturating_sub(fn_us * 1_000));
                        wrk.saturating_record(worker_us * 1_000);
                    }
                    Ok(resp) => {
                        errors += 1;
                        first_error.get_or_insert(resp.into_inner().json_result);
                    }
                    Err(status) => {
                        errors += 1;
                        first_error.get_or_insert(status.to_string());
                    }
                }
            }
            (lat, ovh, wrk, errors, first_error)
        }));
    }
    let mut result = StepResult {
        clients,
        elapsed: duration,
        latency: histogram(),
        overhead: histogram(),
        worker: histogram(),
        errors: 0,
        first_error: None,
    };
    for t in tasks {
        let (lat, ovh, wrk, errors, first_error) = t.await?;
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
