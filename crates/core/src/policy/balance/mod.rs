//! Load balancing: which worker gets an invocation. Every policy is a [`Balancer`] built by
//! [`BalancerConfig`], a `#[serde(tag = "type")]` enum. Policies do no IO: they see a
//! [`ClusterView`] (the workers in a fixed order with their load) and answer an index, so
//! the same code runs live and in simulation and is unit tested here.

mod ch;
mod simple;

pub use ch::{ChBl, ChRlu};
use serde::{Deserialize, Serialize};
pub use simple::{LeastLoaded, RoundRobin, RrGuard};

/// One worker as a policy sees it.
#[derive(Debug, Clone, Default)]
pub struct WorkerView {
    /// Stable identity: placement on the hash ring depends on it.
    pub name: std::sync::Arc<str>,
    pub cpus: u32,
    /// Invocations the controller has sent to this worker and not yet seen answered.
    pub inflight: u64,
    /// From the worker's last status: its queue and its running invocations beyond the
    /// controller's own in-flight ones (load from elsewhere).
    pub queued: u64,
    pub running: u64,
    /// The worker host's one-minute load average, from its last status.
    pub load_avg: f64,
    /// The worker host's CPU use (0..=100 %) and the share of its container pool's memory
    /// in use (0..=100 %), from its last status.
    pub cpu_pct: f64,
    pub mem_pct: f64,
    /// Healthy, and not already tried for this invocation.
    pub available: bool,
}

impl WorkerView {
    /// Outstanding invocations: the controller's live count plus the work from elsewhere
    /// the worker last reported.
    pub fn load(&self) -> u64 {
        self.inflight + self.queued + self.running
    }

    fn cpus(&self) -> f64 {
        self.cpus.max(1) as f64
    }

    /// Load per core, the figure that compares workers of different sizes.
    pub fn load_per_core(&self) -> f64 {
        self.load() as f64 / self.cpus()
    }
}

/// The cluster at one moment. `version` changes whenever the set or order of workers does,
/// so that policies may cache what they derive from the names (the hash ring).
pub struct ClusterView<'a> {
    pub version: u64,
    pub workers: &'a [WorkerView],
}

impl ClusterView<'_> {
    pub fn available(&self) -> impl Iterator<Item = (usize, &WorkerView)> {
        self.workers.iter().enumerate().filter(|(_, w)| w.available)
    }
}

/// Sums over the available workers of a view, which bounded loads and turns need. A caller
/// that keeps them as loads change (a simulated cluster of a thousand workers: see
/// [`FixedCluster`]) passes them to [`Balancer::choose_with`], so that a choice does not
/// read every worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Available workers.
    pub available: usize,
    /// Their load ([`WorkerView::load`]).
    pub load: u64,
    /// Their cpus (each at least 1).
    pub cpus: u64,
}

impl Totals {
    pub fn of(view: &ClusterView) -> Totals {
        view.available().fold(Totals::default(), |t, (_, w)| t.with(w, 1))
    }

    /// These totals with `w` added (`sign` 1) or taken out (-1), if it is available.
    fn with(self, w: &WorkerView, sign: i64) -> Totals {
        if !w.available {
            return self;
        }
        let add = |x: u64, d: u64| if sign > 0 { x + d } else { x.saturating_sub(d) };
        Totals {
            available: add(self.available as u64, 1) as usize,
            load: add(self.load, w.load()),
            cpus: add(self.cpus, w.cpus.max(1) as u64),
        }
    }
}

pub trait Balancer: Send + Sync {
    /// The index in `view.workers` of the worker that should run `fqdn`, or `None` when no
    /// worker is available.
    fn choose(&self, fqdn: &str, view: &ClusterView) -> Option<usize>;

    /// [`choose`](Balancer::choose) given the view's [`Totals`]: the same answer, without
    /// reading every worker where the policy can.
    fn choose_with(&self, fqdn: &str, view: &ClusterView, _totals: &Totals) -> Option<usize> {
        self.choose(fqdn, view)
    }
}

fn default_vnodes() -> usize {
    100
}
fn default_load_factor() -> f64 {
    1.25
}
fn default_popular_share() -> f64 {
    0.1
}
fn default_window() -> usize {
    1000
}
fn default_spread_load() -> f64 {
    1.0
}
fn default_max_load_per_core() -> f64 {
    2.0
}

/// What "least loaded" compares, each from the worker's last status (`outstanding` also
/// counts the controller's own in-flight invocations at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoadMetric {
    /// Invocations queued and running per core.
    #[default]
    Outstanding,
    /// The host's one-minute load average per core.
    LoadAvg,
    /// Invocations running per core.
    Running,
    /// Invocations queued.
    Queue,
    /// The host's CPU use, %.
    Cpu,
    /// The share of the container pool's memory in use, %.
    Memory,
}

impl LoadMetric {
    /// The figure of `w` this metric compares (lower is less loaded).
    pub fn of(self, w: &WorkerView) -> f64 {
        match self {
            LoadMetric::Outstanding => w.load_per_core(),
            LoadMetric::LoadAvg => w.load_avg / w.cpus(),
            LoadMetric::Running => (w.running + w.inflight) as f64 / w.cpus(),
            LoadMetric::Queue => w.queued as f64,
            LoadMetric::Cpu => w.cpu_pct,
            LoadMetric::Memory => w.mem_pct,
        }
    }
}

/// The balancing policy, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BalancerConfig {
    /// Each available worker in turn.
    #[default]
    RoundRobin,
    /// The worker with the least load by `metric` (default `outstanding`: its queue and
    /// running invocations from status beyond the controller's in-flight count, per core);
    /// ties go to the lower load average, then in turn.
    LeastLoaded {
        #[serde(default)]
        metric: LoadMetric,
    },
    /// Round robin with a guardrail: each available worker in turn, skipping one whose
    /// outstanding work per core is at or above `max_load_per_core`; when every worker is,
    /// the least loaded.
    RrGuard {
        #[serde(default = "default_max_load_per_core")]
        max_load_per_core: f64,
    },
    /// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA'18):
    /// a function goes to its home on the ring unless that worker already holds more than
    /// `load_factor` times its share of the outstanding work; then to the next on the ring.
    ChBl {
        /// Points per worker on the ring.
        #[serde(default = "default_vnodes")]
        vnodes: usize,
        /// The bound `c` (> 1): a worker is full at `ceil(c * (total + 1) * its share)`.
        #[serde(default = "default_load_factor")]
        load_factor: f64,
    },
    /// CH-RLU (Fuerst and Sharma, HPDC'22): bounded-load consistent hashing where a popular
    /// function (at least `popular_share` of the last `window` invocations) is spread over
    /// more workers, the first k on its ring walk, as its home's load per core rises
    /// (k = 1 + home load per core / `spread_load`); the least loaded of those k gets it,
    /// ties broken at random so that stale loads do not herd invocations.
    ChRlu {
        #[serde(default = "default_vnodes")]
        vnodes: usize,
        #[serde(default = "default_load_factor")]
        load_factor: f64,
        #[serde(default = "default_popular_share")]
        popular_share: f64,
        #[serde(default = "default_window")]
        window: usize,
        #[serde(default = "default_spread_load")]
        spread_load: f64,
    },
}

impl BalancerConfig {
    pub fn name(&self) -> &'static str {
        match self {
            BalancerConfig::RoundRobin => "round_robin",
            BalancerConfig::LeastLoaded { .. } => "least_loaded",
            BalancerConfig::RrGuard { .. } => "rr_guard",
            BalancerConfig::ChBl { .. } => "ch_bl",
            BalancerConfig::ChRlu { .. } => "ch_rlu",
        }
    }

    pub fn check(&self) -> Result<(), String> {
        let (vnodes, load_factor) = match self {
            BalancerConfig::ChBl { vnodes, load_factor } => (*vnodes, *load_factor),
            BalancerConfig::ChRlu { vnodes, load_factor, popular_share, window, spread_load } => {
                if *window == 0 || *spread_load <= 0.0 || !(0.0..=1.0).contains(popular_share) {
                    return Err("balancer: window and spread_load must be above 0, popular_share in 0..=1".into());
                }
                (*vnodes, *load_factor)
            }
            BalancerConfig::RrGuard { max_load_per_core }
                if max_load_per_core.is_nan() || *max_load_per_core <= 0.0 =>
            {
                return Err(format!("balancer: max_load_per_core must be above 0 (got {max_load_per_core})"));
            }
            _ => return Ok(()),
        };
        if vnodes == 0 || load_factor <= 1.0 {
            return Err(format!("balancer: vnodes must be above 0 and load_factor above 1 (got {load_factor})"));
        }
        Ok(())
    }

    /// Builds the policy; `seed` feeds the random tie-breaks of CH-RLU.
    pub fn build(&self, seed: u64) -> Box<dyn Balancer> {
        match self.clone() {
            BalancerConfig::RoundRobin => Box::new(RoundRobin::default()),
            BalancerConfig::LeastLoaded { metric } => Box::new(LeastLoaded::by(metric)),
            BalancerConfig::RrGuard { max_load_per_core } => Box::new(RrGuard::new(max_load_per_core)),
            BalancerConfig::ChBl { vnodes, load_factor } => Box::new(ChBl::new(vnodes, load_factor)),
            BalancerConfig::ChRlu { vnodes, load_factor, popular_share, window, spread_load } => {
                Box::new(ChRlu::new(vnodes, load_factor, popular_share, window, spread_load, seed))
            }
        }
    }
}

/// A fixed set of workers behind a policy, whose loads the caller supplies: the
/// controller's balancing without its membership, health checks or IO. A simulation (or any
/// client that counts its own in-flight invocations) calls [`FixedCluster::choose`] with
/// each worker's count; every worker is available and reports no status of its own, so the
/// load a policy sees is exactly that count, as the live controller's in-flight count is.
pub struct FixedCluster {
    balancer: Box<dyn Balancer>,
    workers: std::sync::Mutex<(Vec<WorkerView>, Totals)>,
}

impl FixedCluster {
    /// Workers given as (name, cpus), in this order (the index `choose` answers); the
    /// policy is built with `seed` as the live controller builds it.
    pub fn new(config: &BalancerConfig, seed: u64, workers: &[(String, u32)]) -> Self {
        let workers = workers
            .iter()
            .map(|(name, cpus)| WorkerView {
                name: name.as_str().into(),
                cpus: *cpus,
                available: true,
                ..Default::default()
            })
            .collect::<Vec<_>>();
        let totals = Totals::of(&ClusterView { version: 1, workers: &workers });
        FixedCluster { balancer: config.build(seed), workers: std::sync::Mutex::new((workers, totals)) }
    }

    pub fn len(&self) -> usize {
        self.workers.lock().unwrap().0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The worker for `fqdn` given each worker's in-flight invocations (`inflight[i]` for
    /// worker `i`; missing entries count as 0). Always `Some` for a non-empty cluster.
    pub fn choose(&self, fqdn: &str, inflight: &[u64]) -> Option<usize> {
        let mut guard = self.workers.lock().unwrap();
        let (workers, totals) = &mut *guard;
        for (i, w) in workers.iter_mut().enumerate() {
            w.inflight = inflight.get(i).copied().unwrap_or(0);
        }
        *totals = Totals::of(&ClusterView { version: 1, workers });
        self.balancer.choose_with(fqdn, &ClusterView { version: 1, workers }, totals)
    }

    /// Sets worker `i`'s in-flight count (the caller tells every change), for [`Self::pick`].
    pub fn set_inflight(&self, i: usize, inflight: u64) {
        let mut guard = self.workers.lock().unwrap();
        let (workers, totals) = &mut *guard;
        if let Some(w) = workers.get_mut(i) {
            *totals = totals.with(w, -1);
            w.inflight = inflight;
            *totals = totals.with(w, 1);
        }
    }

    /// The worker for `fqdn` given the in-flight counts last set: [`Self::choose`] without
    /// passing every count, for a cluster too large to copy them at every invocation.
    pub fn pick(&self, fqdn: &str) -> Option<usize> {
        let guard = self.workers.lock().unwrap();
        let (workers, totals) = &*guard;
        self.balancer.choose_with(fqdn, &ClusterView { version: 1, workers }, totals)
    }
}

/// A stable 64-bit hash (FNV-1a, then SplitMix64's finaliser for avalanche), the same in
/// every process and run, so a function's home does not move across restarts.
pub fn stable_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// `n` available workers w0..w{n-1} with 2 cpus and no load.
    pub fn workers(n: usize) -> Vec<WorkerView> {
        (0..n)
            .map(|i| WorkerView { name: format!("w{i}").into(), cpus: 2, available: true, ..Default::default() })
            .collect()
    }

    /// Sends `count` invocations of `fqdn`, each finishing before the next: where they went.
    pub fn sequential(b: &dyn Balancer, fqdn: &str, ws: &[WorkerView], count: usize) -> Vec<usize> {
        let view = ClusterView { version: 1, workers: ws };
        (0..count).map(|_| b.choose(fqdn, &view).unwrap()).collect()
    }

    /// Sends `count` invocations of `fqdn` that all stay in flight: how many each worker got.
    pub fn concurrent(b: &dyn Balancer, fqdn: &str, ws: &mut [WorkerView], count: usize) -> Vec<u64> {
        for _ in 0..count {
            let i = b.choose(fqdn, &ClusterView { version: 1, workers: ws }).unwrap();
            ws[i].inflight += 1;
        }
        ws.iter().map(|w| w.inflight).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_and_defaults() {
        let c: BalancerConfig = serde_json::from_str(r#"{"type": "ch_rlu"}"#).unwrap();
        assert_eq!(c.name(), "ch_rlu");
        assert!(c.check().is_ok());
        let e = serde_json::from_str::<BalancerConfig>(r#"{"type": "ch_bl", "vnode": 3}"#).unwrap_err();
        assert!(e.to_string().contains("vnode"), "{e}");
        let bad: BalancerConfig = serde_json::from_str(r#"{"type": "ch_bl", "load_factor": 0.5}"#).unwrap();
        assert!(bad.check().is_err());
    }

    #[test]
    fn fixed_cluster_uses_the_given_loads() {
        let ws: Vec<(String, u32)> = (0..3).map(|i| (format!("w{i}"), 2)).collect();
        let rr = FixedCluster::new(&BalancerConfig::RoundRobin, 1, &ws);
        let got: Vec<_> = (0..4).map(|_| rr.choose("f-1", &[0, 0, 0]).unwrap()).collect();
        assert_eq!(got, vec![0, 1, 2, 0]);
        let ll = FixedCluster::new(&BalancerConfig::LeastLoaded { metric: LoadMetric::Outstanding }, 1, &ws);
        assert_eq!(ll.choose("f-1", &[3, 1, 2]), Some(1));
        let ch = FixedCluster::new(&BalancerConfig::ChBl { vnodes: 100, load_factor: 1.25 }, 1, &ws);
        let home = ch.choose("f-1", &[0, 0, 0]).unwrap();
        assert!((0..10).all(|_| ch.choose("f-1", &[0, 0, 0]) == Some(home)));
        let mut loads = [0u64; 3];
        loads[home] = 10;
        assert_ne!(ch.choose("f-1", &loads), Some(home), "a loaded home spills");
        assert_eq!(FixedCluster::new(&BalancerConfig::RoundRobin, 1, &[]).choose("f-1", &[]), None);
    }

    /// Loads told one change at a time (`set_inflight`, `pick`) give the same choices as
    /// all loads given at each choice (`choose`), for every policy, over many workers.
    #[test]
    fn fixed_cluster_told_each_change_chooses_as_if_given_every_load() {
        use crate::{Rng, SplitMix64};
        let ws: Vec<(String, u32)> = (0..40).map(|i| (format!("w{i}"), 1 + i % 3)).collect();
        for c in [
            r#"{"type":"round_robin"}"#,
            r#"{"type":"least_loaded"}"#,
            r#"{"type":"rr_guard"}"#,
            r#"{"type":"ch_bl", "vnodes": 20}"#,
            r#"{"type":"ch_rlu", "vnodes": 20, "popular_share": 0.2, "window": 50}"#,
        ] {
            let config = serde_json::from_str::<BalancerConfig>(c).unwrap();
            let (told, given) = (FixedCluster::new(&config, 3, &ws), FixedCluster::new(&config, 3, &ws));
            let r = SplitMix64::new(5);
            let mut inflight = vec![0u64; ws.len()];
            for n in 0..3000 {
                let fqdn = format!("f{}-1", r.next_u64() % 60);
                let i = told.pick(&fqdn).unwrap();
                assert_eq!(Some(i), given.choose(&fqdn, &inflight), "{c}, invocation {n}");
                inflight[i] += 1;
                told.set_inflight(i, inflight[i]);
                // Some invocations finish.
                let j = (r.next_u64() % ws.len() as u64) as usize;
                if inflight[j] > 0 && !r.next_u64().is_multiple_of(3) {
                    inflight[j] -= 1;
                    told.set_inflight(j, inflight[j]);
                }
            }
        }
    }

    #[test]
    fn no_available_worker_means_none() {
        let mut ws = testing::workers(2);
        ws.iter_mut().for_each(|w| w.available = false);
        for c in
            [r#"{"type":"round_robin"}"#, r#"{"type":"least_loaded"}"#, r#"{"type":"ch_bl"}"#, r#"{"type":"ch_rlu"}"#]
        {
            let b = serde_json::from_str::<BalancerConfig>(c).unwrap().build(1);
            assert_eq!(b.choose("f-1", &ClusterView { version: 1, workers: &ws }), None, "{c}");
            assert_eq!(b.choose("f-1", &ClusterView { version: 2, workers: &[] }), None, "{c}");
        }
    }
}
