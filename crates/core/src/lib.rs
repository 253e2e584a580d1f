//! Ilúvatar's core: domain types, the `Env` seam (clock and randomness) and the policies
//! (queueing, keep-alive, eviction, load balancing). It does no IO and knows nothing of
//! networks or containers, so the same code runs live and in simulation.

pub mod env;
pub mod function;
pub mod invocation;
pub mod layered;
pub mod metrics;
pub mod policy;

pub use env::{Clock, Env, Rng, SplitMix64};
pub use function::{Fqdn, FunctionSpec, Language, ResourceTimings, SpecError, SpecLimits, shown_reference};
pub use invocation::{ContainerState, Timings};
