//! Load generation and benchmarks. Client latency is wall-clock time measured in this
//! process, by definition (see shared/benchmarks.md), so this crate reads the OS clock.

pub mod closed_loop;
pub mod control_plane;
pub mod open_loop;
pub mod report;
pub mod spawn;
pub mod worker_bench;
