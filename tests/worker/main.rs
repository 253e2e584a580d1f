//! End-to-end tests of the worker: each test starts the real `iluvatar_worker` binary (sim
//! backend) in its own temp directory on free ports, and drives it with the real
//! `iluvatar_worker_cli`, the generated gRPC client, or plain HTTP. Also in process:
//! the pool and the invoker under virtual time (`pool_invoker`), the reaper of a worker
//! built in process under virtual time (`reaper`), and the backend
//! compliance suite on the sim backend (`compliance`).
//!
//! Build the binaries first: `cargo build --workspace`.

mod auth;
mod bad_inputs;
mod cli_flags;
mod cli_lifecycle;
mod compliance;
mod concurrency;
mod config;
mod grpc_lifecycle;
mod http_api;
mod keep_alive;
mod memory;
mod overload;
mod policy_storm;
mod pool_invoker;
mod reaper;
mod secrets;
mod shutdown;
