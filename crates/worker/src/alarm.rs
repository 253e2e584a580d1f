//! The reaper's alarm. The reaper (keep-alive expiry, keep-alive pre-warms, uncollected
//! async results) works on a tick grid of `reap_interval_ms`, but sleeps through every tick
//! at which nothing is due: it plans to wake at the first tick at which something is, and
//! whoever makes something due earlier than that (a container turned idle, an arrival that
//! moved a keep-alive window, an async result) rings the alarm. An idle worker then costs
//! nothing, which a simulation of a thousand workers over a day of virtual time needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Times are the worker's `Env` clock (`Env::now`), in nanoseconds.
pub struct Alarm {
    /// Something due at or before this time wakes the reaper; what is due later is found
    /// when it wakes anyway.
    sleeps_past_ns: AtomicU64,
    ring: Notify,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm { sleeps_past_ns: AtomicU64::new(u64::MAX), ring: Notify::new() }
    }
}

fn ns(t: Duration) -> u64 {
    t.as_nanos().min(u64::MAX as u128) as u64
}

impl Alarm {
    /// Something falls due at `at`: wakes the reaper if it plans to sleep past it.
    pub fn due(&self, at: Duration) {
        if ns(at) <= self.sleeps_past_ns.load(Ordering::Acquire) {
            // A permit is kept if the reaper is not waiting yet, so the call is not lost.
            self.ring.notify_one();
        }
    }

    /// Wakes the reaper whatever it planned (shutdown).
    pub fn ring(&self) {
        self.ring.notify_one();
    }

    /// The reaper is about to plan: until [`Alarm::plan`], anything due wakes it again, so
    /// that nothing made due while it looks is missed.
    pub fn planning(&self) {
        self.sleeps_past_ns.store(u64::MAX, Ordering::Release);
    }

    /// The reaper plans to wake at `wake` (`None`: only when rung), on a grid of `every`:
    /// what falls due after the tick before it is handled then.
    pub fn plan(&self, wake: Option<Duration>, every: Duration) {
        let past = wake.map(|w| ns(w.saturating_sub(every))).unwrap_or(u64::MAX);
        self.sleeps_past_ns.store(past, Ordering::Release);
    }

    /// Completes when rung.
    pub async fn rung(&self) {
        self.ring.notified().await
    }
}

/// The first tick of the grid `last + k * every` (k >= 1) at or after `due`.
pub fn next_tick(last: Duration, every: Duration, due: Duration) -> Duration {
    let every_ns = every.as_nanos().max(1);
    let ahead = due.saturating_sub(last).as_nanos();
    let k = ahead.div_ceil(every_ns).max(1);
    last + Duration::from_nanos((k * every_ns).min(u64::MAX as u128) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_next_tick_is_on_the_grid_at_or_after_the_due_time_and_never_the_last_one() {
        let ms = Duration::from_millis;
        assert_eq!(next_tick(ms(0), S, ms(0)), S, "never the tick just run");
        assert_eq!(next_tick(ms(0), S, ms(1)), S);
        assert_eq!(next_tick(ms(0), S, S), S, "a tick due exactly is that tick");
        assert_eq!(next_tick(ms(0), S, S + Duration::from_nanos(1)), 2 * S);
        assert_eq!(next_tick(ms(500), S, ms(10_400)), ms(10_500));
    }

    #[tokio::test]
    async fn only_what_falls_due_before_the_planned_tick_rings() {
        let a = Alarm::default();
        a.plan(Some(10 * S), S);
        a.due(9 * S + Duration::from_nanos(1)); // handled at the 10 s tick anyway
        a.due(20 * S);
        let quiet = tokio::time::timeout(Duration::from_millis(10), a.rung()).await;
        assert!(quiet.is_err(), "nothing due before the 9 s tick should ring");
        a.due(9 * S);
        tokio::time::timeout(Duration::from_millis(10), a.rung()).await.expect("due at 9 s: rung");
        // While planning, anything rings, and the call is kept until awaited.
        a.planning();
        a.due(100 * S);
        tokio::time::timeout(Duration::from_millis(10), a.rung()).await.expect("rung while planning");
        // Nothing planned: anything rings.
        a.plan(None, S);
        a.due(1000 * S);
        tokio::time::timeout(Duration::from_millis(10), a.rung()).await.expect("rung with no plan");
    }
}
