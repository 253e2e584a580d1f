//! Sending invocations: the target of a run and its connections, the transports that reach
//! it, and the loops that send: the one arrival loop (open loop on a schedule, live or
//! virtual time), closed-loop clients, the fixed-rate open loop of the benchmarks.

pub mod arrivals;
pub mod awake;
pub mod closed_loop;
pub mod connect;
pub mod lean;
pub mod live;
pub mod open_loop;
pub mod progress;
pub mod target;
pub mod transport;

/// The transaction id prefix of a run's invocations.
pub const TID: &str = "lg";
