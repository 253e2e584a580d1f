//! The OCI runtime spec (config.json) of a function's container: namespaces, a read-only
//! root, a bounded private /tmp, the function's code and the agent read-only, cgroup limits,
//! no capabilities, an unprivileged user with no supplementary group, no devices but the
//! harmless ones, and a seccomp profile.

use serde_json::{Value, json};
use std::path::Path;

/// The uid and gid functions run as (nobody).
pub const FUNCTION_UID: u32 = 65534;

/// Where things appear inside the container.
pub const AGENT_DIR: &str = "/iluvatar/agent";
pub const SOCKET_DIR: &str = "/iluvatar/sock";
pub const SOCKET_NAME: &str = "agent.sock";
/// The socket of a function server of the reference protocol's socket variant.
pub const SERVER_SOCKET_NAME: &str = "sock";
pub const FUNCTION_DIR: &str = "/function";
/// A function's dependency layer (its requirements.txt installed), on the agent's sys.path.
pub const DEPS_DIR: &str = "/iluvatar/deps";

/// Directories the container's root needs to exist as mount points or links (`iluvatar/in`
/// and `iluvatar/out`: the install container's input and output, see `deps`).
pub const ROOT_DIRS: [&str; 11] = [
    "usr",
    "proc",
    "dev",
    "tmp",
    "function",
    "iluvatar/agent",
    "iluvatar/sock",
    "iluvatar/deps",
    "iluvatar/in",
    "iluvatar/out",
    "etc",
];
/// Links that make a merged-/usr host's layout work with only /usr mounted.
pub const ROOT_LINKS: [(&str, &str); 4] =
    [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")];

/// A bind mount: host path, container path, writable.
pub type Bind<'a> = (&'a Path, &'a str, bool);

/// What runs in a container: its root, mounts, command and size, as its creator says.
pub struct Workload<'a> {
    pub rootfs: &'a Path,
    /// Bind mounts besides /proc, /dev and /tmp.
    pub binds: Vec<Bind<'a>>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: &'a str,
    pub memory_mb: u64,
    pub cpus: u32,
}

/// A workload with what the backend adds to every container: its cgroup and name, the
/// configured limits, seccomp and user namespace.
pub struct SpecInput<'a> {
    pub workload: Workload<'a>,
    pub cgroup_path: &'a str,
    pub pids_limit: i64,
    pub tmp_size_mb: u64,
    pub log_limit_mb: u64,
    pub hostname: &'a str,
    /// The seccomp profile (OCI format); none runs the function unconfined.
    pub seccomp: Option<&'a Value>,
    /// A user namespace mapping the container's uids and gids 0..65536 to the host's
    /// `base..base+65536`; none shares the host's ids.
    pub userns_base: Option<u32>,
}

/// The host uid (and gid) the function's user is, with or without a user namespace.
pub fn host_id(userns_base: Option<u32>) -> u32 {
    userns_base.unwrap_or(0) + FUNCTION_UID
}

fn bind(src: &Path, dst: &str, writable: bool) -> Value {
    let mode = if writable { "rw" } else { "ro" };
    // rslave: mounts the worker makes later below a bound host folder (a standby container's
    // function folder) propagate into the container.
    json!({"destination": dst, "type": "bind", "source": src, "options": ["rbind", mode, "nosuid", "nodev", "rslave"]})
}

/// The mounts, command and environment of a code function: the host's /usr, the function's
/// folder, its dependency layer if it has one, and the agent, all read-only, and the socket
/// directory.
pub fn code_function<'a>(
    code_dir: &'a Path,
    deps_dir: Option<&'a Path>,
    agent_dir: &'a Path,
    socket_dir: &'a Path,
    python: &str,
) -> (Vec<Bind<'a>>, Vec<String>, Vec<String>) {
    let mut binds = vec![
        (Path::new("/usr"), "/usr", false),
        (code_dir, FUNCTION_DIR, false),
        (agent_dir, AGENT_DIR, false),
        (socket_dir, SOCKET_DIR, true),
    ];
    let args = vec![python.to_string(), "-u".into(), format!("{AGENT_DIR}/agent.py")];
    let mut env = vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".into(),
        "HOME=/tmp".into(),
        "PYTHONDONTWRITEBYTECODE=1".into(),
        format!("ILUVATAR_FUNCTION_DIR={FUNCTION_DIR}"),
    ];
    if let Some(deps) = deps_dir {
        binds.push((deps, DEPS_DIR, false));
        env.push(deps_env());
    }
    (binds, args, env)
}

/// The variable that tells the agent where the dependency layer is.
pub fn deps_env() -> String {
    format!("ILUVATAR_DEPS_DIR={DEPS_DIR}")
}

pub fn build(i: &SpecInput<'_>) -> Value {
    let w = &i.workload;
    let memory = w.memory_mb * 1024 * 1024;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=1024k"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777", format!("size={}m", i.tmp_size_mb)]}),
    ];
    mounts.extend(w.binds.iter().map(|(src, dst, rw)| bind(src, dst, *rw)));
    let mut env = w.env.clone();
    env.push(format!("ILUVATAR_SOCKET={SOCKET_DIR}/{SOCKET_NAME}"));
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "root": {"path": w.rootfs, "readonly": true},
        "hostname": i.hostname,
        "process": {
            "terminal": false,
            // Supplementary groups: the function's own group only, none of the worker's.
            "user": {"uid": FUNCTION_UID, "gid": FUNCTION_UID, "additionalGids": [FUNCTION_UID]},
            "args": w.args,
            "env": env,
            "cwd": w.cwd,
            "noNewPrivileges": true,
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []},
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                {"type": "RLIMIT_FSIZE", "hard": i.log_limit_mb * 1024 * 1024, "soft": i.log_limit_mb * 1024 * 1024}
            ]
        },
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}],
            "cgroupsPath": i.cgroup_path,
            "resources": {
                "memory": {"limit": memory, "swap": memory},
                "cpu": {"quota": w.cpus as i64 * 100_000, "period": 100_000},
                "pids": {"limit": i.pids_limit},
                // Every device denied; libcontainer then allows only its default ones
                // (null, zero, full, random, urandom, tty, ptmx and pts).
                "devices": [{"allow": false, "access": "rwm"}]
            },
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                            "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if let Some(base) = i.userns_base {
        let map = json!([{"containerID": 0, "hostID": base, "size": 65536}]);
        spec["linux"]["namespaces"].as_array_mut().expect("namespaces").push(json!({"type": "user"}));
        spec["linux"]["uidMappings"] = map.clone();
        spec["linux"]["gidMappings"] = map;
    }
    if let Some(profile) = i.seccomp {
        spec["linux"]["seccomp"] = profile.clone();
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_isolation_are_in_the_spec() {
        let p = Path::new("/x");
        let (binds, args, env) = code_function(Path::new("/code"), Some(Path::new("/layer")), p, p, "/usr/bin/python3");
        let s = build(&SpecInput {
            workload: Workload { rootfs: p, binds, args, env, cwd: "/tmp", memory_mb: 128, cpus: 2 },
            cgroup_path: "/iluvatar/c1",
            pids_limit: 64,
            tmp_size_mb: 16,
            log_limit_mb: 8,
            hostname: "c1",
            seccomp: Some(&json!({"defaultAction": "SCMP_ACT_ALLOW"})),
            userns_base: None,
        });
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 128 * 1024 * 1024);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 200_000);
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 64);
        assert_eq!(s["process"]["user"]["uid"], FUNCTION_UID);
        assert_eq!(s["process"]["user"]["additionalGids"], json!([FUNCTION_UID]));
        assert_eq!(s["linux"]["resources"]["devices"][0], json!({"allow": false, "access": "rwm"}));
        assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        let ns: Vec<&str> =
            s["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert_eq!(ns, ["pid", "mount", "ipc", "uts", "network"]);
        let code = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == FUNCTION_DIR).unwrap();
        assert_eq!(code["source"], "/code");
        assert!(code["options"].as_array().unwrap().contains(&json!("ro")));
        let deps = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == DEPS_DIR).unwrap();
        assert_eq!(deps["source"], "/layer");
        assert!(deps["options"].as_array().unwrap().contains(&json!("ro")), "layers are read-only");
        assert!(s["process"]["env"].as_array().unwrap().contains(&json!(deps_env())));
        let tmp = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/tmp").unwrap();
        assert!(tmp["options"].as_array().unwrap().contains(&json!("size=16m")));
    }
}
