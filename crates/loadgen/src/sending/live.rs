//! Sends a list of timed invocations open-loop in real time: a dedicated thread runs the
//! arrival loop (`sending::arrivals`) on the OS clock (as `open_loop` keeps its schedule)
//! and hands each invocation to the runtime whether or not earlier ones answered, so a slow
//! worker cannot slow the sender (no coordinated omission). Every invocation records when
//! it was scheduled, when it was really sent, and when it answered.

#![allow(clippy::disallowed_methods)] // send times and client latency are wall-clock time by definition

use crate::results::{Outcome, Recorder};
use crate::sending::arrivals::{Arrivals, Pacer, Sink, send};
use crate::sending::open_loop::{lead, set_fine_timer_slack, spin_until};
use crate::sending::progress::Progress;
use crate::sending::transport::Transport;
use crate::workload::trace::Arrival;
use iluvatar_rpc as rpc;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the schedule went, beyond the rows.
pub struct Run {
    /// How late the scheduler thread woke for each hand-off (a lead before the arrival's
    /// time), nanoseconds; the per-row lateness is of the send itself.
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
    let sink = ToReceiver { tx, progress: progress.clone() };
    let transport = transport.clone();
    // The schedule is kept by a dedicated thread with fine timer slack: tokio's timers tick
    // in whole milliseconds, which would make every request up to 1 ms late.
    let scheduler = std::thread::Builder::new().name("schedule".into()).spawn(move || {
        set_fine_timer_slack();
        let realtime = set_realtime_priority();
        let mut wake = Vec::with_capacity(arrivals.len());
        let what = Arrivals { requests: &requests, arrivals: &arrivals, tid_prefix: &tid_prefix };
        block_on(send(what, &OsClock { start }, &transport, &sink, &handle, Some(&mut wake)));
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

/// The OS clock from the run's zero, `start`. Waiting blocks the calling thread (the
/// scheduler's own): `std::thread::sleep` with fine timer slack. It wakes a lead before an
/// arrival's time, hands the invocation over, and its task spins the rest (`open_loop::lead`).
#[derive(Clone, Copy)]
struct OsClock {
    start: Instant,
}

impl Pacer for OsClock {
    fn now_ns(&self) -> u64 {
        Instant::now().saturating_duration_since(self.start).as_nanos() as u64
    }

    fn wait_until(&self, at_ns: u64) -> impl Future<Output = ()> + Send {
        let at = self.start + Duration::from_nanos(at_ns);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        std::future::ready(())
    }

    fn lead_ns(&self, gap_ns: u64) -> u64 {
        lead(Duration::from_nanos(gap_ns)).as_nanos() as u64
    }

    fn spin_until(&self, at_ns: u64) {
        spin_until(self.start + Duration::from_nanos(at_ns));
    }
}

/// Outcomes go to the run's task (which writes the rows) over a channel; the progress
/// display counts them.
#[derive(Clone)]
struct ToReceiver {
    tx: tokio::sync::mpsc::UnboundedSender<(usize, Outcome)>,
    progress: Progress,
}

impl Sink for ToReceiver {
    type InFlight = ();

    fn sending(&self) {
        self.progress.sent();
    }

    fn record(&self, index: usize, outcome: Outcome) {
        self.progress.done(outcome.response.as_ref().map(|r| r.success).unwrap_or(false));
        let _ = self.tx.send((index, outcome));
    }
}

/// Runs `future` to completion on this thread. The arrival loop paced by [`OsClock`] never
/// waits asynchronously, so its first poll completes it; the waker (which unparks this
/// thread) only makes this correct for any future.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// Gives the scheduler thread a real-time priority (SCHED_FIFO) when allowed (root or
/// CAP_SYS_NICE), so that busy worker threads on the same cores cannot delay its wake-ups.
/// It sleeps between sends, so it cannot starve anything. Returns whether it was granted.
pub fn set_realtime_priority() -> bool {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: changes the scheduling policy of the calling thread only (pid 0 = this thread).
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}
