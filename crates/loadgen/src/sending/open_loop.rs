//! Open-loop load: invocations are sent on a fixed schedule whatever the answers, and
//! latency is measured from the scheduled time, so a stall cannot hide (no coordinated
//! omission).

#![allow(clippy::disallowed_methods)] // client latency is wall-clock time by definition

use crate::sending::closed_loop::histogram;
use hdrhistogram::Histogram;
use iluvatar_rpc as rpc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub struct OpenLoopResult {
    pub sent: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Histogram<u64>,
    pub overhead: Histogram<u64>,
    /// How late each request was sent against its schedule (taken in its task, just
    /// before the call: the hand-off to the runtime counts).
    pub lateness: Histogram<u64>,
}

/// Sends `rate` invocations per second for `duration`, over `connections` connections.
pub async fn run(
    endpoint: &str,
    rate: f64,
    duration: Duration,
    connections: usize,
    request: rpc::InvokeRequest,
) -> anyhow::Result<OpenLoopResult> {
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        let ch = Channel::from_shared(endpoint.to_string())?.tcp_nodelay(true).connect().await?;
        clients.push(rpc::auth::worker_client(ch, crate::sending::connect::auth()));
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * duration.as_secs_f64()) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = tokio::runtime::Handle::current();
    // The schedule is kept by a dedicated thread with fine timer slack (tokio's timers tick
    // in whole milliseconds, which would make every request up to 1 ms late), at a
    // real-time priority when allowed; each request is handed over a lead ahead of its time
    // and its task waits out the rest (see `lead`).
    let lead = lead(interval);
    let scheduler = std::thread::spawn(move || {
        set_fine_timer_slack();
        crate::sending::live::set_realtime_priority();
        let start = Instant::now() + Duration::from_millis(50);
        for i in 0..total {
            let scheduled = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if scheduled > now + lead {
                std::thread::sleep(scheduled - lead - now);
            }
            let mut client = clients[i as usize % clients.len()].clone();
            let req = request.clone();
            let tx = tx.clone();
            handle.spawn(async move {
                spin_until(scheduled);
                let sent = Instant::now();
                let r = client.invoke(req).await;
                let ns = Instant::now().saturating_duration_since(scheduled).as_nanos() as u64;
                let late = sent.saturating_duration_since(scheduled).as_nanos() as u64;
                let _ = tx.send((ns, late, r.map(|r| r.into_inner())));
            });
        }
    });
    let mut out = OpenLoopResult {
        sent: total,
        errors: 0,
        first_error: None,
        latency: histogram(),
        overhead: histogram(),
        lateness: histogram(),
    };
    while let Some((ns, late, r)) = rx.recv().await {
        out.lateness.saturating_record(late);
        record(&mut out, ns, r);
    }
    tokio::task::spawn_blocking(move || scheduler.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
    Ok(out)
}

/// The most an invocation is handed to the runtime ahead of its time. A thread sleeping on
/// an idle CPU of this kind of VM wakes 50-100 µs late (the vCPU halted; its wake-up goes
/// through the host), and so does the runtime thread a hand-off wakes: 0.15-0.25 ms in
/// all. The sender wakes this much early and the invocation's task spins the rest, which
/// costs at most this much CPU per request, so it is bounded (a real-time thread spinning
/// on 2 cores would starve the worker).
pub const MAX_LEAD: Duration = Duration::from_micros(200);

/// The lead before an invocation's time, `gap` after the one before it: [`MAX_LEAD`], but
/// at most a fifth of the gap, so that spinning never takes more than a fifth of a core.
pub fn lead(gap: Duration) -> Duration {
    MAX_LEAD.min(gap / 5)
}

/// Waits until `at` without sleeping: yields the CPU to other threads of the same priority
/// between looks at the clock. Only for the short stretch of a [`lead`].
pub fn spin_until(at: Instant) {
    while Instant::now() < at {
        std::thread::yield_now();
    }
}

fn record(out: &mut OpenLoopResult, ns: u64, r: Result<rpc::InvokeResponse, tonic::Status>) {
    match r {
        Ok(resp) if resp.success => {
            let fn_us = crate::sending::closed_loop::reported_us(&resp.json_result).map(|t| t.0).unwrap_or(0);
            out.latency.saturating_record(ns);
            out.overhead.saturating_record(ns.saturating_sub(fn_us * 1000));
        }
        Ok(resp) => {
            out.errors += 1;
            out.first_error.get_or_insert(resp.json_result);
        }
        Err(s) => {
            out.errors += 1;
            out.first_error.get_or_insert(s.to_string());
        }
    }
}

/// Asks the kernel to wake this thread within a microsecond of its deadline (the default
/// slack is 50 µs).
pub fn set_fine_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lead_is_a_fifth_of_the_gap_and_at_most_max_lead() {
        let us = Duration::from_micros;
        assert_eq!(lead(us(500)), us(100));
        assert_eq!(lead(us(1000)), MAX_LEAD);
        assert_eq!(lead(Duration::from_secs(10)), MAX_LEAD);
        assert_eq!(lead(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn spinning_ends_at_its_time_not_before() {
        let at = Instant::now() + Duration::from_micros(300);
        spin_until(at);
        assert!(Instant::now() >= at);
    }
}
