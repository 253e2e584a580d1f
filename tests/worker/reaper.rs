//! The reaper under virtual time, in a worker built in process (sim backend, registry in
//! memory): it sleeps through the ticks at which nothing is due, yet removes containers and
//! async results on the same tick as a reaper looking at every tick would.

use iluvatar_core::policy::KeepAliveConfig;
use iluvatar_core::{Clock, Env};
use iluvatar_testkit::{async_req, invoke_req, register_req, timings};
use iluvatar_worker::api::WorkerApi;
use iluvatar_worker::config::WorkerConfig;
use iluvatar_worker::env::{QuietHost, TokioClock};
use iluvatar_worker::isolation::BackendConfig;
use iluvatar_worker::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

const SEED: u64 = 11;

/// A worker with a 1 s reap interval and `keep_alive`, its reaper started.
fn worker(keep_alive: KeepAliveConfig) -> Arc<WorkerApi> {
    let mut config = WorkerConfig::default();
    config.isolation.backends = vec![BackendConfig::Sim(Default::default())];
    config.container_pool.keep_alive = keep_alive;
    config.container_pool.reap_interval_ms = 1_000;
    config.invoker.concurrency = 4;
    config.invoker.async_result_ttl_ms = 30_000;
    let env = Env::new(Arc::new(TokioClock::starting_at(0)), SEED);
    let api = WorkerApi::build_with(config, env, Arc::new(QuietHost), Registry::in_memory(None)).unwrap();
    api.spawn_reaper();
    api
}

/// A counter or gauge of the worker's metrics text.
fn metric(api: &WorkerApi, name: &str) -> f64 {
    let text = api.metrics_text();
    let line = text.lines().find(|l| l.split_once(' ').is_some_and(|(n, _)| n == name));
    line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {name}"))
}

async fn call(api: &WorkerApi, name: &str) {
    let r = api.invoke(invoke_req(name, "1", "{}")).await;
    assert!(r.success, "seed {SEED}: {r:?}");
}

/// Sleeps until `at` on the virtual clock `start` reads.
async fn until(start: &TokioClock, at: Duration) {
    tokio::time::sleep(at.saturating_sub(start.now())).await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_s_reaper_sleeps_through_a_day() {
    println!("seed {SEED}");
    let api = worker(KeepAliveConfig::Fixed { ttl_ms: 60_000 });
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert_eq!(metric(&api, "iluvatar_reaper_runs_total"), 0.0, "nothing was ever due");
    api.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn containers_go_on_the_first_tick_past_their_keep_alive_and_only_then_is_the_reaper_woken() {
    println!("seed {SEED}");
    let start = TokioClock::starting_at(0);
    let ttl = |f: &str, ms: u64| (format!("{f}-1"), ms);
    let keep = KeepAliveConfig::Ttl { ttl_ms: 3_600_000, functions: [ttl("short", 5_000)].into_iter().collect() };
    let api = worker(keep);
    for f in ["long", "short"] {
        assert!(api.register(register_req(f, "1", 128, &timings(100, 10))).await.success);
    }
    // `long` first: the reaper plans to wake in an hour; then `short`, idle from 10.1 s
    // with a 5 s keep-alive, must ring it.
    until(&start, Duration::from_secs(2)).await;
    call(&api, "long").await;
    until(&start, Duration::from_secs(10)).await;
    call(&api, "short").await; // a cold start of 100 ms: idle from 10.1 s
    until(&start, Duration::from_millis(15_999)).await;
    assert_eq!(metric(&api, "iluvatar_containers{state=\"idle\"}"), 2.0, "the 15 s tick is before 15.1 s");
    until(&start, Duration::from_millis(16_001)).await;
    assert_eq!(metric(&api, "iluvatar_containers{state=\"idle\"}"), 1.0, "short went on the 16 s tick");
    assert_eq!(metric(&api, "iluvatar_keep_alive_expirations_total"), 1.0);
    // `long` (idle from 2.1 s) goes on the first tick past 3602.1 s, and that is all the
    // reaper did in two hours: a reaper looking at every tick would have run 7,200 times.
    until(&start, Duration::from_millis(3_602_999)).await;
    assert_eq!(metric(&api, "iluvatar_containers{state=\"idle\"}"), 1.0);
    until(&start, Duration::from_millis(3_603_001)).await;
    assert_eq!(metric(&api, "iluvatar_containers{state=\"idle\"}"), 0.0);
    until(&start, Duration::from_secs(7_200)).await;
    assert_eq!(metric(&api, "iluvatar_reaper_runs_total"), 2.0, "woken for the two expiries alone");
    api.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn uncollected_async_results_expire_on_the_first_tick_past_their_ttl() {
    println!("seed {SEED}");
    let start = TokioClock::starting_at(0);
    // Idle containers are kept ten minutes: the reaper plans to sleep that long, and the
    // results, due far earlier, must wake it.
    let api = worker(KeepAliveConfig::Fixed { ttl_ms: 600_000 });
    assert!(api.register(register_req("f", "1", 128, &timings(100, 10))).await.success);
    until(&start, Duration::from_millis(500)).await;
    let mut cookies = Vec::new();
    for _ in 0..2 {
        cookies.push(api.invoke_async(async_req("f", "1", "{}")).await.unwrap().lookup_cookie);
    }
    let check = |cookie: &str| {
        let req = iluvatar_rpc::InvokeAsyncLookupRequest { lookup_cookie: cookie.into(), transaction_id: "t".into() };
        api.invoke_async_check(req)
    };
    // Ready at 0.6 s (100 ms cold starts), kept 30 s: there until the 31 s tick.
    until(&start, Duration::from_millis(30_999)).await;
    let first = check(&cookies[0]);
    assert!(first.success, "seed {SEED}: collected in time: {}", first.json_result);
    until(&start, Duration::from_millis(31_001)).await;
    let late = check(&cookies[1]);
    assert!(late.json_result.contains("unknown_cookie"), "seed {SEED}: {}", late.json_result);
    assert_eq!(metric(&api, "iluvatar_reaper_runs_total"), 1.0, "woken once, at 31 s");
    api.shutdown().await;
}
