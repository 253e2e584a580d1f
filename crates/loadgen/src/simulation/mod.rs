//! Simulation: the real worker (registry, invoker, queue policy, container pool, eviction,
//! memory accounting) built in this process with the `sim` backend, under a paused tokio
//! clock that jumps to the next timer whenever every task waits; one worker or a cluster of
//! them behind the controller's balancing policy. Nothing here reads the OS clock or OS
//! randomness: the same inputs and seed give the same results, byte for byte.

pub mod fidelity;
pub mod in_process;
pub mod overhead;
pub mod run;
pub mod sim_bench;
pub mod sweep;
pub mod worker;
