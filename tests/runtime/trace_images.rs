//! A trace whose metadata names the functions' code (`image_name`, the reference platform's
//! column) replayed by the real load generator on real containers: the named code is
//! registered instead of the synthetic function, from a path relative to the metadata's
//! folder, and the metadata's `prewarms` are started before the load.

use crate::util::{RuntimeWorker, shipped};
use iluvatar_testkit::loadgen::{load_gen, read_csv};
use iluvatar_testkit::{s, unique_dir};
use serde_json::json;

#[test]
fn image_name_is_registered_instead_of_the_synthetic_function() {
    let w = RuntimeWorker::start(json!({"name": "runtime-trace-images"}));
    let d = unique_dir("trace-images");
    let code = d.join("fns").join("hello");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::copy(shipped("hello").join("main.py"), code.join("main.py")).unwrap();
    let (meta, trace, out) = (d.join("meta.csv"), d.join("trace.csv"), d.join("out"));
    std::fs::write(
        &meta,
        "func_name,cold_dur_ms,warm_dur_ms,mem_mb,image_name,prewarms\nhello,500,10,128,code:fns/hello,1\n",
    )
    .unwrap();
    std::fs::write(&trace, "func_name,invoke_time_ms\nhello,0\nhello,300\nhello,600\n").unwrap();
    let port = w.grpc_port.to_string();
    // No functions/synthetic where this runs: only the metadata's code is needed.
    let o = load_gen(&[
        "trace",
        "--port",
        &port,
        "--input",
        s(&trace),
        "--metadata",
        s(&meta),
        "--out",
        s(&out),
        "--functions-dir",
        "/nonexistent",
    ]);
    assert!(o.status.success());
    let rows = read_csv(&out.join("invocations.csv"));
    assert!(rows.iter().all(|r| r["success"] == "true"), "{rows:?}");
    let states: Vec<&str> = rows.iter().map(|r| r["container_state"].as_str()).collect();
    assert_eq!(states, ["prewarm", "warm", "warm"]);
    let list = w.cli_ok(&["list"]);
    let code = std::fs::canonicalize(&code).unwrap();
    assert_eq!(list["functions"][0]["image_name"], format!("code:{}", code.display()), "{list}");
    drop(w);
    let _ = std::fs::remove_dir_all(&d);
}
