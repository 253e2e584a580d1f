//! Controller metrics: lock-free counters and histograms on the hot path, rendered in the
//! Prometheus text format at `/metrics`, with per-worker gauges read at render time.

use crate::cluster::Members;
pub use iluvatar_core::metrics::Histogram;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub invocations_ok: AtomicU64,
    pub invocations_failed: AtomicU64,
    /// Invocations that could not reach their worker and were sent to another.
    pub retries: AtomicU64,
    /// Invocations whose worker failed or timed out after receiving them.
    pub worker_failures: AtomicU64,
    pub registrations: AtomicU64,
    pub worker_registrations: AtomicU64,
    pub worker_deregistrations: AtomicU64,
    pub latency: Histogram,
    pub overhead: Histogram,
}

impl Metrics {
    pub fn render(&self, members: &Members, functions: usize) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "iluvatar_controller_retries_total",
            "Invocations resent after not reaching a worker.",
            self.retries.load(Relaxed),
        );
        counter(
            "iluvatar_controller_worker_failures_total",
            "Invocations whose worker failed or timed out after receiving them.",
            self.worker_failures.load(Relaxed),
        );
        counter(
            "iluvatar_controller_registrations_total",
            "Function registrations accepted.",
            self.registrations.load(Relaxed),
        );
        counter(
            "iluvatar_controller_worker_registrations_total",
            "Workers added or replaced by register_worker (a member registering again is not counted).",
            self.worker_registrations.load(Relaxed),
        );
        counter(
            "iluvatar_controller_worker_deregistrations_total",
            "Workers forgotten by deregister_worker.",
            self.worker_deregistrations.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP iluvatar_controller_invocations_total Invocations answered, by outcome.\n# TYPE iluvatar_controller_invocations_total counter"
        );
        let _ = writeln!(
            out,
            "iluvatar_controller_invocations_total{{outcome=\"success\"}} {}",
            self.invocations_ok.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "iluvatar_controller_invocations_total{{outcome=\"error\"}} {}",
            self.invocations_failed.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP iluvatar_controller_registered_functions Functions known.\n# TYPE iluvatar_controller_registered_functions gauge\niluvatar_controller_registered_functions {functions}"
        );
        let _ = writeln!(
            out,
            "# HELP iluvatar_controller_worker_healthy 1 if the worker receives work.\n# TYPE iluvatar_controller_worker_healthy gauge"
        );
        for w in &members.workers {
            let _ =
                writeln!(out, "iluvatar_controller_worker_healthy{{worker=\"{}\"}} {}", w.name, w.is_healthy() as u8);
        }
        let _ = writeln!(
            out,
            "# HELP iluvatar_controller_worker_inflight Invocations in flight per worker.\n# TYPE iluvatar_controller_worker_inflight gauge"
        );
        for w in &members.workers {
            let _ = writeln!(out, "iluvatar_controller_worker_inflight{{worker=\"{}\"}} {}", w.name, w.inflight());
        }
        let _ = writeln!(
            out,
            "# HELP iluvatar_controller_worker_forwarded_total Invocations sent per worker.\n# TYPE iluvatar_controller_worker_forwarded_total counter"
        );
        for w in &members.workers {
            let _ = writeln!(
                out,
                "iluvatar_controller_worker_forwarded_total{{worker=\"{}\"}} {}",
                w.name,
                w.forwarded.load(Relaxed)
            );
        }
        self.latency.render(
            &mut out,
            "iluvatar_controller_invocation_duration_seconds",
            "Controller time per invocation, request to answer.",
        );
        self.overhead.render(
            &mut out,
            "iluvatar_controller_overhead_seconds",
            "Controller time per invocation minus the worker call.",
        );
        out
    }
}
