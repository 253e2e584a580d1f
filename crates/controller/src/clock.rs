//! The live `Env` of the controller: the one module of this crate allowed to read ambient
//! time and randomness (clippy.toml bans them everywhere else). A copy of the worker's
//! `LiveClock`, so that the controller does not depend on the worker crate.

#![allow(clippy::disallowed_methods)]

use iluvatar_core::{Clock, Env};
use std::sync::Arc;
use std::time::Duration;

/// The OS's monotonic clock, read directly (tokio's takes a lock when its test utilities
/// are compiled in, as they are in a workspace build with the load generator).
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

/// Wall-clock time for the benchmark's client latency, which is wall-clock time by
/// definition.
#[derive(Clone, Copy)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch(std::time::Instant::now())
    }
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}
