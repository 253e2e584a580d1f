//! Trace metadata as the reference platform writes it: `prewarms` honoured, prewarm counts
//! from `mean_iat` on request, and a warning naming the columns not read. (`image_name` on
//! real containers: tests/runtime/trace_images.rs.)

use iluvatar_testkit::loadgen::*;
use iluvatar_testkit::{WorkerProcess, s, unique_dir as temp_dir};
use serde_json::{Value, json};
use std::path::Path;

/// The reference platform's basic-trace metadata, as it ships (its images are registry
/// references; a `sim` run registers simulated functions instead).
const REFERENCE_META: &str = "func_name,cold_dur_ms,warm_dur_ms,mem_mb,image_name,compute,isolation,prewarms\n\
    a,5000,500,512,docker.io/alfuerst/float_operation-iluvatar-action-http:latest,CPU,CONTAINERD,1\n\
    b,5000,500,512,docker.io/alfuerst/gzip_compression-iluvatar-action-http:latest,CPU,CONTAINERD,2\n";

fn summary(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

/// The container state of each row of a function, in order.
fn states(out: &Path, f: &str) -> Vec<String> {
    read_csv(&out.join("invocations.csv"))
        .into_iter()
        .filter(|r| r["function"] == f)
        .map(|r| r["container_state"].clone())
        .collect()
}

#[test]
fn the_reference_metadata_prewarms_what_it_asks_for() {
    let w = WorkerProcess::start(json!({"log_level": "warn", "invoker": {"concurrency": 4}}));
    let d = temp_dir("reference-meta");
    let (meta, trace, out) = (d.join("meta.csv"), d.join("trace.csv"), d.join("out"));
    std::fs::write(&meta, REFERENCE_META).unwrap();
    // b twice at once: its two prewarmed containers serve both; then warm calls.
    std::fs::write(&trace, "func_name,invoke_time_ms\na,0\nb,0\nb,0\na,6000\nb,6000\n").unwrap();
    let port = w.grpc_port.to_string();
    let o = load_gen(&[
        "trace",
        "--port",
        &port,
        "--isolation",
        "sim",
        "--input",
        s(&trace),
        "--metadata",
        s(&meta),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success());
    assert_eq!(states(&out, "a"), ["prewarm", "warm"]);
    assert_eq!(states(&out, "b"), ["prewarm", "prewarm", "warm"]);
    let sum = summary(&out);
    assert_eq!(sum["cold"], 0, "{sum}");
    assert_eq!(sum["target"]["prewarmed"], json!({"a": 1, "b": 2}));
    let err = String::from_utf8_lossy(&o.stderr);
    let want = format!(
        "warning: {}: column(s) not understood, ignored: compute (only CPU compute exists here), isolation (live \
         functions run on --isolation's backend) (read: func_name,",
        meta.display()
    );
    assert!(err.contains(&want), "{err}");
    // --prewarm is for the functions the metadata says nothing about.
    std::fs::write(&trace, "func_name,invoke_time_ms\na,0\na,0\n").unwrap();
    let out2 = d.join("out2");
    let o = load_gen(&[
        "trace",
        "--port",
        &port,
        "--isolation",
        "sim",
        "--prewarm",
        "3",
        "--version",
        "2",
        "--input",
        s(&trace),
        "--metadata",
        s(&meta),
        "--out",
        s(&out2),
    ]);
    assert!(o.status.success());
    let mut two = states(&out2, "a");
    two.sort(); // sent at once: either may take the prewarmed container
    assert_eq!(two, ["cold", "prewarm"], "the metadata's 1, not --prewarm 3");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn prewarms_from_mean_iat_on_request() {
    let d = temp_dir("iat");
    let meta = "func_name,cold_dur_ms,warm_dur_ms,mem_mb,mean_iat,prewarms\n\
        f,300,10,64,100,\n\
        g,50,10,64,1000,\n\
        h,50,10,64,,\n\
        p,50,10,64,1,0\n";
    std::fs::write(d.join("metadata.csv"), meta).unwrap();
    let mut trace = String::from("func_name,invoke_time_ms\n");
    for f in ["f", "f", "f", "g", "h", "p"] {
        trace.push_str(&format!("{f},0\n"));
    }
    std::fs::write(d.join("trace.csv"), trace).unwrap();
    let config = d.join("worker.json");
    std::fs::write(&config, r#"{"invoker": {"concurrency": 8}}"#).unwrap();
    let run = |out: &str, extra: &[&str]| {
        let out = d.join(out);
        let (t, m) = (d.join("trace.csv"), d.join("metadata.csv"));
        let mut args = vec!["trace", "--setup", "simulation", "--worker-config", s(&config), "--quiet"];
        args.extend(["--input", s(&t), "--metadata", s(&m), "--out", s(&out)]);
        args.extend(extra);
        assert!(load_gen(&args).status.success());
        out
    };
    // Off by default: mean_iat alone prewarms nothing.
    let plain = run("plain", &[]);
    assert_eq!(summary(&plain)["target"]["prewarmed"], json!({}));
    assert_eq!(summary(&plain)["cold"], 6);
    // f: a call every 100 ms during a 300 ms cold start: 3, at most --max-prewarms 2;
    // g: 1; h has no mean_iat (--prewarm's 0); p's metadata says 0.
    let iat = run("iat", &["--prewarm-from-iat", "--max-prewarms", "2"]);
    assert_eq!(summary(&iat)["target"]["prewarmed"], json!({"f": 2, "g": 1}));
    assert_eq!(states(&iat, "f"), ["prewarm", "prewarm", "cold"]);
    assert_eq!(
        (states(&iat, "g"), states(&iat, "h"), states(&iat, "p")),
        (vec!["prewarm".to_string()], vec!["cold".to_string()], vec!["cold".to_string()])
    );
    let _ = std::fs::remove_dir_all(&d);
}
