//! Image functions: an OCI image built here from the host's Python (no registry, no
//! engine), run from an archive and from a layout directory, unpacked once per digest.

use crate::util::{RuntimeWorker, shipped};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds a self-contained image archive of `function` with the project's script.
pub(crate) fn build_image(function: &Path, dir: &Path, tag: &str) -> PathBuf {
    let script = iluvatar_testkit::fixtures::tests_dir().join("../scripts/build-python-image.py");
    let out = dir.join(format!("{tag}.tar"));
    let st = Command::new("python3")
        .arg(&script)
        .args(["--function", &function.display().to_string(), "--out", &out.display().to_string(), "--tag", tag])
        .output()
        .expect("running build-python-image.py");
    assert!(st.status.success(), "building the image failed: {}", String::from_utf8_lossy(&st.stderr));
    out
}

/// The CLI's arguments registering `reference` as version 1 of `name`, 128 MB, runtime backend.
fn register_image_args<'a>(name: &'a str, reference: &'a str) -> [&'a str; 11] {
    ["register", "--name", name, "--version", "1", "--image", reference, "--memory", "128", "--isolation", "runtime"]
}

pub(crate) fn register_image(w: &RuntimeWorker, name: &str, reference: &str) -> Value {
    w.cli_ok(&register_image_args(name, reference))
}

/// Registers `reference` as [`register_image`] does and expects a refusal; returns the CLI's error.
pub(crate) fn register_image_err(w: &RuntimeWorker, name: &str, reference: &str) -> String {
    w.cli_err(&register_image_args(name, reference))
}

#[test]
fn an_image_function_runs_from_an_archive_and_from_a_layout() {
    let w = RuntimeWorker::start(json!({}));
    let archive = build_image(&shipped("hello"), &w.dir, "hello");

    let r = register_image(&w, "img", &format!("oci-archive:{}:hello", archive.display()));
    assert_eq!(r["success"], true, "{r}");
    let r = w.invoke_ok("img", r#"{"name": "oci"}"#);
    assert_eq!(r["container_state"], "COLD", "{r}");
    assert_eq!(r["result"]["body"], json!({"body": {"greeting": "Hello oci!"}}), "{r}");
    let r = w.invoke_ok("img", r#"{"name": "again"}"#);
    assert_eq!(r["container_state"], "WARM", "{r}");

    // The same image as a layout directory: the unpacked root is shared (one per digest).
    let layout = w.dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let st = Command::new("tar").arg("xf").arg(&archive).arg("-C").arg(&layout).status().unwrap();
    assert!(st.success());
    let r = register_image(&w, "img2", &format!("oci:{}", layout.display()));
    assert_eq!(r["success"], true, "{r}");
    let r = w.invoke_ok("img2", r#"{"name": "layout"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello layout!", "{r}");
    let unpacked: Vec<_> = std::fs::read_dir(w.state_dir.join("runtime/images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sha256-"))
        .collect();
    assert_eq!(unpacked.len(), 1, "one unpacked root for one manifest digest");

    // A missing archive and an unknown tag are refused at registration, the tag with the
    // tags the layout has.
    let err = w.cli_err(&[
        "register",
        "--name",
        "nope",
        "--version",
        "1",
        "--image",
        "oci-archive:/nonexistent.tar",
        "--isolation",
        "runtime",
    ]);
    assert!(
        err.contains("oci-archive:/nonexistent.tar is not a file under the configured code_roots (or does not exist)"),
        "{err}"
    );
    let bad_tag = format!("oci-archive:{}:other", archive.display());
    let err =
        w.cli_err(&["register", "--name", "badtag", "--version", "1", "--image", &bad_tag, "--isolation", "runtime"]);
    assert!(err.contains("the layout has no image tagged \"other\" (tags: hello)"), "{err}");
    let r = w.invoke_ok("img", r#"{"name": "still"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello still!", "{r}");
}
