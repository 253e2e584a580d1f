//! End-to-end: the controller under misbehaving workers. A registration one worker refuses,
//! a "worker" that accepts connections and never answers, two live workers with one name,
//! and a controller restarted without its state that learns its workers from their
//! heartbeats. Waits count short sleeps; bounds on promptness are tokio timeouts.

use iluvatar_rpc as rpc;
use iluvatar_testkit::cluster::*;
use iluvatar_testkit::unique_dir;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

async fn placements(c: &Controller, name: &str, n: usize) -> HashMap<String, usize> {
    let mut client = c.client().await;
    let mut placed = HashMap::new();
    for _ in 0..n {
        let r = client.invoke(invoke_req(name)).await.unwrap().into_inner();
        let w = outcome(&r).unwrap_or_else(|e| panic!("invocation of {name} failed: {e:?}"));
        *placed.entry(w).or_insert(0) += 1;
    }
    placed
}

fn result(r: &rpc::InvokeResponse) -> Value {
    serde_json::from_str(&r.json_result).unwrap_or_else(|e| panic!("{}: {e}", r.json_result))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_one_worker_refuses_fails_naming_it_and_no_invocation_goes_there() {
    let ctl = Controller::start(json!({"type": "round_robin"}));
    let w0 = Worker::start("w0", 0, &ctl);
    let w1 = Worker::start("w1", 1, &ctl);
    ctl.wait_healthy(2);
    // w1 already holds f-1 with another memory size.
    let other = rpc::RegisterRequest { memory: 32, ..function("f", 1) };
    let r = w1.client().await.register(other).await.unwrap().into_inner();
    assert!(r.success, "{}", r.error);

    let r = ctl.client().await.register(function("f", 1)).await.unwrap().into_inner();
    assert!(!r.success, "a registration that a worker refused answered success");
    let w1_address = w1.proc.grpc();
    assert!(r.error.contains(&format!("worker w1 at {w1_address} refused it")), "{}", r.error);
    assert!(r.error.contains("memory"), "the refusal names the difference: {}", r.error);
    assert!(!r.error.contains("worker w0 at"), "w0 accepted: {}", r.error);
    assert!(ctl.worker("w1").unwrap()["refused"]["f-1"].is_string(), "{}", ctl.http_get("/workers"));

    // Round robin would alternate; f-1 runs only where the controller's spec is.
    let placed = placements(&ctl, "f", 10).await;
    assert_eq!(placed, HashMap::from([("w0".to_string(), 10)]), "f-1 reached the worker holding another spec");
    // The same registration again is refused again; w1 still gets none of it.
    let r = ctl.client().await.register(function("f", 1)).await.unwrap().into_inner();
    assert!(!r.success && r.error.contains("w1"), "{r:?}");
    // The exclusion is per function: one both accept runs on both.
    let r = ctl.client().await.register(function("g", 1)).await.unwrap().into_inner();
    assert!(r.success, "{}", r.error);
    let placed = placements(&ctl, "g", 6).await;
    assert_eq!(placed.len(), 2, "{placed:?}");
    // Arguments past the largest payload are refused by the controller, by name; just under
    // it they are carried to a worker and back.
    let mut client = ctl.client().await;
    let mut big = invoke_req("g");
    big.json_args = format!(r#"{{"pad": "{}"}}"#, "x".repeat(rpc::MAX_PAYLOAD_BYTES));
    let r = client.invoke(big.clone()).await.expect("answered in-band").into_inner();
    let v = result(&r);
    assert_eq!(v["kind"], "bad_arguments", "{v}");
    assert!(v["Error"].as_str().unwrap_or_default().contains("largest payload"), "{v}");
    big.json_args = format!(r#"{{"pad": "{}"}}"#, "x".repeat(rpc::MAX_PAYLOAD_BYTES - 64));
    let r = client.invoke(big).await.expect("carried").into_inner();
    assert!(r.success, "{}", &r.json_result[..r.json_result.len().min(300)]);
    drop(w0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_answers_holds_up_neither_the_health_checks_nor_the_service_of_the_others() {
    // Health checks every 100 ms, each waiting at most 10 s (connecting too, which the
    // silent worker accepts but never completes at the HTTP/2 level): if one check waited
    // on another, the silent worker would stretch every round to 10 s.
    let changes = json!({
        "health": {"interval_ms": 100, "timeout_ms": 10000},
        "forward": {"connect_timeout_ms": 10000, "invoke_timeout_ms": 10000, "control_timeout_ms": 1500},
    });
    let ctl = Controller::start_with(changes, &unique_dir("controller-state"));
    let silent = silent_listener();
    let mut c = ctl.client().await;
    let joined =
        tokio::time::timeout(Duration::from_secs(5), c.register_worker(worker_info("mute", "127.0.0.1", silent)));
    joined.await.expect("register_worker answers promptly").expect("a new worker is accepted");
    let mut w0 = Worker::start("w0", 0, &ctl);
    ctl.wait_healthy(1);
    assert_eq!(ctl.worker("mute").unwrap()["healthy"], false);

    // Registrations and invocations are served promptly.
    let r = tokio::time::timeout(Duration::from_secs(5), c.register(function("g", 1))).await.expect("prompt");
    let r = r.unwrap().into_inner();
    assert!(r.success, "{}", r.error);
    let placed = tokio::time::timeout(Duration::from_secs(10), placements(&ctl, "g", 4)).await.expect("prompt");
    assert_eq!(placed, HashMap::from([("w0".to_string(), 4)]));

    // An async result on the silent worker: worker_failed within the control deadline.
    let check = rpc::InvokeAsyncLookupRequest { lookup_cookie: "mute.abc".into(), ..Default::default() };
    let r = tokio::time::timeout(Duration::from_secs(5), c.invoke_async_check(check)).await.expect("a deadline");
    let v = result(&r.unwrap().into_inner());
    assert_eq!(v["kind"], "worker_failed", "{v}");
    assert!(v["Error"].as_str().unwrap().contains("mute"), "{v}");
    // ... and on a worker the controller does not know.
    let check = rpc::InvokeAsyncLookupRequest { lookup_cookie: "gone.abc".into(), ..Default::default() };
    let v = result(&c.invoke_async_check(check).await.unwrap().into_inner());
    assert_eq!(v["kind"], "worker_failed", "{v}");
    assert!(v["Error"].as_str().unwrap().contains("\"gone\""), "{v}");

    // w0's death is noticed within a few rounds (not once per silent check of 10 s);
    // restarted on a new port, it replaces its dead self and is checked back into service.
    for _ in 0..2 {
        w0.proc.kill();
        ctl.wait_worker("w0", false, 30);
        w0.proc.spawn();
        ctl.wait_worker("w0", true, 200);
        assert_eq!(ctl.worker("w0").unwrap()["address"], w0.proc.grpc());
    }
    let placed = placements(&ctl, "g", 2).await;
    assert_eq!(placed, HashMap::from([("w0".to_string(), 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_worker_with_the_same_name_is_refused_until_the_first_is_dead() {
    let ctl = Controller::start(json!({"type": "round_robin"}));
    let mut first = Worker::start("dup", 0, &ctl);
    ctl.wait_healthy(1);
    let first_address = first.proc.grpc();
    // Its heartbeat (every 200 ms) registers it again and again: nothing changes.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let metrics = ctl.http_get("/metrics");
    assert!(metrics.contains("iluvatar_controller_worker_registrations_total 1\n"), "{metrics}");
    assert_eq!(ctl.worker("dup").unwrap()["healthy"], true);

    // Another address under the same name: refused, naming the member's address.
    let silent = silent_listener();
    let mut c = ctl.client().await;
    let e = c.register_worker(worker_info("dup", "127.0.0.1", silent)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains(&first_address), "{}", e.message());
    // A second worker process of that name keeps being refused while the first lives.
    let second = Worker::start("dup", 1, &ctl);
    let mut refused = false;
    for _ in 0..100 {
        if second.proc.log_text().contains("already a member") {
            refused = true;
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(refused, "the second worker was not told: {}", second.proc.log_text());
    let w = ctl.worker("dup").unwrap();
    assert_eq!((w["address"].as_str(), w["healthy"].as_bool()), (Some(first_address.as_str()), Some(true)), "{w}");

    // Once the first is dead, the second takes the name.
    first.proc.kill();
    let second_address = second.proc.grpc();
    for _ in 0..200 {
        if ctl.worker("dup").is_some_and(|w| w["address"] == second_address.as_str() && w["healthy"] == true) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let w = ctl.worker("dup").unwrap();
    assert_eq!((w["address"].as_str(), w["healthy"].as_bool()), (Some(second_address.as_str()), Some(true)), "{w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restarted_without_its_state_learns_its_workers_from_their_heartbeats() {
    let ctl = Controller::start(json!({"type": "round_robin"}));
    let port = ctl.proc.port();
    let _w0 = Worker::start("w0", 0, &ctl);
    let _w1 = Worker::start("w1", 1, &ctl);
    ctl.wait_healthy(2);
    let mut ctl = ctl;
    assert!(ctl.proc.stop().success());
    drop(ctl);

    // Same port, empty state dir: it knows nobody until the heartbeats arrive.
    let changes = json!({"grpc": {"address": "0.0.0.0", "port": port}});
    let ctl = Controller::start_with(changes, &unique_dir("controller-state"));
    assert_eq!(ctl.proc.ready["workers"], 0, "{}", ctl.proc.ready);
    ctl.wait_healthy(2);
    let r = ctl.client().await.register(function("f", 1)).await.unwrap().into_inner();
    assert!(r.success, "{}", r.error);
    let placed = placements(&ctl, "f", 4).await;
    assert_eq!(placed.len(), 2, "{placed:?}");
}
