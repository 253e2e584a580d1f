//! What an invocation produces: the container state it ran in and its timing breakdown.

use serde::{Deserialize, Serialize};

/// The state of the container an invocation ran in (numbers match the protocol's enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerState {
    Error = 0,
    Unhealthy = 1,
    /// Started for this invocation.
    Cold = 2,
    /// Started ahead of time by a prewarm, first use.
    Prewarm = 3,
    /// Has run an invocation before.
    Warm = 4,
}

/// Where an invocation's time went, in microseconds. `total_us` spans the worker's handling
/// from the request's arrival at the invoker to the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting in the invoker's queue for a concurrency slot.
    pub queue_us: u64,
    /// Getting a container: a pool hit, or waiting for memory plus a cold start.
    pub acquire_us: u64,
    /// The backend's container creation, when the invocation was cold; 0 otherwise.
    pub cold_start_us: u64,
    /// Worker to container and back (the protocol's `duration_us`).
    pub container_us: u64,
    /// In-function time, measured inside the container around the call of `main`.
    pub function_us: u64,
    /// Everything the worker did for this invocation.
    pub total_us: u64,
}
