//! Service plumbing shared by the worker and the controller daemons: the live clock and
//! host figures, layered config files and their errors, where to listen, the gRPC adapter
//! macro, serving gRPC and HTTP with the ready line and a graceful stop, signals and
//! logging, starting a daemon binary and reading its ready line, and the embedded store
//! of their durable state.
//!
//! Nothing here knows a worker or a controller: each daemon passes its own services,
//! routes and ready-line fields.

pub mod clock;
pub mod config;
pub mod grpc;
pub mod host;
pub mod http;
pub mod process;
pub mod serve;
pub mod spawn;
pub mod store;
