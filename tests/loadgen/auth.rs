//! The load generator's `--token-file`: a trace replayed straight at a worker and through
//! a controller that both require a token (the real binaries on loopback), with the right
//! token, with none and with a wrong one.

use iluvatar_testkit::auth::token_file;
use iluvatar_testkit::loadgen::*;
use iluvatar_testkit::{s, unique_dir as temp_dir};
use serde_json::json;
use std::path::Path;

const META: &str = "func_name,cold_dur_ms,warm_dur_ms,mem_mb\nhello,20,2,64\n";
const TRACE: &str = "func_name,invoke_time_ms\nhello,0\nhello,100\nhello,200\n";

#[test]
fn traces_carry_the_token_to_a_worker_and_through_a_controller() {
    let dir = temp_dir("auth");
    let ctl_token = token_file(&dir, "controller-token", "lg-ctl-token-1\n", 0o600);
    let wrk_token = token_file(&dir, "worker-token", "lg-wrk-token-2\n", 0o600);
    let controller = daemon(
        "iluvatar_controller",
        &dir,
        json!({
            "state_dir": dir.join("controller"),
            "grpc": {"address": "127.0.0.1", "port": 0},
            "http": {"enabled": true, "address": "127.0.0.1", "port": 0},
            "health": {"interval_ms": 100, "timeout_ms": 500},
            "log_level": "warn",
            "auth": {"token_file": ctl_token, "worker_token_file": wrk_token},
        }),
    );
    let worker = daemon(
        "iluvatar_worker",
        &dir,
        json!({
            "name": "w1",
            "isolation": {"backends": [{"type": "sim"}]},
            "grpc": {"address": "127.0.0.1", "port": 0},
            "http": {"enabled": false},
            "state_dir": dir.join("worker"),
            "log_level": "warn",
            "controller": {"address": "127.0.0.1", "port": controller.port(),
                "retry_ms": 100},
            "auth": {"token_file": wrk_token, "controller_token_file": ctl_token},
        }),
    );
    let (trace, meta) = (dir.join("trace.csv"), dir.join("meta.csv"));
    std::fs::write(&trace, TRACE).unwrap();
    std::fs::write(&meta, META).unwrap();
    let http = controller.ready["http"].as_str().unwrap().to_string();
    let (ctl_port, wrk_port) = (controller.port().to_string(), worker.port().to_string());
    let run = |target: &str, port: &str, token: Option<&Path>, out: &str| {
        let out = dir.join(out);
        let mut args = vec!["trace", "--target", target, "--port", port, "--isolation", "sim"];
        args.extend(["--input", s(&trace), "--metadata", s(&meta)]);
        if target == "controller" {
            args.extend(["--controller-http", &http, "--min-workers", "1", "--wait-workers-s", "20"]);
        }
        let token_args = token.map(|t| vec!["--token-file", s(t)]).unwrap_or_default();
        args.extend(token_args);
        args.extend(["--out", s(&out)]);
        let o = load_gen(&args);
        (o, out)
    };
    let check_rows = |out: &Path| {
        let rows = read_csv(&out.join("invocations.csv"));
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r["success"] == "true"), "{rows:?}");
    };

    // Through the controller: its token for gRPC and for GET /workers.
    let (o, out) = run("controller", &ctl_port, Some(&ctl_token), "through-controller");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_rows(&out);
    let (o, _) = run("controller", &ctl_port, None, "no-token");
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("missing token"), "{o:?}");
    let (o, _) = run("controller", &ctl_port, Some(&wrk_token), "wrong-token");
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("wrong token"), "{o:?}");

    // Straight at the worker: its own token.
    let (o, out) = run("worker", &wrk_port, Some(&wrk_token), "at-worker");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_rows(&out);
    let (o, _) = run("worker", &wrk_port, Some(&ctl_token), "at-worker-wrong");
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("wrong token"), "{o:?}");
    drop((worker, controller));
    let _ = std::fs::remove_dir_all(&dir);
}
