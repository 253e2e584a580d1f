//! Load generation and benchmarks. Client latency is wall-clock time measured in this
//! process, by definition (see shared/benchmarks.md), so the modules that measure read the
//! OS clock.

pub mod benchmark;
pub mod closed_loop;
pub mod control_plane;
pub mod controller_bench;
pub mod csv;
pub mod dist;
pub mod fidelity;
pub mod generate;
pub mod open_loop;
pub mod plots;
pub mod progress;
pub mod replay;
pub mod report;
pub mod results;
pub mod scaling;
pub mod schedule;
pub mod sim;
pub mod sim_bench;
pub mod soak;
pub mod spawn;
pub mod sweep;
pub mod target;
pub mod trace;
pub mod transport;
pub mod worker_bench;
