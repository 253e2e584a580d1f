//! The controller's clocks: the live `Env` and the benchmark's stopwatch, both from
//! `iluvatar_service` (the controller reads no ambient time itself).

pub use iluvatar_service::clock::{LiveClock, Stopwatch, live_env};
