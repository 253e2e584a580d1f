//! Integration tests of the load generator: the real `iluvatar_load_gen` against real
//! workers and a real controller on loopback, and its simulation (the library, in process,
//! under virtual time).
//!
//! Build the binaries first: `cargo build --workspace`.

mod auth;
mod compare;
mod controller;
mod e2e;
mod in_process;
mod lean;
mod metadata;
mod results;
mod sim_cluster;
mod simulation;
