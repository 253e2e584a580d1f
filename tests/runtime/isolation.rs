//! What a function can reach from inside its container: the probe fixture tries each door
//! and reports; the host checks the container's cgroup limits.

use crate::util::{RuntimeWorker, cgroup_v2, fixture, procs, read_trim};
use serde_json::{Value, json};
use std::time::Duration;

/// Asserts that an attempt the probe reported failed with one of `errnos`.
fn refused(body: &Value, what: &str, errnos: &[&str]) {
    let a = &body[what];
    assert_eq!(a["ok"], false, "{what} should have failed: {a}\nall: {body:#}");
    let err = a["error"].as_str().unwrap_or_default();
    assert!(
        errnos.iter().any(|e| err.starts_with(&format!("{e}:"))),
        "{what}: expected one of {errnos:?}, got {err:?}"
    );
}

#[test]
fn the_function_is_confined_to_its_container() {
    let w = RuntimeWorker::start(json!({}));
    w.register("probe", &fixture("probe"), 96);
    // A file the worker's host can read, in the worker's state dir: the function must not.
    let secret = w.state_dir.join("secret.txt");
    std::fs::write(&secret, "the worker's secret").unwrap();
    // The port the probe tries is open on the host's loopback.
    std::net::TcpStream::connect(("127.0.0.1", w.grpc_port))
        .expect("the worker's gRPC port is reachable from the host");
    let args = json!({
        "secret": secret.display().to_string(),
        "state_dir": w.state_dir.display().to_string(),
        "grpc_port": w.grpc_port,
    });
    let r = w.invoke_ok("probe", &args.to_string());
    let b = &r["result"]["body"];

    // An unprivileged user, without capabilities or a way to gain them.
    assert_eq!(
        (b["uid"].as_u64(), b["euid"].as_u64(), b["gid"].as_u64()),
        (Some(65534), Some(65534), Some(65534)),
        "{b:#}"
    );
    assert_eq!(b["cap_eff"], "0000000000000000", "{b:#}");
    assert_eq!(b["no_new_privs"], "1", "{b:#}");

    // The host's files: neither /root nor the worker's state dir is there.
    for what in ["list_root", "read_root_bashrc", "read_shadow", "list_state_dir", "read_secret"] {
        refused(b, what, &["ENOENT", "EACCES", "EPERM"]);
    }
    // A read-only root, /usr, code and agent; a private writable /tmp.
    for what in ["write_root", "write_usr", "write_function", "write_agent"] {
        refused(b, what, &["EROFS", "EACCES", "EPERM"]);
    }
    assert_eq!(b["write_tmp"], json!({"ok": true, "got": 5}), "{b:#}");
    let mounts = &b["mounts"];
    for m in ["/", "/usr", "/function", "/iluvatar/agent"] {
        let opts = mounts[m].as_str().unwrap_or_else(|| panic!("no mount {m} in the container: {mounts:#}"));
        assert!(opts.split(',').any(|o| o == "ro"), "{m} is mounted {opts}");
    }
    assert!(mounts["/tmp"].as_str().is_some_and(|o| o.split(',').any(|o| o == "rw")), "{mounts:#}");

    // Its own pid namespace: it is pid 1 and sees no other process.
    assert_eq!(b["pid"], 1, "{b:#}");
    assert_eq!(b["pids"], json!([1]), "{b:#}");
    // Its own hostname (uts namespace).
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(b["hostname"].as_str(), Some(host_name.trim()), "{b:#}");

    // Its own network namespace: only a loopback, no routes, nothing reachable.
    assert_eq!(b["interfaces"], json!({"ok": true, "got": {"names": ["lo"], "routes": []}}), "{b:#}");
    let unreachable = ["ENETUNREACH", "EHOSTUNREACH", "ECONNREFUSED", "EADDRNOTAVAIL"];
    for what in ["udp_internet", "tcp_internet", "tcp_worker"] {
        refused(b, what, &unreachable);
    }

    // The cgroup limits are the registration's.
    let containers = w.await_containers(1, Duration::from_secs(5));
    let cg = &containers[0];
    assert_eq!(procs(cg).len(), 1, "{}", cg.display());
    let parent = w.cgroup_parent();
    let key = cg.file_name().unwrap().to_string_lossy().into_owned();
    let file =
        |controller: &str, name: &str| crate::util::controller_dir(controller).join(&parent).join(&key).join(name);
    let mb96 = (96u64 * 1024 * 1024).to_string();
    if cgroup_v2() {
        assert_eq!(read_trim(&file("memory", "memory.max")), mb96);
        assert_eq!(read_trim(&file("cpu", "cpu.max")), "100000 100000");
    } else {
        assert_eq!(read_trim(&file("memory", "memory.limit_in_bytes")), mb96);
        let memsw = file("memory", "memory.memsw.limit_in_bytes");
        if memsw.exists() {
            assert_eq!(read_trim(&memsw), mb96, "no swap beyond the limit");
        }
        assert_eq!(read_trim(&file("cpu", "cpu.cfs_quota_us")), "100000");
        assert_eq!(read_trim(&file("cpu", "cpu.cfs_period_us")), "100000");
    }
    assert_eq!(read_trim(&file("pids", "pids.max")), "64");
}

/// The function can write into its socket directory (the agent binds there): a symlink it
/// plants at the socket's path must not make the worker connect to a host socket.
#[test]
fn a_symlink_planted_at_the_agent_socket_does_not_redirect_the_worker() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    let w = RuntimeWorker::start(json!({}));
    // A host socket the container cannot reach by itself.
    let decoy = w.dir.join("decoy.sock");
    let listener = UnixListener::bind(&decoy).unwrap();
    listener.set_nonblocking(true).unwrap();
    let code = iluvatar_testkit::unique_dir("hijack");
    std::fs::copy(fixture("socket_hijack").join("main.py"), code.join("main.py")).unwrap();
    std::fs::write(code.join("target"), decoy.display().to_string()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let decoy_thread = std::thread::spawn(move || {
        // Answers like an agent would, to show what a redirected call returns.
        while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let mut line = String::new();
                    let _ = BufReader::new(&s).read_line(&mut line);
                    let _ = s.write_all(
                        b"{\"ok\":true,\"result\":{\"from\":\"a host socket\"},\"start_us\":1,\"end_us\":2}\n",
                    );
                    return Some(line);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        None
    });
    w.register("hijack", &code, 64);
    let out = w.cli(&["invoke", "--name", "hijack", "--version", "1", "-a", "secret=s3cr3t"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = decoy_thread.join().unwrap();
    std::fs::remove_dir_all(&code).unwrap();
    assert_eq!(
        seen, None,
        "the worker connected to the host socket the function named, and sent it the call; it answered:\n{stdout}"
    );
    if out.status.success() {
        assert!(stdout.contains("the function"), "{stdout}");
    }
}
