//! What a registration may name on the host (`code_roots`): folders under a root register
//! and run; anything outside, missing, the state dir or /proc is refused with one generic
//! error; a folder (or a parent) swapped for a link after registration changes nothing,
//! with or without standby containers; a restart opens and checks registrations again.

use crate::util::RuntimeWorker;
use serde_json::{Value, json};
use std::path::Path;

/// A function answering `{"from": tag}`.
fn function(dir: &Path, tag: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("main.py"), format!("def main(args):\n    return {{\"from\": \"{tag}\"}}\n")).unwrap();
}

fn register(w: &RuntimeWorker, name: &str, reference: &str) -> std::process::Output {
    w.cli(&[
        "register",
        "--name",
        name,
        "--version",
        "1",
        "--image",
        reference,
        "--memory",
        "64",
        "--isolation",
        "runtime",
    ])
}

fn register_ok(w: &RuntimeWorker, name: &str, reference: &str) {
    let out = register(w, name, reference);
    assert!(out.status.success(), "registering {reference}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The error a refused registration prints.
fn register_err(w: &RuntimeWorker, name: &str, reference: &str) -> String {
    let out = register(w, name, reference);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{reference} must be refused; stdout: {}", String::from_utf8_lossy(&out.stdout));
    err
}

fn body(w: &RuntimeWorker, name: &str) -> Value {
    w.invoke_ok(name, "{}")["result"]["body"].clone()
}

#[test]
fn code_roots_admit_only_folders_under_them_with_one_error_for_the_rest() {
    let base = iluvatar_testkit::unique_dir("roots");
    let (root, outside) = (base.join("root"), iluvatar_testkit::unique_dir("outside"));
    function(&root.join("f"), "root");
    function(&outside.join("g"), "outside");
    std::os::unix::fs::symlink(outside.join("g"), root.join("out-link")).unwrap();
    let state = base.join("state");
    // The state dir lies under a root and /proc is a root: both are refused all the same.
    let w = RuntimeWorker::start(json!({
        "state_dir": state,
        "isolation": {"backends": [{"type": "runtime", "standby": 0, "code_roots": [root, base, "/proc"]}]},
    }));
    let state = state.canonicalize().unwrap();
    register_ok(&w, "inside", &format!("code:{}", root.join("f").display()));
    assert_eq!(body(&w, "inside"), json!({"from": "root"}));
    // Registrations of one folder share one descriptor of it.
    register_ok(&w, "inside2", &format!("code:{}?X=1", root.join("f").display()));
    register_ok(&w, "inside3", &format!("code:{}/", root.join("f").display()));
    let held = std::fs::read_dir(format!("/proc/{}/fd", w.pid()))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == root.join("f")))
        .count();
    assert_eq!(held, 1, "the worker holds the folder open once");

    let generic = |path: &str| {
        format!("code:{path} is not a folder holding main.py under the configured code_roots (or does not exist)")
    };
    let outside_g = outside.join("g").display().to_string();
    let missing = root.join("missing").display().to_string();
    let link = root.join("out-link").display().to_string();
    let state_s = state.display().to_string();
    let runtime = state.join("runtime").display().to_string();
    // A folder under a root without main.py, and a main.py that is a link, look the same.
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("linked")).unwrap();
    std::os::unix::fs::symlink(root.join("f/main.py"), root.join("linked/main.py")).unwrap();
    let (empty, linked) = (root.join("empty").display().to_string(), root.join("linked").display().to_string());
    let all = [&outside_g, &missing, &link, &state_s, &runtime, &empty, &linked];
    for path in all.into_iter().map(String::as_str).chain(["/proc", "/proc/1", "/sys", "/dev", "/etc", "/", "/root"]) {
        let err = register_err(&w, "refused", &format!("code:{path}"));
        // Nothing else is said: the line ends with the generic error.
        let line = err.lines().find(|l| l.contains("code_roots")).unwrap_or_else(|| panic!("code:{path}: {err}"));
        assert!(line.ends_with(&generic(path)), "code:{path}: {err}");
    }
    // Images too: a layout or an archive outside the roots, missing, or incomplete.
    for reference in [format!("oci:{outside_g}"), format!("oci:{empty}"), "oci:/etc".into()] {
        let err = register_err(&w, "img", &reference);
        let want = "is not an OCI image layout (with index.json) under the configured code_roots (or does not exist)";
        assert!(err.contains(&format!("{reference} {want}")), "{reference}: {err}");
    }
    let not_a_file = root.join("f").display().to_string();
    for path in ["/etc/passwd", "/nope.tar", &not_a_file] {
        let err = register_err(&w, "img", &format!("oci-archive:{path}"));
        let want = "is not a file under the configured code_roots (or does not exist)";
        assert!(err.contains(&format!("oci-archive:{path} {want}")), "{path}: {err}");
    }
    // The worker still serves.
    assert_eq!(body(&w, "inside"), json!({"from": "root"}));
    drop(w);
    let _ = std::fs::remove_dir_all(&outside);
}

/// Registers `root/f` and `root/p/f`, swaps `f` and `p` for links to other folders under the
/// root, and to a folder outside it, then cold-starts: the registered code runs.
fn swapped_links_change_nothing(standby: usize) {
    let base = iluvatar_testkit::unique_dir("swap");
    let (root, outside) = (base.join("root"), iluvatar_testkit::unique_dir("swap-outside"));
    function(&root.join("f"), "original f");
    function(&root.join("p/f"), "original p/f");
    function(&root.join("g"), "original g");
    function(&root.join("evil"), "swapped");
    function(&root.join("evil-parent/f"), "swapped");
    function(&outside, "outside");
    let w = RuntimeWorker::start(json!({
        "isolation": {"backends": [{"type": "runtime", "standby": standby, "code_roots": [root]}]},
    }));
    register_ok(&w, "f", &format!("code:{}", root.join("f").display()));
    register_ok(&w, "pf", &format!("code:{}", root.join("p/f").display()));
    register_ok(&w, "g", &format!("code:{}?SECRET_TOKEN=abc123", root.join("g").display()));

    std::fs::rename(root.join("f"), root.join("f-old")).unwrap();
    std::os::unix::fs::symlink(root.join("evil"), root.join("f")).unwrap();
    std::fs::rename(root.join("p"), root.join("p-old")).unwrap();
    std::os::unix::fs::symlink(root.join("evil-parent"), root.join("p")).unwrap();
    std::fs::rename(root.join("g"), root.join("g-old")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("g")).unwrap();
    // The links do lead to the other code.
    assert!(std::fs::read_to_string(root.join("p/f/main.py")).unwrap().contains("swapped"));

    for (name, want) in [("f", "original f"), ("pf", "original p/f"), ("g", "original g")] {
        let r = w.invoke_ok(name, "{}");
        assert_eq!(r["container_state"], "COLD", "{r}");
        assert_eq!(r["result"]["body"], json!({"from": want}), "standby {standby}, {name}: {r}");
    }
    // Environment values are never shown by list.
    let list = w.cli_ok(&["list"]).to_string();
    assert!(!list.contains("abc123") && list.contains("SECRET_TOKEN=<hidden>"), "{list}");

    // Re-registering the same reference keeps the folder opened first.
    register_ok(&w, "f", &format!("code:{}", root.join("f").display()));
    w.cli_ok(&["clean"]);
    // A removed container's staged folder is unmounted and gone.
    assert_eq!(w.runtime_entries("staging"), Vec::<String>::new());
    assert!(w.host_mounts_under_dir().iter().all(|m| !m.contains("/staging/")), "{:?}", w.host_mounts_under_dir());
    assert_eq!(body(&w, "f"), json!({"from": "original f"}));
    std::fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn a_link_swapped_after_registration_changes_nothing() {
    swapped_links_change_nothing(0);
}

#[test]
fn a_link_swapped_after_registration_changes_nothing_for_standby_containers() {
    swapped_links_change_nothing(1);
}

#[test]
fn a_restart_opens_and_checks_registrations_again() {
    let base = iluvatar_testkit::unique_dir("reopen");
    let (root, outside) = (base.join("root"), iluvatar_testkit::unique_dir("reopen-outside"));
    function(&root.join("f"), "original");
    function(&root.join("stays"), "stays");
    function(&outside, "outside");
    let mut w = RuntimeWorker::start(json!({
        "isolation": {"backends": [{"type": "runtime", "standby": 0, "code_roots": [root]}]},
    }));
    register_ok(&w, "f", &format!("code:{}", root.join("f").display()));
    register_ok(&w, "stays", &format!("code:{}", root.join("stays").display()));
    std::fs::rename(root.join("f"), root.join("f-old")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("f")).unwrap();
    assert_eq!(body(&w, "f"), json!({"from": "original"}));

    // After a restart the path is resolved again: it now leads outside the roots, so the
    // function cannot start (with the generic error), and the others still run.
    let st = w.restart();
    assert!(st.success(), "{st}");
    let e = w.invoke_err("f", "{}");
    assert_eq!(e["result"]["kind"], "cold_start_failed", "{e}");
    let msg = e["result"]["Error"].as_str().unwrap();
    assert!(msg.contains("is not a folder holding main.py under the configured code_roots (or does not exist)"), "{e}");
    assert!(!msg.contains("outside"), "{e}");
    assert_eq!(body(&w, "stays"), json!({"from": "stays"}));
    // Put back, and registered again, it runs.
    std::fs::remove_file(root.join("f")).unwrap();
    std::fs::rename(root.join("f-old"), root.join("f")).unwrap();
    register_ok(&w, "f", &format!("code:{}", root.join("f").display()));
    assert_eq!(body(&w, "f"), json!({"from": "original"}));
    drop(w);
    std::fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn a_worker_beyond_loopback_needs_code_roots() {
    let dir = iluvatar_testkit::unique_dir("public");
    let config = json!({
        "state_dir": dir.join("state"),
        "grpc": {"address": "0.0.0.0", "port": 0},
        "http": {"enabled": false},
        // Past the authentication check (a token or insecure is needed off loopback too).
        "auth": {"insecure": true},
        "isolation": {"backends": [{"type": "runtime", "standby": 0}]},
    });
    let path = dir.join("worker.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut cmd = std::process::Command::new(iluvatar_testkit::bin("iluvatar_worker"));
    cmd.arg("-c").arg(&path);
    let out = iluvatar_testkit::output_timeout(cmd, std::time::Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must refuse to start: {stderr}");
    assert!(stderr.contains("code_roots is empty") && stderr.contains("beyond loopback"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_image_archive_swapped_after_registration_changes_nothing() {
    let base = iluvatar_testkit::unique_dir("image-swap");
    let root = base.join("root");
    function(&base.join("src-a"), "image a");
    function(&base.join("src-b"), "image b");
    std::fs::create_dir_all(root.join("other")).unwrap();
    // Same tag in both, so that the swapped-in archive would run if it were read.
    let archive = crate::images::build_image(&base.join("src-a"), &root, "t");
    let other = crate::images::build_image(&base.join("src-b"), &root.join("other"), "t");
    let w = RuntimeWorker::start(json!({
        "isolation": {"backends": [{"type": "runtime", "standby": 0, "code_roots": [root]}]},
    }));
    register_ok(&w, "img", &format!("oci-archive:{}:t", archive.display()));
    std::fs::rename(&archive, root.join("moved.tar")).unwrap();
    std::os::unix::fs::symlink(&other, &archive).unwrap();
    let r = w.invoke_ok("img", "{}");
    assert_eq!(r["result"]["body"], json!({"from": "image a"}), "{r}");
    // Registered anew, the link is resolved anew: b (it lies under the root too).
    register_ok(&w, "img2", &format!("oci-archive:{}:t", archive.display()));
    assert_eq!(body(&w, "img2"), json!({"from": "image b"}));
}
