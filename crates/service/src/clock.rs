//! The live `Env`: the one module allowed to read ambient time and randomness (clippy.toml
//! bans them everywhere else).

#![allow(clippy::disallowed_methods)]

use iluvatar_core::{Clock, Env};
use std::sync::Arc;
use std::time::Duration;

/// The OS's monotonic clock, read directly: cheaper than tokio's, which takes a lock when
/// tokio's test utilities (virtual time) are compiled in, as they are in a workspace build
/// with the load generator.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_clock_moves_forward_from_now() {
        let c = LiveClock::new();
        let (a, ua) = (c.now(), c.unix_time_us());
        std::thread::sleep(Duration::from_millis(2));
        assert!(c.now() > a);
        assert!(c.unix_time_us() >= ua + 2_000);
        assert!(ua > 1_600_000_000_000_000, "calendar time, in microseconds: {ua}");
    }
}
