//! Registration flags that agree, on real containers: a code folder named by a relative path
//! with `--env` and `--network loopback`, and images named by relative `oci-archive:` and
//! `oci:` paths (the CLI makes them absolute).

use crate::images::build_image;
use crate::util::{RuntimeWorker, shipped};
use iluvatar_testkit::fixtures::tests_dir;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

fn cli_ok(w: &RuntimeWorker, dir: &Path, args: &[&str]) -> Value {
    let out = w.cli_in(dir, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        w.fail(&format!("cli {args:?} in {} failed: {stderr}", dir.display()));
    }
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn relative_paths_env_and_network_reach_real_containers() {
    let w = RuntimeWorker::start(json!({}));
    let reg = ["register", "--version", "1", "--isolation", "runtime", "--memory", "128", "--name"];
    // From the tests' folder: functions/loopback is relative.
    let tests = tests_dir();
    let args = [&reg[..], &["lo", "--code", "functions/loopback", "--env", "NETWORK_WORD=hi", "--network", "loopback"]];
    assert_eq!(cli_ok(&w, &tests, &args.concat()), json!({"success": true, "fqdn": "lo-1"}));
    let r = w.invoke_ok("lo", "{}");
    let body = &r["result"]["body"];
    assert_eq!(
        (&body["word"], &body["loopback"], &body["off_machine"]),
        (&json!("hi"), &json!(true), &json!(false)),
        "{r}"
    );
    // Without the flags: no variable, no network.
    assert_eq!(cli_ok(&w, &tests, &[&reg[..], &["plain", "--code", "functions/loopback"]].concat())["success"], true);
    let r = w.invoke_ok("plain", "{}");
    assert_eq!((&r["result"]["body"]["word"], &r["result"]["body"]["loopback"]), (&Value::Null, &json!(false)), "{r}");
    // A name the worker does not allow is refused by name.
    let out = w.cli_in(&tests, &[&reg[..], &["bad", "--code", "functions/loopback", "--env", "ILUVATAR_X=1"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"ILUVATAR_X\" is not an allowed variable name"), "{err}");

    // Images by relative paths, from the worker's folder.
    build_image(&shipped("hello"), &w.dir, "hello");
    let args = [&reg[..], &["archive", "--image", "oci-archive:hello.tar:hello", "--language", "none"]];
    assert_eq!(cli_ok(&w, &w.dir, &args.concat())["success"], true);
    let r = w.invoke_ok("archive", r#"{"name": "relative"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello relative!", "{r}");
    std::fs::create_dir_all(w.dir.join("layout")).unwrap();
    let st = Command::new("tar").args(["xf", "hello.tar", "-C", "layout"]).current_dir(&w.dir).status().unwrap();
    assert!(st.success());
    let args = [&reg[..], &["layout", "--image", "oci:./layout", "--language", "none"]];
    assert_eq!(cli_ok(&w, &w.dir, &args.concat())["success"], true);
    let r = w.invoke_ok("layout", r#"{"name": "layout"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello layout!", "{r}");
    let list = w.cli_ok(&["list"]);
    let shown: Vec<&str> =
        list["functions"].as_array().unwrap().iter().map(|f| f["image_name"].as_str().unwrap()).collect();
    let dir = std::fs::canonicalize(&w.dir).unwrap();
    assert!(shown.contains(&format!("oci-archive:{}/hello.tar:hello", dir.display()).as_str()), "{list}");
    assert!(shown.contains(&format!("oci:{}/layout", dir.display()).as_str()), "{list}");
}
