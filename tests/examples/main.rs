//! Every example in examples/ runs as its README says, shortened (`QUICK=1`), with the
//! binaries of the tests' own profile (`BIN`), and gives what its header says to expect.
//! The real-container ones need root, as the runtime tests do.

mod docs;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// An example's results folder, removed when the test ends.
struct Out(PathBuf);

impl std::ops::Deref for Out {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs examples/NAME/run.sh into a fresh folder; returns the folder and the script's stdout.
fn run(name: &str) -> (Out, String) {
    let out = std::env::temp_dir().join(format!("iluvatar-example-test-{name}-{}", std::process::id()));
    let out = Out(out);
    let _ = std::fs::remove_dir_all(&*out);
    let script = repo().join("examples").join(name).join("run.sh");
    let o = Command::new("bash")
        .arg(&script)
        .arg(&*out)
        .env("QUICK", "1")
        .env("BIN", iluvatar_testkit::target_dir())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{} failed ({}):\n{stdout}\n{}",
        script.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    (out, stdout)
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of a trace, and how many functions have at least one.
fn trace_shape(trace: &Path) -> (u64, usize) {
    let text = std::fs::read_to_string(trace).unwrap();
    let mut functions = std::collections::BTreeSet::new();
    let mut rows = 0;
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        functions.insert(line.split(',').next().unwrap().to_string());
        rows += 1;
    }
    (rows, functions.len())
}

/// Every call answered, one per trace row, and at least each function's first call cold.
fn check_run(summary: &Value, trace: &Path) {
    let (rows, functions) = trace_shape(trace);
    assert_eq!(summary["invocations"], rows, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let cold = summary["cold"].as_u64().unwrap();
    assert!(cold >= functions as u64 && cold < rows, "{cold} cold starts of {rows} calls to {functions} functions");
}

#[test]
fn basic_trace() {
    let (out, _) = run("basic-trace");
    let s = json(&out.join("summary.json"));
    check_run(&s, &repo().join("examples/basic-trace/trace.csv"));
    let cold = s["cold"].as_u64().unwrap();
    assert!((3..=5).contains(&cold), "the header expects 3 to 5 cold starts, got {cold}: {s}");
}

#[test]
fn azure_trace() {
    let (out, _) = run("azure-trace");
    check_run(&json(&out.join("run/summary.json")), &out.join("workload/trace.csv"));
}

#[test]
fn simulation_trace() {
    let (out, stdout) = run("simulation-trace");
    assert!(stdout.contains("identical: yes"), "{stdout}");
    check_run(&json(&out.join("run/summary.json")), &out.join("workload/trace.csv"));
}

#[test]
fn cluster_trace() {
    let (out, _) = run("cluster-trace");
    let trace = out.join("workload/trace.csv");
    for run in ["live", "simulated"] {
        check_run(&json(&out.join(run).join("summary.json")), &trace);
        // Both workers served: the worker column of invocations.csv names two.
        let csv = std::fs::read_to_string(out.join(run).join("invocations.csv")).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let col = header.iter().position(|h| *h == "worker").expect("a worker column");
        let workers: std::collections::BTreeSet<&str> =
            csv.lines().skip(1).map(|l| l.split(',').nth(col).unwrap()).collect();
        assert_eq!(workers.len(), 2, "{run}: {workers:?}");
    }
}

#[test]
fn scaling() {
    let (out, _) = run("scaling");
    let s = json(&out.join("scaling.json"));
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps.iter().map(|st| st["clients"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2], "{s}");
    for st in steps {
        assert_eq!(st["errors"], 0, "{st}");
        assert!(st["invocations_per_s"].as_f64().unwrap() > 0.0, "{st}");
    }
}

#[test]
fn benchmark() {
    let (out, _) = run("benchmark");
    let d = json(&out.join("function_data.json"));
    let names: Vec<&str> = d["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hello", "json_serdes", "synthetic"], "QUICK benchmarks three functions");
    for f in d["functions"].as_array().unwrap() {
        assert_eq!(f["detail"]["errors"], 0, "{f}");
        assert!(
            f["detail"]["cold_start_ms"]["count"].as_u64().unwrap() >= 2,
            "every cold call started a container: {f}"
        );
        // For functions of about a millisecond, the cold start dominates.
        if f["name"] != "json_serdes" {
            assert!(f["cold_ms_p50"].as_f64().unwrap() > f["warm_ms_p50"].as_f64().unwrap(), "{f}");
        }
    }
}

#[test]
fn policy_compare() {
    let (out, _) = run("policy-compare");
    let rows = json(&out.join("compare.json"));
    let rows = rows["configs"].as_array().or(rows.as_array()).unwrap_or_else(|| panic!("{rows}")).clone();
    assert_eq!(rows.len(), 8, "{rows:?}");
    let cold = |name: &str| {
        let r = rows.iter().find(|r| r["config"] == name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(r["errors"], 0, "{r}");
        r["cold_starts"].as_u64().unwrap()
    };
    assert!(cold("fixed-gdsf-2048") <= cold("fixed-lru-2048"), "the header expects GDSF at or below LRU at 2 GB");
}

#[test]
fn detailed_spans() {
    let (_, stdout) = run("detailed-spans");
    let (cold, warm) = stdout.split_once("== warm").unwrap_or_else(|| panic!("{stdout}"));
    assert!(cold.contains("invoke:queue:acquire:create"), "a cold start creates a container:\n{stdout}");
    assert!(!warm.contains(":create"), "a warm call does not:\n{stdout}");
    assert!(warm.contains("invoke:queue:call:agent"), "{stdout}");
}
