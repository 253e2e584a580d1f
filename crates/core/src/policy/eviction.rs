//! Which idle containers go: eviction when memory is short, and keep-alive expiry.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An idle container as a policy sees it.
#[derive(Debug, Clone)]
pub struct IdleContainer {
    pub id: u64,
    pub fqdn: Arc<str>,
    pub memory_mb: u64,
    pub last_used: Duration,
    /// Calls it has served.
    pub uses: u64,
    /// How long its start took: what evicting it costs the next call that needs one.
    pub cold_start: Duration,
    /// What the eviction policy said of it when it was last released
    /// ([`EvictionPolicy::mark`]); 0 before.
    pub mark: f64,
}

/// Chooses idle containers to remove so that `needed_mb` more memory becomes free.
pub trait EvictionPolicy: Send + Sync {
    /// Returns the ids to evict, or an empty list if evicting every candidate would not
    /// free enough (then nothing is evicted).
    fn choose_victims(&self, idle: &[IdleContainer], needed_mb: u64) -> Vec<u64>;
    /// A value the pool keeps with a container released after a call, and shows back in
    /// [`IdleContainer::mark`]: a policy's memory of the container (GDSF's priority).
    fn mark(&self, _c: &IdleContainer) -> f64 {
        0.0
    }
}

/// The eviction policy in config: `eviction = { type = "lru" }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvictionConfig {
    /// Least recently used first.
    #[default]
    Lru,
    /// Least frequently used first: the fewest calls served, then the least recently used.
    Lfu,
    /// Greedy-Dual-Size-Frequency, keep-alive as caching (FaasCache, Fuerst and Sharma,
    /// ASPLOS '21): a container's priority, set when it is released, is the clock plus
    /// uses x cold-start cost / memory; the lowest priority goes first, and the clock
    /// rises to the priority of the last evicted, so containers not used for long age out.
    Gdsf,
}

impl EvictionConfig {
    pub fn build(&self) -> Box<dyn EvictionPolicy> {
        match self {
            EvictionConfig::Lru => Box::new(Lru),
            EvictionConfig::Lfu => Box::new(Lfu),
            EvictionConfig::Gdsf => Box::new(Gdsf::default()),
        }
    }
}

/// Takes `idle` in the order `key` sorts them until `needed_mb` is freed; nothing when
/// all of them would not be enough.
fn take_until_enough<K: Ord>(idle: &[IdleContainer], needed_mb: u64, key: impl Fn(&IdleContainer) -> K) -> Vec<u64> {
    let mut order: Vec<&IdleContainer> = idle.iter().collect();
    order.sort_by_key(|c| (key(c), c.id));
    let mut freed = 0;
    let mut victims = Vec::new();
    for c in order {
        if freed >= needed_mb {
            break;
        }
        freed += c.memory_mb;
        victims.push(c.id);
    }
    if freed >= needed_mb { victims } else { Vec::new() }
}

pub struct Lru;

impl EvictionPolicy for Lru {
    fn choose_victims(&self, idle: &[IdleContainer], needed_mb: u64) -> Vec<u64> {
        take_until_enough(idle, needed_mb, |c| c.last_used)
    }
}

pub struct Lfu;

impl EvictionPolicy for Lfu {
    fn choose_victims(&self, idle: &[IdleContainer], needed_mb: u64) -> Vec<u64> {
        take_until_enough(idle, needed_mb, |c| (c.uses, c.last_used))
    }
}

/// GDSF: the clock is an f64 kept in an atomic's bits.
#[derive(Default)]
pub struct Gdsf {
    clock: AtomicU64,
}

impl Gdsf {
    fn clock(&self) -> f64 {
        f64::from_bits(self.clock.load(Ordering::Relaxed))
    }
}

impl EvictionPolicy for Gdsf {
    fn mark(&self, c: &IdleContainer) -> f64 {
        let cost_ms = c.cold_start.as_secs_f64() * 1000.0;
        self.clock() + c.uses.max(1) as f64 * cost_ms / c.memory_mb.max(1) as f64
    }

    fn choose_victims(&self, idle: &[IdleContainer], needed_mb: u64) -> Vec<u64> {
        // Never released after a call (a prewarmed container): priority is the clock.
        let priority = |c: &IdleContainer| if c.mark > 0.0 { c.mark } else { self.clock() };
        // Priorities are finite and never negative, whose bits order as the numbers do.
        let victims = take_until_enough(idle, needed_mb, |c| (priority(c).max(0.0).to_bits(), c.last_used));
        let highest = idle.iter().filter(|c| victims.contains(&c.id)).map(priority).fold(self.clock(), f64::max);
        self.clock.store(highest.to_bits(), Ordering::Relaxed);
        victims
    }
}

/// Decides when an idle container has been kept long enough, and (optionally) when a
/// function should get a container before its next call.
pub trait KeepAlivePolicy: Send + Sync {
    fn expired(&self, c: &IdleContainer, now: Duration) -> bool;
    /// The earliest time at which `expired(c, t)` may hold, as far as the policy knows now
    /// (a later arrival of `c`'s function may bring it earlier: see `arrived`); `None`:
    /// never. The pool's reaper sleeps until then rather than looking at every tick. The
    /// default, `c`'s last use, is always right: it has the reaper look at every tick.
    fn expires_at(&self, c: &IdleContainer) -> Option<Duration> {
        Some(c.last_used)
    }
    /// A call of `fqdn` arrived at `now` (the pool tells every invocation's acquire).
    /// Returns the earliest time at which, because of what the policy learnt from it, an
    /// idle container of `fqdn` may expire or its pre-warm fall due, if that may be earlier
    /// than what `expires_at` and `next_prewarm` said before (the pool's reaper then looks
    /// again); `None` if nothing moved earlier.
    fn arrived(&self, _fqdn: &Arc<str>, _now: Duration) -> Option<Duration> {
        None
    }
    /// The functions whose pre-warm time has come by `now`, each once: the pool starts a
    /// container for each that has none idle.
    fn prewarm_due(&self, _now: Duration) -> Vec<Arc<str>> {
        Vec::new()
    }
    /// When the earliest planned pre-warm falls due, if any is planned.
    fn next_prewarm(&self) -> Option<Duration> {
        None
    }
}

/// The earliest time at which a container last used at `last_used` has been idle for more
/// than `keep` (the keep-alive policies' test: idle > keep).
fn idle_past(last_used: Duration, keep: Duration) -> Duration {
    last_used + keep + Duration::from_nanos(1)
}

/// The keep-alive policy in config: `keep_alive = { type = "fixed", ttl_ms = 600000 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeepAliveConfig {
    /// Remove a container idle for longer than `ttl_ms`.
    Fixed { ttl_ms: u64 },
    /// Per-function TTL: a function named in `functions` (by fqdn, `name-version`) keeps
    /// its containers that long, the others `ttl_ms`.
    Ttl {
        ttl_ms: u64,
        #[serde(default)]
        functions: BTreeMap<String, u64>,
    },
    /// The hybrid histogram policy (Shahrad et al., "Serverless in the Wild", ATC '20): per
    /// function, a histogram of the times between its calls (`bins` bins of `bin_ms`). Once
    /// it holds `min_samples` and most fall in range, its `head_pct` percentile (less 10 %)
    /// is the pre-warm window and its `tail_pct` percentile (plus 10 %) the keep-alive
    /// window: with a pre-warm window, a container goes right after its call and a new one
    /// is started that long after the call arrived, kept until the keep-alive window ends;
    /// without one, a container is kept the keep-alive window after its use. A function
    /// whose histogram is not (yet) representative keeps containers `fallback_ttl_ms`.
    Hybrid {
        #[serde(default = "default_bin_ms")]
        bin_ms: u64,
        #[serde(default = "default_bins")]
        bins: usize,
        #[serde(default = "default_head_pct")]
        head_pct: f64,
        #[serde(default = "default_tail_pct")]
        tail_pct: f64,
        #[serde(default = "default_min_samples")]
        min_samples: u64,
        #[serde(default = "default_fallback_ttl_ms")]
        fallback_ttl_ms: u64,
    },
}

fn default_bin_ms() -> u64 {
    60_000
}
fn default_bins() -> usize {
    240
}
fn default_head_pct() -> f64 {
    5.0
}
fn default_tail_pct() -> f64 {
    99.0
}
fn default_min_samples() -> u64 {
    10
}
fn default_fallback_ttl_ms() -> u64 {
    10 * 60 * 1000
}

impl Default for KeepAliveConfig {
    fn default() -> Self {
        KeepAliveConfig::Fixed { ttl_ms: 10 * 60 * 1000 }
    }
}

impl KeepAliveConfig {
    pub fn build(&self) -> Box<dyn KeepAlivePolicy> {
        match self {
            KeepAliveConfig::Fixed { ttl_ms } => Box::new(FixedTtl(Duration::from_millis(*ttl_ms))),
            KeepAliveConfig::Ttl { ttl_ms, functions } => Box::new(PerFunctionTtl {
                default: Duration::from_millis(*ttl_ms),
                functions: functions.iter().map(|(f, ms)| (f.clone(), Duration::from_millis(*ms))).collect(),
            }),
            KeepAliveConfig::Hybrid { bin_ms, bins, head_pct, tail_pct, min_samples, fallback_ttl_ms } => {
                Box::new(Hybrid {
                    bin: Duration::from_millis((*bin_ms).max(1)),
                    bins: (*bins).max(1),
                    head_pct: head_pct.clamp(0.0, 100.0),
                    tail_pct: tail_pct.clamp(0.0, 100.0),
                    min_samples: *min_samples,
                    fallback: Duration::from_millis(*fallback_ttl_ms),
                    functions: Mutex::new(HashMap::new()),
                })
            }
        }
    }
}

pub struct FixedTtl(pub Duration);

impl KeepAlivePolicy for FixedTtl {
    fn expired(&self, c: &IdleContainer, now: Duration) -> bool {
        now.saturating_sub(c.last_used) > self.0
    }

    fn expires_at(&self, c: &IdleContainer) -> Option<Duration> {
        Some(idle_past(c.last_used, self.0))
    }
}

pub struct PerFunctionTtl {
    default: Duration,
    functions: BTreeMap<String, Duration>,
}

impl PerFunctionTtl {
    fn ttl(&self, fqdn: &str) -> Duration {
        self.functions.get(fqdn).copied().unwrap_or(self.default)
    }
}

impl KeepAlivePolicy for PerFunctionTtl {
    fn expired(&self, c: &IdleContainer, now: Duration) -> bool {
        now.saturating_sub(c.last_used) > self.ttl(&c.fqdn)
    }

    fn expires_at(&self, c: &IdleContainer) -> Option<Duration> {
        Some(idle_past(c.last_used, self.ttl(&c.fqdn)))
    }
}

/// The hybrid histogram policy: see [`KeepAliveConfig::Hybrid`].
pub struct Hybrid {
    bin: Duration,
    bins: usize,
    head_pct: f64,
    tail_pct: f64,
    min_samples: u64,
    fallback: Duration,
    functions: Mutex<HashMap<Arc<str>, Histogram>>,
}

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    in_range: u64,
    out_of_range: u64,
    last_arrival: Option<Duration>,
    /// (pre-warm, keep-alive) windows, once representative.
    windows: Option<(Duration, Duration)>,
    /// When the next pre-warm is due.
    prewarm_at: Option<Duration>,
}

impl Hybrid {
    /// The (pre-warm, keep-alive) windows of a histogram, if it is representative: enough
    /// samples, most of them in range.
    fn windows(&self, h: &Histogram) -> Option<(Duration, Duration)> {
        if h.in_range < self.min_samples.max(1) || h.out_of_range > h.in_range {
            return None;
        }
        let at = |pct: f64| {
            let want = ((pct / 100.0) * h.in_range as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            h.counts.iter().position(|c| {
                seen += c;
                seen >= want
            })
        };
        let head = at(self.head_pct)? as u32;
        let tail = at(self.tail_pct)? as u32 + 1;
        Some((self.bin * head * 9 / 10, self.bin * tail * 11 / 10))
    }
}

impl Hybrid {
    /// How long a container may stay idle under `windows` (see `expired`).
    fn keep(&self, windows: Option<(Duration, Duration)>, c: &IdleContainer) -> Duration {
        match windows {
            None => self.fallback,
            Some((pre, keep)) if pre.is_zero() => keep,
            Some((pre, keep)) if c.uses == 0 => keep.saturating_sub(pre),
            Some(_) => Duration::ZERO,
        }
    }
}

impl KeepAlivePolicy for Hybrid {
    fn arrived(&self, fqdn: &Arc<str>, now: Duration) -> Option<Duration> {
        let mut functions = self.functions.lock().unwrap();
        let h = match functions.get_mut(fqdn) {
            Some(h) => h,
            None => functions.entry(fqdn.clone()).or_default(),
        };
        if let Some(last) = h.last_arrival {
            let bin = (now.saturating_sub(last).as_nanos() / self.bin.as_nanos()) as usize;
            if bin < self.bins {
                if h.counts.len() < self.bins {
                    h.counts.resize(self.bins, 0);
                }
                h.counts[bin] += 1;
                h.in_range += 1;
            } else {
                h.out_of_range += 1;
            }
        }
        h.last_arrival = Some(now);
        let windows = self.windows(h);
        let h = functions.get_mut(fqdn).expect("inserted above");
        // New windows may have expired the function's idle containers already.
        let moved = (h.windows != windows).then_some(now);
        h.windows = windows;
        h.prewarm_at = windows.filter(|(pre, _)| !pre.is_zero()).map(|(pre, _)| now + pre);
        [moved, h.prewarm_at].into_iter().flatten().min()
    }

    fn prewarm_due(&self, now: Duration) -> Vec<Arc<str>> {
        let mut functions = self.functions.lock().unwrap();
        let mut due = Vec::new();
        for (f, h) in functions.iter_mut() {
            if h.prewarm_at.is_some_and(|at| at <= now) {
                h.prewarm_at = None;
                due.push(f.clone());
            }
        }
        due.sort();
        due
    }

    fn next_prewarm(&self) -> Option<Duration> {
        self.functions.lock().unwrap().values().filter_map(|h| h.prewarm_at).min()
    }

    /// Without windows, the fallback TTL; without a pre-warm window, kept the keep-alive
    /// window after its use; with one, a pre-warmed container (never used) lives out the
    /// keep-alive window from the pre-warm, and a used one goes once its call is over.
    fn expired(&self, c: &IdleContainer, now: Duration) -> bool {
        let windows = self.functions.lock().unwrap().get(&c.fqdn).and_then(|h| h.windows);
        now.saturating_sub(c.last_used) > self.keep(windows, c)
    }

    fn expires_at(&self, c: &IdleContainer) -> Option<Duration> {
        let windows = self.functions.lock().unwrap().get(&c.fqdn).and_then(|h| h.windows);
        Some(idle_past(c.last_used, self.keep(windows, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(id: u64, mem: u64, last_ms: u64) -> IdleContainer {
        IdleContainer {
            id,
            fqdn: Arc::from("f-1"),
            memory_mb: mem,
            last_used: Duration::from_millis(last_ms),
            uses: 1,
            cold_start: Duration::from_millis(100),
            mark: 0.0,
        }
    }

    #[test]
    fn lfu_takes_the_least_used_first_then_the_oldest() {
        let mut pool = [idle(1, 100, 10), idle(2, 100, 30), idle(3, 100, 20)];
        pool[0].uses = 9;
        pool[1].uses = 2;
        pool[2].uses = 2;
        assert_eq!(Lfu.choose_victims(&pool, 150), vec![3, 2]);
    }

    #[test]
    fn gdsf_keeps_the_often_used_cheap_to_keep_container_and_ages_the_rest() {
        let gdsf = Gdsf::default();
        // a: used often, small, slow to start; b: used once, large, quick to start.
        let mut a = idle(1, 64, 10);
        a.uses = 20;
        a.cold_start = Duration::from_millis(500);
        let mut b = idle(2, 512, 50);
        b.cold_start = Duration::from_millis(50);
        a.mark = gdsf.mark(&a);
        b.mark = gdsf.mark(&b);
        assert!(a.mark > b.mark);
        // LRU would take a (least recently used); GDSF takes b.
        assert_eq!(Lru.choose_victims(&[a.clone(), b.clone()], 10), vec![1]);
        assert_eq!(gdsf.choose_victims(&[a.clone(), b.clone()], 10), vec![2]);
        // The clock rose to b's priority: a container released now outranks one of equal
        // worth released before (the old one ages out).
        assert_eq!(gdsf.clock(), b.mark);
        let mut c = idle(3, 512, 60);
        c.cold_start = Duration::from_millis(50);
        c.mark = gdsf.mark(&c);
        assert!(c.mark > b.mark);
    }

    #[test]
    fn per_function_ttl_applies_its_own_ttl_and_the_default_to_others() {
        let config: KeepAliveConfig =
            serde_json::from_str(r#"{"type": "ttl", "ttl_ms": 100, "functions": {"g-1": 1000}}"#).unwrap();
        let ka = config.build();
        let f = idle(1, 10, 0);
        let mut g = idle(2, 10, 0);
        g.fqdn = Arc::from("g-1");
        assert!(ka.expired(&f, Duration::from_millis(101)));
        assert!(!ka.expired(&g, Duration::from_millis(101)));
        assert!(ka.expired(&g, Duration::from_millis(1001)));
    }

    #[test]
    fn lru_takes_oldest_until_enough() {
        let pool = [idle(1, 100, 30), idle(2, 100, 10), idle(3, 100, 20)];
        assert_eq!(Lru.choose_victims(&pool, 150), vec![2, 3]);
        assert_eq!(Lru.choose_victims(&pool, 100), vec![2]);
    }

    #[test]
    fn lru_evicts_nothing_when_it_cannot_free_enough() {
        let pool = [idle(1, 100, 30), idle(2, 100, 10)];
        assert!(Lru.choose_victims(&pool, 300).is_empty());
    }

    #[test]
    fn fixed_ttl_expires_after_ttl() {
        let ka = KeepAliveConfig::Fixed { ttl_ms: 100 }.build();
        let c = idle(1, 10, 50);
        assert!(!ka.expired(&c, Duration::from_millis(150)));
        assert!(ka.expired(&c, Duration::from_millis(151)));
    }

    fn hybrid(min_samples: u64) -> Box<dyn KeepAlivePolicy> {
        KeepAliveConfig::Hybrid {
            bin_ms: 1000,
            bins: 60,
            head_pct: 5.0,
            tail_pct: 99.0,
            min_samples,
            fallback_ttl_ms: 30_000,
        }
        .build()
    }

    #[test]
    fn hybrid_learns_a_period_then_unloads_after_each_call_and_prewarms_before_the_next() {
        let ka = hybrid(5);
        let f: Arc<str> = Arc::from("f-1");
        let s = Duration::from_secs;
        let mut used = idle(1, 10, 0);
        used.uses = 1;
        // Before the histogram is representative: the fallback TTL, no pre-warm.
        for i in 0..5 {
            ka.arrived(&f, s(10 * i));
        }
        used.last_used = s(40);
        assert!(!ka.expired(&used, s(60)), "fallback: 30 s");
        assert!(ka.prewarm_due(s(49)).is_empty());
        // Five gaps of 10 s: pre-warm window 9 s, keep-alive 12.1 s.
        ka.arrived(&f, s(50));
        assert!(ka.prewarm_due(s(58)).is_empty(), "not before 50 + 9 s");
        assert_eq!(ka.prewarm_due(s(59)), vec![f.clone()]);
        assert!(ka.prewarm_due(s(59)).is_empty(), "once per arrival");
        used.last_used = s(50);
        assert!(!ka.expired(&used, s(50)), "not during its own call's release");
        assert!(ka.expired(&used, s(50) + Duration::from_millis(1)), "a used container goes after its call");
        let mut warmed = idle(2, 10, 59_000);
        warmed.uses = 0;
        assert!(!ka.expired(&warmed, s(62)), "a pre-warmed one is kept through the keep-alive window");
        assert!(ka.expired(&warmed, s(63)), "12.1 s - 9 s after its pre-warm");
    }

    #[test]
    fn hybrid_falls_back_when_most_gaps_are_out_of_range() {
        let ka = hybrid(2);
        let f: Arc<str> = Arc::from("f-1");
        for i in 0..10 {
            ka.arrived(&f, Duration::from_secs(100 * i));
        }
        let c = idle(1, 10, 900_000);
        assert!(!ka.expired(&c, Duration::from_secs(929)));
        assert!(ka.expired(&c, Duration::from_secs(931)), "the 30 s fallback");
        assert!(ka.prewarm_due(Duration::from_secs(2000)).is_empty());
    }
}
