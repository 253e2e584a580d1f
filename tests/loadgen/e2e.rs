//! End-to-end tests of iluvatar_load_gen: the real binary against a real iluvatar_worker
//! process (sim backend) on loopback. `cargo build --workspace` builds both binaries.

use iluvatar_rpc as rpc;
use iluvatar_testkit::loadgen::*;
use iluvatar_testkit::{WorkerProcess, s, unique_dir as temp_dir};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A sim worker on loopback.
fn worker() -> WorkerProcess {
    WorkerProcess::start(json!({"log_level": "warn"}))
}

/// How many functions the worker has registered.
fn registered(w: &WorkerProcess) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = w.client().await;
        c.list_registered_funcs(rpc::ListFunctionRequest::default()).await.unwrap().into_inner().functions.len()
    })
}

/// Replays `trace` (with its `meta`) at the sim worker on `port`, results in `out`.
fn replay(port: &str, trace: &Path, meta: &Path, out: &Path) -> Output {
    replay_with(port, trace, meta, out, &[])
}

/// [`replay`] with `extra` arguments.
fn replay_with(port: &str, trace: &Path, meta: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["trace", "--port", port, "--isolation", "sim"];
    args.extend(extra);
    args.extend(["--input", s(trace), "--metadata", s(meta), "--out", s(out)]);
    load_gen(&args)
}

const META: &str = "func_name,cold_dur_ms,warm_dur_ms,mem_mb,note\nhello,60,5,128,x\nslow,120,30,256,y\n";
const TRACE: &str = "func_name,invoke_time_ms\nhello,0\nslow,0\nhello,300\nslow,400\nhello,600\nhello,650\nslow,800\n";

/// Well-formed enough: one svg root, balanced elements, something drawn.
fn check_svg(path: &Path) {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && svg.trim_end().ends_with("</svg>"),
        "{}",
        path.display()
    );
    let opens = svg.matches('<').count() - svg.matches("</").count() - svg.matches("/>").count();
    assert_eq!(opens, svg.matches("</").count(), "unbalanced elements in {}", path.display());
    assert!(svg.contains("<polyline") || svg.contains("<circle"), "nothing drawn in {}", path.display());
}

#[test]
fn trace_replay_against_sim_worker() {
    let w = worker();
    let d = temp_dir("trace");
    let (meta, trace, out) = (d.join("meta.csv"), d.join("trace.csv"), d.join("out"));
    std::fs::write(&meta, META).unwrap();
    std::fs::write(&trace, TRACE).unwrap();
    let port = w.grpc_port.to_string();
    let o = replay(&port, &trace, &meta, &out);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("ALL") && stdout.contains("lat p99ms"), "{stdout}");

    let rows = read_csv(&out.join("invocations.csv"));
    assert_eq!(rows.len(), 7);
    for r in &rows {
        assert_eq!(r["success"], "true", "{r:?}");
        let overhead: f64 = r["overhead_ms"].parse().unwrap();
        let latency: f64 = r["client_latency_ms"].parse().unwrap();
        assert!(overhead >= 0.0 && overhead <= latency, "{r:?}");
    }
    let states =
        |f: &str| rows.iter().filter(|r| r["function"] == f).map(|r| r["container_state"].clone()).collect::<Vec<_>>();
    assert_eq!(states("hello"), ["cold", "warm", "warm", "warm"]);
    assert_eq!(states("slow"), ["cold", "warm", "warm"]);
    let cold: f64 = rows[1]["cold_start_ms"].parse().unwrap();
    assert!(cold >= 80.0, "slow's cold start is 120 - 30 ms in the sim: {cold}");

    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["invocations"], 7);
    assert_eq!(summary["succeeded"], 7);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["cold"], 2);
    assert_eq!(summary["warm"], 5);
    assert_eq!(summary["functions"]["hello"]["invocations"], 4);
    assert_eq!(summary["functions"]["slow"]["cold"], 1);
    assert_eq!(summary["lateness_ms"]["count"], 7);
    assert!(summary["requested_rate_per_s"].as_f64().unwrap() > 8.0);
    for f in ["latency_cdf.svg", "overhead_over_time.svg", "cold_starts_throughput.svg"] {
        check_svg(&out.join(f));
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn prewarmed_containers_serve_the_first_invocations() {
    let w = worker();
    let d = temp_dir("prewarm");
    let (meta, trace, out) = (d.join("meta.csv"), d.join("trace.csv"), d.join("out"));
    std::fs::write(&meta, META).unwrap();
    std::fs::write(&trace, "func_name,invoke_time_ms\nhello,0\nhello,50\n").unwrap();
    let port = w.grpc_port.to_string();
    let o = replay_with(&port, &trace, &meta, &out, &["--prewarm", "1"]);
    assert!(o.status.success());
    let rows = read_csv(&out.join("invocations.csv"));
    assert_eq!(rows.iter().map(|r| r["container_state"].as_str()).collect::<Vec<_>>(), ["prewarm", "warm"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_inputs_fail_before_any_load_with_file_line_and_reason() {
    let w = worker();
    let d = temp_dir("bad");
    let port = w.grpc_port.to_string();
    let good_meta = d.join("meta.csv");
    std::fs::write(&good_meta, META).unwrap();
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            "unsorted",
            META,
            "func_name,invoke_time_ms\nhello,10\nslow,5\n",
            "trace.csv:3: the trace is not sorted by time",
        ),
        (
            "missing",
            META,
            "func_name,invoke_time_ms\nhello,0\nnope,5\n",
            "trace.csv:3: function \"nope\" is not in the metadata",
        ),
        (
            "malformed",
            META,
            "func_name,invoke_time_ms\nhello,0\nhello,abc\n",
            "trace.csv:3: invoke_time_ms is not a number",
        ),
        ("short", META, "func_name,invoke_time_ms\nhello\n", "trace.csv:2: 1 fields where the header has 2"),
        (
            "negative",
            "func_name,cold_dur_ms,warm_dur_ms,mem_mb\nhello,10,-5,128\n",
            "func_name,invoke_time_ms\nhello,0\n",
            "meta.csv:2: warm_dur_ms is negative",
        ),
    ];
    for (tag, meta_text, trace_text, want) in cases {
        let dir = d.join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let (meta, trace, out) = (dir.join("meta.csv"), dir.join("trace.csv"), dir.join("out"));
        std::fs::write(&meta, meta_text).unwrap();
        std::fs::write(&trace, trace_text).unwrap();
        let o = replay(&port, &trace, &meta, &out);
        assert!(!o.status.success(), "{tag} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{tag}: want {want:?} in {err}");
        assert!(!out.join("invocations.csv").exists(), "{tag}: no results expected");
    }
    assert_eq!(registered(&w), 0, "nothing may reach the worker when the input is bad");

    // An unreachable target: a port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let trace = d.join("trace.csv");
    std::fs::write(&trace, TRACE).unwrap();
    let o = replay(&free, &trace, &good_meta, &d.join("o"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the worker at http://127.0.0.1:"));

    let o = load_gen(&["trace", "--worker-config", "w.json", "--input", s(&trace), "--metadata", s(&good_meta)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("it needs --setup simulation"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn rate_is_seeded_and_open_loop() {
    let w = worker();
    let d = temp_dir("rate");
    let port = w.grpc_port.to_string();
    let mut traces = Vec::new();
    for run in ["a", "b"] {
        let out = d.join(run);
        let o = load_gen(&[
            "rate",
            "--port",
            &port,
            "--isolation",
            "sim",
            "--function",
            "zero:0:0:16",
            "--function",
            "ten:20:10:16",
            "--mix",
            "zero=3",
            "--mix",
            "ten=1",
            "--rate",
            "200",
            "--duration-s",
            "1",
            "--seed",
            "42",
            "--out",
            s(&out),
        ]);
        assert!(o.status.success());
        let rows = read_csv(&out.join("invocations.csv"));
        let trace = std::fs::read_to_string(out.join("trace.csv")).unwrap();
        assert_eq!(rows.len(), trace.lines().count() - 1);
        assert!((120..300).contains(&rows.len()), "about 200 arrivals: {}", rows.len());
        let zero = rows.iter().filter(|r| r["function"] == "zero").count();
        assert!(zero > rows.len() / 2, "the mix is 3:1: {zero} of {}", rows.len());
        assert!(rows.iter().all(|r| r["success"] == "true"));
        traces.push(trace);
    }
    assert_eq!(traces[0], traces[1], "the same seed gives the same arrivals");
    let _ = std::fs::remove_dir_all(&d);
}

/// A small sample in the dataset's documented format: three functions of two apps, one
/// without a durations row, one whose app has no memory row.
fn azure_sample(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let minutes: Vec<String> = (1..=1440).map(|m| m.to_string()).collect();
    let mut inv = format!("HashOwner,HashApp,HashFunction,Trigger,{}\n", minutes.join(","));
    let row = |f: &str, app: &str, counts: &[u64]| {
        let mut c: Vec<String> = counts.iter().map(|x| x.to_string()).collect();
        c.resize(1440, "0".into());
        format!("o1,{app},{f},http,{}\n", c.join(","))
    };
    inv.push_str(&row("aaaaaaaaaaaaaaaa11", "app1", &[3, 0, 2]));
    inv.push_str(&row("bbbbbbbbbbbbbbbb22", "app1", &[1, 1, 1]));
    inv.push_str(&row("cccccccccccccccc33", "app1", &[5, 5, 5]));
    inv.push_str(&row("dddddddddddddddd44", "app2", &[4, 4, 4]));
    inv.push_str(&row("aaaaaaaaaaaaaaaa11", "app1", &[1, 0, 0]));
    let mut dur = String::from(
        "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100\n",
    );
    dur.push_str("o1,app1,aaaaaaaaaaaaaaaa11,120,4,50,900,50,52,80,100,150,800,900\n");
    dur.push_str("o1,app1,bbbbbbbbbbbbbbbb22,20,3,5,60,5,5,10,15,30,55,60\n");
    dur.push_str("o1,app2,dddddddddddddddd44,20,3,5,60,5,5,10,15,30,55,60\n");
    let pct: Vec<String> =
        [1, 5, 25, 50, 75, 95, 99, 100].iter().map(|p| format!("AverageAllocatedMb_pct{p}")).collect();
    let mut mem = format!("HashOwner,HashApp,SampleCount,AverageAllocatedMb,{}\n", pct.join(","));
    mem.push_str("o1,app1,10,170.4,100,110,120,170,180,190,200,210\n");
    let paths = (dir.join("inv.csv"), dir.join("dur.csv"), dir.join("mem.csv"));
    std::fs::write(&paths.0, inv).unwrap();
    std::fs::write(&paths.1, dur).unwrap();
    std::fs::write(&paths.2, mem).unwrap();
    paths
}

#[test]
fn azure_conversion_drops_and_counts_what_is_missing() {
    let d = temp_dir("azure");
    let (inv, dur, mem) = azure_sample(&d);
    let out = d.join("out");
    let o = load_gen(&[
        "generate",
        "azure",
        "--invocations",
        s(&inv),
        "--durations",
        s(&dur),
        "--memory",
        s(&mem),
        "--functions",
        "5",
        "--minutes",
        "3",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success());
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("generation.json")).unwrap()).unwrap();
    assert_eq!(report["functions_in_invocations_file"], 4);
    assert_eq!(report["dropped_no_duration_row"], 1, "{report}");
    assert_eq!(report["dropped_no_memory_row"], 1, "{report}");
    assert_eq!(report["kept"], 2);
    assert_eq!(
        std::fs::read_to_string(out.join("metadata.csv")).unwrap(),
        "func_name,cold_dur_ms,warm_dur_ms,mem_mb\naaaaaaaaaaaa,900,100,171\nbbbbbbbbbbbb,60,15,171\n"
    );
    let rows = read_csv(&out.join("trace.csv"));
    assert_eq!(rows.len(), 6 + 3, "(3+1)+0+2 invocations of a, 1+1+1 of b");
    let times: Vec<f64> = rows.iter().map(|r| r["invoke_time_ms"].parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]) && times.iter().all(|&t| t < 180_000.0));
    assert_eq!(rows.iter().filter(|r| r["invoke_time_ms"].parse::<f64>().unwrap() < 60_000.0).count(), 5);

    // The converted trace replays as it is; Poisson spreading is seeded.
    let mut traces = Vec::new();
    for run in ["p1", "p2"] {
        let o = load_gen(&[
            "generate",
            "azure",
            "--invocations",
            s(&inv),
            "--durations",
            s(&dur),
            "--memory",
            s(&mem),
            "--minutes",
            "3",
            "--arrivals",
            "poisson",
            "--seed",
            "9",
            "--out",
            s(&d.join(run)),
        ]);
        assert!(o.status.success());
        traces.push(std::fs::read_to_string(d.join(run).join("trace.csv")).unwrap());
    }
    assert_eq!(traces[0], traces[1]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn synthetic_generation_replays() {
    let w = worker();
    let d = temp_dir("synthetic");
    let gen_dir = d.join("gen");
    let o = load_gen(&[
        "generate",
        "synthetic",
        "--functions",
        "3",
        "--duration-s",
        "2",
        "--mean-rate",
        "10",
        "--mean-warm-ms",
        "5",
        "--mean-cold-extra-ms",
        "20",
        "--mem-mb",
        "64",
        "--seed",
        "3",
        "--out",
        s(&gen_dir),
    ]);
    assert!(o.status.success());
    let n = std::fs::read_to_string(gen_dir.join("trace.csv")).unwrap().lines().count() - 1;
    assert!(n > 10, "{n}");
    let port = w.grpc_port.to_string();
    let out = d.join("out");
    let o = replay(&port, &gen_dir.join("trace.csv"), &gen_dir.join("metadata.csv"), &out);
    assert!(o.status.success());
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["invocations"], n);
    assert_eq!(summary["failed"], 0);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn scaling_steps_closed_loop_clients() {
    let w = worker();
    let d = temp_dir("scaling");
    let port = w.grpc_port.to_string();
    let out = d.join("out");
    let o = load_gen(&[
        "scaling",
        "--port",
        &port,
        "--isolation",
        "sim",
        "--function",
        "f:5:1:16",
        "--start",
        "1",
        "--end",
        "3",
        "--step",
        "2",
        "--duration-s",
        "0.5",
        "--warmup-s",
        "0.1",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success());
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("scaling.json")).unwrap()).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.iter().map(|s| s["clients"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3]);
    assert!(steps.iter().all(|s| s["requests"].as_u64().unwrap() > 10 && s["errors"] == 0), "{report}");
    check_svg(&out.join("throughput.svg"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn benchmark_writes_function_data() {
    let w = worker();
    let d = temp_dir("bench");
    let funcs = d.join("functions");
    for f in ["alpha", "beta"] {
        std::fs::create_dir_all(funcs.join(f)).unwrap();
        std::fs::write(funcs.join(f).join("main.py"), "def main(args):\n    return {}\n").unwrap();
    }
    let port = w.grpc_port.to_string();
    let data = d.join("data.json");
    let o = load_gen(&[
        "benchmark",
        "--port",
        &port,
        "--isolation",
        "sim",
        "--functions-dir",
        s(&funcs),
        "--cold-iters",
        "2",
        "--warm-iters",
        "5",
        "--out",
        s(&data),
    ]);
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&std::fs::read(&data).unwrap()).unwrap();
    let fs = v["functions"].as_array().unwrap();
    assert_eq!(fs.len(), 2);
    assert_eq!(fs[0]["name"], "alpha");
    assert!(fs[0]["cold_ms_p50"].as_f64().unwrap() > fs[0]["warm_ms_p50"].as_f64().unwrap(), "{v}");
    assert_eq!(fs[0]["detail"]["cold_ms"]["count"], 2);
    assert_eq!(fs[0]["detail"]["warm_ms"]["count"], 5);
    let _ = std::fs::remove_dir_all(&d);
}
