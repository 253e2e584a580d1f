//! Dependency layers: a code folder's requirements.txt installed once per distinct
//! requirements into a read-only layer shared by the functions that ask for it. These tests
//! take their wheels from a folder of wheels they write (`PIP_NO_INDEX`, `PIP_FIND_LINKS`
//! given to the worker, which hands pip's settings to the download), so they need no index;
//! the shipped functions' tests (suite.rs) use the real one.

use crate::util::{RuntimeWorker, eventually, fixture};
use iluvatar_testkit::{s, unique_dir};
use serde_json::{Value, json};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BUILD_LOG: &str = "building a dependency layer";

/// Writes a wheel of package `name` (holding VALUE = "name-version") into `dir`.
fn make_wheel(dir: &Path, name: &str, version: &str, blob_kb: u32) {
    let script = iluvatar_testkit::fixtures::tests_dir().join("images").join("make-wheel.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([s(dir), name, version, "--blob-kb", &blob_kb.to_string()])
        .output()
        .expect("running make-wheel.py");
    assert!(out.status.success(), "make-wheel.py: {}", String::from_utf8_lossy(&out.stderr));
}

/// A worker whose downloads come from `wheels` only.
fn worker(wheels: &Path, runtime: Value) -> RuntimeWorker {
    let mut backend = json!({"type": "runtime", "standby": 0});
    iluvatar_testkit::merge(&mut backend, runtime);
    let config = json!({"isolation": {"backends": [backend]}});
    RuntimeWorker::start_with_env(config, &[("PIP_NO_INDEX", "1"), ("PIP_FIND_LINKS", s(wheels))])
}

/// A copy of the deps_probe function in `dir/name` with this requirements.txt.
fn probe(dir: &Path, name: &str, requirements: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::create_dir_all(&f).unwrap();
    std::fs::copy(fixture("deps_probe").join("main.py"), f.join("main.py")).unwrap();
    std::fs::write(f.join("requirements.txt"), requirements).unwrap();
    f
}

fn register_image(w: &RuntimeWorker, name: &str, image: &str) -> Value {
    w.cli_ok(&["register", "--name", name, "--version", "1", "--image", image, "--memory", "64"])
}

fn register_err(w: &RuntimeWorker, name: &str, code: &Path) -> String {
    w.cli_err(&["register", "--name", name, "--version", "1", "--code", s(code), "--memory", "64"])
}

fn body(r: &Value) -> &Value {
    &r["result"]["body"]
}

fn layers(w: &RuntimeWorker) -> Vec<String> {
    w.runtime_entries("deps/layers")
}

fn builds(w: &RuntimeWorker) -> usize {
    w.log_text().matches(BUILD_LOG).count()
}

#[test]
fn the_same_requirements_build_one_layer_shared_read_only_by_standby_and_started_containers() {
    let d = unique_dir("deps-shared");
    let wheels = d.join("wheels");
    make_wheel(&wheels, "iluprobe", "1.0", 0);
    let w = worker(&wheels, json!({"standby": 1}));
    let a = probe(&d, "a", "iluprobe==1.0\n");
    let b = probe(&d, "b", "# the same requirement, written differently\n   iluprobe==1.0    # pinned\n\n");
    // Concurrent registrations of the same requirements: one build, both wait for it.
    std::thread::scope(|scope| {
        for (name, code) in [("a", &a), ("b", &b)] {
            let w = &w;
            scope.spawn(move || w.register(name, code, 64));
        }
    });
    assert_eq!(builds(&w), 1, "one build for both:\n{}", w.log_context());
    let keys = layers(&w);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let layer = w.state_dir.join("runtime/deps/layers").join(&keys[0]);
    for f in [layer.clone(), layer.join("iluprobe"), layer.join("iluprobe/__init__.py")] {
        let m = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{}: the layer belongs to root, not to its builder", f.display());
    }

    // `a` gets the standby container (once it is up), `c` (loopback network: never a
    // standby container) a started one; both see the layer read-only.
    assert!(eventually(Duration::from_secs(10), || w.containers().len() == 1), "{}", w.log_context());
    let ra = w.invoke_ok("a", "{}");
    let c = format!("code:{}?network=loopback", b.display());
    assert_eq!(register_image(&w, "c", &c)["success"], true);
    let rc = w.invoke_ok("c", "{}");
    assert_eq!((body(&ra)["standby"].clone(), body(&rc)["standby"].clone()), (json!(true), json!(false)));
    for r in [&ra, &rc, &w.invoke_ok("b", "{}")] {
        assert_eq!(body(r)["value"], "iluprobe-1.0", "{r}");
        assert_eq!(body(r)["file"], "/iluvatar/deps/iluprobe/__init__.py", "{r}");
        assert_eq!(body(r)["wrote_layer"], false, "the layer is read-only: {r}");
    }
    assert_eq!(builds(&w), 1, "the third function reused the layer");
    assert!(!layer.join("written-by-function").exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn pip_errors_and_refused_requirements_reach_the_client_and_leave_nothing() {
    let d = unique_dir("deps-errors");
    let wheels = d.join("wheels");
    make_wheel(&wheels, "iluprobe", "1.0", 0);
    let w = worker(&wheels, json!({}));
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "nosuch",
            "nosuch-package==1.0\n",
            &["cannot be installed", "No matching distribution found for nosuch-package==1.0"],
        ),
        ("version", "iluprobe==2.0\n", &["pip download failed", "iluprobe==2.0"]),
        ("option", "iluprobe\n--index-url http://198.51.100.1/simple\n", &["line 2", "options"]),
        ("include", "-r /etc/shadow\n", &["line 1", "options"]),
        ("url", "iluprobe @ https://198.51.100.1/iluprobe.whl\n", &["line 1", "direct references"]),
        ("binary", "iluprobe\n\u{0}\u{1}\n", &["line 2", "not a requirement"]),
    ];
    for (name, requirements, expected) in cases {
        let e = register_err(&w, name, &probe(&d, name, requirements));
        for x in expected {
            assert!(e.contains(x), "{name}: {x:?} not in {e}");
        }
        assert!(!e.contains("runtime/deps/build"), "build paths stay hidden: {e}");
    }
    let link = probe(&d, "link", "");
    std::fs::remove_file(link.join("requirements.txt")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", link.join("requirements.txt")).unwrap();
    let e = register_err(&w, "link", &link);
    assert!(e.contains("symbolic link") && !e.contains("root:"), "{e}");
    // A FIFO would block a reader for ever: refused at once.
    let fifo = probe(&d, "fifo", "");
    std::fs::remove_file(fifo.join("requirements.txt")).unwrap();
    let made = Command::new("mkfifo").arg(fifo.join("requirements.txt")).status().unwrap();
    assert!(made.success());
    let e = register_err(&w, "fifo", &fifo);
    assert!(e.contains("not a regular file"), "{e}");

    assert_eq!(w.cli_ok(&["list"])["functions"], json!([]), "no refused function is registered");
    assert_eq!(layers(&w), Vec::<String>::new());
    assert_eq!(w.runtime_entries("deps/build"), Vec::<String>::new(), "failed builds leave nothing");
    // The worker keeps serving: a good registration works.
    w.register("good", &probe(&d, "good", "iluprobe\n"), 64);
    assert_eq!(body(&w.invoke_ok("good", "{}"))["value"], "iluprobe-1.0");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn builds_over_their_size_limits_fail_clearly() {
    let d = unique_dir("deps-limits");
    let wheels = d.join("wheels");
    // Random bytes do not compress: the wheel and the layer are both over 2 MB.
    make_wheel(&wheels, "ilubig", "1.0", 2048);
    let f = probe(&d, "big", "ilubig==1.0\n");
    let w = worker(&wheels, json!({"deps": {"max_download_mb": 1}}));
    let e = register_err(&w, "big", &f);
    assert!(e.contains("exceed max_download_mb (1 MB)"), "{e}");
    drop(w);
    let w = worker(&wheels, json!({"deps": {"max_layer_mb": 1}}));
    let e = register_err(&w, "big", &f);
    assert!(e.contains("max_layer_mb"), "{e}");
    assert_eq!(layers(&w), Vec::<String>::new());
    assert_eq!(w.runtime_entries("deps/build"), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unused_layers_go_at_clean_and_at_start_and_a_missing_one_is_rebuilt() {
    let d = unique_dir("deps-clean");
    let wheels = d.join("wheels");
    make_wheel(&wheels, "iluprobe", "1.0", 0);
    make_wheel(&wheels, "iluprobe", "2.0", 0);
    let mut w = worker(&wheels, json!({}));
    let f = probe(&d, "f", "iluprobe==1.0\n");
    w.register("f", &f, 64);
    assert_eq!(body(&w.invoke_ok("f", "{}"))["value"], "iluprobe-1.0");
    let first = layers(&w);

    // New requirements, registered again: a second layer; the warm container keeps its own.
    std::fs::write(f.join("requirements.txt"), "iluprobe==2.0\n").unwrap();
    w.register("f", &f, 64);
    assert_eq!(layers(&w).len(), 2);
    let r = w.invoke_ok("f", "{}");
    assert_eq!((r["container_state"].as_str(), body(&r)["value"].as_str()), (Some("WARM"), Some("iluprobe-1.0")));
    // clean removes the idle container, then the layer nothing uses any more.
    w.cli_ok(&["clean"]);
    let second = layers(&w);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first, "the old layer went, the new one stays");
    let r = w.invoke_ok("f", "{}");
    assert_eq!((r["container_state"].as_str(), body(&r)["value"].as_str()), (Some("COLD"), Some("iluprobe-2.0")));

    // A layer lost while the worker was down is built again by the first cold start.
    assert!(w.stop().success());
    std::fs::remove_dir_all(w.state_dir.join("runtime/deps/layers").join(&second[0])).unwrap();
    w.start_again();
    assert_eq!(layers(&w), Vec::<String>::new());
    assert_eq!(body(&w.invoke_ok("f", "{}"))["value"], "iluprobe-2.0");
    assert_eq!(layers(&w), second);

    // `iluvatar_worker clean` keeps the layers of registered functions.
    assert!(w.stop().success());
    assert_eq!(w.clean().map(|(ok, _)| ok), Some(true));
    assert_eq!(layers(&w), second);
    // Without requirements.txt the layer is unused: the next start removes it.
    std::fs::remove_file(f.join("requirements.txt")).unwrap();
    w.start_again();
    assert_eq!(layers(&w), Vec::<String>::new(), "{}", w.log_context());
    let e = w.invoke_err("f", "{}");
    assert!(e["result"]["Error"].as_str().unwrap_or("").contains("ModuleNotFoundError"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_workers_own_pip_configuration_reaches_the_download() {
    // pip.conf in the worker's HOME names the index, a local one (PEP 503 pages) that alone
    // has the package; the download runs as another user with another HOME, so the worker
    // hands it a copy.
    let d = unique_dir("deps-pipconf");
    let wheels = d.join("wheels");
    make_wheel(&wheels, "ilulocal", "1.0", 0);
    let page = d.join("simple/ilulocal/index.html");
    std::fs::create_dir_all(page.parent().unwrap()).unwrap();
    let link = "../../wheels/ilulocal-1.0-py3-none-any.whl";
    std::fs::write(&page, format!("<html><body><a href=\"{link}\">ilulocal-1.0-py3-none-any.whl</a></body></html>\n"))
        .unwrap();
    let home = d.join("home");
    std::fs::create_dir_all(home.join(".config/pip")).unwrap();
    let conf = format!("[global]\nindex-url = file://{}/simple\n", d.display());
    std::fs::write(home.join(".config/pip/pip.conf"), conf).unwrap();
    let config = json!({"isolation": {"backends": [{"type": "runtime", "standby": 0}]}});
    let w = RuntimeWorker::start_with_env(config, &[("HOME", s(&home))]);
    w.register("local", &probe(&d, "local", "ilulocal==1.0\n"), 64);
    let r = w.invoke_ok("local", r#"{"module": "ilulocal"}"#);
    assert_eq!(body(&r)["value"], "ilulocal-1.0", "{r}");
    let _ = std::fs::remove_dir_all(&d);
}
