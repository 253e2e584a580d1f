//! Sends a list of timed invocations open-loop: a dedicated thread keeps the schedule (as
//! in `open_loop`) and hands each invocation to the runtime whether or not earlier ones
//! answered, so a slow worker cannot slow the sender (no coordinated omission). Every
//! invocation records when it was scheduled, when it was really sent, and when it answered.

#![allow(clippy::disallowed_methods)] // send times and client latency are wall-clock time by definition

use crate::results::{Outcome, Recorder};
use crate::sending::open_loop::set_fine_timer_slack;
use crate::sending::progress::Progress;
use crate::sending::transport::Transport;
use crate::workload::trace::Arrival;
use iluvatar_rpc as rpc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the schedule went, beyond the rows.
pub struct Run {
    /// How late the scheduler thread woke for each arrival (before the hand-off to the
    /// runtime), nanoseconds; the per-row lateness also counts the hand-off.
    pub wake_lateness_ns: Vec<u64>,
    /// Whether the scheduler thread ran with a real-time priority.
    pub realtime: bool,
}

/// Sends `arrivals` through `transport` in real time and records every outcome;
/// `requests[func]` is the request of each function (its transaction id is replaced by
/// `{tid_prefix}-{index}`).
pub async fn run<T: Transport>(
    transport: &T,
    requests: Vec<rpc::InvokeRequest>,
    arrivals: Arc<Vec<Arrival>>,
    tid_prefix: String,
    progress: Progress,
    recorder: &mut Recorder,
) -> anyhow::Result<Run> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Outcome)>();
    let handle = tokio::runtime::Handle::current();
    let start = Instant::now() + Duration::from_millis(100);
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    recorder
        .set_start_unix_s(since_epoch.as_secs_f64() + start.saturating_duration_since(Instant::now()).as_secs_f64());
    let sched_progress = progress.clone();
    let sched_arrivals = arrivals.clone();
    let transport = transport.clone();
    // The schedule is kept by a dedicated thread with fine timer slack: tokio's timers tick
    // in whole milliseconds, which would make every request up to 1 ms late.
    let scheduler = std::thread::Builder::new().name("schedule".into()).spawn(move || {
        set_fine_timer_slack();
        let realtime = set_realtime_priority();
        let mut wake = Vec::with_capacity(sched_arrivals.len());
        for (i, a) in sched_arrivals.iter().enumerate() {
            let scheduled = start + Duration::from_nanos((a.time_ms * 1e6) as u64);
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            }
            wake.push(Instant::now().saturating_duration_since(scheduled).as_nanos() as u64);
            let t = transport.clone();
            let mut req = requests[a.func].clone();
            req.transaction_id = format!("{tid_prefix}-{i}");
            let tx = tx.clone();
            let p = sched_progress.clone();
            let func = a.func;
            handle.spawn(async move {
                let sent = Instant::now();
                let response = t.invoke(req).await;
                let done = Instant::now();
                let ns = |t: Instant| t.saturating_duration_since(start).as_nanos() as u64;
                p.done(response.as_ref().map(|r| r.success).unwrap_or(false));
                let o = Outcome { func, scheduled_ns: ns(scheduled), sent_ns: ns(sent), done_ns: ns(done), response };
                let _ = tx.send((i, o));
            });
            sched_progress.sent();
        }
        (wake, realtime)
    })?;
    let ticker = progress.start_ticker();
    while let Some((i, o)) = rx.recv().await {
        recorder.record(i, o);
    }
    ticker.abort();
    progress.finish();
    let (wake_lateness_ns, realtime) = tokio::task::spawn_blocking(move || scheduler.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
    Ok(Run { wake_lateness_ns, realtime })
}

/// Gives the scheduler thread a real-time priority (SCHED_FIFO) when allowed (root or
/// CAP_SYS_NICE), so that busy worker threads on the same cores cannot delay its wake-ups.
/// It sleeps between sends, so it cannot starve anything. Returns whether it was granted.
pub fn set_realtime_priority() -> bool {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: changes the scheduling policy of the calling thread only (pid 0 = this thread).
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}
