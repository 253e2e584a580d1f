//! What every policy must do, whatever it optimises: queue policies never lose, duplicate or
//! invent an item, and break ties in push order; eviction policies pick only candidates they were offered and free enough
//! or nothing; keep-alive policies never expire a container just used, never un-expire
//! one, and never before the time they said it would (the reaper sleeps until then);
//! balancers pick only available workers, the same way for the same inputs (given the
//! view's totals or not), and spread load. Every config also survives JSON and TOML.
//!
//! Each suite has two layers: `*_promises` checks a built policy (so a broken one can be
//! shown to fail), `*_suite` checks a config: round trip, then the promises of what it builds.

use super::{Cases, round_trip, type_tag};
use iluvatar_core::policy::{
    EvictionConfig, EvictionPolicy, IdleContainer, KeepAliveConfig, KeepAlivePolicy, QueueConfig, QueueItem,
    QueuePolicy,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use balance::{Balancer, BalancerConfig, ClusterView, WorkerView};
/// The balancing policies (the one line to change when they move).
pub use iluvatar_core::policy::balance;

const FUNCTIONS: [&str; 5] = ["a-1", "b-1", "c-1", "d-1", "e-1"];

fn item(n: u32, cases: &mut Cases) -> QueueItem<u32> {
    QueueItem {
        fqdn: Arc::from(FUNCTIONS[cases.below(FUNCTIONS.len() as u64) as usize]),
        arrival: Duration::from_millis(n as u64 * 3 + cases.below(5)),
        est_duration: Duration::from_millis(1 + cases.below(500)),
        cold: cases.below(2) == 0,
        iat: (cases.below(4) > 0).then(|| Duration::from_millis(cases.below(1000))),
        payload: n,
    }
}

/// A queue policy: every item pushed comes out exactly once (by `pop` or `drain`), `len`
/// counts what is in, and an emptied queue pops nothing.
pub fn queue_promises(make: impl Fn() -> Box<dyn QueuePolicy<u32>>) {
    let mut cases = Cases::new(11);
    let mut q = make();
    assert_eq!(q.len(), 0, "a new queue holds nothing");
    assert!(q.is_empty() && q.pop().is_none(), "a new queue is empty");
    // Pushes and pops interleaved: nothing lost, nothing twice, nothing invented.
    let (mut pushed, mut popped) = (0u32, BTreeSet::new());
    for round in 0..50 {
        for _ in 0..cases.below(6) {
            q.push(item(pushed, &mut cases));
            pushed += 1;
        }
        for _ in 0..cases.below(5) {
            let Some(it) = q.pop() else { break };
            assert!(it.payload < pushed, "round {round}: popped {} that was never pushed", it.payload);
            assert!(popped.insert(it.payload), "round {round}: {} popped twice", it.payload);
        }
        assert_eq!(q.len(), pushed as usize - popped.len(), "round {round}: len counts what is in the queue");
    }
    while let Some(it) = q.pop() {
        assert!(it.payload < pushed && popped.insert(it.payload), "{} popped twice or never pushed", it.payload);
    }
    assert_eq!(popped.len(), pushed as usize, "every pushed item comes out");
    assert_eq!(q.len(), 0, "an emptied queue holds nothing");
    assert!(q.is_empty() && q.pop().is_none(), "an emptied queue is empty");
    // drain takes everything left, once, and empties the queue.
    for n in 0..20 {
        q.push(item(n, &mut cases));
    }
    let drained: BTreeSet<u32> = q.drain().into_iter().map(|it| it.payload).collect();
    assert_eq!(drained, (0..20).collect(), "drain returns every item once");
    assert!(q.is_empty() && q.pop().is_none(), "drain empties the queue");
    // Ties (items alike in everything a policy sees) come out in push order, so that
    // virtual time, where arrivals share instants, stays deterministic.
    let alike = |n: u32| QueueItem {
        fqdn: Arc::from(FUNCTIONS[0]),
        arrival: Duration::from_millis(5),
        est_duration: Duration::from_millis(5),
        cold: true,
        iat: Some(Duration::from_millis(5)),
        payload: n,
    };
    for n in 0..12 {
        q.push(alike(n));
    }
    let order: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|it| it.payload).collect();
    assert_eq!(order, (0..12).collect::<Vec<_>>(), "ties come out in push order");
}

pub fn queue_suite(config: QueueConfig) {
    round_trip(&config);
    queue_promises(|| config.build());
}

fn idle_set(cases: &mut Cases, n: usize) -> Vec<IdleContainer> {
    (0..n)
        .map(|i| IdleContainer {
            id: 100 + i as u64 * 7,
            fqdn: Arc::from(FUNCTIONS[cases.below(FUNCTIONS.len() as u64) as usize]),
            memory_mb: 16 << cases.below(5),
            last_used: Duration::from_millis(cases.below(10_000)),
            uses: 1 + cases.below(20),
            cold_start: Duration::from_millis(cases.below(2_000)),
            mark: cases.below(3) as f64 * cases.below(1_000) as f64 / 7.0,
        })
        .collect()
}

/// An eviction policy: victims are offered candidates, each once; together they free at
/// least what is needed, or there are none when every candidate would not be enough.
pub fn eviction_promises(policy: &dyn EvictionPolicy) {
    let mut cases = Cases::new(23);
    for case in 0..200 {
        let n = cases.below(8) as usize;
        let idle = idle_set(&mut cases, n);
        let total: u64 = idle.iter().map(|c| c.memory_mb).sum();
        let needed = 1 + cases.below(total + total / 2 + 1);
        let victims = policy.choose_victims(&idle, needed);
        let mut freed = 0;
        let mut seen = BTreeSet::new();
        for v in &victims {
            let c = idle.iter().find(|c| c.id == *v);
            let c = c.unwrap_or_else(|| panic!("case {case}: victim {v} was not a candidate ({idle:?})"));
            assert!(seen.insert(*v), "case {case}: victim {v} chosen twice");
            freed += c.memory_mb;
        }
        if needed > total {
            assert!(victims.is_empty(), "case {case}: {total} MB idle cannot free {needed} MB: evict nothing");
        } else {
            assert!(freed >= needed, "case {case}: victims free {freed} MB of the {needed} MB needed ({idle:?})");
        }
    }
}

pub fn eviction_suite(config: EvictionConfig) {
    round_trip(&config);
    eviction_promises(config.build().as_ref());
}

/// A keep-alive policy: a container just used has not expired, once expired it stays
/// expired as time goes on, and it does not expire before `expires_at` said.
pub fn keep_alive_promises(policy: &dyn KeepAlivePolicy) {
    let mut cases = Cases::new(37);
    for c in idle_set(&mut cases, 50) {
        assert!(!policy.expired(&c, c.last_used), "a container used just now expired: {c:?}");
        let expires_at = policy.expires_at(&c);
        let mut was = false;
        for step in 0..64 {
            let now = c.last_used + Duration::from_millis(1 << (step / 2)) * (1 + step % 2);
            let is = policy.expired(&c, now);
            assert!(is || !was, "{c:?} expired, then no longer at {now:?}");
            assert!(
                !is || expires_at.is_some_and(|at| at <= now),
                "{c:?} expired at {now:?}, before expires_at said ({expires_at:?})"
            );
            was = is;
        }
        if let Some(at) = expires_at.and_then(|at| at.checked_sub(Duration::from_nanos(1))) {
            assert!(!policy.expired(&c, at), "{c:?} expired at {at:?}, before expires_at said");
        }
    }
}

pub fn keep_alive_suite(config: KeepAliveConfig) {
    round_trip(&config);
    keep_alive_promises(config.build().as_ref());
}

fn views(cases: &mut Cases, n: usize) -> Vec<WorkerView> {
    (0..n)
        .map(|i| WorkerView {
            name: format!("worker-{i}").into(),
            cpus: 1 + cases.below(4) as u32,
            inflight: cases.below(6),
            queued: cases.below(3),
            running: cases.below(3),
            load_avg: cases.below(400) as f64 / 100.0,
            cpu_pct: cases.below(100) as f64,
            mem_pct: cases.below(100) as f64,
            available: cases.below(4) != 0,
        })
        .collect()
}

/// A balancer: it answers only available workers (none when none is), the same answers
/// for the same inputs from a policy built with the same seed, and spreads many functions
/// over equal workers (each gets work; none more than twice its share).
pub fn balancer_promises(make: impl Fn() -> Box<dyn Balancer>) {
    let mut cases = Cases::new(41);
    let (a, b) = (make(), make());
    for case in 0..300 {
        let n = 1 + cases.below(6) as usize;
        let workers = views(&mut cases, n);
        // A new version for each set of workers, as the contract of `version` says.
        let view = ClusterView { version: 1 + case, workers: &workers };
        let fqdn = FUNCTIONS[cases.below(FUNCTIONS.len() as u64) as usize];
        let chosen = a.choose(fqdn, &view);
        let given_totals = b.choose_with(fqdn, &view, &balance::Totals::of(&view));
        assert_eq!(chosen, given_totals, "case {case}: the same inputs (totals given), another answer");
        match chosen {
            Some(i) => assert!(
                workers.get(i).is_some_and(|w| w.available),
                "case {case}: chose {i}, not an available worker: {workers:?}"
            ),
            None => assert!(workers.iter().all(|w| !w.available), "case {case}: none chosen among {workers:?}"),
        }
    }
    // Spreading: 4 equal workers, 40 functions, 400 invocations that all stay in flight.
    let balancer = make();
    let mut workers: Vec<WorkerView> = (0..4)
        .map(|i| WorkerView { name: format!("w{i}").into(), cpus: 2, available: true, ..Default::default() })
        .collect();
    let mut per_worker = BTreeMap::new();
    for n in 0..400 {
        let fqdn = format!("fn{}-1", n % 40);
        let view = ClusterView { version: 99, workers: &workers };
        let i = balancer.choose(&fqdn, &view).expect("four available workers");
        workers[i].inflight += 1;
        *per_worker.entry(i).or_insert(0u32) += 1;
    }
    assert_eq!(per_worker.len(), 4, "every worker gets work: {per_worker:?}");
    assert!(per_worker.values().all(|&n| n <= 200), "no worker above twice its share: {per_worker:?}");
}

pub fn balancer_suite(config: BalancerConfig) {
    round_trip(&config);
    config.check().unwrap_or_else(|e| panic!("{config:?}: {e}"));
    assert_eq!(config.name(), type_tag(&config), "a balancer's name is its config type");
    balancer_promises(|| config.build(7));
}

/// One test running a suite: `compliance!(queue_fcfs: queue_suite(QueueConfig::Fcfs));`.
#[macro_export]
macro_rules! compliance {
    ($name:ident: $suite:ident($config:expr)) => {
        #[test]
        fn $name() {
            $crate::compliance::policy::$suite($config)
        }
    };
}
