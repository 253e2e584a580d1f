//! Compliance of every policy (crates/core/src/policy/ and the balancing policies): each
//! config variant runs its kind's suite (iluvatar_testkit::compliance::policy). A new
//! policy is one line here; `every_policy_is_listed` does not compile until it is added.
//! The last tests show that each suite fails a policy that breaks a promise.

use iluvatar_core::policy::{
    EvictionConfig, EvictionPolicy, IdleContainer, KeepAliveConfig, KeepAlivePolicy, QueueConfig, QueueItem,
    QueuePolicy,
};
use iluvatar_testkit::compliance;
use iluvatar_testkit::compliance::policy::balance::{Balancer, BalancerConfig, ClusterView, LoadMetric};
use iluvatar_testkit::compliance::policy::{balancer_promises, eviction_promises, keep_alive_promises, queue_promises};
use std::time::Duration;

compliance!(queue_fcfs: queue_suite(QueueConfig::Fcfs));
compliance!(queue_sjf: queue_suite(QueueConfig::Sjf));
compliance!(queue_eedf: queue_suite(QueueConfig::Eedf));
compliance!(queue_iat: queue_suite(QueueConfig::Iat));
compliance!(queue_cold_priority: queue_suite(QueueConfig::ColdPriority));
compliance!(queue_fair: queue_suite(QueueConfig::Fair));
compliance!(eviction_lru: eviction_suite(EvictionConfig::Lru));
compliance!(eviction_lfu: eviction_suite(EvictionConfig::Lfu));
compliance!(eviction_gdsf: eviction_suite(EvictionConfig::Gdsf));
compliance!(keep_alive_fixed: keep_alive_suite(KeepAliveConfig::Fixed { ttl_ms: 1000 }));
compliance!(keep_alive_fixed_zero: keep_alive_suite(KeepAliveConfig::Fixed { ttl_ms: 0 }));
compliance!(keep_alive_default: keep_alive_suite(KeepAliveConfig::default()));
compliance!(keep_alive_hybrid: keep_alive_suite(KeepAliveConfig::Hybrid {
    bin_ms: 60_000,
    bins: 240,
    head_pct: 5.0,
    tail_pct: 99.0,
    min_samples: 10,
    fallback_ttl_ms: 600_000
}));
compliance!(keep_alive_ttl: keep_alive_suite(KeepAliveConfig::Ttl {
    ttl_ms: 1000,
    functions: [("a-1".to_string(), 10), ("c-1".to_string(), 60_000)].into()
}));
compliance!(balancer_round_robin: balancer_suite(BalancerConfig::RoundRobin));
compliance!(balancer_least_loaded: balancer_suite(BalancerConfig::LeastLoaded { metric: LoadMetric::Outstanding }));
compliance!(balancer_least_loaded_load_avg: balancer_suite(BalancerConfig::LeastLoaded { metric: LoadMetric::LoadAvg }));
compliance!(balancer_least_loaded_running: balancer_suite(BalancerConfig::LeastLoaded { metric: LoadMetric::Running }));
compliance!(balancer_least_loaded_queue: balancer_suite(BalancerConfig::LeastLoaded { metric: LoadMetric::Queue }));
compliance!(balancer_least_loaded_cpu: balancer_suite(BalancerConfig::LeastLoaded { metric: LoadMetric::Cpu }));
compliance!(balancer_least_loaded_memory: balancer_suite(BalancerConfig::LeastLoaded { metric: LoadMetric::Memory }));
compliance!(balancer_rr_guard: balancer_suite(BalancerConfig::RrGuard { max_load_per_core: 2.0 }));
compliance!(balancer_ch_bl: balancer_suite(BalancerConfig::ChBl { vnodes: 100, load_factor: 1.25 }));
compliance!(balancer_ch_rlu: balancer_suite(BalancerConfig::ChRlu {
    vnodes: 100,
    load_factor: 1.25,
    popular_share: 0.1,
    window: 1000,
    spread_load: 1.0
}));

/// Every config variant has a line above: a new variant makes these matches fail to
/// compile until it is listed here and there.
#[test]
fn every_policy_is_listed() {
    match QueueConfig::default() {
        QueueConfig::Fcfs
        | QueueConfig::Sjf
        | QueueConfig::Eedf
        | QueueConfig::Iat
        | QueueConfig::ColdPriority
        | QueueConfig::Fair => {}
    }
    match EvictionConfig::default() {
        EvictionConfig::Lru | EvictionConfig::Lfu | EvictionConfig::Gdsf => {}
    }
    match KeepAliveConfig::default() {
        KeepAliveConfig::Fixed { .. } | KeepAliveConfig::Ttl { .. } | KeepAliveConfig::Hybrid { .. } => {}
    }
    match BalancerConfig::default() {
        BalancerConfig::RoundRobin
        | BalancerConfig::LeastLoaded { .. }
        | BalancerConfig::RrGuard { .. }
        | BalancerConfig::ChBl { .. }
        | BalancerConfig::ChRlu { .. } => {}
    }
}

/// Runs `suite` and expects it to fail.
fn fails(what: &str, suite: impl FnOnce() + std::panic::UnwindSafe) {
    assert!(std::panic::catch_unwind(suite).is_err(), "the suite passed {what}");
}

/// A queue that loses every seventh item.
#[derive(Default)]
struct Lossy(Vec<QueueItem<u32>>, u32);

impl QueuePolicy<u32> for Lossy {
    fn push(&mut self, item: QueueItem<u32>) {
        self.1 += 1;
        if !self.1.is_multiple_of(7) {
            self.0.push(item);
        }
    }
    fn pop(&mut self) -> Option<QueueItem<u32>> {
        self.0.pop()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Loses nothing, but serves the last pushed first: ties are not in push order.
#[derive(Default)]
struct Stack(Vec<QueueItem<u32>>);

impl QueuePolicy<u32> for Stack {
    fn push(&mut self, item: QueueItem<u32>) {
        self.0.push(item);
    }
    fn pop(&mut self) -> Option<QueueItem<u32>> {
        self.0.pop()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Evicts one container more than it was offered.
struct Overreaching;

impl EvictionPolicy for Overreaching {
    fn choose_victims(&self, idle: &[IdleContainer], needed_mb: u64) -> Vec<u64> {
        let mut v = EvictionConfig::Lru.build().choose_victims(idle, needed_mb);
        if !v.is_empty() {
            v.push(1);
        }
        v
    }
}

/// Forgets that a container expired after a minute.
struct Forgetful;

impl KeepAlivePolicy for Forgetful {
    fn expired(&self, c: &IdleContainer, now: Duration) -> bool {
        let idle = now.saturating_sub(c.last_used);
        idle > Duration::from_millis(10) && idle < Duration::from_secs(60)
    }
}

/// Expires a container after a second but says it keeps it a minute: a reaper trusting
/// `expires_at` would keep it 59 s too long.
struct Late;

impl KeepAlivePolicy for Late {
    fn expired(&self, c: &IdleContainer, now: Duration) -> bool {
        now.saturating_sub(c.last_used) > Duration::from_secs(1)
    }
    fn expires_at(&self, c: &IdleContainer) -> Option<Duration> {
        Some(c.last_used + Duration::from_secs(60))
    }
}

/// Always the first worker, available or not.
struct Blind;

impl Balancer for Blind {
    fn choose(&self, _fqdn: &str, view: &ClusterView) -> Option<usize> {
        (!view.workers.is_empty()).then_some(0)
    }
}

#[test]
fn the_suites_fail_policies_that_break_a_promise() {
    fails("a queue that loses items", || queue_promises(|| Box::new(Lossy::default())));
    fails("a queue that breaks ties last-in first", || queue_promises(|| Box::new(Stack::default())));
    fails("an eviction policy that picks a non-candidate", || eviction_promises(&Overreaching));
    fails("a keep-alive policy that un-expires", || keep_alive_promises(&Forgetful));
    fails("a keep-alive policy that expires before it said", || keep_alive_promises(&Late));
    fails("a balancer that picks unavailable workers", || balancer_promises(|| Box::new(Blind)));
}
