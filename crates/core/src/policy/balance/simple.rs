//! Round robin and least loaded: policies that ignore which function is invoked.

use super::{Balancer, ClusterView};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Each available worker in turn; with a worker out, the rest share its turns evenly.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn choose(&self, _fqdn: &str, view: &ClusterView) -> Option<usize> {
        let available = view.available().count();
        if available == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % available;
        view.available().nth(turn).map(|(i, _)| i)
    }
}

/// The least outstanding work per core; ties go to the lower load average, then in turn so
/// that an idle cluster is not served by its first worker alone.
#[derive(Default)]
pub struct LeastLoaded {
    next: AtomicUsize,
}

impl Balancer for LeastLoaded {
    fn choose(&self, _fqdn: &str, view: &ClusterView) -> Option<usize> {
        let n = view.workers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let key = |i: usize| {
            let w = &view.workers[i];
            (w.load_per_core(), w.load_avg / w.cpus.max(1) as f64)
        };
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| view.workers[i].available)
            .min_by(|&a, &b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn round_robin_spreads_evenly_and_skips_unavailable() {
        let mut ws = workers(3);
        let got = sequential(&RoundRobin::default(), "f-1", &ws, 6);
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
        ws[1].available = false;
        let got = sequential(&RoundRobin::default(), "f-1", &ws, 4);
        assert_eq!(got, vec![0, 2, 0, 2]);
    }

    #[test]
    fn least_loaded_fills_the_emptiest_worker() {
        let mut ws = workers(3);
        ws[0].queued = 4;
        ws[1].running = 1;
        let b = LeastLoaded::default();
        let view = ClusterView { version: 1, workers: &ws };
        assert_eq!(b.choose("f-1", &view), Some(2));
        // Concurrent work spreads: in-flight counts are seen at once.
        let mut ws = workers(3);
        assert_eq!(concurrent(&b, "f-1", &mut ws, 9), vec![3, 3, 3]);
        // A bigger worker takes more.
        let mut ws = workers(2);
        ws[1].cpus = 6;
        assert_eq!(concurrent(&b, "f-1", &mut ws, 8), vec![2, 6]);
        // The load average breaks ties between equally idle workers.
        let mut ws = workers(3);
        ws[0].load_avg = 1.5;
        ws[2].load_avg = 0.5;
        ws[1].load_avg = 0.7;
        assert_eq!(b.choose("f-1", &ClusterView { version: 1, workers: &ws }), Some(2));
    }
}
