//! Consistent hashing with bounded loads (CH-BL) and CH-RLU. Workers sit on a hash ring at
//! `vnodes` points each; a function's home is the first worker clockwise from its hash. The
//! ring is rebuilt only when the membership version changes.

use super::{Balancer, ClusterView, Totals, WorkerView, stable_hash};
use crate::{Rng, SplitMix64};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Ring points, sorted, each naming a worker index of the view it was built from.
struct Ring {
    version: u64,
    points: Vec<(u64, usize)>,
    /// `starts[b]`: the first point whose hash's top `bits` bits are at least `b` (and
    /// `points.len()` at the end), so that finding a hash's place reads a point or two
    /// rather than searching the whole ring (a thousand workers put 100,000 points on it).
    starts: Vec<u32>,
    bits: u32,
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
        let bits = points.len().next_power_of_two().trailing_zeros().clamp(1, 20);
        let top = |h: u64| (h >> (64 - bits)) as usize;
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        for (i, &(h, _)) in points.iter().enumerate() {
            while starts.len() <= top(h) {
                starts.push(i as u32);
            }
        }
        starts.resize((1 << bits) + 1, points.len() as u32);
        Ring { version: view.version, points, starts, bits }
    }

    /// The first point at or after `hash`.
    fn place(&self, hash: u64) -> usize {
        let b = (hash >> (64 - self.bits)) as usize;
        let (from, to) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        from + self.points[from..to].partition_point(|(p, _)| *p < hash)
    }

    /// Available workers in ring order from `fqdn`'s point, each once, as far as the
    /// caller reads: a choice usually takes the first one or two of a thousand.
    fn walk<'a>(&'a self, fqdn: &str, view: &'a ClusterView) -> impl Iterator<Item = usize> + 'a {
        let n = view.workers.len();
        let start = self.place(stable_hash(fqdn));
        let points = self.points[start..].iter().chain(&self.points[..start]);
        let mut seen = Seen::default();
        points
            .map_while(move |&(_, i)| (seen.count < n).then(|| seen.insert(i, n).then_some(i)))
            .flatten()
            .filter(|&i| view.workers[i].available)
    }
}

/// The workers a walk has met: a short list in place while short (a walk usually stops
/// within a few), a bitmap beyond.
#[derive(Default)]
struct Seen {
    count: usize,
    few: [usize; Seen::FEW],
    all: Vec<bool>,
}

impl Seen {
    const FEW: usize = 16;

    /// Adds worker `i` of `n`; whether it is new.
    fn insert(&mut self, i: usize, n: usize) -> bool {
        if self.all.is_empty() {
            if self.few[..self.count].contains(&i) {
                return false;
            }
            if self.count < Self::FEW {
                self.few[self.count] = i;
                self.count += 1;
                return true;
            }
            self.all = vec![false; n];
            for &j in &self.few {
                self.all[j] = true;
            }
        }
        if std::mem::replace(&mut self.all[i], true) {
            return false;
        }
        self.count += 1;
        true
    }
}

/// The ring, cached per membership version.
struct RingCache {
    vnodes: usize,
    ring: Mutex<Option<Ring>>,
}

impl RingCache {
    /// `f` of the walk from `fqdn` (see [`Ring::walk`]).
    fn walk<T>(&self, fqdn: &str, view: &ClusterView, f: impl FnOnce(&mut dyn Iterator<Item = usize>) -> T) -> T {
        let mut ring = self.ring.lock().unwrap();
        if ring.as_ref().is_none_or(|r| r.version != view.version) {
            *ring = Some(Ring::build(view, self.vnodes));
        }
        let ring = ring.as_ref().expect("built above");
        f(&mut ring.walk(fqdn, view))
    }
}

/// The bound of bounded loads: worker `w` is full once its load reaches
/// `ceil(c * (total + 1) * cpus_w / cpus_all)` over the available workers, `total` being
/// their outstanding work before this invocation.
fn capacity(totals: &Totals, w: &WorkerView, load_factor: f64) -> f64 {
    (load_factor * (totals.load + 1) as f64 * w.cpus.max(1) as f64 / totals.cpus.max(1) as f64).ceil()
}

fn under_bound(i: usize, view: &ClusterView, totals: &Totals, load_factor: f64) -> bool {
    (view.workers[i].load() as f64) < capacity(totals, &view.workers[i], load_factor)
}

/// The first worker of `order` under its bound, else the first of `order`.
fn first_under_bound(
    order: &mut dyn Iterator<Item = usize>,
    view: &ClusterView,
    totals: &Totals,
    load_factor: f64,
) -> Option<usize> {
    // Some worker is always at or below the average, hence under the bound; the fallback
    // only guards against rounding.
    let mut first = None;
    for i in order {
        if under_bound(i, view, totals, load_factor) {
            return Some(i);
        }
        first.get_or_insert(i);
    }
    first
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
        self.choose_with(fqdn, view, &Totals::of(view))
    }

    fn choose_with(&self, fqdn: &str, view: &ClusterView, totals: &Totals) -> Option<usize> {
        self.ring.walk(fqdn, view, |order| first_under_bound(order, view, totals, self.load_factor))
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
        self.choose_with(fqdn, view, &Totals::of(view))
    }

    fn choose_with(&self, fqdn: &str, view: &ClusterView, totals: &Totals) -> Option<usize> {
        self.ring.walk(fqdn, view, |order| {
            let home = order.next()?;
            let share = self.popularity.lock().unwrap().record(stable_hash(fqdn));
            if share < self.popular_share {
                return first_under_bound(&mut std::iter::once(home).chain(order), view, totals, self.load_factor);
            }
            // A popular function: the first k workers of its walk share it, k rising with
            // the load per core at its home.
            let k = 1 + (view.workers[home].load_per_core() / self.spread_load) as usize;
            let first_k: Vec<usize> = std::iter::once(home).chain((&mut *order).take(k - 1)).collect();
            let candidates: Vec<usize> =
                first_k.iter().copied().filter(|&i| under_bound(i, view, totals, self.load_factor)).collect();
            let least = candidates.iter().map(|&i| view.workers[i].load_per_core()).fold(f64::INFINITY, f64::min);
            let tied: Vec<usize> =
                candidates.into_iter().filter(|&i| view.workers[i].load_per_core() <= least).collect();
            match tied.len() {
                0 => first_under_bound(&mut first_k.into_iter().chain(order), view, totals, self.load_factor),
                n => Some(tied[(self.rng.next_u64() % n as u64) as usize]),
            }
        })
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

    /// CH-BL by its definition, reading every worker: the full walk, then the first under
    /// the bound computed from all loads.
    fn ch_bl_by_definition(ring: &Ring, fqdn: &str, view: &ClusterView, c: f64) -> Option<usize> {
        let start = ring.points.partition_point(|(p, _)| *p < stable_hash(fqdn));
        let mut order: Vec<usize> = Vec::new();
        for k in 0..ring.points.len() {
            let i = ring.points[(start + k) % ring.points.len()].1;
            if !order.contains(&i) {
                order.push(i);
            }
        }
        order.retain(|&i| view.workers[i].available);
        let (total, cpus): (u64, u64) =
            view.available().fold((0, 0), |(l, n), (_, w)| (l + w.load(), n + w.cpus.max(1) as u64));
        let bound = |w: &WorkerView| (c * (total + 1) as f64 * w.cpus.max(1) as f64 / cpus as f64).ceil();
        order
            .iter()
            .copied()
            .find(|&i| (view.workers[i].load() as f64) < bound(&view.workers[i]))
            .or(order.first().copied())
    }

    #[test]
    fn a_hash_finds_its_place_on_the_ring_as_a_search_of_every_point_does() {
        let r = SplitMix64::new(4);
        for (n, vnodes) in [(0, 1), (1, 1), (3, 2), (40, 100), (1000, 100)] {
            let ws = workers(n);
            let ring = Ring::build(&ClusterView { version: 1, workers: &ws }, vnodes);
            let mut probes: Vec<u64> = (0..2000).map(|_| r.next_u64()).collect();
            probes.extend(ring.points.iter().flat_map(|&(p, _)| [p, p.wrapping_sub(1), p.wrapping_add(1)]).take(3000));
            probes.extend([0, u64::MAX]);
            for h in probes {
                assert_eq!(ring.place(h), ring.points.partition_point(|(p, _)| *p < h), "{n} workers, hash {h:#x}");
            }
        }
    }

    #[test]
    fn ch_bl_reads_few_workers_and_chooses_as_its_definition_does() {
        let r = SplitMix64::new(9);
        for case in 0..300 {
            let n = 1 + (r.next_u64() % 60) as usize;
            let mut ws = workers(n);
            for w in ws.iter_mut() {
                w.inflight = r.next_u64() % 8;
                w.cpus = 1 + (r.next_u64() % 4) as u32;
                w.available = !r.next_u64().is_multiple_of(5);
                if case % 2 == 0 {
                    // Nearly all full, one in ten idle: walks go far before one is under
                    // the bound.
                    (w.inflight, w.cpus, w.available) =
                        (if r.next_u64().is_multiple_of(10) { 0 } else { 100 }, 1, true);
                }
            }
            let view = ClusterView { version: 1, workers: &ws };
            let b = ChBl::new(1 + case % 7, 1.1);
            let fqdn = format!("f{case}-1");
            let got = b.choose(&fqdn, &view);
            let ring = Ring::build(&view, 1 + case % 7);
            assert_eq!(got, ch_bl_by_definition(&ring, &fqdn, &view, 1.1), "case {case}: {ws:?}");
        }
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
