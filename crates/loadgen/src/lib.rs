//! Load generation and benchmarks. Client latency is wall-clock time measured in this
//! process, by definition (see shared/benchmarks.md), so the modules that measure read the
//! OS clock.
//!
//! The rooms: [`commands`] (the subcommands' front ends), [`workload`] (traces, their
//! metadata and their generation), [`sending`] (targets, transports and the loops that send
//! invocations), [`simulation`] (workers and clusters in this process on virtual time),
//! [`results`] (rows, recording, summaries, plots and benchmark reports).

pub mod commands;
pub mod results;
pub mod sending;
pub mod simulation;
pub mod spawn;
pub mod workload;
