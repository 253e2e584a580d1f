//! Worker metrics: lock-free counters and histograms on the hot path, rendered in the
//! Prometheus text format at `/metrics`.

pub use iluvatar_core::metrics::Histogram;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub invocations_ok: AtomicU64,
    pub invocations_failed: AtomicU64,
    pub cold_starts: AtomicU64,
    pub failed_cold_starts: AtomicU64,
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
    pub registrations: AtomicU64,
    /// Times the reaper woke with something due (it sleeps through the other ticks).
    pub reaper_runs: AtomicU64,
    pub latency: Histogram,
    pub queue_wait: Histogram,
    pub cold_start: Histogram,
}

/// Figures that are read at render time rather than counted.
pub struct Gauges {
    pub queue_len: usize,
    pub running: usize,
    pub containers_idle: usize,
    pub containers_busy: usize,
    pub memory_used_mb: u64,
    pub memory_total_mb: u64,
    pub registered_functions: usize,
    /// MB·s held by containers (idle or busy) since start, up to now.
    pub memory_held_mb_seconds: f64,
    /// MB·s held by idle containers since start, up to now.
    pub memory_idle_mb_seconds: f64,
}

impl Metrics {
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, labels: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name}{labels} {v}");
        };
        let _ = writeln!(
            out,
            "# HELP iluvatar_invocations_total Invocations finished, by outcome.\n# TYPE iluvatar_invocations_total counter"
        );
        let _ =
            writeln!(out, "iluvatar_invocations_total{{outcome=\"success\"}} {}", self.invocations_ok.load(Relaxed));
        let _ =
            writeln!(out, "iluvatar_invocations_total{{outcome=\"error\"}} {}", self.invocations_failed.load(Relaxed));
        counter(
            &mut out,
            "iluvatar_cold_starts_total",
            "Containers started for an invocation or prewarm.",
            "",
            self.cold_starts.load(Relaxed),
        );
        counter(
            &mut out,
            "iluvatar_cold_start_failures_total",
            "Container starts that failed.",
            "",
            self.failed_cold_starts.load(Relaxed),
        );
        counter(
            &mut out,
            "iluvatar_evictions_total",
            "Idle containers evicted to free memory.",
            "",
            self.evictions.load(Relaxed),
        );
        counter(
            &mut out,
            "iluvatar_keep_alive_expirations_total",
            "Idle containers removed after their keep-alive.",
            "",
            self.expirations.load(Relaxed),
        );
        counter(
            &mut out,
            "iluvatar_reaper_runs_total",
            "Ticks at which the reaper woke with work due (expiry, pre-warm, async results).",
            "",
            self.reaper_runs.load(Relaxed),
        );
        counter(
            &mut out,
            "iluvatar_registrations_total",
            "Successful registrations since start.",
            "",
            self.registrations.load(Relaxed),
        );
        let gauge = |out: &mut String, name: &str, help: &str, v: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut out,
            "iluvatar_queue_length",
            "Invocations waiting in the invoker's queue.",
            g.queue_len.to_string(),
        );
        gauge(
            &mut out,
            "iluvatar_running_invocations",
            "Invocations being dispatched or running.",
            g.running.to_string(),
        );
        let _ = writeln!(out, "# HELP iluvatar_containers Containers by state.\n# TYPE iluvatar_containers gauge");
        let _ = writeln!(out, "iluvatar_containers{{state=\"idle\"}} {}", g.containers_idle);
        let _ = writeln!(out, "iluvatar_containers{{state=\"busy\"}} {}", g.containers_busy);
        gauge(&mut out, "iluvatar_memory_used_mb", "Memory held by containers (MB).", g.memory_used_mb.to_string());
        gauge(&mut out, "iluvatar_memory_total_mb", "Size of the container pool (MB).", g.memory_total_mb.to_string());
        gauge(
            &mut out,
            "iluvatar_registered_functions",
            "Functions in the registry.",
            g.registered_functions.to_string(),
        );
        let float_counter = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v:.3}");
        };
        float_counter(
            &mut out,
            "iluvatar_pool_memory_held_mb_seconds",
            "Memory held by containers, idle or busy (including starts), integrated over time (MB*s).",
            g.memory_held_mb_seconds,
        );
        float_counter(
            &mut out,
            "iluvatar_pool_memory_idle_mb_seconds",
            "Memory held by idle containers, integrated over time (MB*s).",
            g.memory_idle_mb_seconds,
        );
        self.latency.render(
            &mut out,
            "iluvatar_invocation_duration_seconds",
            "Worker time per invocation, queue to result.",
        );
        self.queue_wait.render(&mut out, "iluvatar_queue_wait_seconds", "Time invocations waited in the queue.");
        self.cold_start.render(&mut out, "iluvatar_cold_start_seconds", "Container start time of cold starts.");
        out
    }
}
