//! What the container runtime reads or cleans in cgroups directly: OOM kills, and
//! leftovers of an earlier run. Handles v1 (per-controller hierarchies) and v2.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// Whether the kernel OOM-killed a process in the container's cgroup.
pub fn oom_killed(cgroup_path: &str) -> bool {
    let rel = cgroup_path.trim_start_matches('/');
    let v1 = Path::new(ROOT).join("memory").join(rel).join("memory.oom_control");
    let v2 = Path::new(ROOT).join(rel).join("memory.events");
    [v1, v2].iter().any(|p| count_after(p, "oom_kill") > 0)
}

fn count_after(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Kills what is left in this worker's cgroups and removes them; returns how many cgroup
/// directories went.
pub fn remove_leftovers(parent: &str) -> usize {
    let mut parents: Vec<PathBuf> = vec![Path::new(ROOT).join(parent)];
    if let Ok(ctrls) = std::fs::read_dir(ROOT) {
        parents.extend(ctrls.flatten().map(|c| c.path().join(parent)));
    }
    let mut removed = 0;
    for p in parents.into_iter().filter(|p| p.is_dir()) {
        for child in std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()).filter(|c| c.is_dir()) {
            kill_procs(&child);
            // Killed processes take a moment to leave the cgroup.
            for _ in 0..50 {
                if std::fs::remove_dir(&child).is_ok() {
                    removed += 1;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        let _ = std::fs::remove_dir(&p);
    }
    removed
}

fn kill_procs(cgroup: &Path) {
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// A limit that could not be written into a cgroup file.
#[derive(Debug, thiserror::Error)]
#[error("writing {value} to {}: {source}", path.display())]
pub struct LimitError {
    pub value: String,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Sets a container's memory limit (swap included, so no swap) and CPU quota after its
/// creation: a standby container is given a function's limits.
pub fn set_limits(cgroup_path: &str, memory_mb: u64, cpus: u32) -> Result<(), LimitError> {
    let rel = cgroup_path.trim_start_matches('/');
    let bytes = (memory_mb * 1024 * 1024).to_string();
    let quota = (cpus as u64 * 100_000).to_string();
    let write = |path: PathBuf, v: &str| {
        std::fs::write(&path, v).map_err(|source| LimitError { value: v.to_string(), path, source })
    };
    let v1_memory = Path::new(ROOT).join("memory").join(rel);
    if v1_memory.is_dir() {
        // memsw >= limit at every step: raise memsw first, or lower the limit first.
        let memsw = v1_memory.join("memory.memsw.limit_in_bytes");
        let has_memsw = memsw.exists();
        let _ = has_memsw && std::fs::write(&memsw, &bytes).is_ok();
        write(v1_memory.join("memory.limit_in_bytes"), &bytes)?;
        if has_memsw {
            write(memsw, &bytes)?;
        }
        return write(Path::new(ROOT).join("cpu").join(rel).join("cpu.cfs_quota_us"), &quota);
    }
    let v2 = Path::new(ROOT).join(rel);
    write(v2.join("memory.max"), &bytes)?;
    let _ = std::fs::write(v2.join("memory.swap.max"), "0");
    write(v2.join("cpu.max"), &format!("{quota} 100000"))
}
