//! Round robin and least loaded: policies that ignore which function is invoked.

use super::{Balancer, ClusterView, LoadMetric, Totals};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Each available worker in turn; with a worker out, the rest share its turns evenly.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn choose(&self, fqdn: &str, view: &ClusterView) -> Option<usize> {
        self.choose_with(fqdn, view, &Totals::of(view))
    }

    fn choose_with(&self, _fqdn: &str, view: &ClusterView, totals: &Totals) -> Option<usize> {
        if totals.available == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % totals.available;
        if totals.available == view.workers.len() {
            return Some(turn);
        }
        view.available().nth(turn).map(|(i, _)| i)
    }
}

/// The least load by a [`LoadMetric`] (outstanding work per core by default); ties go to
/// the lower load average, then in turn so that an idle cluster is not served by its first
/// worker alone.
#[derive(Default)]
pub struct LeastLoaded {
    metric: LoadMetric,
    next: AtomicUsize,
}

impl LeastLoaded {
    pub fn by(metric: LoadMetric) -> Self {
        LeastLoaded { metric, next: AtomicUsize::new(0) }
    }
}

impl Balancer for LeastLoaded {
    fn choose(&self, _fqdn: &str, view: &ClusterView) -> Option<usize> {
        least_loaded(self.metric, &self.next, view)
    }
}

fn least_loaded(metric: LoadMetric, next: &AtomicUsize, view: &ClusterView) -> Option<usize> {
    let n = view.workers.len();
    if n == 0 {
        return None;
    }
    let start = next.fetch_add(1, Ordering::Relaxed);
    let key = |i: usize| {
        let w = &view.workers[i];
        (metric.of(w), LoadMetric::LoadAvg.of(w))
    };
    (0..n)
        .map(|k| (start + k) % n)
        .filter(|&i| view.workers[i].available)
        .min_by(|&a, &b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal))
}

/// Round robin that skips a worker at or above `max_load_per_core` outstanding work per
/// core; when every available worker is, the least loaded.
pub struct RrGuard {
    max_load_per_core: f64,
    next: AtomicUsize,
}

impl RrGuard {
    pub fn new(max_load_per_core: f64) -> Self {
        RrGuard { max_load_per_core, next: AtomicUsize::new(0) }
    }
}

impl Balancer for RrGuard {
    fn choose(&self, _fqdn: &str, view: &ClusterView) -> Option<usize> {
        let n = view.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let under = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| view.workers[i].available && view.workers[i].load_per_core() < self.max_load_per_core);
        under.or_else(|| least_loaded(LoadMetric::Outstanding, &self.next, view))
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

    #[test]
    fn least_loaded_by_a_chosen_metric() {
        let mut ws = workers(3);
        ws[0].cpu_pct = 90.0;
        ws[1].cpu_pct = 10.0;
        ws[2].cpu_pct = 50.0;
        ws[1].queued = 5;
        ws[2].mem_pct = 1.0;
        ws[0].mem_pct = 40.0;
        ws[1].mem_pct = 40.0;
        let view = ClusterView { version: 1, workers: &ws };
        assert_eq!(LeastLoaded::by(LoadMetric::Cpu).choose("f-1", &view), Some(1));
        assert_eq!(LeastLoaded::by(LoadMetric::Memory).choose("f-1", &view), Some(2));
        assert_ne!(LeastLoaded::by(LoadMetric::Queue).choose("f-1", &view), Some(1));
        assert_ne!(LeastLoaded::by(LoadMetric::Outstanding).choose("f-1", &view), Some(1));
    }

    #[test]
    fn rr_guard_skips_a_worker_over_its_bound_and_falls_back_to_least_loaded() {
        let mut ws = workers(3);
        ws[1].running = 5; // 2 cpus: 2.5 per core, over the 2.0 bound
        let got = sequential(&RrGuard::new(2.0), "f-1", &ws, 4);
        assert!(!got.contains(&1), "{got:?}");
        assert_eq!(got, vec![0, 2, 2, 0]);
        for w in ws.iter_mut() {
            w.running = 8;
        }
        ws[2].running = 6;
        assert_eq!(sequential(&RrGuard::new(2.0), "f-1", &ws, 2), vec![2, 2], "all over: the least loaded");
    }
}
