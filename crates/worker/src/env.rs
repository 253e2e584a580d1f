//! The worker's clocks and host figures. A live worker reads `LiveClock` (the OS clock,
//! from `iluvatar_service`). `TokioClock` reads tokio's clock, which is virtual in a paused
//! runtime: simulation runs the same worker code on it. This module and
//! `iluvatar_service::clock` are the only ones allowed to read ambient time and randomness
//! (clippy.toml bans them everywhere else).

#![allow(clippy::disallowed_methods)]

use iluvatar_core::Clock;
use std::time::Duration;

pub use iluvatar_service::clock::{LiveClock, live_env};
pub use iluvatar_service::host::{HostStats, ProcStats, QuietHost};

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
