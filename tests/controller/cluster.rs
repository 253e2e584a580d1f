//! End-to-end: a controller and three sim workers, each worker on its own address (its own
//! network namespace, or a loopback address): registration fan-out, placement by policy,
//! a worker killed mid-run, a worker restarted, a controller restarted.

use iluvatar_testkit::cluster::*;
use iluvatar_testkit::unique_dir;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

async fn invoke_n(c: &Controller, name: &str, n: usize) -> Vec<String> {
    let mut client = c.client().await;
    let mut placed = Vec::new();
    for _ in 0..n {
        let r = client.invoke(invoke_req(name)).await.unwrap().into_inner();
        placed.push(outcome(&r).unwrap_or_else(|e| panic!("invocation failed: {e:?}")));
    }
    placed
}

fn tally(placed: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for p in placed {
        *m.entry(p.clone()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_fan_out_round_robin_spreads_and_a_restarted_controller_remembers() {
    let state = unique_dir("controller-state");
    let mut ctl = Controller::start_in(json!({"type": "round_robin"}), &state);
    let w1 = Worker::start("w1", 0, &ctl);
    let w2 = Worker::start("w2", 1, &ctl);
    ctl.wait_healthy(2);
    let r = ctl.client().await.register(function("f", 1)).await.unwrap().into_inner();
    assert!(r.success, "{}", r.error);
    for w in [&w1, &w2] {
        assert!(w.functions().await.contains(&"f-1".to_string()), "{} lacks f-1", w.proc.name);
    }
    // A worker that joins later gets every registration before it takes work.
    let w3 = Worker::start("w3", 2, &ctl);
    ctl.wait_healthy(3);
    w3.wait_function("f-1").await;
    let placed = tally(&invoke_n(&ctl, "f", 9).await);
    assert_eq!(placed.len(), 3, "round robin uses every worker: {placed:?}");
    assert!(placed.values().all(|&n| n == 3), "{placed:?}");

    // The CLI drives the controller.
    let out = ctl.cli(&["register", "--name", "g", "--version", "1", "--image", "sim", "--isolation", "sim"]);
    assert_eq!(out["fqdn"], "g-1");
    let out = ctl.cli(&["invoke", "--name", "g", "--version", "1", "-a", "x=1"]);
    assert!(out["result"]["worker"].is_string() && out["result"]["timings"]["controller_us"].is_u64(), "{out}");
    let cookie = ctl.cli(&["invoke-async", "--name", "g", "--version", "1"])["cookie"].as_str().unwrap().to_string();
    let mut done = None;
    for _ in 0..100 {
        let v = ctl.cli(&["invoke-async-check", "--cookie", &cookie]);
        if v["pending"] != true {
            done = Some(v);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(done.expect("async result")["success"], true);
    assert!(ctl.cli(&["prewarm", "--name", "g", "--version", "1"])["message"].as_str().unwrap().contains("worker w"));
    assert_eq!(ctl.cli(&["ping"])["message"], "Pong");
    // Environment values of a code reference are never shown, and the store is private.
    let out = ctl.cli(&[
        "register",
        "--name",
        "e",
        "--version",
        "1",
        "--image",
        "code:/srv/e?API_KEY=s3cret",
        "--isolation",
        "sim",
    ]);
    assert_eq!(out["fqdn"], "e-1", "{out}");
    let list = ctl.http_get("/functions");
    assert!(!list.contains("s3cret") && list.contains("code:/srv/e?API_KEY=<hidden>"), "{list}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.join("controller.redb")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the controller's store is its owner's only");

    // A restarted controller knows its functions and its workers (they do not register
    // again: it reads them from its store and health-checks them back into service).
    assert!(ctl.proc.stop().success());
    drop(ctl);
    let ctl = Controller::start_in(json!({"type": "round_robin"}), &state);
    assert_eq!(ctl.proc.ready["functions"], 3, "{}", ctl.proc.ready);
    assert_eq!(ctl.proc.ready["workers"], 3, "{}", ctl.proc.ready);
    ctl.wait_healthy(3);
    let placed = tally(&invoke_n(&ctl, "f", 6).await);
    assert_eq!(placed.len(), 3, "{placed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_keeps_each_function_on_one_worker_at_low_load() {
    let ctl = Controller::start(json!({"type": "ch_bl"}));
    let _ws: Vec<Worker> = (0..3).map(|k| Worker::start(&format!("w{k}"), k, &ctl)).collect();
    ctl.wait_healthy(3);
    let mut c = ctl.client().await;
    let names: Vec<String> = (0..6).map(|i| format!("fn{i}")).collect();
    for n in &names {
        assert!(c.register(function(n, 1)).await.unwrap().into_inner().success);
    }
    let mut homes = std::collections::HashSet::new();
    for n in &names {
        let placed = tally(&invoke_n(&ctl, n, 8).await);
        assert_eq!(placed.len(), 1, "{n} moved between workers at low load: {placed:?}");
        homes.extend(placed.into_keys());
    }
    assert!(homes.len() >= 2, "six functions all on one worker: {homes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_its_work_to_the_others_and_rejoins_when_restarted() {
    let ctl = Controller::start(json!({"type": "round_robin"}));
    let mut ws: Vec<Worker> = (0..3).map(|k| Worker::start(&format!("w{k}"), k, &ctl)).collect();
    ctl.wait_healthy(3);
    assert!(ctl.client().await.register(function("slow", 20)).await.unwrap().into_inner().success);

    // Eight closed-loop clients; worker w1 is killed while they run.
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, killed, mut c) = (stop.clone(), killed.clone(), ctl.client().await);
        clients.push(tokio::spawn(async move {
            let (mut before, mut after, mut errors) = (Vec::new(), Vec::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let was_killed = killed.load(Ordering::SeqCst);
                let r = c.invoke(invoke_req("slow")).await.expect("the controller answers").into_inner();
                match outcome(&r) {
                    Ok(w) if was_killed => after.push(w),
                    Ok(w) => before.push(w),
                    Err(e) => errors.push(e),
                }
            }
            (before, after, errors)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    ws[1].proc.kill();
    killed.store(true, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut before, mut after, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for c in clients {
        // No hang: every client finishes its last invocation promptly.
        let (b, a, e) =
            tokio::time::timeout(std::time::Duration::from_secs(15), c).await.expect("a client hung").unwrap();
        before.extend(b);
        after.extend(a);
        errors.extend(e);
    }
    let (before, after) = (tally(&before), tally(&after));
    eprintln!("before the kill: {before:?}; after: {after:?}; errors: {}", errors.len());
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(!after.contains_key("w1"), "work went to the killed worker: {after:?}");
    assert!(after.get("w0").is_some_and(|&n| n > 10) && after.get("w2").is_some_and(|&n| n > 10), "{after:?}");
    // Only invocations in flight on w1 when it died may fail, with a clear error.
    assert!(errors.len() <= 8, "{errors:?}");
    for (kind, msg) in &errors {
        assert_eq!(kind, "worker_failed", "{msg}");
        assert!(msg.contains("w1"), "{msg}");
    }
    let metrics = ctl.http_get("/metrics");
    assert!(metrics.contains(&format!("iluvatar_controller_worker_failures_total {}", errors.len())), "{metrics}");
    assert!(metrics.contains("iluvatar_controller_worker_healthy{worker=\"w1\"} 0"), "{metrics}");

    // The restarted worker (new port) registers again and takes work.
    ws[1].proc.spawn();
    ctl.wait_healthy(3);
    let placed = tally(&invoke_n(&ctl, "slow", 6).await);
    assert_eq!(placed.get("w1"), Some(&2), "{placed:?}");
}
