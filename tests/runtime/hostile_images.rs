//! Hostile images (built by tests/images/build-hostile-images.py on top of a good image):
//! each is refused at registration with an error naming what is wrong, a canary file outside every root
//! stays intact, and the worker keeps serving a good image; images with setuid files and
//! opaque whiteouts run, unpacked as they should be.

use crate::images::{build_image, register_image};
use crate::util::{RuntimeWorker, shipped};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Registers an image and expects a refusal; returns the CLI's error.
fn register_err(w: &RuntimeWorker, name: &str, reference: &str) -> String {
    w.cli_err(&["register", "--name", name, "--version", "1", "--image", reference, "--isolation", "runtime"])
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

#[test]
fn hostile_images_are_refused_and_the_worker_keeps_serving() {
    let w = RuntimeWorker::start(json!({"isolation": {"backends": [
        {"type": "runtime", "standby": 0, "images": {"max_layer_mb": 96}}
    ]}}));
    let canary_dir = w.dir.join("canary");
    std::fs::create_dir_all(&canary_dir).unwrap();
    let canary = canary_dir.join("secret");
    std::fs::write(&canary, "intact").unwrap();
    let canary_intact = |after: &str| {
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "intact", "after {after}");
        let names: Vec<_> = std::fs::read_dir(&canary_dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["secret"], "after {after}");
        assert!(Path::new("/etc/passwd").is_file(), "after {after}");
    };

    let archive = build_image(&shipped("hello"), &w.dir, "hello");
    let out = w.dir.join("hostile");
    let script = iluvatar_testkit::fixtures::tests_dir().join("images/build-hostile-images.py");
    let built = Command::new("python3")
        .arg(&script)
        .args(["--base", &archive.display().to_string(), "--out", &out.display().to_string()])
        .args(["--canary", &canary.display().to_string(), "--bomb-mb", "120"])
        .output()
        .expect("running build-hostile-images.py");
    assert!(built.status.success(), "building the images failed: {}", String::from_utf8_lossy(&built.stderr));
    let cases: Value = serde_json::from_slice(&built.stdout).unwrap();
    let layout = |case: &str| format!("oci:{}", cases[case]["layout"].as_str().unwrap());
    let root = |case: &str| -> PathBuf {
        let digest = cases[case]["manifest"].as_str().unwrap();
        w.state_dir.join("runtime/images").join(format!("sha256-{}", &digest[7..])).join("rootfs")
    };

    // Only root may look into the worker's state and its images.
    assert_eq!(mode(&w.state_dir), 0o711);
    assert_eq!(mode(&w.state_dir.join("runtime/images")), 0o711);

    let r = register_image(&w, "good", &layout("good"));
    assert_eq!(r["success"], true, "{r}");
    let r = w.invoke_ok("good", r#"{"name": "good"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello good!", "{r}");
    assert!(root("good").is_dir(), "the good image is unpacked under its manifest's digest");

    let good_digest = cases["good"]["manifest"].as_str().unwrap().to_string();
    let claims = format!("manifest {good_digest} does not match its digest");
    let refused: [(&str, &str); 12] = [
        ("dotdot", "has a '..' component (refused)"),
        ("absolute", "is an absolute path (refused)"),
        ("whiteout-escape", "has a '..' component (refused)"),
        ("link-whiteout", "goes through x (a symbolic link)"),
        ("link-write", "goes through x (a symbolic link)"),
        ("root-link-whiteout", "goes through r (a symbolic link)"),
        ("blob-zero", "is a symbolic link, not a regular file (refused)"),
        ("blob-fifo", "is a symbolic link, not a regular file (refused)"),
        ("blob-is-fifo", "is a FIFO, not a regular file (refused)"),
        ("bomb", "takes the layer past the limit of 96 MiB (images.max_layer_mb)"),
        ("tampered-layer", "does not match its digest"),
        ("claims-good-digest", &claims),
    ];
    for (case, want) in refused {
        let msg = register_err(&w, case, &layout(case));
        assert!(msg.contains("the image cannot be used") && msg.contains(want), "{case}: expected {want:?} in {msg}");
        canary_intact(case);
        let r = w.invoke_ok("good", r#"{"name": "still"}"#);
        assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello still!", "after {case}: {r}");
    }
    // An archive is extracted as carefully as a layer is applied.
    let archive_ref = format!("oci-archive:{}", cases["archive-dotdot"]["archive"].as_str().unwrap());
    let msg = register_err(&w, "archive-dotdot", &archive_ref);
    assert!(msg.contains("archive entry") && msg.contains("has a '..' component (refused)"), "{msg}");
    canary_intact("archive-dotdot");

    // The impostor never ran: the good root is the good image's.
    let main = std::fs::read_to_string(root("good").join("function/main.py")).unwrap();
    assert!(!main.contains("impostor"), "{main}");

    // An index.json linked to /dev/zero is refused at registration, with the one generic
    // error of a path a registration may not name (see roots.rs).
    let err = w.cli_err(&[
        "register",
        "--name",
        "index-zero",
        "--version",
        "1",
        "--image",
        &layout("index-zero"),
        "--isolation",
        "runtime",
    ]);
    assert!(err.contains("is not an OCI image layout (with index.json) under the configured code_roots"), "{err}");

    // setuid and setgid bits are dropped, device nodes are not created; the image runs.
    let r = register_image(&w, "setuid", &layout("setuid"));
    assert_eq!(r["success"], true, "{r}");
    let r = w.invoke_ok("setuid", r#"{"name": "suid"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello suid!", "{r}");
    let s = root("setuid");
    assert_eq!((mode(&s.join("function/suid")), mode(&s.join("function/sgid"))), (0o755, 0o755));
    assert_eq!(mode(&s.join("shared")), 0o1777, "the sticky bit stays, setgid does not");
    assert!(std::fs::symlink_metadata(s.join("function/zero")).is_err(), "no device node");

    // Opaque whiteouts hide the lower layer's directory content, whiteouts its files.
    let r = register_image(&w, "opaque", &layout("opaque"));
    assert_eq!(r["success"], true, "{r}");
    let r = w.invoke_ok("opaque", r#"{"name": "opaque"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello opaque!", "{r}");
    let o = root("opaque");
    let data: Vec<_> = std::fs::read_dir(o.join("data")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(data, ["new"]);
    assert!(!o.join("gone").exists());

    canary_intact("all cases");
    // Nothing half-made is left, and every root left is one a registration still uses.
    let mut left: Vec<String> = std::fs::read_dir(w.state_dir.join("runtime/images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let archives = w.state_dir.join("runtime/images/archives");
    let extracted: Vec<_> = std::fs::read_dir(&archives).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(extracted.is_empty(), "a refused archive leaves nothing: {extracted:?}");
    left.retain(|n| n != "archives");
    let mut want: Vec<String> = ["good", "setuid", "opaque"]
        .iter()
        .map(|c| format!("sha256-{}", &cases[*c]["manifest"].as_str().unwrap()[7..]))
        .collect();
    want.sort();
    assert_eq!(left, want);
    let r = w.invoke_ok("good", r#"{"name": "last"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello last!", "{r}");
}
