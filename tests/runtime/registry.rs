//! Registry images: a real registry on loopback (Debian's docker-registry, started by the
//! test kit), images built by scripts/build-python-image.py and pushed with skopeo, the real
//! worker pulling them at registration and running them in real containers.

use crate::images::{build_image, register_image, register_image_err as register_err};
use crate::util::{RuntimeWorker, shipped};
use iluvatar_testkit::registry::{Registry, free_port};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A worker on the runtime backend with a bounded pull.
fn worker() -> RuntimeWorker {
    RuntimeWorker::start(json!({"isolation": {"backends": [
        {"type": "runtime", "standby": 0, "registry": {"pull_timeout_ms": 60000}}
    ]}}))
}

/// The config and layer digests of a manifest in the registry.
fn blobs_of(registry: &Registry, manifest: &str) -> Vec<String> {
    let m = registry.json_blob(manifest);
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    blobs
}

/// Files in a directory of the worker's state.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn unpacked_roots(w: &RuntimeWorker) -> usize {
    entries(&w.state_dir.join("runtime/images")).iter().filter(|n| n.starts_with("sha256-")).count()
}

/// The image of `hello`, built once per test into `dir`.
fn hello_archive(dir: &Path) -> PathBuf {
    build_image(&shipped("hello"), dir, "hello")
}

#[test]
fn a_registry_image_is_pulled_once_at_registration_and_runs_by_tag_and_by_digest() {
    let registry = Registry::start();
    let mut w = worker();
    let archive = hello_archive(&w.dir);
    registry.push(&format!("oci-archive:{}:hello", archive.display()), "hello:v1", false);
    let manifest = registry.manifest_digest("hello", "v1");
    let blobs = blobs_of(&registry, &manifest);
    let gets = || blobs.iter().map(|b| registry.blob_gets("hello", b)).collect::<Vec<_>>();
    assert_eq!(gets(), [0, 0], "nothing fetched before the registration");

    // The pull happens at registration: the first invocation only starts a container.
    let r = register_image(&w, "a", &registry.reference("hello:v1"));
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(gets(), [1, 1], "the config and the layer are fetched at registration\n{}", registry.log());
    assert!(w.log_text().contains("image pulled"), "the worker logs the pull and its time:\n{}", w.log_context());
    assert_eq!(unpacked_roots(&w), 1, "unpacked at registration");
    let r = w.invoke_ok("a", r#"{"name": "registry"}"#);
    assert_eq!(r["container_state"], "COLD", "{r}");
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello registry!", "{r}");

    // A second function of the same image, by tag and by digest: no blob is fetched again.
    assert_eq!(register_image(&w, "b", &registry.reference("hello:v1"))["success"], true);
    assert_eq!(register_image(&w, "c", &registry.reference(&format!("hello@{manifest}")))["success"], true);
    assert_eq!(gets(), [1, 1], "blobs are pulled once for every function of the image");
    for f in ["b", "c"] {
        let r = w.invoke_ok(f, &format!(r#"{{"name": "{f}"}}"#));
        assert_eq!(r["result"]["body"]["body"]["greeting"], format!("Hello {f}!"), "{r}");
    }
    assert_eq!(unpacked_roots(&w), 1, "one root for one manifest digest");
    // The store is one OCI layout: the manifest, config and layer, each once.
    let mut want: Vec<String> = blobs.iter().chain([&manifest]).map(|d| d[7..].to_string()).collect();
    want.sort();
    assert_eq!(entries(&w.state_dir.join("pulled/blobs/sha256")), want);
    assert_eq!(entries(&w.state_dir.join("pulled/tmp")), Vec::<String>::new());

    // The store outlives the worker: restarted with the registry gone, the functions run.
    drop(registry);
    w.restart();
    let r = w.invoke_ok("a", r#"{"name": "again"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello again!", "{r}");
    assert_eq!(r["container_state"], "COLD", "{r}");
}

#[test]
fn an_image_index_resolves_to_this_platform_or_is_refused_naming_what_it_offers() {
    let registry = Registry::start();
    let w = worker();
    let archive = hello_archive(&w.dir);
    let layout = w.dir.join("indexes");
    let script = iluvatar_testkit::fixtures::tests_dir().join("images/build-index.py");
    let built = Command::new("python3")
        .arg(&script)
        .args(["--base", &archive.display().to_string(), "--out", &layout.display().to_string()])
        .output()
        .expect("running build-index.py");
    assert!(built.status.success(), "building the indexes failed: {}", String::from_utf8_lossy(&built.stderr));
    registry.push(&format!("oci:{}:multi", layout.display()), "multi:v1", true);
    registry.push(&format!("oci:{}:elsewhere", layout.display()), "elsewhere:v1", true);

    let index = registry.json_blob(&registry.manifest_digest("multi", "v1"));
    let of = |arch: &str| -> String {
        let entries = index["manifests"].as_array().unwrap();
        let e = entries.iter().find(|m| m["platform"]["architecture"] == arch).unwrap();
        e["digest"].as_str().unwrap().to_string()
    };
    let r = register_image(&w, "multi", &registry.reference("multi:v1"));
    assert_eq!(r["success"], true, "{r}");
    let r = w.invoke_ok("multi", r#"{"name": "amd64"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello amd64!", "{r}");
    for b in blobs_of(&registry, &of("amd64")) {
        assert_eq!(registry.blob_gets("multi", &b), 1, "this platform's blob {b}");
    }
    for b in blobs_of(&registry, &of("arm64")) {
        assert_eq!(registry.blob_gets("multi", &b), 0, "another platform's blob {b} is not fetched");
    }

    let e = register_err(&w, "elsewhere", &registry.reference("elsewhere:v1"));
    assert!(
        e.contains("no image for this platform (linux/amd64): the image index offers linux/arm64, linux/s390x"),
        "{e}"
    );
}

#[test]
fn registry_errors_are_refused_at_registration_naming_the_problem() {
    let registry = Registry::start();
    let w = worker();
    let archive = hello_archive(&w.dir);
    registry.push(&format!("oci-archive:{}:hello", archive.display()), "hello:v1", false);
    // Another function, so that no blob is shared with hello (the registry stores each once).
    let other = build_image(&shipped("synthetic"), &w.dir, "synthetic");
    registry.push(&format!("oci-archive:{}:synthetic", other.display()), "tampered:v1", false);

    let host = registry.host();
    let cases = [
        (format!("{host}/hello:nope"), format!("unknown repository or tag: registry {host} has no hello:nope")),
        (format!("{host}/nobody/here:v1"), format!("unknown repository or tag: registry {host} has no nobody/here:v1")),
        (format!("127.0.0.1:{}/hello:v1", free_port()), "is unreachable".to_string()),
        ("Hello World".to_string(), "bad reference syntax".to_string()),
        ("hello@sha256:1234".to_string(), "bad reference syntax".to_string()),
    ];
    for (reference, want) in &cases {
        let e = register_err(&w, "bad", reference);
        assert!(e.contains(want), "{reference}: expected {want:?} in:\n{e}");
    }

    // A layer corrupted in the registry's storage (same size, other bytes) is refused: the
    // digest it is served under does not match, and nothing of it is kept.
    let manifest = registry.manifest_digest("tampered", "v1");
    let layer = blobs_of(&registry, &manifest)[1].clone();
    let data = registry.blob_data(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let e = register_err(&w, "tampered", &registry.reference("tampered:v1"));
    assert!(e.contains("digest mismatch") && e.contains(&format!("layer {layer}")), "{e}");
    assert!(!w.state_dir.join("pulled/blobs/sha256").join(&layer[7..]).exists(), "the bad layer is not kept");
    assert_eq!(entries(&w.state_dir.join("pulled/tmp")), Vec::<String>::new(), "nothing half-written is left");

    // Nothing was registered, and the worker keeps serving.
    let listed = w.cli_ok(&["list"]);
    assert_eq!(listed["functions"].as_array().map_or(0, Vec::len), 0, "{listed}");
    assert_eq!(register_image(&w, "good", &registry.reference("hello:v1"))["success"], true);
    let r = w.invoke_ok("good", r#"{"name": "still"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello still!", "{r}");
}

#[test]
fn a_hostile_image_from_a_registry_is_refused_by_the_unpack_checks() {
    let registry = Registry::start();
    let w = worker();
    let archive = hello_archive(&w.dir);
    let out = w.dir.join("hostile");
    let canary = w.dir.join("canary");
    std::fs::write(&canary, "intact").unwrap();
    let script = iluvatar_testkit::fixtures::tests_dir().join("images/build-hostile-images.py");
    let built = Command::new("python3")
        .arg(&script)
        .args(["--base", &archive.display().to_string(), "--out", &out.display().to_string()])
        .args(["--canary", &canary.display().to_string(), "--bomb-mb", "1"])
        .output()
        .expect("running build-hostile-images.py");
    assert!(built.status.success(), "building the images failed: {}", String::from_utf8_lossy(&built.stderr));
    let cases: Value = serde_json::from_slice(&built.stdout).unwrap();
    // The layout holds one untagged image: skopeo takes it.
    registry.push(&format!("oci:{}", cases["dotdot"]["layout"].as_str().unwrap()), "dotdot:v1", false);
    let e = register_err(&w, "dotdot", &registry.reference("dotdot:v1"));
    assert!(e.contains("the image cannot be used") && e.contains("has a '..' component (refused)"), "{e}");
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "intact");
}

#[test]
fn concurrent_registrations_of_one_image_fetch_each_blob_once() {
    let registry = Registry::start();
    let w = worker();
    let archive = hello_archive(&w.dir);
    registry.push(&format!("oci-archive:{}:hello", archive.display()), "hello:v1", false);
    let reference = registry.reference("hello:v1");
    let results: Vec<Value> = std::thread::scope(|s| {
        let (w, reference) = (&w, &reference);
        let handles: Vec<_> = (0..4).map(|i| s.spawn(move || register_image(w, &format!("f{i}"), reference))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_eq!(r["success"], true, "{r}");
    }
    for b in blobs_of(&registry, &registry.manifest_digest("hello", "v1")) {
        assert_eq!(registry.blob_gets("hello", &b), 1, "blob {b} fetched once\n{}", registry.log());
    }
    assert_eq!(unpacked_roots(&w), 1);
    for i in 0..4 {
        let r = w.invoke_ok(&format!("f{i}"), r#"{"name": "many"}"#);
        assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello many!", "{r}");
    }
}

/// The reference platform's quickstart, its command lines as they are written, against a
/// loopback registry holding an image of the reference protocol's HTTP server under the
/// quickstart's repository name: registered with no isolation or server named, invoked
/// with `-a name=...`, cold then warm.
#[test]
fn the_seeds_quickstart_runs_verbatim_against_a_loopback_registry() {
    let registry = Registry::start();
    let w = worker();
    let archive = crate::servers::server_image(&shipped("hello"), &w.dir, "hello", "http", None);
    let repo = "alfuerst/hello-iluvatar-action:latest";
    registry.push(&format!("oci-archive:{}:hello", archive.display()), repo, false);
    let image = registry.reference(repo);
    let r = w.cli_ok(&[
        "register",
        "--name",
        "hello",
        "--version",
        "1",
        "--image",
        &image,
        "--memory",
        "128",
        "--cpu",
        "1",
    ]);
    assert_eq!(r["success"], true, "{r}");
    assert!(w.log_text().contains("image pulled"), "pulled at registration:\n{}", w.log_context());
    for (name, state) in [("bob", "COLD"), ("alice", "WARM")] {
        let a = format!("name={name}");
        let r = w.cli_ok(&["invoke", "--name", "hello", "--version", "1", "-a", &a]);
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(r["container_state"], state, "{r}");
        assert_eq!(r["result"]["body"]["body"]["greeting"], format!("Hello {name}!"), "{r}");
    }
    // What ran is the image's own server, not our agent.
    let pids = w.container_pids();
    assert!(
        pids.iter().any(|p| crate::util::cmdline(*p).contains("function_server.py http")),
        "the image's HTTP server runs: {:?}",
        pids.iter().map(|p| crate::util::cmdline(*p)).collect::<Vec<_>>()
    );
}
