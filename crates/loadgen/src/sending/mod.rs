//! Sending invocations: the target of a run and its connections, the transports that reach
//! it, and the loops that send (open loop on a schedule, closed-loop clients).

pub mod closed_loop;
pub mod live;
pub mod open_loop;
pub mod progress;
pub mod target;
pub mod transport;

/// The transaction id prefix of a run's invocations.
pub const TID: &str = "lg";
