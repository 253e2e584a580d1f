//! Open-loop load: invocations are sent on a fixed schedule whatever the answers, and
//! latency is measured from the scheduled time, so a stall cannot hide (no coordinated
//! omission).

#![allow(clippy::disallowed_methods)] // client latency is wall-clock time by definition

use crate::sending::closed_loop::histogram;
use crate::sending::lean::LeanClient;
use hdrhistogram::Histogram;
use iluvatar_rpc as rpc;
use std::time::{Duration, Instant};

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
///
/// The schedule is kept by a dedicated thread with fine timer slack (tokio's timers tick in
/// whole milliseconds, which would make every request up to 1 ms late), at a real-time
/// priority when allowed. Each connection is a thread of its own, also real-time, with a
/// current-thread runtime and a [`LeanClient`]: the scheduler hands it each invocation a
/// lead ahead of its time (see [`lead`]), and the invocation's task waits out the rest,
/// letting the thread's other calls read their answers meanwhile. A sender that shares its
/// cores with the worker under test is thus not delayed by it, and no answer waits for a
/// hand-off between threads.
pub async fn run(
    endpoint: &str,
    rate: f64,
    duration: Duration,
    connections: usize,
    request: rpc::InvokeRequest,
) -> anyhow::Result<OpenLoopResult> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * duration.as_secs_f64()) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let auth = crate::sending::connect::auth();
    let (mut queues, mut senders) = (Vec::new(), Vec::new());
    for i in 0..connections.max(1) {
        let (queue, jobs) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (target, req, auth, results) = (endpoint.to_string(), request.clone(), auth.clone(), tx.clone());
        let sender = std::thread::Builder::new().name(format!("sender-{i}")).spawn(move || -> anyhow::Result<()> {
            crate::sending::live::set_realtime_priority();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                match LeanClient::connect(&target, &auth).await {
                    Ok(client) => {
                        let _ = ready_tx.send(Ok(()));
                        send_jobs(client, req, jobs, results).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                    }
                }
            });
            Ok(())
        })?;
        ready_rx.await?.map_err(|e| anyhow::anyhow!("connecting to {endpoint}: {e}"))?;
        queues.push(queue);
        senders.push(sender);
    }
    drop(tx);
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
            let _ = queues[i as usize % queues.len()].send(scheduled);
        }
        // Dropping the queues ends the senders once their calls are answered.
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
    tokio::task::spawn_blocking(move || {
        scheduler.join().map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
        for s in senders {
            s.join().map_err(|_| anyhow::anyhow!("a sender thread panicked"))??;
        }
        anyhow::Ok(())
    })
    .await??;
    Ok(out)
}

/// What one sent invocation gives back: latency from its scheduled time and lateness of
/// its sending (ns), and its answer.
type Sent = (u64, u64, Result<rpc::InvokeResponse, tonic::Status>);

/// A sender's loop: a task per invocation scheduled for it, until the scheduler is done
/// and every call is answered.
async fn send_jobs(
    client: LeanClient,
    req: rpc::InvokeRequest,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Instant>,
    results: tokio::sync::mpsc::UnboundedSender<Sent>,
) {
    let mut calls = tokio::task::JoinSet::new();
    while let Some(scheduled) = jobs.recv().await {
        while calls.try_join_next().is_some() {}
        let (client, req, results) = (client.clone(), req.clone(), results.clone());
        calls.spawn(async move {
            // The lead's rest: other calls of this thread read their answers meanwhile.
            while Instant::now() < scheduled {
                tokio::task::yield_now().await;
            }
            let sent = Instant::now();
            let r = client.invoke(&req).await;
            let ns = Instant::now().saturating_duration_since(scheduled).as_nanos() as u64;
            let late = sent.saturating_duration_since(scheduled).as_nanos() as u64;
            let _ = results.send((ns, late, r));
        });
    }
    while calls.join_next().await.is_some() {}
}

/// The most an invocation is handed over ahead of its time. A thread sleeping on an idle
/// CPU of this kind of VM wakes late: 50-100 µs usually, but up to 1.3-1.4 ms at p99 after a
/// sleep of milliseconds (the host runs a halted vCPU again late; a trace replayed on real
/// containers measured the scheduler waking 1-2 ms late at p99 with a lead of 200 µs). The
/// sender wakes this much early and the invocation's task spins the rest.
pub const MAX_LEAD: Duration = Duration::from_millis(2);

/// The lead before an invocation's time, `gap` after the one before it: [`MAX_LEAD`], but
/// at most a fifth of the gap, so that spinning never takes more than a fifth of a core (a
/// real-time thread spinning on 2 cores would starve the worker).
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
        assert_eq!(lead(us(5000)), us(1000));
        assert_eq!(lead(us(10_000)), MAX_LEAD);
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
