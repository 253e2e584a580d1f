//! The `Env` seam: everything that reads time or randomness goes through it, so a run can be
//! live (OS clock) or simulated (virtual clock) and replayed from its seed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic clock plus the calendar time it corresponds to.
pub trait Clock: Send + Sync {
    /// Time elapsed since the clock's origin; never goes backwards.
    fn now(&self) -> Duration;
    /// Microseconds since the Unix epoch, for timestamps that leave the process.
    fn unix_time_us(&self) -> u64;
}

/// A source of random numbers. Implementations are seeded so that a run can be replayed.
pub trait Rng: Send + Sync {
    fn next_u64(&self) -> u64;
}

/// What a run reads time and randomness from.
#[derive(Clone)]
pub struct Env {
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn Rng>,
    /// The seed the RNG was built from; printed so that a run can be replayed.
    pub seed: u64,
}

impl Env {
    pub fn new(clock: Arc<dyn Clock>, seed: u64) -> Self {
        Env { clock, rng: Arc::new(SplitMix64::new(seed)), seed }
    }

    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// A random identifier of 32 hex digits (cookies, transaction ids).
    pub fn random_id(&self) -> String {
        format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64())
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for identifiers and
/// simulated arrivals. Lock-free: the state is a counter advanced atomically.
pub struct SplitMix64 {
    state: AtomicU64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: AtomicU64::new(seed) }
    }
}

impl Rng for SplitMix64 {
    fn next_u64(&self) -> u64 {
        let mut z = self.state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A clock that only moves when told to; for unit tests of time-dependent logic.
#[derive(Default)]
pub struct ManualClock {
    now_ns: AtomicU64,
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        self.now_ns.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_ns.load(Ordering::SeqCst))
    }
    fn unix_time_us(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst) / 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a = SplitMix64::new(42);
        let b = SplitMix64::new(42);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        assert_ne!(SplitMix64::new(43).next_u64(), xs[0]);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::default();
        assert_eq!(c.now(), Duration::ZERO);
        c.advance(Duration::from_millis(5));
        assert_eq!(c.now(), Duration::from_millis(5));
    }
}
