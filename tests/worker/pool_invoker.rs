//! The pool and the invoker under virtual time (a paused tokio clock), with the sim
//! backend: deterministic tests of cold/warm/prewarm, eviction, memory waits, keep-alive,
//! queueing, timeouts and shutdown.

use iluvatar_core::policy::{EvictionConfig, KeepAliveConfig, QueueConfig};
use iluvatar_core::{ContainerState, Env, FunctionSpec};
use iluvatar_testkit::compliance::backend::function_spec;
use iluvatar_worker::env::TokioClock;
use iluvatar_worker::invoker::{InvokeError, Invoker, InvokerSettings};
use iluvatar_worker::isolation::{BackendConfig, BackendContext, Backends, CallRequest};
use iluvatar_worker::metrics::Metrics;
use iluvatar_worker::pool::{Acquire, ContainerPool, PoolError, PoolPolicies};
use std::sync::Arc;
use std::time::Duration;

const SEED: u64 = 7;

fn env() -> Env {
    seeded(SEED)
}

fn seeded(seed: u64) -> Env {
    Env::new(Arc::new(TokioClock::starting_at(0)), seed)
}

fn spec(name: &str, memory_mb: u64, cold_ms: u64, warm_ms: u64) -> Arc<FunctionSpec> {
    timed(name, memory_mb, format!(r#"{{"cold_dur_ms": {cold_ms}, "warm_dur_ms": {warm_ms}}}"#))
}

fn timed(name: &str, memory_mb: u64, resource_timings_json: String) -> Arc<FunctionSpec> {
    Arc::new(function_spec(name, "sim", iluvatar_rpc::isolation::SIM, memory_mb, &resource_timings_json))
}

fn pool(total_mb: u64, ttl_ms: u64, memory_wait_ms: u64) -> Arc<ContainerPool> {
    pool_with(env(), total_mb, ttl_ms, memory_wait_ms)
}

fn pool_with(env: Env, total_mb: u64, ttl_ms: u64, memory_wait_ms: u64) -> Arc<ContainerPool> {
    pool_policies(env, total_mb, EvictionConfig::Lru, KeepAliveConfig::Fixed { ttl_ms }, memory_wait_ms)
}

fn pool_policies(
    env: Env,
    total_mb: u64,
    eviction: EvictionConfig,
    keep_alive: KeepAliveConfig,
    memory_wait_ms: u64,
) -> Arc<ContainerPool> {
    let ctx = BackendContext { env: env.clone(), state_dir: std::env::temp_dir(), beyond_loopback: false };
    let backends = Backends::build(&[BackendConfig::Sim(Default::default())], &ctx).unwrap();
    let policies = PoolPolicies {
        eviction: eviction.build(),
        keep_alive: keep_alive.build(),
        memory_wait: Duration::from_millis(memory_wait_ms),
    };
    Arc::new(ContainerPool::new(total_mb, backends, policies, env, Arc::new(Metrics::default())))
}

fn invoker(pool: Arc<ContainerPool>, concurrency: usize, timeout_ms: u64) -> Arc<Invoker> {
    invoker_with(pool, concurrency, timeout_ms, QueueConfig::Fcfs)
}

fn invoker_with(pool: Arc<ContainerPool>, concurrency: usize, timeout_ms: u64, queue: QueueConfig) -> Arc<Invoker> {
    let settings =
        InvokerSettings { concurrency, queue, timeout: Duration::from_millis(timeout_ms), max_queued: usize::MAX };
    Invoker::new(settings, pool, env(), Arc::new(Metrics::default()))
}

#[tokio::test(start_paused = true)]
async fn cold_then_warm_then_prewarm() {
    let p = pool(1024, 60_000, 0);
    let f = spec("f", 128, 100, 10);
    let lease = p.acquire(&f, "t", Acquire::Invoke).await.unwrap();
    assert_eq!(lease.state, ContainerState::Cold);
    assert_eq!(lease.cold_start, Some(Duration::from_millis(90)), "cold minus warm, on the virtual clock");
    p.release(lease, true);
    let lease = p.acquire(&f, "t", Acquire::Invoke).await.unwrap();
    assert_eq!(lease.state, ContainerState::Warm);
    p.release(lease, true);

    let g = spec("g", 128, 100, 10);
    let pre = p.acquire(&g, "t", Acquire::Prewarm).await.unwrap();
    p.release_prewarmed(pre);
    let lease = p.acquire(&g, "t", Acquire::Invoke).await.unwrap();
    assert_eq!(lease.state, ContainerState::Prewarm);
    p.release(lease, true);
    let s = p.snapshot();
    assert_eq!((s.used_mb, s.idle, s.busy), (256, 2, 0));
}

/// With measured samples, the sim backend draws each duration from them with the Env's
/// seed: a cold invocation (start plus first call) takes a cold sample, a warm call a warm
/// sample, the same seed gives the same draws and another seed others.
#[tokio::test(start_paused = true)]
async fn sim_durations_are_drawn_from_samples_with_the_seed() {
    async fn draws(seed: u64) -> Vec<u64> {
        let p = pool_with(seeded(seed), 1024, 60_000, 0);
        let timings = r#"{"cold_dur_ms": 300, "warm_dur_ms": 20, "cold_samples_ms": [250, 300, 350],
            "warm_samples_ms": [10, 20, 30, 40]}"#;
        let f = timed("f", 128, timings.into());
        let call_ms = |r: iluvatar_worker::isolation::CallResult| (r.end_unix_us - r.start_unix_us) / 1000;
        let mut out = Vec::new();
        for i in 0..41 {
            let lease = p.acquire(&f, "t", Acquire::Invoke).await.unwrap();
            assert_eq!(lease.state, if i == 0 { ContainerState::Cold } else { ContainerState::Warm });
            let startup = lease.cold_start.map(|d| d.as_millis() as u64).unwrap_or(0);
            let r = lease.container().call(CallRequest { args: "{}", tid: "t" }).await.unwrap();
            out.push(startup + call_ms(r));
            p.release(lease, true);
        }
        out
    }
    let a = draws(1).await;
    assert!([250, 300, 350].contains(&a[0]), "a cold invocation takes a cold sample: {a:?}");
    assert!(a[1..].iter().all(|d| [10, 20, 30, 40].contains(d)), "warm calls take warm samples: {a:?}");
    let distinct: std::collections::BTreeSet<_> = a[1..].iter().collect();
    assert_eq!(distinct.len(), 4, "40 draws see every sample: {a:?}");
    assert_eq!(a, draws(1).await, "the same seed draws the same");
    assert_ne!(a, draws(2).await, "another seed draws otherwise");
}

/// Warm samples that come with the idle time before them are drawn by idle time: back to
/// back calls take the sample measured after a short idle time, a call after seconds of
/// idleness the one measured after seconds.
#[tokio::test(start_paused = true)]
async fn sim_warm_samples_follow_the_idle_time() {
    let p = pool(1024, 60_000, 0);
    let timings = r#"{"cold_dur_ms": 100, "warm_dur_ms": 10, "warm_samples_ms": [10, 50],
        "warm_idle_ms": [5, 5000]}"#;
    let f = timed("f", 128, timings.into());
    let call = async || {
        let lease = p.acquire(&f, "t", Acquire::Invoke).await.unwrap();
        let r = lease.container().call(CallRequest { args: "{}", tid: "t" }).await.unwrap();
        p.release(lease, true);
        (r.end_unix_us - r.start_unix_us) / 1000
    };
    call().await; // cold
    for _ in 0..5 {
        assert_eq!(call().await, 10, "right after the previous call");
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(call().await, 50, "after 3 s of idleness");
    }
    // No sample was measured after 10-100 ms or 100 ms-1 s: the nearest class decides.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(call().await, 10, "30 ms is nearer the short idle times");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call().await, 50, "300 ms is nearer the long ones");
}

#[tokio::test(start_paused = true)]
async fn lru_eviction_frees_memory_for_a_cold_start() {
    let p = pool(300, 60_000, 0);
    let (a, b, c) = (spec("a", 100, 1, 0), spec("b", 100, 1, 0), spec("c", 200, 1, 0));
    for f in [&a, &b] {
        let l = p.acquire(f, "t", Acquire::Invoke).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        p.release(l, true);
    }
    // a (used first) and b are idle; c needs 200 MB with 100 free: LRU evicts a only.
    let l = p.acquire(&c, "t", Acquire::Invoke).await.unwrap();
    assert_eq!(l.state, ContainerState::Cold);
    assert!(!p.has_idle("a-1"), "a was least recently used");
    assert!(p.has_idle("b-1"));
    assert_eq!(p.snapshot().used_mb, 300);
    p.release(l, true);
}

#[tokio::test(start_paused = true)]
async fn memory_wait_is_bounded_then_fails_with_a_clear_error() {
    let p = pool(256, 60_000, 500);
    let (a, b) = (spec("a", 200, 1, 0), spec("b", 200, 1, 0));
    let held = p.acquire(&a, "t", Acquire::Invoke).await.unwrap();
    let err = p.acquire(&b, "t", Acquire::Invoke).await.err().expect("no memory");
    match &err {
        PoolError::NoMemory { needed_mb, free_mb, total_mb, waited_ms, .. } => {
            assert_eq!((*needed_mb, *free_mb, *total_mb, *waited_ms), (200, 56, 256, 500));
        }
        other => panic!("expected NoMemory, got {other}"),
    }
    assert!(err.to_string().contains("not enough memory for b-1"), "{err}");

    // Released within the wait: the waiting acquisition evicts the now idle container.
    let p2 = p.clone();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { p2.acquire(&b2, "t", Acquire::Invoke).await.map(|l| l.state) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.release(held, true);
    assert_eq!(waiter.await.unwrap().unwrap(), ContainerState::Cold);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_removes_idle_containers() {
    let p = pool(1024, 1_000, 0);
    let f = spec("f", 128, 1, 0);
    let l = p.acquire(&f, "t", Acquire::Invoke).await.unwrap();
    p.release(l, true);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(p.reap_expired().await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.reap_expired().await, 1);
    assert_eq!(p.snapshot().used_mb, 0);
    let l = p.acquire(&f, "t", Acquire::Invoke).await.unwrap();
    assert_eq!(l.state, ContainerState::Cold);
}

#[tokio::test(start_paused = true)]
async fn one_slot_queues_fcfs_and_records_queue_wait() {
    let inv = invoker(pool(1024, 60_000, 0), 1, 60_000);
    let mut handles = Vec::new();
    for name in ["a", "b", "c"] {
        let inv = inv.clone();
        let f = spec(name, 64, 0, 100);
        handles.push(tokio::spawn(async move { inv.invoke(f, "{}".into(), name.into()).await }));
        tokio::task::yield_now().await;
    }
    let mut starts = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let o = h.await.unwrap().unwrap();
        assert_eq!(o.timings.queue_us, i as u64 * 100_000, "each waits for those before it");
        assert_eq!(o.timings.function_us, 100_000);
        starts.push(o.start_unix_us);
    }
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "served in arrival order: {starts:?}");
}

#[tokio::test(start_paused = true)]
async fn timeout_fails_the_invocation_and_removes_its_container() {
    let p = pool(1024, 60_000, 0);
    let inv = invoker(p.clone(), 2, 1_000);
    let err = inv.invoke(spec("slow", 128, 0, 5_000), "{}".into(), "t".into()).await.unwrap_err();
    assert!(matches!(err, InvokeError::Timeout { timeout_ms: 1_000, .. }), "{err}");
    assert_eq!(err.kind(), "timeout");
    tokio::task::yield_now().await;
    let s = p.snapshot();
    assert_eq!((s.used_mb, s.idle, s.busy), (0, 0, 0), "the timed-out container is gone");
    let ok = inv.invoke(spec("fast", 128, 0, 10), "{}".into(), "t".into()).await.unwrap();
    assert_eq!(ok.state, ContainerState::Cold);
}

#[tokio::test(start_paused = true)]
async fn shutdown_fails_what_cannot_finish_within_the_grace() {
    let p = pool(1024, 60_000, 0);
    let inv = invoker(p.clone(), 1, 60_000);
    let running = {
        let inv = inv.clone();
        tokio::spawn(async move { inv.invoke(spec("long", 64, 0, 10_000), "{}".into(), "t1".into()).await })
    };
    tokio::task::yield_now().await;
    let queued = {
        let inv = inv.clone();
        tokio::spawn(async move { inv.invoke(spec("next", 64, 0, 10), "{}".into(), "t2".into()).await })
    };
    tokio::task::yield_now().await;
    inv.shutdown(Duration::from_millis(500)).await;
    for h in [running, queued] {
        let err = h.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), "shutting_down", "{err}");
        assert!(err.to_string().contains("shutting down"));
    }
    let late = inv.invoke(spec("late", 64, 0, 0), "{}".into(), "t3".into()).await.unwrap_err();
    assert_eq!(late.kind(), "shutting_down");
    assert_eq!(inv.load(), (0, 0));
}

/// One slot under `queue`: `before` (name, ms) run one after another first; then a 500 ms
/// call takes the slot, and `burst` (name, ms, delay ms after the previous send) queues
/// behind it. Returns the burst's names in the order they ran. A function's duration is
/// the same cold or warm, and its registration says so (the estimate before it has run).
async fn run_order(queue: QueueConfig, before: &[(&str, u64)], burst: &[(&str, u64, u64)]) -> Vec<String> {
    let inv = invoker_with(pool(8192, 60_000, 0), 1, 60_000, queue);
    for (name, ms) in before {
        inv.invoke(spec(name, 64, *ms, *ms), "{}".into(), "t".into()).await.unwrap();
    }
    let blocker = {
        let inv = inv.clone();
        tokio::spawn(async move { inv.invoke(spec("blocker", 64, 500, 500), "{}".into(), "t".into()).await })
    };
    tokio::task::yield_now().await;
    let mut calls = Vec::new();
    for (name, ms, delay) in burst {
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        let (inv, f, name) = (inv.clone(), spec(name, 64, *ms, *ms), name.to_string());
        calls.push(tokio::spawn(async move { (name, inv.invoke(f, "{}".into(), "t".into()).await) }));
        tokio::task::yield_now().await;
    }
    blocker.await.unwrap().unwrap();
    let mut ran = Vec::new();
    for c in calls {
        let (name, o) = c.await.unwrap();
        ran.push((o.unwrap().start_unix_us, name));
    }
    ran.sort();
    ran.into_iter().map(|(_, n)| n).collect()
}

#[tokio::test(start_paused = true)]
async fn sjf_runs_the_short_calls_of_a_burst_first_from_their_registration() {
    let burst = [("long1", 300, 0), ("short1", 10, 0), ("long2", 300, 0), ("short2", 10, 0)];
    assert_eq!(run_order(QueueConfig::Fcfs, &[], &burst).await, ["long1", "short1", "long2", "short2"]);
    // Never run: the estimates are the registrations' timings.
    assert_eq!(run_order(QueueConfig::Sjf, &[], &burst).await, ["short1", "short2", "long1", "long2"]);
}

#[tokio::test(start_paused = true)]
async fn eedf_lets_a_long_call_that_waited_go_before_a_late_short_one() {
    // long: deadline 0 + 300 ms; short arrives at 400 ms: deadline 410 ms.
    let burst = [("long", 300, 0), ("short", 10, 400)];
    assert_eq!(run_order(QueueConfig::Eedf, &[], &burst).await, ["long", "short"]);
    assert_eq!(run_order(QueueConfig::Sjf, &[], &burst).await, ["short", "long"]);
}

#[tokio::test(start_paused = true)]
async fn iat_runs_the_most_frequent_function_first() {
    // When the burst queues, often has arrived every 10 ms, rare once 40 ms before.
    let before = [("rare", 10), ("often", 10), ("often", 10), ("often", 10)];
    let burst = [("rare", 10, 0), ("often", 10, 0)];
    assert_eq!(run_order(QueueConfig::Fcfs, &before, &burst).await, ["rare", "often"]);
    assert_eq!(run_order(QueueConfig::Iat, &before, &burst).await, ["often", "rare"]);
}

#[tokio::test(start_paused = true)]
async fn cold_priority_starts_the_cold_start_before_a_warm_call() {
    // warm has an idle container when the burst queues; cold has none.
    let burst = [("warm", 10, 0), ("cold", 10, 0)];
    assert_eq!(run_order(QueueConfig::ColdPriority, &[("warm", 10)], &burst).await, ["cold", "warm"]);
    assert_eq!(run_order(QueueConfig::Fcfs, &[("warm", 10)], &burst).await, ["warm", "cold"]);
}

#[tokio::test(start_paused = true)]
async fn fair_queueing_does_not_let_a_burst_hold_another_function_back() {
    let burst = [("a", 10, 0), ("a", 10, 0), ("a", 10, 0), ("b", 10, 0), ("a", 10, 0)];
    assert_eq!(run_order(QueueConfig::Fair, &[], &burst).await, ["a", "b", "a", "a", "a"]);
    assert_eq!(run_order(QueueConfig::Fcfs, &[], &burst).await, ["a", "a", "a", "b", "a"]);
}

/// `hot` (64 MB, a 490 ms start) serves five calls, then `big` (128 MB, a 50 ms start) one;
/// `new` then needs 128 MB of a 256 MB pool, so one of them is evicted. Returns the state
/// of `hot`'s next call.
async fn hot_after_pressure(eviction: EvictionConfig) -> ContainerState {
    let p = pool_policies(env(), 256, eviction, KeepAliveConfig::default(), 0);
    let inv = invoker(p, 1, 60_000);
    let (hot, big, new) = (spec("hot", 64, 500, 10), spec("big", 128, 60, 10), spec("new", 128, 60, 10));
    for f in [&hot, &hot, &hot, &hot, &hot, &big, &new] {
        inv.invoke(f.clone(), "{}".into(), "t".into()).await.unwrap();
    }
    inv.invoke(hot, "{}".into(), "t".into()).await.unwrap().state
}

#[tokio::test(start_paused = true)]
async fn gdsf_keeps_the_often_used_cheap_to_keep_container_where_lru_does_not() {
    assert_eq!(hot_after_pressure(EvictionConfig::Lru).await, ContainerState::Cold, "LRU evicts hot, used longest ago");
    assert_eq!(hot_after_pressure(EvictionConfig::Gdsf).await, ContainerState::Warm, "GDSF evicts big");
    assert_eq!(hot_after_pressure(EvictionConfig::Lfu).await, ContainerState::Warm, "LFU evicts big, used once");
}

#[tokio::test(start_paused = true)]
async fn per_function_ttl_keeps_one_function_longer() {
    let keep = KeepAliveConfig::Ttl { ttl_ms: 1_000, functions: [("kept-1".to_string(), 60_000)].into() };
    let p = pool_policies(env(), 1024, EvictionConfig::Lru, keep, 0);
    let inv = invoker(p.clone(), 2, 60_000);
    let (kept, other) = (spec("kept", 64, 100, 10), spec("other", 64, 100, 10));
    inv.invoke(kept.clone(), "{}".into(), "t".into()).await.unwrap();
    inv.invoke(other.clone(), "{}".into(), "t".into()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(p.reap_expired().await, 1, "other's container is past its 1 s");
    assert_eq!(inv.invoke(kept, "{}".into(), "t".into()).await.unwrap().state, ContainerState::Warm);
    assert_eq!(inv.invoke(other, "{}".into(), "t".into()).await.unwrap().state, ContainerState::Cold);
}

/// Memory-seconds are integrated exactly on the virtual clock: a 128 MB container starting
/// (its memory reserved) then busy for 1 s in all, then idle 2 s, has held 384 MB·s, 256 of
/// them idle; the figures run up to the moment they are read.
#[tokio::test(start_paused = true)]
async fn memory_seconds_held_and_idle_are_exact() {
    let p = pool(1024, 60_000, 0);
    let f = spec("f", 128, 600, 0);
    let lease = p.acquire(&f, "t", Acquire::Invoke).await.unwrap();
    assert_eq!(lease.cold_start, Some(Duration::from_millis(600)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    p.release(lease, true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let u = p.memory_usage();
    assert_eq!((u.held_mb_ns, u.idle_mb_ns), (384_000_000_000, 256_000_000_000));
    assert_eq!((u.held_mb_seconds(), u.idle_mb_seconds()), (384.0, 256.0));
    // Reused: busy again (held, not idle) for 1 s; then a second function beside it.
    let lease = p.acquire(&f, "t", Acquire::Invoke).await.unwrap();
    assert_eq!(lease.state, ContainerState::Warm);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let u = p.memory_usage();
    assert_eq!((u.held_mb_seconds(), u.idle_mb_seconds()), (512.0, 256.0), "read without a change in between");
    p.release(lease, true);
    let g = spec("g", 256, 500, 0);
    let pre = p.acquire(&g, "t", Acquire::Prewarm).await.unwrap();
    p.release_prewarmed(pre);
    // 0.5 s starting g: 384 MB held, 128 idle; then 1.5 s both idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let u = p.memory_usage();
    assert_eq!((u.held_mb_seconds(), u.idle_mb_seconds()), (512.0 + 192.0 + 576.0, 256.0 + 64.0 + 576.0));
    // Removed: nothing more accrues.
    p.remove_idle().await;
    let before = p.memory_usage();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = p.memory_usage();
    assert_eq!((after.held_mb_ns, after.idle_mb_ns), (before.held_mb_ns, before.idle_mb_ns));
    assert_eq!(after.since - before.since, Duration::from_secs(10));
}

/// An evicted container stops counting when it is taken; the new one counts from its
/// reservation; keep-alive expiry ends an idle container's share.
#[tokio::test(start_paused = true)]
async fn memory_seconds_follow_eviction_and_expiry() {
    let p = pool(128, 1_000, 0);
    let f = spec("f", 128, 100, 0);
    let g = spec("g", 128, 100, 0);
    let l = p.acquire(&f, "t", Acquire::Invoke).await.unwrap(); // 0.1 s busy
    p.release(l, true);
    tokio::time::sleep(Duration::from_millis(400)).await; // 0.4 s idle
    let l = p.acquire(&g, "t", Acquire::Invoke).await.unwrap(); // evicts f; 0.1 s busy
    p.release(l, true);
    tokio::time::sleep(Duration::from_millis(1500)).await; // idle 1.5 s, expired at 1.0
    assert_eq!(p.reap_expired().await, 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let u = p.memory_usage();
    assert_eq!((u.held_mb_seconds(), u.idle_mb_seconds()), (128.0 * 2.1, 128.0 * 1.9));
}

/// The invoker keeps the characteristics map: cold and warm worker times apart, the
/// function's own time on every call, inter-arrival times and memory; estimates come from
/// it once the function has run, before that from the registration.
#[tokio::test(start_paused = true)]
async fn the_invoker_keeps_each_functions_characteristics_and_estimates_from_them() {
    let inv = invoker(pool(1024, 60_000, 0), 2, 60_000);
    let f = spec("f", 192, 300, 100);
    let fqdn = f.fqdn().0;
    let other_registration = spec("f", 192, 5_000, 4_000);
    assert_eq!(inv.estimate(&other_registration), Duration::from_secs(5), "not run yet: the registration, cold");
    assert!(inv.characteristics().get(&fqdn).is_none());
    let mut outcomes = Vec::new();
    for gap_ms in [0, 1_000, 2_000] {
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        outcomes.push(inv.invoke(f.clone(), "{}".into(), "t".into()).await.unwrap());
    }
    assert_eq!(
        outcomes.iter().map(|o| o.state).collect::<Vec<_>>(),
        [ContainerState::Cold, ContainerState::Warm, ContainerState::Warm]
    );
    let c = inv.characteristics().get(&fqdn).unwrap();
    assert_eq!(c.memory_mb, 192);
    assert_eq!((c.cold.count, c.warm.count, c.exec.count, c.iat.count), (1, 2, 3, 2));
    assert_eq!(c.cold.latest_us, 300e3, "start and first call");
    assert_eq!((c.warm.min_us, c.warm.max_us, c.warm.smoothed_us), (100e3, 100e3, 100e3));
    assert_eq!((c.exec.min_us, c.exec.mean_us), (100e3, 100e3));
    // Arrivals at 0, 0.3 + 1 and 1.4 + 2 seconds.
    assert_eq!((c.iat.min_us, c.iat.max_us, c.iat.latest_us), (1.3e6, 2.1e6, 2.1e6));
    assert_eq!(c.iat.smoothed_us, 1.3e6 * 0.8 + 2.1e6 * 0.2);
    // Learnt figures win over the registration: warm, as an idle container waits.
    assert_eq!(inv.estimate(&other_registration), Duration::from_millis(100));
    let mut text = String::new();
    inv.characteristics().render(&mut text);
    let line = format!("iluvatar_function_time_seconds{{fqdn=\"{fqdn}\",kind=\"cold\",stat=\"latest\"}} 0.300000");
    assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
}

/// Queue estimates come from the characteristics map once a function has run: `x` says
/// 10 ms in its registration but ran 400 ms, so under `sjf` a burst runs `y` (100 ms, not
/// run yet: its registration) first.
#[tokio::test(start_paused = true)]
async fn sjf_trusts_what_a_function_was_seen_to_take_over_its_registration() {
    let before = [("x", 400), ("x", 400)];
    let burst = [("x", 10, 0), ("y", 100, 0)];
    assert_eq!(run_order(QueueConfig::Sjf, &before, &burst).await, ["y", "x"]);
}

#[tokio::test(start_paused = true)]
async fn hybrid_unloads_between_periodic_calls_and_prewarms_before_each() {
    let keep = KeepAliveConfig::Hybrid {
        bin_ms: 1_000,
        bins: 60,
        head_pct: 5.0,
        tail_pct: 99.0,
        min_samples: 5,
        fallback_ttl_ms: 60_000,
    };
    let clock = env();
    let p = pool_policies(clock.clone(), 1024, EvictionConfig::Lru, keep, 0);
    let inv = invoker(p.clone(), 2, 60_000);
    let f = spec("periodic", 64, 100, 10);
    let (mut states, mut idle_mid_gap) = (Vec::new(), Vec::new());
    for _ in 0..12 {
        let started = clock.now();
        let elapsed = || clock.now() - started;
        states.push(inv.invoke(f.clone(), "{}".into(), "t".into()).await.unwrap().state);
        // The worker's reaper, every 100 ms, until the next call 10 s after this one.
        let mut looked = false;
        while elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            p.reap_expired().await;
            p.prewarm_due(|fqdn| (fqdn == "periodic-1").then(|| f.clone())).await;
            if !looked && elapsed() >= Duration::from_secs(5) {
                looked = true;
                idle_mid_gap.push(p.snapshot().idle);
            }
        }
    }
    use ContainerState::{Cold, Prewarm, Warm};
    // Until five gaps are seen the fallback TTL keeps the container (warm); from then on it
    // goes after each call and a pre-warmed one waits for the next.
    assert_eq!(states, [Cold, Warm, Warm, Warm, Warm, Warm, Prewarm, Prewarm, Prewarm, Prewarm, Prewarm, Prewarm]);
    assert_eq!(idle_mid_gap[..6], [1, 1, 1, 1, 1, 0], "kept idle under the fallback, not once learnt");
    assert!(idle_mid_gap[6..].iter().all(|n| *n == 0), "{idle_mid_gap:?}");
}
