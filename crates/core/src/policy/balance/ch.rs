//! Consistent hashing with bounded loads (CH-BL) and CH-RLU. Workers sit on a hash ring at
//! `vnodes` points each; a function's home is the first worker clockwise from its hash. The
//! ring is rebuilt only when the membership version changes.

use super::{Balancer, ClusterView, WorkerView, stable_hash};
use crate::{Rng, SplitMix64};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Ring points, sorted, each naming a worker index of the view it was built from.
struct Ring {
    version: u64,
    points: Vec<(u64, usize)>,
}

impl Ring {
    fn build(view: &ClusterView, vnodes: usize) -> Ring {
        let mut points: Vec<(u64, usize)> = view
            .workers
            .iter()
            .enumerate()
            .flat_map(|(i, w)| (0..vnodes).map(move |v| (stable_hash(&format!("{}#{v}", w.name)), i)))
            .collect();
        points.sort_unstable();
        Ring { version: view.version, points }
    }

    /// Available workers in ring order from `fqdn`'s point, each once.
    fn walk(&self, fqdn: &str, view: &ClusterView) -> Vec<usize> {
        let n = view.workers.len();
        let mut seen = vec![false; n];
        let mut order = Vec::with_capacity(n);
        if self.points.is_empty() {
            return order;
        }
        let start = self.points.partition_point(|(p, _)| *p < stable_hash(fqdn));
        for k in 0..self.points.len() {
            let (_, i) = self.points[(start + k) % self.points.len()];
            if !seen[i] {
                seen[i] = true;
                if view.workers[i].available {
                    order.push(i);
                }
                if order.len() == n {
                    break;
                }
            }
        }
        order
    }
}

/// The ring, cached per membership version.
struct RingCache {
    vnodes: usize,
    ring: Mutex<Option<Ring>>,
}

impl RingCache {
    fn walk(&self, fqdn: &str, view: &ClusterView) -> Vec<usize> {
        let mut ring = self.ring.lock().unwrap();
        if ring.as_ref().is_none_or(|r| r.version != view.version) {
            *ring = Some(Ring::build(view, self.vnodes));
        }
        ring.as_ref().map(|r| r.walk(fqdn, view)).unwrap_or_default()
    }
}

/// The bound of bounded loads: worker `w` is full once its load reaches
/// `ceil(c * (total + 1) * cpus_w / cpus_all)` over the available workers, `total` being
/// their outstanding work before this invocation.
fn capacity(view: &ClusterView, w: &WorkerView, load_factor: f64) -> f64 {
    let (total, cpus) = view.available().fold((0u64, 0u64), |(l, c), (_, w)| (l + w.load(), c + w.cpus.max(1) as u64));
    (load_factor * (total + 1) as f64 * w.cpus.max(1) as f64 / cpus.max(1) as f64).ceil()
}

fn first_under_bound(order: &[usize], view: &ClusterView, load_factor: f64) -> Option<usize> {
    let under = |&i: &usize| (view.workers[i].load() as f64) < capacity(view, &view.workers[i], load_factor);
    // Some worker is always at or below the average, hence under the bound; the fallback
    // only guards against rounding.
    order.iter().copied().find(under).or(order.first().copied())
}

/// Consistent hashing with bounded loads.
pub struct ChBl {
    ring: RingCache,
    load_factor: f64,
}

impl ChBl {
    pub fn new(vnodes: usize, load_factor: f64) -> Self {
        ChBl { ring: RingCache { vnodes, ring: Mutex::new(None) }, load_factor }
    }
}

impl Balancer for ChBl {
    fn choose(&self, fqdn: &str, view: &ClusterView) -> Option<usize> {
        first_under_bound(&self.ring.walk(fqdn, view), view, self.load_factor)
    }
}

/// Which functions are popular: shares of the last `window` invocations.
struct Popularity {
    window: usize,
    recent: VecDeque<u64>,
    counts: HashMap<u64, usize>,
}

impl Popularity {
    /// Records an invocation of `key` and returns its share of the window.
    fn record(&mut self, key: u64) -> f64 {
        if self.recent.len() == self.window
            && let Some(old) = self.recent.pop_front()
            && let Some(c) = self.counts.get_mut(&old)
        {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&old);
            }
        }
        self.recent.push_back(key);
        let c = self.counts.entry(key).or_insert(0);
        *c += 1;
        *c as f64 / self.recent.len() as f64
    }
}

/// CH-RLU: bounded-load consistent hashing that spreads popular functions as load rises.
pub struct ChRlu {
    ring: RingCache,
    load_factor: f64,
    popular_share: f64,
    spread_load: f64,
    popularity: Mutex<Popularity>,
    rng: SplitMix64,
}

impl ChRlu {
    pub fn new(
        vnodes: usize,
        load_factor: f64,
        popular_share: f64,
        window: usize,
        spread_load: f64,
        seed: u64,
    ) -> Self {
        let popularity = Popularity { window, recent: VecDeque::with_capacity(window), counts: HashMap::new() };
        ChRlu {
            ring: RingCache { vnodes, ring: Mutex::new(None) },
            load_factor,
            popular_share,
            spread_load,
            popularity: Mutex::new(popularity),
            rng: SplitMix64::new(seed),
        }
    }
}

impl Balancer for ChRlu {
    fn choose(&self, fqdn: &str, view: &ClusterView) -> Option<usize> {
        let order = self.ring.walk(fqdn, view);
        let home = *order.first()?;
        let share = self.popularity.lock().unwrap().record(stable_hash(fqdn));
        if share < self.popular_share {
            return first_under_bound(&order, view, self.load_factor);
        }
        // A popular function: the first k workers of its walk share it, k rising with the
        // load per core at its home.
        let k = (1 + (view.workers[home].load_per_core() / self.spread_load) as usize).min(order.len());
        let cap = |i: usize| capacity(view, &view.workers[i], self.load_factor);
        let candidates: Vec<usize> =
            order[..k].iter().copied().filter(|&i| (view.workers[i].load() as f64) < cap(i)).collect();
        let least = candidates.iter().map(|&i| view.workers[i].load_per_core()).fold(f64::INFINITY, f64::min);
        let tied: Vec<usize> = candidates.into_iter().filter(|&i| view.workers[i].load_per_core() <= least).collect();
        match tied.len() {
            0 => first_under_bound(&order, view, self.load_factor),
            n => Some(tied[(self.rng.next_u64() % n as u64) as usize]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn counts(placed: &[usize], n: usize) -> Vec<usize> {
        (0..n).map(|i| placed.iter().filter(|&&p| p == i).count()).collect()
    }

    #[test]
    fn ch_bl_keeps_a_function_home_at_low_load_and_homes_differ() {
        let ws = workers(3);
        let b = ChBl::new(100, 1.25);
        let placed = sequential(&b, "f-1", &ws, 50);
        assert!(placed.iter().all(|&p| p == placed[0]), "{placed:?}");
        // Different functions land on different homes.
        let homes: std::collections::HashSet<usize> =
            (0..30).map(|i| sequential(&b, &format!("fn{i}-1"), &ws, 1)[0]).collect();
        assert_eq!(homes.len(), 3, "{homes:?}");
    }

    #[test]
    fn ch_bl_spills_to_the_next_on_the_ring_at_the_bound() {
        let b = ChBl::new(100, 1.25);
        let mut ws = workers(3);
        let home = sequential(&b, "f-1", &ws, 1)[0];
        let got = concurrent(&b, "f-1", &mut ws, 12);
        // The home holds its bound (ceil(1.25 * 12 / 3) = 5) and no worker more.
        assert_eq!(got[home], 5, "{got:?}");
        assert!(got.iter().all(|&g| g <= 5), "{got:?}");
        assert_eq!(got.iter().sum::<u64>(), 12);
    }

    #[test]
    fn ch_bl_moves_only_the_functions_of_an_unavailable_worker() {
        let b = ChBl::new(100, 1.25);
        let mut ws = workers(3);
        let before: Vec<usize> = (0..40).map(|i| sequential(&b, &format!("g{i}-1"), &ws, 1)[0]).collect();
        ws[1].available = false;
        let after: Vec<usize> = (0..40).map(|i| sequential(&b, &format!("g{i}-1"), &ws, 1)[0]).collect();
        for (x, y) in before.iter().zip(&after) {
            if *x != 1 {
                assert_eq!(x, y, "a function whose home is up must not move");
            } else {
                assert_ne!(*y, 1);
            }
        }
    }

    #[test]
    fn ch_rlu_spreads_a_popular_function_as_its_load_rises() {
        let ws = workers(3);
        let b = ChRlu::new(100, 1.25, 0.1, 100, 1.0, 7);
        // Low load: even a popular function stays home.
        let placed = sequential(&b, "hot-1", &ws, 30);
        assert!(placed.iter().all(|&p| p == placed[0]), "{placed:?}");
        // Rising load: it spreads to every worker, evenly.
        let mut ws = workers(3);
        let got = concurrent(&b, "hot-1", &mut ws, 12);
        assert!(got.iter().all(|&g| g >= 3), "{got:?}");
    }

    #[test]
    fn ch_rlu_keeps_an_unpopular_function_home_until_the_bound() {
        let b = ChRlu::new(100, 1.25, 0.2, 100, 1.0, 7);
        let ws = workers(3);
        // The window is dominated by other functions, so "cold-1" is unpopular.
        for i in 0..90 {
            sequential(&b, &format!("other{}-1", i % 9), &ws, 1);
        }
        let mut ws = workers(3);
        let home = sequential(&b, "cold-1", &ws, 1)[0];
        // The home holds two in flight (one per core), the others one: under the bound, so
        // an unpopular function stays, while a popular one spreads.
        ws.iter_mut().for_each(|w| w.inflight = 1);
        ws[home].inflight = 2;
        let view = ClusterView { version: 1, workers: &ws };
        assert_eq!(b.choose("cold-1", &view), Some(home));
        let popular = ChRlu::new(100, 1.25, 0.0, 100, 1.0, 7);
        let placed: Vec<usize> = (0..20).map(|_| popular.choose("cold-1", &view).unwrap()).collect();
        assert!(placed.iter().all(|&p| p != home), "a popular function spreads off a loaded home: {placed:?}");
        assert_eq!(counts(&placed, 3)[home], 0);
    }
}
