//! Worker metrics: lock-free counters and histograms on the hot path, rendered in the
//! Prometheus text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 18] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A fixed-bucket histogram of microsecond values.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_us: AtomicU64::new(0) }
    }
}

impl Histogram {
    pub fn observe_us(&self, us: u64) {
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
        }
        cumulative += self.counts[BUCKETS_US.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[derive(Default)]
pub struct Metrics {
    pub invocations_ok: AtomicU64,
    pub invocations_failed: AtomicU64,
    pub cold_starts: AtomicU64,
    pub failed_cold_starts: AtomicU64,
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
    pub registrations: AtomicU64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        for us in [10, 30, 30, 20_000_000] {
            h.observe_us(us);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.000025\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.00005\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n") && out.contains("x_count 4\n"), "{out}");
    }
}
