//! Seccomp, groups, devices and user namespaces of function containers: a probe function
//! tries each call the default profile denies (each in a forked child) and reports them by
//! name; the same probe without a filter shows that the filter, not something else, is what
//! denies them.

use crate::util::{RuntimeWorker, controller_dir, fixture};
use serde_json::{Value, json};
use std::time::Duration;

/// Denied with EPERM by the default profile (the probe's names).
const EPERM_CALLS: [&str; 23] = [
    "unshare_user",
    "unshare_mount",
    "unshare_net",
    "clone_newuser",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "ptrace",
    "process_vm_readv",
    "userfaultfd",
    "io_uring_setup",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
];

fn probe(w: &RuntimeWorker) -> Value {
    let r = w.register("sysprobe", &fixture("syscall_probe"), 96);
    assert_eq!(r["success"], true, "{r}");
    let r = w.invoke_ok("sysprobe", "{}");
    r["result"]["body"].clone()
}

/// Whether this kernel lets an unprivileged process create a user namespace at all.
fn unprivileged_userns() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    read("/proc/sys/kernel/unprivileged_userns_clone").is_none_or(|v| v == "1")
        && read("/proc/sys/user/max_user_namespaces").is_some_and(|v| v != "0")
}

#[test]
fn the_default_profile_denies_each_dangerous_call_by_name_and_functions_still_work() {
    // A standby container (the usual path of a code function) is filtered as any other.
    let w = RuntimeWorker::start(json!({"isolation": {"backends": [{"type": "runtime", "standby": 1}]}}));
    let b = probe(&w);
    let calls = &b["calls"];
    let mut wrong = Vec::new();
    for name in EPERM_CALLS {
        if calls[name] != "EPERM" {
            wrong.push(format!("{name}: {}", calls[name]));
        }
    }
    // clone3 answers ENOSYS, so that libc falls back to clone (whose flags a filter can see);
    // an x32 call cannot reach a call under another number.
    for name in ["clone3_newuser", "x32_getpid"] {
        if calls[name] != "ENOSYS" {
            wrong.push(format!("{name}: {} (expected ENOSYS)", calls[name]));
        }
    }
    assert!(wrong.is_empty(), "not denied as expected: {wrong:?}\nall: {b:#}");
    // What functions need still works: threads (clone without namespace flags) and fork.
    assert_eq!((b["thread"].as_bool(), b["fork"].as_bool()), (Some(true), Some(true)), "{b:#}");
    // Supplementary groups: the function's own group only.
    assert_eq!(b["groups"], json!([65534]), "{b:#}");

    // Devices: every one denied in the container's cgroup but libcontainer's harmless few.
    let devices = controller_dir("devices");
    if devices.join("devices.list").exists() {
        let parent = devices.join(w.cgroup_parent());
        let containers = crate::util::subdirs(&parent);
        assert!(!containers.is_empty(), "no container cgroup under {}", parent.display());
        for c in containers {
            let list = std::fs::read_to_string(c.join("devices.list")).unwrap();
            assert!(!list.lines().any(|l| l.starts_with("a ")), "{}: everything allowed:\n{list}", c.display());
            assert!(list.lines().any(|l| l.starts_with("c 1:3 ")), "{}: /dev/null not allowed:\n{list}", c.display());
        }
    }
}

#[test]
fn without_a_filter_the_same_calls_get_through() {
    let w = RuntimeWorker::start(
        json!({"isolation": {"backends": [{"type": "runtime", "standby": 0, "seccomp": "unconfined"}]}}),
    );
    let b = probe(&w);
    let calls = &b["calls"];
    // ptrace(PTRACE_TRACEME) needs nothing but the call itself.
    eprintln!("without a filter: {calls}");
    // These need nothing but the call itself: the filter is what denies them.
    for name in ["ptrace", "process_vm_readv", "keyctl"] {
        assert_eq!(calls[name], "ok", "{name}: {b:#}");
    }
    if unprivileged_userns() {
        for name in ["unshare_user", "clone_newuser", "clone3_newuser"] {
            assert_eq!(calls[name], "ok", "{name}: {b:#}");
        }
    }
    assert_eq!(b["groups"], json!([65534]), "{b:#}");
}

#[test]
fn a_profile_file_in_the_oci_format_is_applied_and_a_bad_one_stops_the_start_by_name() {
    let dir = iluvatar_testkit::unique_dir("seccomp");
    let path = dir.join("profile.json");
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["keyctl", "not_a_call_here"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30},
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 0x1000_0000u64, "valueTwo": 0x1000_0000u64, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    });
    std::fs::write(&path, profile.to_string()).unwrap();
    let backend = |p: &std::path::Path| json!({"isolation": {"backends": [{"type": "runtime", "standby": 0, "seccomp": p.display().to_string()}]}});
    {
        let w = RuntimeWorker::start(backend(&path));
        let b = probe(&w);
        let calls = &b["calls"];
        assert_eq!((calls["ptrace"].as_str(), calls["keyctl"].as_str()), (Some("EACCES"), Some("EROFS")), "{b:#}");
        assert_eq!(calls["unshare_user"], "EPERM", "{b:#}");
        // Not in this profile: the default profile's other denials do not apply.
        assert!(calls["clone3_newuser"].as_str().is_some_and(|c| c != "ENOSYS"), "{b:#}");
    }
    // A profile the worker cannot use: it refuses to start and says which file and why.
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}]}"#,
    )
    .unwrap();
    let err = start_refused(&dir, backend(&bad));
    assert!(err.contains(&bad.display().to_string()) && err.contains("SCMP_ACT_NOTIFY"), "{err}");
}

/// Starts a worker that must refuse to start; returns what it said.
fn start_refused(dir: &std::path::Path, mut config: Value) -> String {
    config["state_dir"] = json!(dir.join("state").display().to_string());
    config["grpc"] = json!({"address": "127.0.0.1", "port": 0});
    config["http"] = json!({"enabled": false});
    let cfg = dir.join("worker.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let mut cmd = std::process::Command::new(iluvatar_testkit::bin("iluvatar_worker"));
    cmd.arg("-c").arg(&cfg);
    let out = iluvatar_testkit::output_timeout(cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{config} must stop the start: {err}");
    err
}

#[test]
fn in_a_user_namespace_the_function_is_nobody_the_host_knows() {
    let base = 1_000_000u32;
    let w = RuntimeWorker::start(json!({"isolation": {"backends": [
        {"type": "runtime", "standby": 1, "user_namespace": true, "user_namespace_base": base}]}}));
    let b = probe(&w);
    assert_eq!(b["calls"]["unshare_user"], "EPERM", "{b:#}");
    assert_eq!((b["gid"].as_u64(), b["groups"].clone()), (Some(65534), json!([65534])), "{b:#}");
    // As the host sees them, the container's processes run as base + 65534.
    let pids = w.container_pids();
    assert!(!pids.is_empty());
    for pid in pids {
        let uid = crate::util::proc_status(pid, "Uid").unwrap_or_default();
        let want = (base + 65534).to_string();
        assert!(uid.split_whitespace().all(|u| u == want), "pid {pid}: Uid {uid}, expected {want}");
    }
    drop(w);
    // A range that would hold the host's own ids (0: the container's root would be the
    // host's) is refused at start, by name.
    let dir = iluvatar_testkit::unique_dir("userns");
    let config = json!({"isolation": {"backends": [{"type": "runtime", "user_namespace_base": 0}]}});
    let err = start_refused(&dir, config);
    assert!(err.contains("user_namespace_base 0 must be at least 65536"), "{err}");
}
