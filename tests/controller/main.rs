//! Integration tests of the controller: the real `iluvatar_controller` with real sim
//! workers, each worker in its own network namespace (or on 127.0.0.N where namespaces
//! cannot be made), driven by gRPC, HTTP and the CLI.
//!
//! Build the binaries first: `cargo build --workspace`.

mod auth;
mod cluster;
mod hardening;
mod http_api;
mod membership;
