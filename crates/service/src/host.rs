//! CPU utilisation and load average of the host, for a daemon's `status`.

use std::sync::Mutex;

pub trait HostStats: Send + Sync {
    /// Percent of CPU time busy since the previous call (0..=100).
    fn cpu_util(&self) -> f64;
    /// One-minute load average.
    fn load_avg(&self) -> f64;
}

/// Reads /proc/stat and /proc/loadavg.
#[derive(Default)]
pub struct ProcStats {
    last: Mutex<Option<(u64, u64)>>,
}

impl HostStats for ProcStats {
    fn cpu_util(&self) -> f64 {
        let Some((busy, total)) = read_proc_stat() else { return 0.0 };
        let mut last = self.last.lock().unwrap();
        let (pb, pt) = last.replace((busy, total)).unwrap_or((0, 0));
        let dt = total.saturating_sub(pt);
        if dt == 0 { 0.0 } else { busy.saturating_sub(pb) as f64 * 100.0 / dt as f64 }
    }
    fn load_avg(&self) -> f64 {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
            .unwrap_or(0.0)
    }
}

/// (busy, total) jiffies of all CPUs.
fn read_proc_stat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let xs: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let total: u64 = xs.iter().take(8).sum();
    let idle = xs.get(3)? + xs.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// A host with no load, for simulation.
pub struct QuietHost;

impl HostStats for QuietHost {
    fn cpu_util(&self) -> f64 {
        0.0
    }
    fn load_avg(&self) -> f64 {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures_are_in_range() {
        let s = ProcStats::default();
        for _ in 0..2 {
            let u = s.cpu_util();
            assert!((0.0..=100.0).contains(&u), "{u}");
        }
        assert!(s.load_avg() >= 0.0);
        assert_eq!((QuietHost.cpu_util(), QuietHost.load_avg()), (0.0, 0.0));
    }
}
