//! End-to-end: forgetting a worker (`deregister_worker`, `DELETE /workers/{name}`). A worker
//! registered by mistake no longer stays: it leaves the membership, the balancer stops
//! choosing it, and the store forgets it across a restart; a live worker with a heartbeat
//! registers itself again, as documented.

use iluvatar_rpc as rpc;
use iluvatar_testkit::cluster::*;
use iluvatar_testkit::{bin, http_exchange, output_timeout, unique_dir};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

/// Runs the CLI against the controller; (success, stdout JSON or stderr text).
fn cli(ctl: &Controller, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(bin("iluvatar_worker_cli"));
    cmd.args(["--controller", "--port", &ctl.proc.port().to_string()]).args(args).env_remove("ILUVATAR_TOKEN_FILE");
    let out = output_timeout(cmd, Duration::from_secs(30));
    let text = if out.status.success() { out.stdout } else { out.stderr };
    (out.status.success(), String::from_utf8_lossy(&text).into_owned())
}

fn names(ctl: &Controller) -> Vec<String> {
    let v: Value = serde_json::from_str(&ctl.http_get("/workers")).unwrap();
    v["workers"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_string()).collect()
}

async fn placements(c: &Controller, n: usize) -> HashMap<String, usize> {
    let mut client = c.client().await;
    let mut placed = HashMap::new();
    for _ in 0..n {
        let r = client.invoke(invoke_req("f")).await.unwrap().into_inner();
        *placed.entry(outcome(&r).unwrap_or_else(|e| panic!("{e:?}"))).or_insert(0) += 1;
    }
    placed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistaken_worker_is_forgotten_and_stays_forgotten_across_a_restart() {
    let state = unique_dir("controller-state");
    let ctl = Controller::start_in(json!({"type": "round_robin"}), &state);
    let port = ctl.proc.port();
    let _w = Worker::start("w", 0, &ctl);
    ctl.wait_healthy(1);
    // A worker that is not there (a typo in the port), registered by hand.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    ctl.client().await.register_worker(worker_info("typo", "127.0.0.1", closed)).await.unwrap();
    assert_eq!(names(&ctl), ["typo", "w"]);
    assert_eq!(ctl.worker("typo").unwrap()["healthy"], false);

    let (ok, out) = cli(&ctl, &["deregister-worker", "--name", "typo"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json!({"success": true, "name": "typo", "address": format!("127.0.0.1:{closed}")}));
    assert_eq!(names(&ctl), ["w"]);
    let metrics = ctl.http_get("/metrics");
    assert!(metrics.contains("iluvatar_controller_worker_deregistrations_total 1\n"), "{metrics}");
    // Again, or any other name: not a member, and the members are named.
    let (ok, err) = cli(&ctl, &["deregister-worker", "--name", "typo"]);
    assert!(!ok && err.contains("no worker named \"typo\" is a member (members: \"w\")"), "{err}");

    // A restart on the same state: the store forgot it (w comes back from the store).
    let mut ctl = ctl;
    assert!(ctl.proc.stop().success());
    drop(ctl);
    let ctl = Controller::start_with(json!({"grpc": {"address": "0.0.0.0", "port": port}}), &state);
    assert_eq!(ctl.proc.ready["workers"], 1, "only w is stored: {}", ctl.proc.ready);
    assert_eq!(names(&ctl), ["w"]);
    ctl.wait_healthy(1);
    drop(ctl);
    std::fs::remove_dir_all(&state).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregistered_worker_gets_no_more_invocations_until_it_registers_again() {
    let ctl = Controller::start(json!({"type": "round_robin"}));
    // w0 registers once (no heartbeat); w1 every 200 ms.
    let w0 = Worker::start_without_heartbeat("w0", 0, &ctl);
    let w1 = Worker::start("w1", 1, &ctl);
    ctl.wait_healthy(2);
    assert!(ctl.client().await.register(function("f", 1)).await.unwrap().into_inner().success);
    let placed = placements(&ctl, 8).await;
    assert_eq!(placed, HashMap::from([("w0".to_string(), 4), ("w1".to_string(), 4)]));

    // Over HTTP: DELETE /workers/w0; the balancer no longer sees it.
    let http = ctl.proc.addr("http");
    let (code, _, body) = http_exchange(&http, "DELETE", "/workers/w0", &[], None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"address": w0.proc.grpc()}));
    let placed = placements(&ctl, 8).await;
    assert_eq!(placed, HashMap::from([("w1".to_string(), 8)]), "nothing goes to a forgotten worker");
    let (code, _, body) = http_exchange(&http, "DELETE", "/workers/w0", &[], None);
    assert_eq!(code, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "unknown_worker", "{v}");
    assert!(v["error"].as_str().unwrap().ends_with("(members: \"w1\")"), "{v}");

    // w1 heartbeats: forgotten, it registers itself again within a heartbeat or so.
    let (code, _, body) = http_exchange(&http, "DELETE", "/workers/w1", &[], None);
    assert_eq!(code, 200, "{body}");
    ctl.wait_worker("w1", true, 200);
    let placed = placements(&ctl, 4).await;
    assert_eq!(placed, HashMap::from([("w1".to_string(), 4)]));
    assert!(!names(&ctl).contains(&"w0".to_string()), "w0 has no heartbeat: it stays forgotten");
    drop((w0, w1));
}

#[tokio::test]
async fn deregistering_needs_a_name_that_is_a_member() {
    let ctl = Controller::start(json!({"type": "round_robin"}));
    let mut admin = rpc::iluvatar_cluster_admin_client::IluvatarClusterAdminClient::connect(format!(
        "http://127.0.0.1:{}",
        ctl.proc.port()
    ))
    .await
    .unwrap();
    let s = admin.deregister_worker(rpc::DeregisterWorkerRequest { name: "ghost".into(), ..Default::default() });
    let s = s.await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    assert_eq!(s.message(), "no worker named \"ghost\" is a member (members: none)");
}
