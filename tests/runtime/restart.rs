//! Stopping a worker leaves no container, cgroup, mount or file behind; a worker that
//! crashed with a container running has it removed by the next start, or by
//! `iluvatar_worker clean`.

use crate::util::{RuntimeWorker, alive, assert_nothing_left, cmdline, fixture, parent_dirs, processes_under, shipped};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const AGENT_CMDLINE: &str = "/usr/bin/python3 -u /iluvatar/agent/agent.py";

/// Starts a call that sleeps, waits until its container runs it; returns the container's
/// processes.
fn start_long_call(w: &RuntimeWorker) -> Vec<u32> {
    let r = w.cli_ok(&["invoke-async", "--name", "faults", "--version", "1", "-j", r#"{"sleep_s": 60}"#]);
    assert_eq!(r["success"], true, "{r}");
    // Until the container runs its agent: while it is being created, its cgroup holds
    // the runtime's own short-lived processes.
    let running = crate::util::eventually(Duration::from_secs(10), || {
        let pids = w.container_pids();
        w.cli_ok(&["status"])["num_running_funcs"] == json!(1)
            && pids.len() == w.containers().len()
            && pids.iter().all(|p| cmdline(*p) == AGENT_CMDLINE)
    });
    assert!(running, "the long call did not start: {:?}\n{}", w.container_pids(), w.log_context());
    w.container_pids()
}

fn invoke_state(w: &RuntimeWorker, name: &str) -> Value {
    let r = w.invoke_ok(name, "{}");
    r["container_state"].clone()
}

#[test]
fn stop_leaves_nothing_and_a_crashed_runs_containers_are_cleaned() {
    let mut w = RuntimeWorker::start(json!({}));
    let parent = w.cgroup_parent();
    w.register("hello", &shipped("hello"), 64);
    w.register("faults", &fixture("faults"), 64);
    assert_eq!(invoke_state(&w, "hello"), "COLD");
    assert_eq!(invoke_state(&w, "faults"), "COLD");
    assert_eq!(invoke_state(&w, "hello"), "WARM");
    w.await_containers(2, Duration::from_secs(5));
    let pids = w.container_pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.iter().all(|p| cmdline(*p) == AGENT_CMDLINE), "{pids:?}");
    let mut seen: Vec<u32> = processes_under(&parent).into_iter().map(|(p, _)| p).collect();
    seen.sort();
    let mut want = pids.clone();
    want.sort();
    assert_eq!(seen, want, "the /proc scan finds the containers' processes");
    assert_eq!(w.runtime_entries("root").len(), 2);

    // A graceful stop removes every container.
    let st = w.stop();
    assert!(st.success(), "{st}\n{}", w.log_context());
    assert_nothing_left(&w, &pids, "after SIGTERM");

    // The same state dir serves again: same registrations, same cgroup parent, new containers.
    w.start_again();
    assert_eq!(w.cgroup_parent(), parent);
    assert_eq!(invoke_state(&w, "hello"), "COLD");
    assert_eq!(invoke_state(&w, "hello"), "WARM");

    // A crash (SIGKILL) while a container runs a call leaves that container behind...
    let running = start_long_call(&w);
    let st = w.kill();
    assert!(!st.success(), "{st}");
    assert!(running.iter().all(|p| alive(*p)), "the leftover is planted: {running:?}");
    assert_eq!(w.runtime_entries("root").len(), 2, "hello's and faults' containers are left");
    assert!(!w.container_cgroups().is_empty());
    // A crash in the middle of a create leaves a container directory without its state.
    let half_made = w.state_dir.join("runtime").join("root").join("hello-1-halfmade-1");
    std::fs::create_dir_all(&half_made).unwrap();
    std::fs::write(half_made.join("notify.sock"), b"").unwrap();
    // ... which the next start removes before it serves.
    w.start_again();
    assert_nothing_left(&w, &running, "after a restart following SIGKILL");
    assert_eq!(invoke_state(&w, "faults"), "COLD");
    assert_eq!(invoke_state(&w, "faults"), "WARM");

    // The same, cleaned by `iluvatar_worker clean` instead.
    let running = start_long_call(&w);
    w.kill();
    assert!(running.iter().all(|p| alive(*p)), "the leftover is planted: {running:?}");
    let (ok, out) = w.clean().expect("running iluvatar_worker clean");
    assert!(ok, "clean failed: {out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("clean printed {out:?}: {e}"));
    assert_eq!(report["event"], "clean", "{report}");
    assert!(report["removed"]["runtime"].as_u64().is_some_and(|n| n >= 1), "{report}");
    assert_nothing_left(&w, &running, "after iluvatar_worker clean");
    assert_eq!(parent_dirs(&parent), Vec::<PathBuf>::new(), "clean also removes the cgroup parents");

    // And the worker starts and serves after it.
    w.start_again();
    assert_eq!(invoke_state(&w, "hello"), "COLD");
    let st = w.stop();
    assert!(st.success(), "{st}\n{}", w.log_context());
    assert_nothing_left(&w, &[], "after the last stop");
}
