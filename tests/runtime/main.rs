//! End-to-end tests of the runtime isolation backend: the real `iluvatar_worker` runs
//! functions in real containers (namespaces, cgroups, a read-only root) and the tests drive
//! it with the real `iluvatar_worker_cli` or gRPC, then look at what the host sees.
//!
//! They need root and cgroups, as CI has. Build the binaries first: `cargo build --workspace`.
//! The fixture functions are in `tests/functions/`.

mod cli_paths;
mod concurrency;
mod confinement;
mod deps;
mod faults;
mod hostile_images;
mod images;
mod isolation;
mod lifecycle;
mod limits;
mod network;
mod registry;
mod restart;
mod roots;
mod servers;
mod standby;
mod suite;
mod trace_images;
mod util;
mod wedge;
