//! What every benchmark report carries: the machine, the commit, the command line; and
//! percentile summaries of histograms.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Cores, kernel, CPU model, the commit the binary was built from, and the command line.
pub fn context() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "kernel": read("/proc/sys/kernel/osrelease").trim(),
            "cpu_model": cpu_model,
        },
        // Embedded at build time (build.rs): the commit of the code that ran.
        "git_commit": env!("ILUVATAR_GIT_COMMIT"),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    })
}

/// Percentiles of a nanosecond histogram, in microseconds.
pub fn percentiles_us(h: &Histogram<u64>) -> Value {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1_000.0;
    json!({
        "count": h.len(),
        "mean": h.mean() / 1_000.0,
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "p999": q(0.999),
        "max": h.max() as f64 / 1_000.0,
    })
}

/// CPU seconds (user + system) a process has used so far, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; here, indices 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}
