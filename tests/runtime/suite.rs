//! The function suite shipped in `functions/` (FunctionBench's categories) on the real runtime
//! backend: every function, its dependency layers built from the package index (one layer for
//! the numeric/imaging functions, one for templating), checks its own result; then the load
//! generator's `benchmark` measures the suite and `trace --function-data` replays a trace on it.

use crate::util::{RuntimeWorker, shipped};
use iluvatar_testkit::loadgen::{load_gen, read_csv};
use iluvatar_testkit::{s, unique_dir};
use serde_json::{Value, json};

/// The suite: name, small arguments for the test, and the check of the body it returns.
type Check = fn(&Value) -> Result<(), String>;

fn ensure(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_string()) }
}

fn float_operation(b: &Value) -> Result<(), String> {
    // The same sum computed here: the function really ran the loop.
    let want: f64 = (0..1000).map(|i| i as f64).map(|x| x.sin() + x.cos() + x.sqrt()).sum();
    let got = b["sum"].as_f64().ok_or("no sum")?;
    ensure(b["n"] == 1000 && (got - want).abs() <= 1e-9 * want.abs(), &format!("sum {got}, expected {want}"))
}

fn matmul(b: &Value) -> Result<(), String> {
    let e = b["relative_error"].as_f64().ok_or("no relative_error")?;
    ensure(b["n"] == 64 && e < 1e-9 && b["trace"].as_f64().is_some_and(|t| t > 0.0), "product check")
}

fn linpack(b: &Value) -> Result<(), String> {
    let r = b["residual"].as_f64().ok_or("no residual")?;
    ensure(b["n"] == 100 && r < 10.0 && b["mflops"].as_f64().is_some_and(|m| m > 0.0), "LINPACK residual and rate")
}

fn image_processing(b: &Value) -> Result<(), String> {
    let o = &b["outputs"];
    let all_encoded =
        o.as_object().is_some_and(|m| m.len() == 7 && m.values().all(|v| v["jpeg_bytes"].as_u64() > Some(0)));
    ensure(all_encoded, "seven JPEG outputs")?;
    ensure(o["rotate"]["size"] == json!([48, 64]) && o["resize"]["size"] == json!([32, 24]), "geometry")?;
    ensure(o["grayscale"]["mode"] == "L", "grayscale mode")
}

fn json_serdes(b: &Value) -> Result<(), String> {
    ensure(b["records"] == 50 && b["equal"] == true && b["bytes"].as_u64() > Some(1000), "round trip")
}

fn compression(b: &Value) -> Result<(), String> {
    let algs = b["algorithms"].as_object().ok_or("no algorithms")?;
    let ok = algs.len() == 3 && algs.values().all(|a| a["ok"] == true && a["ratio"].as_f64() > Some(1.0));
    ensure(b["input_bytes"] == 16384 && ok, "three round trips that compress")
}

fn aes(b: &Value) -> Result<(), String> {
    ensure(b["fips197_ok"] == true, "the FIPS-197 example vector")?;
    ensure(b["bytes"] == 1024 && b["roundtrip"] == true && b["changed"] == true, "CTR round trip")
}

fn templating(b: &Value) -> Result<(), String> {
    ensure(b["rows"] == 20 && b["escaped"] == true, "20 rows, the script escaped")
}

fn model_training(b: &Value) -> Result<(), String> {
    let acc = b["test_accuracy"].as_f64().ok_or("no accuracy")?;
    // Below ln 2, the loss of a model that learnt nothing.
    let loss = b["loss"].as_f64().ok_or("no loss")?;
    ensure(acc > 0.8 && loss < std::f64::consts::LN_2, &format!("learnt: accuracy {acc}, loss {loss}"))
}

fn video_processing(b: &Value) -> Result<(), String> {
    ensure(b["decoded_frames"] == 5 && b["size"] == json!([32, 24]) && b["gif_bytes"].as_u64() > Some(0), "GIF frames")
}

const SUITE: [(&str, &str, Check); 10] = [
    ("float_operation", r#"{"n": 1000}"#, float_operation),
    ("matmul", r#"{"n": 64}"#, matmul),
    ("linpack", r#"{"n": 100}"#, linpack),
    ("image_processing", r#"{"width": 64, "height": 48}"#, image_processing),
    ("json_serdes", r#"{"records": 50}"#, json_serdes),
    ("compression", r#"{"size_kb": 16}"#, compression),
    ("aes", r#"{"size_kb": 1}"#, aes),
    ("templating", r#"{"rows": 20}"#, templating),
    ("model_training", r#"{"samples": 400, "features": 5, "epochs": 100}"#, model_training),
    ("video_processing", r#"{"frames": 5, "width": 64, "height": 48}"#, video_processing),
];

#[test]
fn the_suite_checks_its_results_and_the_load_generator_benchmarks_and_replays_it() {
    let w = RuntimeWorker::start(json!({"isolation": {"backends": [{"type": "runtime", "standby": 2}]}}));
    // Registered at once: the five numeric/imaging functions share one requirements set,
    // so they wait for one build.
    std::thread::scope(|scope| {
        for (name, ..) in SUITE {
            let w = &w;
            scope.spawn(move || w.register(name, &shipped(name), 128));
        }
    });
    let layers = w.runtime_entries("deps/layers");
    assert_eq!(layers.len(), 2, "one layer per distinct requirements: {layers:?}\n{}", w.log_context());
    assert_eq!(w.log_text().matches("building a dependency layer").count(), 2, "{}", w.log_context());
    for (name, args, check) in SUITE {
        for state in ["COLD", "WARM"] {
            let r = w.invoke_ok(name, args);
            assert_eq!(r["container_state"], state, "{name}: {r}");
            // The function returns {"body": ...}, which the worker returns as its body.
            if let Err(why) = check(&r["result"]["body"]["body"]) {
                panic!("{name} ({state}): {why}: {r}");
            }
        }
    }

    // The load generator measures the whole functions/ folder (its args.json arguments) ...
    let d = unique_dir("suite-bench");
    let data = d.join("function_data.json");
    let port = w.grpc_port.to_string();
    let functions = shipped("hello").parent().unwrap().to_path_buf();
    let bench =
        ["benchmark", "--port", &port, "--functions-dir", s(&functions), "--cold-iters", "1", "--warm-iters", "2"];
    let o = load_gen(&[&bench[..], &["--out", s(&data)]].concat());
    assert!(o.status.success(), "{}", w.log_context());
    let v: Value = serde_json::from_slice(&std::fs::read(&data).unwrap()).unwrap();
    let measured = v["functions"].as_array().unwrap();
    assert_eq!(measured.len(), SUITE.len() + 2, "the suite, hello and synthetic: {v}");
    for f in measured {
        assert_eq!(f["detail"]["errors"], 0, "{f}");
        assert_eq!(f["detail"]["warm_ms"]["count"], 2, "{f}");
        assert!(f["cold_ms_p50"].as_f64() > f["detail"]["cold_start_ms"]["p50"].as_f64(), "{f}");
    }
    let with_layer = measured.iter().filter(|f| f["detail"]["requirements"] == true).count();
    assert_eq!(with_layer, 6, "{v}");

    // ... and a trace's functions run as the measured function closest in warm time.
    let (trace, meta, out) = (d.join("trace.csv"), d.join("meta.csv"), d.join("out"));
    std::fs::write(
        &meta,
        "func_name,cold_dur_ms,warm_dur_ms,mem_mb\nquick,100,1,64\nmiddle,400,60,64\nslow,900,400,64\n",
    )
    .unwrap();
    std::fs::write(&trace, "func_name,invoke_time_ms\nquick,0\nmiddle,0\nslow,0\nquick,500\nmiddle,600\nslow,700\n")
        .unwrap();
    let args = ["trace", "--port", &port, "--function-data", s(&data), "--input", s(&trace), "--metadata", s(&meta)];
    let o = load_gen(&[&args[..], &["--out", s(&out)]].concat());
    assert!(o.status.success(), "{}", w.log_context());
    let rows = read_csv(&out.join("invocations.csv"));
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["success"] == "true"), "{rows:?}");
    let listed = w.cli_ok(&["list"]);
    for (name, warm) in [("quick", 1.0), ("middle", 60.0), ("slow", 400.0)] {
        let closest = measured
            .iter()
            .min_by(|a, b| {
                let d = |f: &&Value| (f["warm_ms_p50"].as_f64().unwrap() - warm).abs();
                d(a).total_cmp(&d(b))
            })
            .unwrap();
        let image = listed["functions"].as_array().unwrap().iter().find(|f| f["function_name"] == name).unwrap();
        assert_eq!(image["image_name"], format!("code:{}", closest["code"].as_str().unwrap()), "{name}: {listed}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
