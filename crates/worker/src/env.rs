//! The live `Env` and host figures: the one module allowed to read ambient time and
//! randomness (clippy.toml bans them everywhere else).
//!
//! A live worker reads `LiveClock` (the OS clock). `TokioClock` reads tokio's clock, which
//! is virtual in a paused runtime: simulation runs the same worker code on it.

#![allow(clippy::disallowed_methods)]

use iluvatar_core::{Clock, Env};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct TokioClock {
    origin: tokio::time::Instant,
    /// Unix time at the origin, in microseconds.
    unix_origin_us: u64,
}

impl TokioClock {
    /// A clock whose calendar time starts at a fixed point (simulation, replays).
    pub fn starting_at(unix_origin_us: u64) -> Self {
        TokioClock { origin: tokio::time::Instant::now(), unix_origin_us }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.origin)
    }
    fn unix_time_us(&self) -> u64 {
        self.unix_origin_us + self.now().as_micros() as u64
    }
}

/// The OS's monotonic clock, read directly: cheaper than tokio's, which takes a lock when
/// tokio's test utilities (virtual time) are compiled in.
pub struct LiveClock {
    origin: std::time::Instant,
    unix_origin_us: u64,
}

impl LiveClock {
    pub fn new() -> Self {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        LiveClock { origin: std::time::Instant::now(), unix_origin_us: unix.as_micros() as u64 }
    }
}

impl Default for LiveClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for LiveClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
    fn unix_time_us(&self) -> u64 {
        self.unix_origin_us + self.now().as_micros() as u64
    }
}

/// The live environment: OS clock, and a seed from the OS's randomness.
pub fn live_env() -> Env {
    let seed = read_urandom_u64().unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        t.map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    Env::new(Arc::new(LiveClock::new()), seed)
}

fn read_urandom_u64() -> Option<u64> {
    use std::io::Read;
    let mut buf = [0u8; 8];
    std::fs::File::open("/dev/urandom").ok()?.read_exact(&mut buf).ok()?;
    Some(u64::from_le_bytes(buf))
}

/// CPU utilisation and load average of the host, for `status`.
pub trait HostStats: Send + Sync {
    /// Percent of CPU time busy since the previous call (0..=100).
    fn cpu_util(&self) -> f64;
    /// One-minute load average.
    fn load_avg(&self) -> f64;
}

/// Reads /proc/stat and /proc/loadavg.
#[derive(Default)]
pub struct ProcStats {
    last: Mutex<Option<(u64, u64)>>,
}

impl HostStats for ProcStats {
    fn cpu_util(&self) -> f64 {
        let Some((busy, total)) = read_proc_stat() else { return 0.0 };
        let mut last = self.last.lock().unwrap();
        let (pb, pt) = last.replace((busy, total)).unwrap_or((0, 0));
        let dt = total.saturating_sub(pt);
        if dt == 0 { 0.0 } else { busy.saturating_sub(pb) as f64 * 100.0 / dt as f64 }
    }
    fn load_avg(&self) -> f64 {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
            .unwrap_or(0.0)
    }
}

/// (busy, total) jiffies of all CPUs.
fn read_proc_stat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let xs: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let total: u64 = xs.iter().take(8).sum();
    let idle = xs.get(3)? + xs.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// A host with no load, for simulation.
pub struct QuietHost;

impl HostStats for QuietHost {
    fn cpu_util(&self) -> f64 {
        0.0
    }
    fn load_avg(&self) -> f64 {
        0.0
    }
}

/// 128 bits from the operating system's random source, as 32 hex digits: identifiers that
/// must not be guessable (async cookies), unlike the seeded `Env` RNG's.
pub fn os_random_id() -> String {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length name the unfilled tail of `bytes`.
        let n = unsafe { nix::libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            panic!("the OS random source failed: {}", std::io::Error::last_os_error());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
