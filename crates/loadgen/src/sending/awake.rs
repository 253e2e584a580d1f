//! Keeping the CPUs awake while a latency benchmark runs (`--keep-cpus-awake`).
//!
//! On a VM whose idle vCPUs halt (no cpuidle driver: the guest executes HLT and the host
//! may deschedule the vCPU), a thread woken on an idle CPU runs late, and by much more at
//! the tail than on bare metal. Measured on the 2-core development VM: a 10 ms sleep
//! overshoots by 0.2 ms at p50 and 1.25 ms at p99; an open loop at 2,000/s against a sim
//! worker sends 1.6-1.9 ms late at p99. `/dev/cpu_dma_latency` changes nothing there (no
//! cpuidle driver reads it). With a spinning thread of the lowest priority on each CPU,
//! the CPUs never halt: the same sleep overshoots by 0.13 ms at p99 and the open loop
//! sends 0.03 ms late at p99. This is what `idle=poll` does on bare metal; it is opt-in,
//! and a report says whether it was on.
//!
//! Each spinner is pinned to one CPU at `SCHED_IDLE`: it runs only when its CPU has
//! nothing else to run, and any thread that wakes there preempts it at once. Its CPU time
//! is counted apart ([`KeepAwake::cpu_seconds`]), so the load generator's CPU figures can
//! leave it out.

use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// One spinning `SCHED_IDLE` thread per CPU this process may run on, until dropped.
pub struct KeepAwake {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl KeepAwake {
    /// Starts a spinner on each CPU of this process's affinity mask. Fails if a thread
    /// cannot be made `SCHED_IDLE` (it would then compete with the work it is meant to
    /// leave alone).
    pub fn start() -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut awake = KeepAwake { stop: stop.clone(), threads: Vec::new() };
        for cpu in allowed_cpus()? {
            let stop = stop.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new().name(format!("awake-{cpu}")).spawn(move || {
                let pinned = pin_idle(cpu);
                let failed = pinned.is_err();
                let _ = ready_tx.send(pinned);
                if failed {
                    return;
                }
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })?;
            awake.threads.push(thread);
            ready_rx.recv()?.map_err(|e| anyhow::anyhow!("keeping CPU {cpu} awake: {e}"))?;
        }
        Ok(awake)
    }

    /// How many spinners run.
    pub fn cpus(&self) -> usize {
        self.threads.len()
    }

    /// The CPU time the spinners have used, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let mut total = 0.0;
        for t in &self.threads {
            let mut clock: libc::clockid_t = 0;
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: the thread is joinable (not yet joined), so its pthread_t is valid;
            // both calls only write the out-parameters given.
            let ok = unsafe {
                libc::pthread_getcpuclockid(t.as_pthread_t(), &mut clock) == 0
                    && libc::clock_gettime(clock, &mut ts) == 0
            };
            if ok {
                total += ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9;
            }
        }
        total
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect())
    }
}

/// Pins the calling thread to `cpu` and gives it the idle scheduling class.
fn pin_idle(cpu: usize) -> std::io::Result<()> {
    // SAFETY: both calls change the calling thread only (pid 0), from plain data.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spinner_per_cpu_at_idle_priority_each_pinned_and_stopped_when_dropped() {
        let awake = KeepAwake::start().unwrap();
        assert_eq!(awake.cpus(), allowed_cpus().unwrap().len());
        std::thread::sleep(std::time::Duration::from_millis(200));
        // The spinners ran (the CPUs were mostly idle)...
        let spun = awake.cpu_seconds();
        assert!(spun > 0.05, "the spinners used {spun} s of CPU in 0.2 s");
        // ...each at SCHED_IDLE (policy 5, field 41 of stat) and pinned to a CPU of its own.
        let spinners = spinner_tasks();
        assert_eq!(spinners.len(), awake.cpus());
        let mut pinned = Vec::new();
        for task in &spinners {
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            assert_eq!(fields[41 - 3], "5", "policy of {}", task.display());
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string();
            assert!(cpus.parse::<usize>().is_ok(), "a spinner may run on {cpus}, not on one CPU");
            pinned.push(cpus);
        }
        pinned.sort();
        pinned.dedup();
        assert_eq!(pinned.len(), spinners.len(), "two spinners share a CPU: {pinned:?}");
        drop(awake);
        // Every spinner has stopped.
        assert!(spinner_tasks().is_empty());
    }

    /// The /proc directories of this process's spinner threads.
    fn spinner_tasks() -> Vec<std::path::PathBuf> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| std::fs::read_to_string(p.join("comm")).unwrap_or_default().starts_with("awake-"))
            .collect()
    }
}
