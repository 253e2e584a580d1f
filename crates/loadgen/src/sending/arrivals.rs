//! The one arrival loop: sends timed invocations open-loop, each at its time whatever
//! earlier ones did, each in its own task, and hands every outcome to a [`Sink`]. What
//! differs between a live run and a simulation is only the clock it is paced by
//! ([`Pacer`]) and where outcomes go: a live run paces it on the OS clock from a dedicated
//! real-time thread (`sending::live`), a simulation on the virtual clock inside its
//! runtime (`simulation::run`).

use crate::results::{Outcome, push_u64};
use crate::sending::transport::Transport;
use crate::workload::trace::Arrival;
use iluvatar_rpc as rpc;
use std::future::Future;

/// The clock a run is paced by; times are nanoseconds from the run's zero.
pub trait Pacer: Clone + Send + Sync + 'static {
    fn now_ns(&self) -> u64;
    /// Completes once `at_ns` has come (at once if it has passed).
    fn wait_until(&self, at_ns: u64) -> impl Future<Output = ()> + Send;
    /// How long before its time an invocation is handed to the runtime, `gap_ns` after the
    /// one before it: its task then waits out the rest ([`Pacer::spin_until`]), so that the
    /// hand-off's own delay (waking a parked runtime thread) does not make it late.
    fn lead_ns(&self, _gap_ns: u64) -> u64 {
        0
    }
    /// Waits, without yielding to the runtime, until `at_ns` (the end of the lead).
    fn spin_until(&self, _at_ns: u64) {}
}

/// Where outcomes go.
pub trait Sink: Clone + Send + Sync + 'static {
    /// Held by an invocation's task from its hand-off until the task ends (also if it
    /// panics before recording).
    type InFlight: Send + 'static;
    /// An invocation is being handed to the runtime.
    fn sending(&self) -> Self::InFlight;
    /// Its outcome, from its task.
    fn record(&self, index: usize, outcome: Outcome);
}

/// What to send: `requests[func]` is each function's request, sent as
/// `arrivals[i]` says, with transaction id `{tid_prefix}-{i}`.
pub struct Arrivals<'a> {
    pub requests: &'a [rpc::InvokeRequest],
    pub arrivals: &'a [Arrival],
    pub tid_prefix: &'a str,
}

/// Sends every arrival through `transport` at its time on `pacer`, spawning each
/// invocation on `runtime` (the pacer's lead before its time); returns once the last is
/// handed over (not answered). With `wake_lateness`, pushes how late the loop woke for each
/// hand-off, in nanoseconds. An invocation's `sent_ns` is taken in its task, just before
/// the call: it counts the hand-off too.
pub async fn send<P: Pacer, T: Transport, S: Sink>(
    what: Arrivals<'_>,
    pacer: &P,
    transport: &T,
    sink: &S,
    runtime: &tokio::runtime::Handle,
    mut wake_lateness: Option<&mut Vec<u64>>,
) {
    let mut previous_ns = 0;
    for (i, a) in what.arrivals.iter().enumerate() {
        let scheduled_ns = (a.time_ms * 1e6) as u64;
        let hand_off_ns = scheduled_ns.saturating_sub(pacer.lead_ns(scheduled_ns.saturating_sub(previous_ns)));
        previous_ns = scheduled_ns;
        pacer.wait_until(hand_off_ns).await;
        if let Some(w) = wake_lateness.as_deref_mut() {
            w.push(pacer.now_ns().saturating_sub(hand_off_ns));
        }
        let mut req = what.requests[a.func].clone();
        req.transaction_id.clear();
        req.transaction_id.push_str(what.tid_prefix);
        req.transaction_id.push('-');
        push_u64(&mut req.transaction_id, i as u64);
        let (t, sink, pacer, func) = (transport.clone(), sink.clone(), pacer.clone(), a.func);
        let in_flight = sink.sending();
        runtime.spawn(async move {
            pacer.spin_until(scheduled_ns);
            let sent_ns = pacer.now_ns();
            let response = t.invoke(req).await;
            let done_ns = pacer.now_ns();
            sink.record(i, Outcome { func, scheduled_ns, sent_ns, done_ns, response });
            drop(in_flight);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// A clock that jumps to whatever is waited for; records where the loop waited and
    /// where tasks spun.
    #[derive(Clone, Default)]
    struct Jumps {
        now: Arc<AtomicU64>,
        waits: Arc<Mutex<Vec<u64>>>,
        spins: Arc<Mutex<Vec<u64>>>,
    }

    impl Pacer for Jumps {
        fn now_ns(&self) -> u64 {
            self.now.load(Ordering::SeqCst)
        }
        fn wait_until(&self, at_ns: u64) -> impl Future<Output = ()> + Send {
            self.waits.lock().unwrap().push(at_ns);
            self.now.fetch_max(at_ns, Ordering::SeqCst);
            std::future::ready(())
        }
        fn lead_ns(&self, gap_ns: u64) -> u64 {
            (gap_ns / 5).min(200_000)
        }
        fn spin_until(&self, at_ns: u64) {
            self.spins.lock().unwrap().push(at_ns);
            self.now.fetch_max(at_ns, Ordering::SeqCst);
        }
    }

    #[derive(Clone)]
    struct Answers;

    impl Transport for Answers {
        async fn register(&self, _: rpc::RegisterRequest) -> anyhow::Result<rpc::RegisterResponse> {
            anyhow::bail!("not used")
        }
        async fn prewarm(&self, _: rpc::PrewarmRequest) -> anyhow::Result<rpc::PrewarmResponse> {
            anyhow::bail!("not used")
        }
        async fn invoke(&self, _: rpc::InvokeRequest) -> Result<rpc::InvokeResponse, String> {
            Ok(rpc::InvokeResponse { success: true, ..Default::default() })
        }
    }

    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<(usize, u64, u64)>>>);

    impl Sink for Kept {
        type InFlight = ();
        fn sending(&self) {}
        fn record(&self, index: usize, o: Outcome) {
            self.0.lock().unwrap().push((index, o.scheduled_ns, o.sent_ns));
        }
    }

    #[tokio::test]
    async fn each_invocation_is_handed_over_a_lead_early_and_sent_at_its_time() {
        let arrivals = [1.0, 1.5, 1.5, 11.5].map(|time_ms| Arrival { func: 0, time_ms });
        let requests = [rpc::InvokeRequest::default()];
        let what = Arrivals { requests: &requests, arrivals: &arrivals, tid_prefix: "t" };
        let (pacer, sink) = (Jumps::default(), Kept::default());
        let mut wake = Vec::new();
        send(what, &pacer, &Answers, &sink, &tokio::runtime::Handle::current(), Some(&mut wake)).await;
        while sink.0.lock().unwrap().len() < arrivals.len() {
            tokio::task::yield_now().await;
        }
        // Leads: a fifth of the gap before each arrival, at most 200 µs.
        assert_eq!(*pacer.waits.lock().unwrap(), [800_000, 1_400_000, 1_500_000, 11_300_000]);
        let mut spins = pacer.spins.lock().unwrap().clone();
        spins.sort();
        assert_eq!(spins, [1_000_000, 1_500_000, 1_500_000, 11_500_000], "every task waits out its lead");
        let mut kept = sink.0.lock().unwrap().clone();
        kept.sort();
        for (i, scheduled, sent) in kept {
            assert_eq!(scheduled, (arrivals[i].time_ms * 1e6) as u64);
            assert!(sent >= scheduled, "invocation {i} sent at {sent} ns, before its time {scheduled}");
        }
        assert_eq!(wake.len(), arrivals.len());
    }
}
