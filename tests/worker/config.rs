//! Configuration errors, environment overrides, and the clean subcommand.

use iluvatar_rpc as rpc;
use iluvatar_testkit::{WorkerProcess, bin, output_timeout, unique_dir};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

/// Runs `iluvatar_worker -c FILE ARGS` with `config` written to a fresh dir.
fn run_worker(config: Value, args: &[&str]) -> (std::process::Output, std::path::PathBuf) {
    let dir = unique_dir("config");
    let path = dir.join("worker.json");
    let mut config = config;
    if config.get("state_dir").is_none() {
        config["state_dir"] = dir.join("state").display().to_string().into();
    }
    std::fs::write(&path, config.to_string()).unwrap();
    let mut cmd = Command::new(bin("iluvatar_worker"));
    cmd.arg("-c").arg(&path).args(args);
    (output_timeout(cmd, Duration::from_secs(20)), dir)
}

#[test]
fn unknown_config_fields_are_refused_by_name() {
    for (config, field) in [
        (json!({"grpc": {"address": "127.0.0.1", "port": 0}, "bogus_setting": 1}), "bogus_setting"),
        (json!({"grpc": {"address": "127.0.0.1", "port": 0}, "invoker": {"concurrensy": 2}}), "concurrensy"),
        (json!({"grpc": {"address": "127.0.0.1", "port": 0, "prot": 1}}), "prot"),
    ] {
        let (out, dir) = run_worker(config.clone(), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config} must be refused; stderr: {stderr}");
        assert!(out.status.code().is_some(), "exits, not killed: {}", out.status);
        assert!(stderr.contains(field), "the error should name {field:?}: {stderr}");
        assert!(out.stdout.is_empty(), "no ready line: {}", String::from_utf8_lossy(&out.stdout));
        std::fs::remove_dir_all(dir).unwrap();
    }
    // A policy with a misspelt name lists the valid ones.
    let (out, dir) = run_worker(json!({"container_pool": {"eviction": {"type": "lrux"}}}), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("lrux") && stderr.contains("gdsf"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
    // A bad override names the variable.
    let dir = unique_dir("config");
    let path = dir.join("worker.json");
    std::fs::write(&path, json!({"state_dir": dir.join("state")}).to_string()).unwrap();
    let mut cmd = Command::new(bin("iluvatar_worker"));
    cmd.arg("-c").arg(&path).env("ILUVATAR_WORKER__grpc__prt", "1");
    let out = output_timeout(cmd, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // Named as the variable's mistake, not the (valid) file's.
    assert!(
        stderr.contains("environment override ILUVATAR_WORKER__grpc__prt: grpc.prt: unknown field `prt`"),
        "{stderr}"
    );
    assert!(!stderr.contains("config file"), "{stderr}");
    // One underscore short: a misspelled override, not ignored.
    let mut cmd = Command::new(bin("iluvatar_worker"));
    cmd.arg("-c").arg(&path).env("ILUVATAR_WORKER_grpc__port", "9000");
    let out = output_timeout(cmd, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("environment override ILUVATAR_WORKER_grpc__port is invalid: overrides are named ILUVATAR_WORKER__section__key"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_value_of_the_wrong_type_is_named_by_key_and_file() {
    let (out, dir) = run_worker(json!({"grpc": {"address": "127.0.0.1", "port": "abc"}}), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = dir.join("worker.json");
    let want = format!("config file {}: grpc.port: invalid type: string \"abc\", expected u16", file.display());
    assert!(!out.status.success() && stderr.contains(&want), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn environment_overrides_the_file() {
    let w = WorkerProcess::start_with_env(
        json!({"name": "from-file"}),
        &[("ILUVATAR_WORKER__name", "envname"), ("ILUVATAR_WORKER__container_pool__memory_mb", "1000")],
    );
    assert_eq!(w.ready["name"], "envname", "{}", w.ready);
    let mut c = w.client().await;
    let s = c.status(rpc::StatusRequest::default()).await.unwrap().into_inner();
    assert_eq!(s.worker_name, "envname");
    assert_eq!(w.metric("iluvatar_memory_total_mb"), 1000.0);
    assert_eq!(w.cli_ok(&["status"])["worker_name"], "envname");
}

#[test]
fn clean_subcommand_reports_json() {
    let (out, dir) = run_worker(json!({"isolation": {"backends": [{"type": "sim"}]}}), &["clean"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(v["event"], "clean", "{v}");
    assert_eq!(v["removed"], json!({"sim": 0}), "{v}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The worker binary where user `uid` can run it: where it is if every folder above it lets
/// others through, else a copy in `dir`.
fn binary_for_others(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = bin("iluvatar_worker");
    let passable = |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    if path.ancestors().all(passable) {
        return path;
    }
    let copy = dir.join("iluvatar_worker");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// The runtime backend needs root: started as another user, the worker says so and how to
/// do without, before it touches its state directory; a sim-only worker runs as that user.
#[test]
fn a_non_root_start_of_the_runtime_backend_says_root_is_needed() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let dir = unique_dir("nonroot");
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let binary = binary_for_others(&dir);
    let run = |config: Value, args: &[&str]| {
        let path = dir.join("worker.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut cmd = Command::new(&binary);
        cmd.arg("-c").arg(&path).args(args).env("RUST_LIB_BACKTRACE", "0");
        if root {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        output_timeout(cmd, Duration::from_secs(20))
    };
    // Under a folder only root may write in: a start that touched it would fail there.
    let state = dir.join("state");
    for args in [&[][..], &["clean"][..]] {
        let config = json!({"state_dir": state, "grpc": {"port": 0}, "http": {"port": 0}});
        let out = run(config, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "no ready line: {}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr.contains("the runtime backend creates real containers and needs root"), "{stderr}");
        assert!(stderr.contains("isolation.backends = [{type = \"sim\"}]"), "names the way out: {stderr}");
        assert!(!state.exists(), "the state dir was not touched");
    }
    // Simulated containers need no root.
    std::fs::create_dir_all(&state).unwrap();
    if root {
        std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let out = run(json!({"state_dir": state, "isolation": {"backends": [{"type": "sim"}]}}), &["clean"]);
    assert!(out.status.success(), "a sim worker as uid {NOBODY}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(dir).unwrap();
}
